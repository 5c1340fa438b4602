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


def random_crop(
    x: torch.Tensor,
    g: torch.Generator,
    pad: int = 4,
    reflect: bool = True,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop each image at a random offset from the image padded by ``pad`` pixels,
    mirroring those where ``flip`` is True in the same pass.

    The batch is padded once, then cut in two separable passes (rows, then
    columns), each a few masked copies, one per offset: airbench's trick. A
    mirrored image is cut from a mirrored copy at the mirrored offset, which
    costs one pass instead of the two of flipping afterwards. Each copy moves whole
    pixel rows, where a gather with per-pixel indices paid per byte.
    """
    b, h, w, c = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=x.device)
    padded = _pad(x, pad, reflect)
    rows = x.new_empty((b, h, w + 2 * pad, c))
    for s in range(2 * pad + 1):
        rows[dy == s] = padded[dy == s, s : s + h]
    sources = [(rows, dx, torch.ones_like(dx, dtype=torch.bool) if flip is None else ~flip)]
    if flip is not None:  # flipping the padded row mirrors offset s to 2 * pad - s
        sources.append((rows.flip(2), 2 * pad - dx, flip))
    out = x.new_empty((b, h, w, c))
    for source, offset, chosen in sources:
        for s in range(2 * pad + 1):
            m = chosen & (offset == s)
            out[m] = source[m, :, s : s + w]
    return out


def _pad(x: torch.Tensor, pad: int, reflect: bool) -> torch.Tensor:
    """NHWC ``x`` with ``pad`` pixels on each side, mirrored (like torch's reflect) or zero."""
    if not reflect:
        return torch.nn.functional.pad(x, (0, 0, pad, pad, pad, pad))
    for dim in (1, 2):  # concatenated mirrored strips copy at memory speed; index_select doesn't
        n = x.shape[dim]
        before, after = x.narrow(dim, 1, pad).flip(dim), x.narrow(dim, n - pad - 1, pad).flip(dim)
        x = torch.cat([before, x, after], dim)
    return x


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _random_flip_mask(x, g)
    return torch.where(flip[:, None, None, None], x.flip(2), x)


def _random_flip_mask(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape[0], generator=g, device=x.device) < 0.5


def alternating_flip(x: torch.Tensor, idx: torch.Tensor, epoch: int, seed: int = 0):
    """airbench's flip: a fixed random half of the images is mirrored on even epochs and
    exactly the other half on odd ones, so every image is seen both ways every two epochs.

    The per-image bit is a multiplicative hash of (index, seed): no table to keep in step.
    """
    flip = alternating_flip_mask(idx, epoch, seed).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(2), x)


def alternating_flip_mask(idx: torch.Tensor, epoch: int, seed: int = 0) -> torch.Tensor:
    """Which of the images ``idx`` alternating_flip mirrors in ``epoch``."""
    z = (idx.to(torch.int64) * 0x9E3779B1 + (seed % (1 << 30)) * 0x85EBCA6B) % (1 << 32)
    return ((z >> 31) & 1).bool() ^ bool(epoch % 2)


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
    crop = ("crop" in name or "translate" in name) and crop_pad > 0
    reflect = "translate" not in name  # translate fills the uncovered border with zeros
    if crop and "alt-flip" in name:  # crop and flip in one pass
        steps.append(lambda x, g, i, e: random_crop(x, g, crop_pad, reflect,
                                                    alternating_flip_mask(i, e, seed)))  # fmt: skip
    elif crop and "flip" in name:
        steps.append(lambda x, g, i, e: random_crop(x, g, crop_pad, reflect,
                                                    _random_flip_mask(x, g)))  # fmt: skip
    elif crop:
        steps.append(lambda x, g, i, e: random_crop(x, g, crop_pad, reflect))
    elif "alt-flip" in name:
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
