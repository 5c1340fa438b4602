"""TensorLoader: batches sliced from whole splits held as uint8 tensors on the device.

No Dataset, no worker processes, no per-image Python. Batches are cut from
chunks of several hundred images prepared at once (gather, augmentation on
uint8, one conversion to normalized float): a batch of 64 is too small for
torch's per-op overhead to vanish, a chunk is not. Crop and flip in one pass plus
bf16 batches under bf16 autocast then took a ``tutorial`` epoch from 7.4k to 8.9k
images/s (``benchmarks/loader.py``, two runs half an hour apart on a noisy machine).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from cifarlab.data.augment import Augment
from cifarlab.data.imagefolder import SplitArrays

CHUNK_BYTES = 8 << 20  # images per chunk, as float: stays in cache (1.3x vs 32 MiB, loader.py)
# On a GPU each masked copy of the crop syncs with the host: prepare (like airbench)
# up to the whole epoch at once, memory being plentiful there.
GPU_CHUNK_BYTES = 1 << 30


class TensorLoader:
    """Iterate (images, labels) batches of one split.

    Images stay NHWC uint8 until the last step; ``permute`` then gives NCHW
    shape with channels_last strides for free (or ``.contiguous()`` for NCHW).
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
        self.images = torch.from_numpy(split.images).to(self.device)
        self.labels = torch.from_numpy(split.labels).to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment, self.seed, self.channels_last = augment, seed, channels_last
        self.dtype = dtype  # bf16 under bf16 autocast: half the bytes, and the model casts anyway
        shape = (1, -1, 1, 1)
        mean_255 = torch.tensor(mean, device=self.device).view(shape) * 255
        self.inv_std = 1 / (torch.tensor(std, device=self.device).view(shape) * 255)
        self.shift = -mean_255 * self.inv_std  # (x - mean) / std == x * inv_std + shift
        self.epoch = 0
        self._positions = torch.arange(len(self.labels), device=self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator(device=self.device)
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
        image_bytes = 4 * math.prod(self.images.shape[1:])  # as float32
        budget = CHUNK_BYTES if self.device.type == "cpu" else GPU_CHUNK_BYTES
        return max(1, budget // (image_bytes * self.batch_size))

    def _prepare(self, sl: slice, order: torch.Tensor | None, g: torch.Generator):
        """The images and labels at positions ``sl`` of this epoch's order, ready to train on."""
        idx = order[sl] if order is not None else sl  # a slice is a view: no copy
        x, y = self.images[idx], self.labels[idx]
        if self.augment is not None:  # indices + epoch: per-image schedules (alt-flip)
            positions = idx if order is not None else self._positions[sl]
            x = self.augment(x, g, positions, self.epoch)
        return self._to_model_input(x), y

    def _to_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized NCHW batches in ``self.dtype``, channels_last unless told otherwise."""
        x = x.permute(0, 3, 1, 2)  # NHWC storage -> NCHW shape, channels_last strides
        if not self.channels_last:
            x = x.contiguous()
        out = torch.empty_like(x, dtype=self.dtype)  # keeps the channels_last strides
        return torch.addcmul(self.shift, x.float(), self.inv_std, out=out)  # one fused pass
