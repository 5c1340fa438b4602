"""TensorLoader: batches sliced from whole splits held as uint8 tensors on the device.

No Dataset, no worker processes, no per-image Python: one gather per batch,
augmentation on the uint8 batch, then one conversion to normalized float.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cifarlab.data.augment import Augment
from cifarlab.data.imagefolder import SplitArrays


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
    ) -> None:
        self.device = torch.device(device)
        self.images = torch.from_numpy(split.images).to(self.device)
        self.labels = torch.from_numpy(split.labels).to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment, self.seed, self.channels_last = augment, seed, channels_last
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape) * 255
        self.inv_std = 1 / (torch.tensor(std, device=self.device).view(shape) * 255)
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
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            idx = order[sl] if order is not None else sl  # a slice is a view: no copy
            x, y = self.images[idx], self.labels[idx]
            if self.augment is not None:  # indices + epoch: per-image schedules (alt-flip)
                positions = idx if order is not None else self._positions[sl]
                x = self.augment(x, g, positions, self.epoch)
            yield self._to_float(x), y

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NHWC storage -> NCHW shape, channels_last strides
        if not self.channels_last:
            x = x.contiguous()
        return (x.float() - self.mean) * self.inv_std
