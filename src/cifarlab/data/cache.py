"""Disk cache of decoded datasets: one folder of ``.npy`` arrays per source fingerprint.

Decoding 60k JPEGs takes seconds; reloading the arrays takes a fraction of one.
A cache entry is written to a temporary folder and renamed into place, so a
crash never leaves a half-written entry; an entry that fails to load is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifarlab.data.imagefolder import SPLITS, DecodedDataset, SplitArrays

CACHE_FORMAT = 1


def cache_root() -> Path:
    """``$CIFARLAB_CACHE`` or ``~/.cache/cifarlab``."""
    return Path(os.environ.get("CIFARLAB_CACHE") or Path.home() / ".cache" / "cifarlab")


def source_fingerprint(path: Path, **params: object) -> str:
    """A key that changes when the source (path, sizes, mtimes) or decode params change."""
    path = path.resolve()
    h = hashlib.sha256(f"{CACHE_FORMAT}|{path}|{sorted(params.items())}".encode())
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            st = file.stat()
            h.update(f"{file.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    else:
        st = path.stat()
        h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def cached_decode(key: str, decode: Callable[[], DecodedDataset]) -> DecodedDataset:
    """Return the cached arrays for ``key``, decoding (and caching) them on a miss."""
    entry = cache_root() / f"decoded-{key}"
    if entry.is_dir():
        try:
            return _load(entry)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            shutil.rmtree(entry, ignore_errors=True)  # stale or corrupt: rebuild
    dataset = decode()
    with contextlib.suppress(OSError):  # an unwritable cache only costs speed next time
        _store(entry, dataset)
    return dataset


def _load(entry: Path) -> DecodedDataset:
    meta = json.loads((entry / "meta.json").read_text())
    splits = {}
    for split in SPLITS:
        images = np.load(entry / f"{split}_images.npy")
        labels = np.load(entry / f"{split}_labels.npy")
        if images.shape != tuple(meta[split]["shape"]) or len(labels) != len(images):
            raise ValueError(f"cache entry {entry} does not match its metadata")
        splits[split] = SplitArrays(images, labels)
    return DecodedDataset(splits["train"], splits["test"], tuple(meta["classes"]))


def _store(entry: Path, dataset: DecodedDataset) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        meta: dict = {"classes": list(dataset.classes), "format": CACHE_FORMAT}
        for split in SPLITS:
            arrays: SplitArrays = getattr(dataset, split)
            np.save(tmp / f"{split}_images.npy", arrays.images)
            np.save(tmp / f"{split}_labels.npy", arrays.labels)
            meta[split] = {"shape": list(arrays.images.shape)}
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: marks completeness
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not entry.is_dir():
            raise
