"""An architecture diagram: one block per layer, left to right, wrapped into rows.

Block height grows with log2(channels) and width with log2(pixels), so wide
layers look tall and early high-resolution layers look wide; colour shows the kind.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from cifarlab.files import image_file, written_atomically
from cifarlab.models.summary import ModelSummary, summarize_model

PER_ROW = 12  # blocks per row: up to 40 layers stay readable in 4 rows
COLOURS = {
    "conv": "#4c72b0",
    "res": "#2a4d8f",
    "convgroup": "#2a4d8f",
    "linear": "#dd8452",
    "bn": "#8c8c8c",
    "maxpool": "#55a868",
    "avgpool": "#55a868",
    "gap": "#3d8c55",
    "gmp": "#3d8c55",
    "dropout": "#c44e52",
    "flatten": "#bbbbbb",
}
ACTIVATION_COLOUR = "#e5c16a"  # relu, gelu, silu, tanh
OTHER_COLOUR = "#9b7fc0"


def draw_diagram(
    model_or_summary: nn.Module | ModelSummary,
    path: str | Path,
    input_shape: tuple[int, ...] = (3, 32, 32),
    title: str | None = None,
) -> Path:
    """Draw the model's layers to ``path`` (PNG, or any format matplotlib knows by suffix)."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it was
    from matplotlib.patches import FancyBboxPatch

    summary = model_or_summary
    if isinstance(summary, nn.Module):
        summary = summarize_model(summary, input_shape)
    layers = [("input", summary.input_shape), *((b.kind, b.output_shape) for b in summary.blocks)]
    n_rows = math.ceil(len(layers) / PER_ROW)
    per_row = math.ceil(len(layers) / n_rows)  # balanced: 13 layers as 7 + 6, not 12 + 1
    cell_w, cell_h = 1.5, 2.9  # inches per block slot
    fig_w, fig_h = max(per_row * cell_w, 5.0), n_rows * cell_h + 0.6
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    ax = fig.subplots()
    ax.set_xlim(-0.2, max(per_row * cell_w, fig_w) + 0.2)  # room for the rows' end arrows
    ax.set_ylim(-fig_h + 0.3, 0.3)
    ax.axis("off")
    for i, (kind, shape) in enumerate(layers):
        row, col = divmod(i, per_row)
        x_mid, y_mid = (col + 0.5) * cell_w, -(row + 0.5) * cell_h
        w, h = _block_size(shape)
        ax.add_patch(
            FancyBboxPatch(
                (x_mid - w / 2, y_mid - h / 2 + 0.3), w, h,
                boxstyle="round,pad=0.02", facecolor=_colour(kind), edgecolor="black", lw=0.6,
            )
        )  # fmt: skip
        label_y = y_mid - cell_h / 2 + 0.15
        ax.text(x_mid, label_y + 0.22, kind, ha="center", fontsize=9, weight="bold")
        ax.text(x_mid, label_y, "x".join(map(str, shape)), ha="center", fontsize=8)
        arrow = dict(arrowstyle="->", lw=0.8)
        if i < len(layers) - 1:  # to the next block; at a row's end, on to the next row
            y = y_mid + 0.3
            ax.annotate("", xy=(x_mid + cell_w * 0.55, y), xytext=(x_mid + cell_w * 0.45, y),
                        arrowprops=arrow, annotation_clip=False)  # fmt: skip
        if col == 0 and row > 0:  # ... where the row before left off
            y = y_mid + 0.3
            ax.annotate("", xy=(x_mid - cell_w * 0.45, y), xytext=(x_mid - cell_w * 0.55, y),
                        arrowprops=arrow, annotation_clip=False)  # fmt: skip
    name = title or f"{summary.params:,} parameters, {summary.flops / 1e6:,.1f} MFLOP / image"
    ax.set_title(name, fontsize=10)
    path = image_file(path)
    with written_atomically(path) as tmp:  # a stop while saving keeps the old image
        fig.savefig(tmp, bbox_inches="tight")
    return path


def _block_size(shape: tuple[int, ...]) -> tuple[float, float]:
    """(width, height) in inches: log-scaled so 3 and 512 channels both fit a slot."""
    channels = shape[0] if shape else 1
    pixels = shape[1] * shape[2] if len(shape) == 3 else 1
    height = 0.25 + 0.15 * math.log2(channels + 1)  # 1 channel: 0.4, 4096: 2.05
    width = 0.25 + 0.08 * math.log2(pixels + 1)  # 1 pixel: 0.33, 32x32: 1.05
    return width, height


def _colour(kind: str) -> str:
    if kind in ("relu", "gelu", "silu", "tanh"):
        return ACTIVATION_COLOUR
    return COLOURS.get(kind, "#ffffff" if kind == "input" else OTHER_COLOUR)
