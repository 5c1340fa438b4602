"""Batch-wise augmentation on uint8 NHWC tensors: no per-image Python, seeded.

Each function takes a batch and a ``torch.Generator`` and returns a new batch,
so a seed fixes every crop, flip and cutout of a run. The composed augment of a
preset also takes the images' indices in the split and the epoch, which the
alternating flip needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (batch, generator, indices of the batch's images in the split, epoch) -> batch
Augment = Callable[[torch.Tensor, torch.Generator, torch.Tensor, int], torch.Tensor]


def random_crop(x: torch.Tensor, g: torch.Generator, pad: int = 4, reflect: bool = True):
    """Crop each image at a random offset from the image padded by ``pad`` pixels.

    Done as one gather with per-image row/column indices instead of padding a
    copy of the batch: reflection (or zero fill) is folded into the indices.
    """
    b, h, w, _ = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=g, device=x.device) - pad
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=g, device=x.device) - pad
    rows = torch.arange(h, device=x.device) + dy  # (b, h), may fall outside [0, h)
    cols = torch.arange(w, device=x.device) + dx
    if reflect:
        rows, cols = _reflect(rows, h), _reflect(cols, w)
        return x[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None], cols[:, None]]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = x[
        torch.arange(b, device=x.device)[:, None, None],
        rows.clamp(0, h - 1)[:, :, None],
        cols.clamp(0, w - 1)[:, None],
    ]
    return out * inside[..., None]


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    idx = idx.abs()  # -k -> k
    return torch.where(idx >= size, 2 * (size - 1) - idx, idx)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=g, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(2), x)


def alternating_flip(x: torch.Tensor, idx: torch.Tensor, epoch: int, seed: int = 0):
    """airbench's flip: a fixed random half of the images is mirrored on even epochs and
    exactly the other half on odd ones, so every image is seen both ways every two epochs.

    The per-image bit is a multiplicative hash of (index, seed): no table to keep in step.
    """
    z = (idx.to(torch.int64) * 0x9E3779B1 + (seed % (1 << 30)) * 0x85EBCA6B) % (1 << 32)
    flip = ((z >> 31) & 1).bool() ^ bool(epoch % 2)
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(2), x)


def cutout(x: torch.Tensor, g: torch.Generator, size: int, fill: torch.Tensor) -> torch.Tensor:
    """Paint one ``size``x``size`` square (clipped at the borders) per image with ``fill``.

    ``fill`` is the dataset mean as uint8, which normalizes to zero.
    """
    b, h, w, _ = x.shape
    cy = torch.randint(0, h, (b, 1, 1), generator=g, device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), generator=g, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    half = size // 2
    box = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    return torch.where(box[..., None], fill.to(x.device), x)


def build_augment(
    name: str,
    mean_uint8: torch.Tensor,
    crop_pad: int = 4,
    cutout_size: int | None = None,
    seed: int = 0,
) -> Augment | None:
    """The named preset as one function (or None for ``none``).

    ``cutout_size`` defaults to 8 for presets with cutout; given explicitly, it
    adds cutout to any preset.
    """
    steps: list[Augment] = []
    if ("crop" in name or "translate" in name) and crop_pad > 0:
        reflect = "translate" not in name  # translate fills the uncovered border with zeros
        steps.append(lambda x, g, i, e: random_crop(x, g, crop_pad, reflect))
    if "alt-flip" in name:
        steps.append(lambda x, g, i, e: alternating_flip(x, i, e, seed))
    elif "flip" in name:
        steps.append(lambda x, g, i, e: random_flip(x, g))
    if "cutout" in name or cutout_size is not None:
        size = cutout_size or 8
        steps.append(lambda x, g, i, e: cutout(x, g, size, mean_uint8))
    if not steps:
        return None

    def augment(x: torch.Tensor, g: torch.Generator, idx: torch.Tensor, epoch: int):
        for step in steps:
            x = step(x, g, idx, epoch)
        return x

    return augment
