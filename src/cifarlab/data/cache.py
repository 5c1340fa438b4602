"""Disk cache of decoded datasets: one folder of ``.npy`` arrays per source fingerprint.

Decoding 60k JPEGs takes seconds; reloading the arrays takes a fraction of one.
A cache entry is written to a temporary folder and renamed into place, so a
crash never leaves a half-written entry. The key only sees the source's path,
sizes and mtimes, so meta.json also holds a crc32 of every array and of the class names:
an entry that fails to load or to match is rebuilt, never trusted.

Each entry also keeps per-image channel sums and sums of squares (int64, (N, C)),
so the mean/std of any subset is an exact sum over its indices, not a pass over pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifarlab.data.arrays import SPLITS, DecodedDataset, SplitArrays
from cifarlab.data.imagefolder import is_litter, walk_folder, workspace_folders
from cifarlab.process import pid_alive

# 3: meta.json keeps the source's warnings ("notes"); 4: nested class folders; 5: a crc32 of
# the class names and notes too
CACHE_FORMAT = 5


def cache_root() -> Path:
    """``$CIFARLAB_CACHE`` or ``~/.cache/cifarlab``."""
    return Path(os.environ.get("CIFARLAB_CACHE") or Path.home() / ".cache" / "cifarlab")


def source_fingerprint(path: Path, **params: object) -> str:
    """A key that changes when the source (path, sizes, mtimes) or decode params change.

    It reads ``<source>-<content>``: entries of one source (path and params) share the
    first half, so a new entry can replace the stale ones (``cached_decode``). Files the
    loader skips (.DS_Store, Thumbs.db) are not part of the content.
    """
    path = path.resolve()
    source = hashlib.sha256(f"{CACHE_FORMAT}|{path}|{sorted(params.items())}".encode())
    content = hashlib.sha256()
    if path.is_dir():
        # a workspace kept in the data folder (`cd data; cifarlab train --data .`) changed
        # every run's key, and each run decoded the data again
        ours = workspace_folders(path)
        cifar_python = params.get("kind") == "cifar-python"
        for file, is_file in walk_folder(path):
            parts = file.relative_to(path).parts
            if is_litter(parts) or parts[0] in ours:
                continue
            if cifar_python and parts[-1] not in _CIFAR_PYTHON_FILES:  # the rest is not read
                continue
            if is_file:
                try:
                    st = file.stat()
                except OSError:  # a dangling link: the reader names it
                    content.update(f"{'/'.join(parts)}|unreadable\n".encode())
                    continue
                content.update(f"{'/'.join(parts)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            else:  # a new empty class folder must reach the reader, which refuses it
                content.update(f"{'/'.join(parts)}/\n".encode())
    else:
        st = path.stat()
        content.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    return f"{source.hexdigest()[:12]}-{content.hexdigest()[:12]}"


_CIFAR_PYTHON_FILES = {*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                       "batches.meta", "meta", "train", "test"}  # fmt: skip


PixelStats = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (sums, squares), (N, C) int64


def cached_decode(
    key: str, decode: Callable[[], DecodedDataset]
) -> tuple[DecodedDataset, PixelStats, Path, str]:
    """The arrays and per-image stats for ``key`` (decoded and cached on a miss), the entry,
    and the data's ``content_id``."""
    entry = cache_root() / f"decoded-{key}"
    if entry.is_dir():
        try:
            dataset, stats, data_id = _load(entry)
            return dataset, stats, entry, data_id
        except (OSError, ValueError, KeyError, TypeError, EOFError, json.JSONDecodeError):
            shutil.rmtree(entry, ignore_errors=True)  # stale or corrupt: rebuild
    dataset = decode()
    stats = {split: pixel_stats(getattr(dataset, split).images) for split in SPLITS}
    checksums = _checksums(dataset, stats)
    with contextlib.suppress(OSError):  # an unwritable cache only costs speed next time
        _store(entry, dataset, stats, checksums)
        _remove_older_entries(entry)
    return dataset, stats, entry, content_id(checksums, dataset.classes)


