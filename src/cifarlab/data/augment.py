"""Batch-wise augmentation on uint8 images: no per-image Python, seeded.

Each function takes a batch and a ``torch.Generator`` and returns a new batch,
so a seed fixes every crop, flip and cutout of a run. The composed augment of a
preset (``build_augment``) works on *packed pixels*: each pixel's channels as one
integer (RGB padded to 4 bytes = one int32), so moving a pixel is one element copy,
not three. It gathers its batch straight from the whole split, crop and flip
included, and also takes the epoch, which the alternating flip needs.

``random_crop``, ``random_flip``, ``alternating_flip`` and ``cutout`` do one thing each to
an NHWC uint8 batch: for your own tensors outside the trainer, which uses the fused
``build_augment`` (the tests hold both to a per-image reference).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (packed split, the batch's indices in it, generator, epoch) -> packed batch
Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator, int], torch.Tensor]

_PIXEL_DTYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def pack_pixels(images: torch.Tensor) -> torch.Tensor:
    """NHWC uint8 images as (N, H, W) integers, one per pixel (channels padded to 1/2/4/8)."""
    channels = images.shape[-1]
    width = next((w for w in _PIXEL_DTYPES if w >= channels), None)
    if width is None:
        raise ValueError(f"images with {channels} channels cannot be packed (at most 8)")
    if width != channels:  # one copy, once per split (RGB -> RGB0: 4/3 the bytes)
        padded = images.new_zeros((*images.shape[:-1], width))
        padded[..., :channels] = images
        images = padded
    return images.contiguous().view(_PIXEL_DTYPES[width]).squeeze(-1)


def unpack_pixels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """Packed pixels back to contiguous NHWC uint8 with ``channels`` channels."""
    images = pixels.unsqueeze(-1).view(torch.uint8)
    return images if images.shape[-1] == channels else images[..., :channels].contiguous()


def crop_indices(
    b: int, h: int, w: int, g: torch.Generator, pad: int, reflect: bool,
    flip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Source rows (b, h) and columns (b, w) of a random ``pad`` crop per image, mirrored
    where ``flip``; and, for zero padding, which output pixels fall inside the image.

    Offsets are drawn as for cutting a window from the image padded by ``pad``; the
    padding itself is never built: reflection is folded into the indices. The maps live
    on the generator's device.
    """
    if reflect and pad >= min(h, w):  # a mirror needs pad + 1 pixels to reflect from
        raise ValueError(f"reflect padding of {pad} needs images larger than {h}x{w}")
    device = g.device
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=device)
    rows = dy[:, None] - pad + torch.arange(h, device=device)
    cols = torch.arange(w, device=device).expand(b, w)
    if flip is not None:  # a mirrored crop is the mirror of a window: read its columns backwards
        cols = torch.where(flip[:, None].to(device), w - 1 - cols, cols)
    cols = dx[:, None] - pad + cols
    if reflect:  # torch's reflect: -1 -> 1, n -> n - 2 (pad < n)
        return _reflect(rows, h), _reflect(cols, w), None
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    return rows.clamp(0, h - 1), cols.clamp(0, w - 1), inside


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def gather_crops(
    pixels: torch.Tensor,
    idx: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    inside: torch.Tensor | None = None,
) -> torch.Tensor:
    """The images ``idx`` of packed ``pixels``, cut at ``rows`` x ``cols`` (crop_indices).

    Two gathers of whole pixels (rows, then columns) do the shuffle, the crop and the
    flip: no padded copy, no masked copies, no host syncs on a GPU.
    """
    b, w = cols.shape
    x = pixels[idx[:, None], rows]  # (b, h, W) whole rows, in the epoch's order
    x = torch.gather(x, 2, cols[:, None, :].expand(b, rows.shape[1], w))
    return x if inside is None else torch.where(inside, x, 0)


def random_crop(
    x: torch.Tensor,
    g: torch.Generator,
    pad: int = 4,
    reflect: bool = True,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop each NHWC image at a random offset from the image padded by ``pad`` pixels
    (mirrored or zero), mirroring those where ``flip`` is True in the same pass."""
    b, h, w, c = x.shape
    maps = crop_indices(b, h, w, g, pad, reflect, flip)
    idx = torch.arange(b, device=x.device)
    return unpack_pixels(gather_crops(pack_pixels(x), idx, *maps), c)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _random_flip_mask(len(x), g)
    return torch.where(flip[:, None, None, None], x.flip(2), x)


def _random_flip_mask(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device) < 0.5


def alternating_flip(x: torch.Tensor, idx: torch.Tensor, epoch: int, seed: int = 0) -> torch.Tensor:
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
    """Paint one ``size``x``size`` square (clipped at the borders) per NHWC image with
    ``fill``, the dataset mean as uint8 (which normalizes to zero)."""
    box = _cutout_box(x.shape[0], x.shape[1], x.shape[2], g, size)
    return torch.where(box[..., None], fill.to(x.device), x)


def _cutout_box(b: int, h: int, w: int, g: torch.Generator, size: int) -> torch.Tensor:
    """(b, h, w) masks, each True on one square centred at a random pixel."""
    device = g.device
    cy = torch.randint(0, h, (b, 1, 1), generator=g, device=device)
    cx = torch.randint(0, w, (b, 1, 1), generator=g, device=device)
    ys = torch.arange(h, device=device)[None, :, None]
    xs = torch.arange(w, device=device)[None, None, :]
    half = size // 2
    return (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)


def build_augment(
    name: str,
    mean_uint8: torch.Tensor,
    crop_pad: int = 4,
    cutout_size: int | None = None,
    seed: int = 0,
) -> Augment | None:
    """The named preset as one function on packed pixels (or None for ``none``).

    ``cutout_size`` defaults to 8 for presets with cutout; given explicitly, it
    adds cutout to any preset. The random draws come in the same order as the NHWC
    functions above take them: flip, crop, cutout.
    """
    crop = ("crop" in name or "translate" in name) and crop_pad > 0
    reflect = "translate" not in name  # translate fills the uncovered border with zeros
    flip = "flip" in name
    alternating = "alt-flip" in name
    cut = (cutout_size or 8) if "cutout" in name or cutout_size is not None else None
    if not (crop or flip or cut):
        return None
    fills = {mean_uint8.device: pack_pixels(mean_uint8.view(1, 1, 1, -1)).view(())}

    def augment(pixels: torch.Tensor, idx: torch.Tensor, g: torch.Generator, epoch: int):
        mask = None
        if alternating:
            mask = alternating_flip_mask(idx, epoch, seed).to(pixels.device)
        elif flip:
            mask = _random_flip_mask(len(idx), g)
        if crop:  # crop and flip in the gather itself
            b, h, w = len(idx), *pixels.shape[1:]
            x = gather_crops(pixels, idx, *crop_indices(b, h, w, g, crop_pad, reflect, mask))
        else:
            x = pixels[idx]
            if mask is not None:
                x = torch.where(mask[:, None, None], x.flip(2), x)
        if cut is not None:
            box = _cutout_box(len(idx), x.shape[1], x.shape[2], g, cut)
            if x.device not in fills:  # once per device, not a copy (and sync) per chunk
                fills[x.device] = next(iter(fills.values())).to(x.device)
            x = torch.where(box, fills[x.device], x)
        return x

    return augment
