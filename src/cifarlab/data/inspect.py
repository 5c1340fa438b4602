"""``cifarlab data info`` and ``cifarlab data preview``: look at a dataset before training."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab.data.arrays import SPLITS
from cifarlab.data.dataset import decode_source, stats_from_sums
from cifarlab.errors import CifarlabError, missing_glyphs_said
from cifarlab.files import image_file, written_atomically
from cifarlab.tables import format_table

MAX_PER_CLASS = 100  # images per class row in a preview grid


def dataset_info(
    data: str | os.PathLike | None, image_size: int | None = None, labels: str = "fine"
) -> dict[str, Any]:
    """Counts per class and split, image shape, per-split mean/std and the cache entry."""
    decoded, stats, path, entry, _ = decode_source(data, image_size=image_size, labels=labels)
    _, h, w, c = decoded.train.images.shape
    info: dict[str, Any] = {"source": str(path), "classes": list(decoded.classes)}
    info |= {"image_shape": [c, h, w], "splits": {}, "cache": str(entry)}
    for split in SPLITS:
        arrays = getattr(decoded, split)
        counts = np.bincount(arrays.labels, minlength=len(decoded.classes))
        mean, std = stats_from_sums(*stats[split], arrays.images.shape)
        info["splits"][split] = {
            "count": len(arrays),
            "per_class": dict(zip(decoded.classes, counts.tolist())),
            "mean": [round(m, 4) for m in mean],
            "std": [round(s, 4) for s in std],
        }
    return info


def format_info(info: dict[str, Any], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(info, indent=2)
    c, h, w = info["image_shape"]
    lines = [f"source: {info['source']}", f"images: {c}x{h}x{w} (CxHxW), uint8"]
    rows = [[name, *(f"{info['splits'][s]['per_class'][name]:,}" for s in SPLITS)]
            for name in info["classes"]]  # fmt: skip
    rows.append(["total", *(f"{info['splits'][s]['count']:,}" for s in SPLITS)])
    right = range(1, len(SPLITS) + 1)
    lines.append(format_table(["class", *SPLITS], rows, right=right))
    for s in SPLITS:
        split = info["splits"][s]
        lines.append(f"{s} mean {split['mean']} std {split['std']} (per channel, 0..1)")
    cache = info["cache"]
    if not Path(cache).is_dir():  # an unwritable cache costs a decode each time, not a run
        cache = f"none written ({Path(cache).parent} is not a writable folder; set CIFARLAB_CACHE)"
    lines.append(f"cache: {cache}")
    return "\n".join(lines)


def preview_grid(
    data: str | os.PathLike | None,
    output: str | os.PathLike,
    per_class: int = 8,
    split: str = "train",
    seed: int = 0,
    image_size: int | None = None,
    labels: str = "fine",
) -> Path:
    """Save a grid of ``per_class`` random images per class (one row each) as a PNG."""
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it was

    if not 1 <= per_class <= MAX_PER_CLASS:  # 6,000 a class drew for minutes into 12 GB
        raise CifarlabError(
            f"--per-class must be 1 to {MAX_PER_CLASS} (got {per_class}); a grid shows samples"
        )
    if seed < 0:
        raise CifarlabError(f"--seed must be 0 or more (got {seed})")
    output = image_file(output)
    suffix = output.suffix.lstrip(".").lower()
    if suffix and suffix not in FigureCanvasBase.get_supported_filetypes():  # before decoding
        raise CifarlabError(
            f"cannot write preview to '{output}': unknown image type '.{suffix}'; "
            "use .png (or .jpg, .pdf, .svg)"
        )
    source = decode_source(data, image_size=image_size, labels=labels)
    decoded = source.dataset
    arrays = getattr(decoded, split)
    # no column left blank in every row: a split of 3 images a class draws 3 columns, not 8
    per_class = min(per_class, max(np.bincount(arrays.labels, minlength=1).max(), 1))
    with missing_glyphs_said(output):  # said once, for the layout and the saving
        rng = np.random.default_rng(seed)
        rows = len(decoded.classes)
        fig = Figure(figsize=(per_class * 0.9, rows * 0.9))
        axes = fig.subplots(rows, per_class, squeeze=False)
        for row, name in enumerate(decoded.classes):
            idx = np.flatnonzero(arrays.labels == row)
            picks = rng.choice(idx, min(per_class, len(idx)), replace=False)
            for col, ax in enumerate(axes[row]):
                ax.set_xticks([]), ax.set_yticks([])
                ax.spines[:].set_visible(False)
                if col < len(picks):
                    image = arrays.images[picks[col]]
                    # nearest-neighbour upscaling keeps 32x32 pixels crisp instead of blurred
                    ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image,
                              cmap="gray", vmin=0, vmax=255, interpolation="nearest")  # fmt: skip
            axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        height = fig.get_figheight()  # spacing in inches, so any number of rows looks alike
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
        for ax in axes[0]:
            ax.apply_aspect()  # where the square images end up, not their cells
        top = max(ax.get_position().y1 for ax in axes[0])
        name = source.path.resolve().name  # "." and $CIFARLAB_DATA named by what they stand for
        fig.suptitle(f"{name}: {split}", fontsize=10,
                     y=top + 0.06 / height, va="bottom")  # fmt: skip
        try:
            with written_atomically(output) as tmp:  # a stop while saving keeps the old image
                fig.savefig(tmp, dpi=100)
        except OSError as err:
            raise CifarlabError(
                f"cannot write preview to '{output}': {err.strerror or err}; pick another -o path"
            ) from None
    return output
