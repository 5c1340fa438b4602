"""load_dataset: from a data source to train / validation / test arrays and statistics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cifarlab.data import download as download_module
from cifarlab.data.arrays import DecodedDataset, SplitArrays
from cifarlab.data.cache import (
    PixelStats,
    cache_root,
    cached_content_id,
    cached_decode,
    cached_train_size,
    source_fingerprint,
)
from cifarlab.data.cifar_python import is_cifar_python, read_cifar_python
from cifarlab.data.imagefolder import (
    is_archive,
    read_image_folder,
    resize_images,
)
from cifarlab.data.split import split_off, stratified_pick
from cifarlab.errors import CifarlabError, check_whole_number, warn

HOW_TO_GIVE_DATA = (
    "pass --data cifar10|cifar100 (downloaded), or --data PATH / CIFARLAB_DATA=PATH where "
    "PATH is a CIFAR python archive or folder, or a folder or .tar.gz/.tar.xz/.zip archive "
    "holding train/<class>/* and test/<class>/* images"
)
DEFAULT_DATASET = "cifar10"  # what runs without --data and CIFARLAB_DATA use (downloaded)


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
    content_id: str = ""  # what the decoded data is: an edited dataset is other data

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width), as a model sees one image."""
        _, h, w, c = self.train.images.shape
        return c, h, w

    @property
    def model_shape(self) -> dict[str, Any]:
        """``in_channels`` and ``image_size`` for ``create_model``: a side, or (H, W)."""
        channels, height, width = self.image_shape
        return {"in_channels": channels,  # as models.spec.image_size_of gives it
                "image_size": height if height == width else (height, width)}  # fmt: skip

    def __iter__(self) -> Iterator[Any]:
        """``train, val, test, classes = load_dataset(...)`` unpacks as the four splits' parts."""
        return iter((self.train, self.val, self.test, self.classes))

    def __repr__(self) -> str:  # a notebook shows this: counts and shape, not the pixels
        val = len(self.val) if self.val else 0
        classes = ", ".join(self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
        return (
            f"CifarData({self.source!r}: {len(self.train):,} train, {val:,} val, "
            f"{len(self.test):,} test images of {self.image_shape}; {len(self.classes)} "
            f"classes: {classes})"
        )


def resolve_source(data: str | os.PathLike | None, quiet: bool = False) -> Path:
    """The data path from the argument, else ``$CIFARLAB_DATA``, else a cifar10 download.

    A known name (``cifar10``, ``cifar100``) that is not an existing path is
    downloaded into the cache (or found there); any other path must exist.
    """
    if data is not None and not isinstance(data, str | os.PathLike):
        raise CifarlabError(f"data: a path or cifar10/cifar100, not a {type(data).__name__}")
    raw = _given_or_default(data)
    path = check_source(raw)
    if path is None:
        folder = cache_root() / "downloads"
        try:
            return download_module.download(str(raw).lower(), folder, quiet)
        except OSError as err:  # network errors are CifarlabErrors already: this is the disk
            raise CifarlabError(
                f"cannot write the download to {folder} ({err.strerror or err}); "
                "set CIFARLAB_CACHE to a writable folder"
            ) from None
    return path


def _given_or_default(data: str | os.PathLike | None) -> str | os.PathLike:
    """The data given, else ``$CIFARLAB_DATA``, else the cifar10 download."""
    return data if data is not None else os.environ.get("CIFARLAB_DATA") or DEFAULT_DATASET


def check_source(raw: str | os.PathLike) -> Path | None:
    """The path ``raw`` names, checked without reading it (a sweep's dry run checks this
    much); None for a dataset to download (``cifar10``, ``cifar100``)."""
    path = Path(raw).expanduser()
    if str(raw).lower() in download_module.ARCHIVES and not path.exists():
        return None
    if not path.exists():
        raise CifarlabError(
            f"data path {str(path)!r} does not exist{_whence(path)}: {HOW_TO_GIVE_DATA}"
        )
    if not path.is_dir() and not is_archive(path):
        raise CifarlabError(
            f"data path {str(path)!r} is neither a folder nor a .tar.gz/.tgz/.tar/.tar.xz/"
            f".tar.bz2/.zip archive: {HOW_TO_GIVE_DATA}"
        )
    return path


def _whence(path: Path) -> str:
    """Who named a missing data path and where a relative one was looked for: the error
    repeated the path alone, with no hint that it came from elsewhere."""
    notes = []
    named_by = os.environ.get("CIFARLAB_DATA")
    if named_by and Path(named_by).expanduser() == path:
        notes.append("CIFARLAB_DATA names it")
    if not path.is_absolute():
        notes.append(f"a relative path starts at {os.getcwd()}")
    return f" ({'; '.join(notes)})" if notes else ""


def _check_counts(**counts: tuple[int | None, int]) -> None:
    """Each ``name=(value, least)``: a whole number of at least ``least`` (None: not given);
    from Python, as the CLI's parser and RunConfig check them for ``train``."""
    for name, (value, least) in counts.items():
        if value is not None:
            check_whole_number(name, value, least)


def load_dataset(
    data: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    labels: str = "fine",
    quiet: bool = False,
) -> CifarData:
    """Decode (or reload from cache) a dataset and carve the splits a run uses.

    ``data`` is a known name (``cifar10``/``cifar100``: downloaded), a CIFAR python
    archive or folder, or an image-folder dataset (folder or archive). The validation
    split is a stratified, seeded hold-out of ``val_size`` training images;
    ``limit_train`` then takes a stratified subset of the rest and ``limit_test`` of
    the test split: the same subset whatever the seed and the other limits, so runs that
    differ in them are scored on the same test images. Mean and std come from the final
    training split. ``labels`` picks CIFAR-100's fine or coarse classes; ``image_size``
    resizes to NxN.
    """
    _check_counts(
        val_size=(val_size, 0), limit_train=(limit_train, 1), limit_test=(limit_test, 1),
        seed=(seed, 0),
    )  # fmt: skip
    labels = labels.lower() if isinstance(labels, str) else labels  # as train() reads it
    if labels not in ("fine", "coarse"):  # image folders warned that "x" is for CIFAR-100
        raise CifarlabError(f"labels must be 'fine' or 'coarse', not {labels!r}")
    source = decode_source(data, image_size=image_size, labels=labels, quiet=quiet)
    decoded, stats, path = source.dataset, source.pixel_stats, source.path
    train_all = decoded.train
    _check_val_size(val_size, len(train_all))
    rng = np.random.default_rng(seed)
    val_idx, train_idx = split_off(train_all.labels, val_size, rng)
    _note_limit("--limit-train", limit_train, len(train_idx), "training")
    if limit_train is not None:
        train_idx = train_idx[stratified_pick(train_all.labels[train_idx], limit_train, rng)]
    test = decoded.test
    _note_limit("--limit-test", limit_test, len(test), "test")
    if limit_test is not None:  # the same images for every run: its own generator, fixed
        test = _take(test, stratified_pick(test.labels, limit_test, np.random.default_rng(0)))
    train = _take(train_all, train_idx)
    unseen = len(decoded.classes) - len(np.unique(train.labels))
    if unseen:  # a stratified pick of 5 from 10 balanced classes leaves 5 out
        warn(f"{unseen} of {len(decoded.classes)} classes have no training image in this run; "
             "the net cannot learn them (raise --limit-train)")  # fmt: skip
    mean, std = stats_from_sums(*(a[train_idx] for a in stats["train"]), train.images.shape)
    return CifarData(
        train=train,
        val=_take(train_all, val_idx) if val_size > 0 else None,
        test=test,
        classes=decoded.classes,
        mean=mean,
        std=std,
        source=str(path),
        content_id=source.content_id,
    )


def _check_val_size(val_size: int, available: int) -> None:
    """The default hold-out (5,000, CIFAR's tenth) can be most of a small dataset, or all."""
    tenth = f"--val-size {max(available // 10, 1)}, a tenth,"
    if val_size >= available:
        raise CifarlabError(
            f"--val-size {val_size} leaves no training images (the training split has "
            f"{available:,}); use a smaller --val-size ({tenth} is usual; 0: no validation)"
        )
    if val_size > available // 2:
        share, left = f"{val_size / available:.0%}", f"{available - val_size:,}"
        warn(f"--val-size {val_size} holds out {share} of the {available:,} training images, "
             f"leaving {left} to train on; {tenth} is usual")  # fmt: skip


def _note_limit(option: str, limit: int | None, available: int, split: str) -> None:
    if limit is not None and limit > available:
        warn(f"{option} {limit} is more than the {available:,} {split} images; all are used")


class DecodedSource(NamedTuple):
    """A source's decoded arrays, as cached: what ``load_dataset`` splits and normalizes."""

    dataset: DecodedDataset
    pixel_stats: PixelStats  # per-image pixel sums, for any split's mean/std without a pass
    path: Path  # the resolved source (a download lands in the cache dir)
    cache_entry: Path
    content_id: str  # what the data is (cache.content_id); a run records it


def known_content_id(
    data: str | os.PathLike | None, *, image_size: int | None = None, labels: str = "fine"
) -> str | None:
    """What the source holds now, as far as the cache knows without decoding it: the content
    id of its entry for the source's present files, or None (edited since it was decoded,
    never decoded here, or a dataset still to download). A sweep's dry run reads this."""
    key = _known_cache_key(data, image_size, labels)
    return None if key is None else cached_content_id(key)


def known_train_size(
    data: str | os.PathLike | None, *, image_size: int | None = None, labels: str = "fine"
) -> int | None:
    """The source's training images, as far as the cache knows without decoding (None:
    unknown, as for ``known_content_id``). A sweep's dry run checks --val-size with it."""
    key = _known_cache_key(data, image_size, labels)
    return None if key is None else cached_train_size(key)


def _known_cache_key(
    data: str | os.PathLike | None, image_size: int | None, labels: str
) -> str | None:
    """The cache key of a source on disk, without decoding it (None: a dataset to download)."""
    path = check_source(_given_or_default(data))
    return None if path is None else _cache_key(path, image_size, labels)


def _cache_key(path: Path, image_size: int | None, labels: str) -> str:
    if is_cifar_python(path):
        return source_fingerprint(path, kind="cifar-python", image_size=image_size, labels=labels)
    return source_fingerprint(path, image_size=image_size)


def decode_source(
    data: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    labels: str = "fine",
    quiet: bool = False,
) -> DecodedSource:
    """The source's decoded arrays, from the cache when it holds them."""
    _check_counts(**{"--image-size": (image_size, 1)})
    path = resolve_source(data, quiet)
    key = _cache_key(path, image_size, labels)
    if is_cifar_python(path):
        decode = lambda: resize(_read_cifar_python(path, labels), image_size)
    else:
        if labels != "fine":
            note = f"--labels {labels} is for CIFAR-100; in {path} the folders are the classes"
            warn(note)
        decode = lambda: read_image_folder(path, image_size, quiet)
    decoded, stats, entry, content_id = cached_decode(key, decode)
    for note in decoded.notes:  # on cached loads too: a later run must still hear of it
        warn(note)
    return DecodedSource(decoded, stats, path, entry, content_id)


def _read_cifar_python(path: Path, labels: str) -> DecodedDataset:
    try:
        return read_cifar_python(path, labels)
    except CifarlabError:  # a download damaged since it was verified is fetched afresh
        download_module.distrust(path)
        raise


def resize(decoded: DecodedDataset, image_size: int | None) -> DecodedDataset:
    """``decoded`` with every image resized to ``image_size`` squared (bilinear, as folders)."""
    if image_size is None:
        return decoded

    def one(split: SplitArrays) -> SplitArrays:
        return SplitArrays(resize_images(split.images, image_size), split.labels)

    return type(decoded)(one(decoded.train), one(decoded.test), decoded.classes, decoded.notes)


def stats_from_sums(
    sums: np.ndarray, squares: np.ndarray, shape: tuple[int, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] from per-image int64 sums (exact integer totals)."""
    count = max(len(sums), 1) * shape[1] * shape[2]
    total, total_sq = sums.sum(0).astype(np.float64), squares.sum(0).astype(np.float64)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def _take(split: SplitArrays, idx: np.ndarray) -> SplitArrays:
    return SplitArrays(split.images[idx], split.labels[idx])
