"""TensorLoader: batches sliced from whole splits held as packed pixels on the device.

No Dataset, no worker processes, no per-image Python. Batches are cut from
chunks of several hundred images prepared at once (one gather that shuffles, crops
and flips packed pixels, then one conversion to normalized float): a batch of 64 is
too small for torch's per-op overhead to vanish, a chunk is not. bf16 batches under
bf16 autocast took a ``tutorial`` epoch from 7.4k to 8.9k images/s, and gathering
packed pixels instead of masked copies of uint8 bytes made the loader alone 1.7-2.5x faster
(``benchmarks/loader.py``; BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from cifarlab.data.arrays import SplitArrays
from cifarlab.data.augment import Augment, pack_pixels, unpack_pixels

CHUNK_BYTES = 8 << 20  # of float images per chunk (~680 at 32x32): stays in cache (1.3x vs 32 MiB)
# On a GPU, prepare (like airbench) up to the whole epoch at once: fewer launches, and
# memory is plentiful there. A constant, not a share of free memory: augmentation draws its
# random numbers per chunk, so the chunks decide a seeded run's crops and flips.
GPU_CHUNK_BYTES = 1 << 30


class TensorLoader:
    """Iterate (images, labels) batches of one split.

    Images stay packed pixels (an RGB pixel's bytes as one int32: 4/3 the split's uint8
    size) until the last step; ``permute`` then gives NCHW shape with channels_last
    strides for free (or ``.contiguous()`` for NCHW).
    The shuffle and augmentation of epoch ``e`` depend only on ``(seed, e)``,
    so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        split: SplitArrays,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        channels_last: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        images = torch.from_numpy(split.images)
        self.channels = images.shape[-1]
        # (N, H, W), one integer per pixel; packed before the move, so a GPU gets one copy
        self.pixels = pack_pixels(images).to(self.device)
        self.labels = torch.from_numpy(split.labels).to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment, self.seed, self.channels_last = augment, seed, channels_last
        self.dtype = dtype  # bf16 under bf16 autocast: half the bytes, and the model casts anyway
        # one value per pixel of an image, in the batches' layout: broadcast over the batch
        # only, the fused normalization vectorizes; per channel (innermost, of size 3 in
        # channels_last) it did not (the loader alone, with the packed gather: BENCHMARKS.md)
        _, h, w = self.pixels.shape
        layout = torch.channels_last if channels_last else torch.contiguous_format
        per_pixel = (1, self.channels, h, w)
        std_255 = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        mean_255 = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        inv_std = 1 / std_255
        shift = -mean_255 * inv_std  # (x - mean) / std == x * inv_std + shift
        self.inv_std = inv_std.expand(per_pixel).contiguous(memory_format=layout)
        self.shift = shift.expand(per_pixel).contiguous(memory_format=layout)
        self.epoch = 0
        self._positions = torch.arange(len(self.labels), device=self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        """Images one epoch yields: the split, less the partial batch that drop_last drops."""
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator(device=self.device)
        # a stream per (seed, epoch): seeds a million epochs apart, so seed s+1 never meets s's
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=g, device=self.device) if self.shuffle else None
        bs, per_chunk = self.batch_size, self._batches_per_chunk()
        for first in range(0, len(self), per_chunk):
            count = min(per_chunk, len(self) - first)
            sl = slice(first * bs, min((first + count) * bs, n))
            x, y = self._prepare(sl, order, g)
            for i in range(count):  # slices of a prepared chunk are views: no copies
                yield x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]

    def _batches_per_chunk(self) -> int:
        image_bytes = 4 * math.prod(self.pixels.shape[1:]) * self.channels  # as float32
        budget = CHUNK_BYTES if self.device.type == "cpu" else GPU_CHUNK_BYTES
        return max(1, budget // (image_bytes * self.batch_size))

    def _prepare(self, sl: slice, order: torch.Tensor | None, g: torch.Generator):
        """The images and labels at positions ``sl`` of this epoch's order, ready to train on."""
        idx = order[sl] if order is not None else sl  # a slice is a view: no copy
        if self.augment is None:
            x = self.pixels[idx]
        else:  # split indices + epoch: per-image schedules (alt-flip)
            positions = idx if order is not None else self._positions[sl]
            x = self.augment(self.pixels, positions, g, self.epoch)
        return self._to_model_input(unpack_pixels(x, self.channels)), self.labels[idx]

    def _to_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized NCHW batches in ``self.dtype``, channels_last unless told otherwise."""
        x = x.permute(0, 3, 1, 2)  # NHWC storage -> NCHW shape, channels_last strides
        if not self.channels_last:
            x = x.contiguous()
        # normalize into fp32, then convert to bf16 in a pass of its own: faster than
        # having addcmul write bf16, which does not vectorize (same bits either way)
        x = torch.addcmul(self.shift, x, self.inv_std)  # keeps the channels_last strides
        return x.to(self.dtype)  # also fp32 when mean/std came as float64
