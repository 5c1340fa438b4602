"""Batch-wise augmentation on uint8 NHWC tensors: no per-image Python, seeded.

Each function takes a batch and a ``torch.Generator`` and returns a new batch,
so a seed fixes every crop, flip and cutout of a run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


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


def build_augment(name: str, mean_uint8: torch.Tensor, crop_pad: int = 4, cutout_size: int = 8):
    """The named preset as one function (or None for ``none``)."""
    steps: list[Augment] = []
    if "crop" in name:
        steps.append(lambda x, g: random_crop(x, g, crop_pad))
    if "flip" in name:
        steps.append(random_flip)
    if "cutout" in name:
        steps.append(lambda x, g: cutout(x, g, cutout_size, mean_uint8))
    if not steps:
        return None

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, g)
        return x

    return augment