def cached_content_id(key: str) -> str | None:
    """The ``content_id`` of the cache entry for ``key`` from its meta alone (no arrays
    read); None where the cache holds none (the source changed since it was decoded, or was
    never decoded here)."""
    try:
        meta = _cached_meta(key)
        return content_id({s: meta[s]["crc32"] for s in SPLITS}, tuple(meta["classes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_train_size(key: str) -> int | None:
    """How many training images the cache entry for ``key`` holds, from its meta alone; None
    where the cache holds none."""
    try:
        return int(_cached_meta(key)["train"]["shape"][0])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _cached_meta(key: str) -> dict:
    return json.loads((cache_root() / f"decoded-{key}" / "meta.json").read_text())


def content_id(checksums: dict[str, dict[str, int]], classes: tuple[str, ...]) -> str:
    """What the decoded data is, whatever its path, file times or stray files beside it: the
    images, labels and class names. A run records it: data edited in place is other data."""
    pixels = {split: [checksums[split]["images"], checksums[split]["labels"]] for split in SPLITS}
    return hashlib.sha256(json.dumps([pixels, list(classes)]).encode()).hexdigest()[:12]


def _checksums(dataset: DecodedDataset, stats: PixelStats) -> dict[str, dict[str, int]]:
    return {split: {name: _crc(a) for name, a in _split_arrays(dataset, stats, split).items()}
            for split in SPLITS}  # fmt: skip


def _split_arrays(dataset: DecodedDataset, stats: PixelStats, split: str) -> dict[str, np.ndarray]:
    arrays: SplitArrays = getattr(dataset, split)
    return dict(zip(_ARRAYS, (arrays.images, arrays.labels, *stats[split])))


def _remove_older_entries(entry: Path) -> None:
    """Delete the entries of the same source from before it changed (each as big as the
    decoded dataset: 184 MB for CIFAR-10)."""
    source = entry.name.rsplit("-", 1)[0]
    for old in entry.parent.glob(f"{source}-*"):
        if old != entry:
            shutil.rmtree(old, ignore_errors=True)


def pixel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image channel sums and sums of squares of uint8 NHWC images, exact in int64."""
    n, c = len(images), images.shape[-1]
    sums, squares = np.empty((n, c), np.int64), np.empty((n, c), np.int64)
    for start in range(0, n, 1024):  # chunks keep the temporaries in cache
        block = images[start : start + 1024].reshape(-1, images[0].size // c, c)
        # channel-major first, so each sum runs over contiguous memory: 9x faster on
        # CIFAR-10's 50k images than summing across the interleaved channels (2.4 s)
        planes = np.ascontiguousarray(block.transpose(0, 2, 1))
        sums[start : start + 1024] = planes.sum(2, dtype=np.int64)
        wide = planes.astype(np.uint16)
        squares[start : start + 1024] = (wide * wide).sum(2, dtype=np.int64)  # 255^2 fits
    return sums, squares


def _crc(array: np.ndarray) -> int:
    """crc32 of the whole array: ~60 ms for CIFAR-10's 184 MB of images here, on top of
    reading them, so damage anywhere in an entry is caught, not only at its ends."""
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def _read(path: Path, name: str) -> np.ndarray:
    # Images are mapped, not read into fresh memory, whose first touch cost more than the
    # copying on a 2-core AMD EPYC VM: its fresh-process reload fell from 0.73 to 0.25 s
    # (benchmarks/loader.py; BENCHMARKS.md, the AVX2 CPU)
    return np.load(path, mmap_mode="r" if name == "images" else None)


def _load(entry: Path) -> tuple[DecodedDataset, PixelStats, str]:
    meta = json.loads((entry / "meta.json").read_text())
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache entry {entry} has an old format")
    splits, stats = {}, {}
    for split in SPLITS:
        arrays = {name: _read(entry / f"{split}_{name}.npy", name) for name in _ARRAYS}
        if {name: _crc(a) for name, a in arrays.items()} != meta[split]["crc32"]:
            raise ValueError(f"cache entry {entry} does not match its checksums")
        # one copy, out of the page cache: a run holds no mapping of the entry, and its
        # arrays are its own to write (the training split is copied by its split anyway)
        images = arrays["images"] if split == "train" else np.array(arrays["images"])
        splits[split] = SplitArrays(images, arrays["labels"])
        stats[split] = (arrays["sums"], arrays["squares"])
    classes, notes = tuple(meta["classes"]), tuple(meta["notes"])
    if _names_crc(classes, notes) != meta["names_crc32"]:
        raise ValueError(f"cache entry {entry} does not match its checksums")
    data_id = content_id({s: meta[s]["crc32"] for s in SPLITS}, classes)
    return DecodedDataset(splits["train"], splits["test"], classes, notes), stats, data_id


def _names_crc(classes: tuple[str, ...], notes: tuple[str, ...]) -> int:
    return zlib.crc32(json.dumps([list(classes), list(notes)]).encode())


_ARRAYS = ("images", "labels", "sums", "squares")


def _remove_abandoned_writes(root: Path) -> None:
    """Delete the half-written entries of processes that died writing them (``kill -9``):
    ``.tmp-PID-*`` of a pid that no longer runs. Others' writes in progress stay."""
    for tmp in root.glob(".tmp-*"):
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _store(
    entry: Path, dataset: DecodedDataset, stats: PixelStats, checksums: dict[str, dict[str, int]]
) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_writes(entry.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=entry.parent))
    try:
        meta: dict = {"classes": list(dataset.classes), "format": CACHE_FORMAT}
        meta["notes"] = list(dataset.notes)
        meta["names_crc32"] = _names_crc(dataset.classes, dataset.notes)
        for split in SPLITS:
            arrays = _split_arrays(dataset, stats, split)
            for name, array in arrays.items():
                np.save(tmp / f"{split}_{name}.npy", array)
            meta[split] = {"shape": list(arrays["images"].shape), "crc32": checksums[split]}
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: marks completeness
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not entry.is_dir():
            raise
