"""What every data source decodes to: uint8 arrays per split, and the class names.

The image-folder and CIFAR-pickle readers produce these, the cache stores them, and the
loader serves batches from them; none of those needs to know where the images came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SplitArrays:
    """One split: uint8 images (N, H, W, C) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:  # a notebook shows this: shapes, not 150 MB of pixels
        images = f"{self.images.dtype}{list(self.images.shape)}"
        return f"SplitArrays(images={images}, labels={len(self)})"


@dataclass(frozen=True)
class DecodedDataset:
    """What a source decodes to: the official train and test splits and class names."""

    train: SplitArrays
    test: SplitArrays
    classes: tuple[str, ...]
    notes: tuple[str, ...] = ()  # warnings about the source, repeated on every (cached) load
