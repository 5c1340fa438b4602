"""load_dataset: from a data source to train / validation / test arrays and statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cifarlab.data.cache import cached_decode, source_fingerprint
from cifarlab.data.imagefolder import SplitArrays, is_archive, read_image_folder
from cifarlab.data.split import split_off, stratified_pick
from cifarlab.errors import CifarlabError

HOW_TO_GIVE_DATA = (
    "pass --data PATH or set CIFARLAB_DATA=PATH, where PATH is a folder or a "
    ".tar.gz/.tar/.zip archive holding train/<class>/* and test/<class>/* images "
    "(e.g. ../shared/data/cifar10-jpeg.tar.gz)"
)


@dataclass(frozen=True)
class CifarData:
    """The three splits a run uses, the class names, and the training split's statistics."""

    train: SplitArrays
    val: SplitArrays | None
    test: SplitArrays
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, in [0, 1], from the training split only
    std: tuple[float, ...]
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width), as a model sees one image."""
        _, h, w, c = self.train.images.shape
        return c, h, w


def resolve_source(data: str | os.PathLike | None) -> Path:
    """The data path from the argument, else ``$CIFARLAB_DATA``; checked to exist."""
    raw = data if data is not None else os.environ.get("CIFARLAB_DATA")
    if not raw:
        raise CifarlabError(f"no dataset given: {HOW_TO_GIVE_DATA}")
    path = Path(raw).expanduser()
    if not path.exists():
        raise CifarlabError(f"data path {str(path)!r} does not exist: {HOW_TO_GIVE_DATA}")
    if not path.is_dir() and not is_archive(path):
        raise CifarlabError(
            f"data path {str(path)!r} is neither a folder nor a .tar.gz/.tgz/.tar/.zip "
            f"archive: {HOW_TO_GIVE_DATA}"
        )
    return path


def load_dataset(
    data: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> CifarData:
    """Decode (or reload from cache) a dataset and carve the splits a run uses.

    The validation split is a stratified, seeded hold-out of ``val_size`` training
    images; ``limit_train`` then takes a stratified subset of the rest and
    ``limit_test`` of the test split. Mean and std come from the final training split.
    """
    path = resolve_source(data)
    key = source_fingerprint(path, image_size=image_size)
    decoded = cached_decode(key, lambda: read_image_folder(path, image_size))
    train_all = decoded.train
    if val_size >= len(train_all):
        raise CifarlabError(
            f"--val-size {val_size} leaves no training images (the training split has "
            f"{len(train_all)}); use a smaller --val-size"
        )
    rng = np.random.default_rng(seed)
    val_idx, train_idx = split_off(train_all.labels, val_size, rng)
    if limit_train is not None:
        train_idx = train_idx[stratified_pick(train_all.labels[train_idx], limit_train, rng)]
    test = decoded.test
    if limit_test is not None:
        test = _take(test, stratified_pick(test.labels, limit_test, rng))
    train = _take(train_all, train_idx)
    mean, std = channel_stats(train.images)
    return CifarData(
        train=train,
        val=_take(train_all, val_idx) if val_size > 0 else None,
        test=test,
        classes=decoded.classes,
        mean=mean,
        std=std,
        source=str(path),
    )


def _take(split: SplitArrays, idx: np.ndarray) -> SplitArrays:
    return SplitArrays(split.images[idx], split.labels[idx])


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NHWC images, scaled to [0, 1]."""
    n, h, w, c = images.shape
    rows = torch.from_numpy(images.reshape(n, -1))
    sums = torch.zeros(h * w * c, dtype=torch.float64)
    squares = torch.zeros(h * w * c, dtype=torch.float64)
    for start in range(0, n, 4096):  # column sums over image rows vectorize well
        chunk = rows[start : start + 4096].float()
        sums += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
    count = n * h * w
    mean = sums.view(-1, c).sum(0) / count
    var = squares.view(-1, c).sum(0) / count - mean**2
    std = var.clamp_min(1e-12).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
