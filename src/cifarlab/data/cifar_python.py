"""Read the official CIFAR-10 / CIFAR-100 "python version" (pickled batches).

Accepts ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` read in place,
or their extracted ``cifar-10-batches-py/`` / ``cifar-100-python/`` folder. The
batches are pickles, and unpickling runs code named by the file, so a restricted
Unpickler allows only what numpy arrays need to rebuild themselves.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from cifarlab.config import LABELS
from cifarlab.data.arrays import DecodedDataset, SplitArrays
from cifarlab.data.imagefolder import (
    ARCHIVE_ERRORS,
    is_archive,
    read_to_end,
    safe_member,
)
from cifarlab.errors import CifarlabError, first_line

# file names of each variant; "labels" keys differ between CIFAR-10 and CIFAR-100
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
_META = {"batches.meta": "cifar10", "meta": "cifar100"}
# "meta" alone is too common a file name to take a folder for CIFAR-100: its batches too
_BESIDE_META = {"batches.meta": set(), "meta": {"train", "test"}}

# Everything a pickled numpy array (old or new numpy, any protocol) may name; nothing else.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - see module docstring
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(blob: bytes, name: str, source: Path) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a bad file, never a bug of ours
        raise CifarlabError(
            f"{source}: {name} is not a readable CIFAR pickle ({type(err).__name__}: {err}); "
            "the file is damaged: use a fresh copy of the dataset"
        ) from None
    if not isinstance(obj, dict):
        raise CifarlabError(f"{source}: {name} holds a {type(obj).__name__}, not a CIFAR batch")
    return obj


def is_cifar_python(path: Path) -> bool:
    """True for a CIFAR python archive or folder (a peek, not a full read)."""
    if path.is_dir():
        return _find_root(path) is not None
    if not is_archive(path) or path.name.lower().endswith(".zip"):
        return False
    try:
        with tarfile.open(path, "r:*") as archive:
            folders: dict[PurePosixPath, set[str]] = {}
            for _, member in zip(range(20), archive):  # the official layout comes first
                if member.isfile():
                    name = PurePosixPath(member.name)
                    names = folders.setdefault(name.parent, set())
                    names.add(name.name)
                    if _holds_meta(names):  # no further: damage later on is the reader's
                        return True  # to report, and a damaged download's to fetch again
    except ARCHIVE_ERRORS:
        return False  # the image-folder reader reports the broken archive
    return False


def _holds_meta(names: set[str]) -> bool:
    """A folder's file names include a CIFAR meta file and the batches that go with it."""
    return any(meta in names and (not beside or beside & names)
               for meta, beside in _BESIDE_META.items())  # fmt: skip


def _find_root(folder: Path) -> Path | None:
    named = {*_META, *_BESIDE_META["meta"]}
    holding = [
        candidate
        for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir()))
        if _holds_meta({name for name in named if (candidate / name).is_file()})
    ]
    if len(holding) > 1 and holding[0] != folder:  # as the archive reader refuses it
        shown = ", ".join(f"{p.name}/" for p in holding)
        raise CifarlabError(
            f"{folder}: holds {len(holding)} CIFAR datasets ({shown}); point --data at one"
        )
    return holding[0] if holding else None


def read_cifar_python(path: Path, labels: str = "fine") -> DecodedDataset:
    """Decode a CIFAR-10/100 python source into uint8 NHWC arrays.

    ``labels`` picks CIFAR-100's 100 ``fine`` or 20 ``coarse`` classes (CIFAR-10 ignores it).
    """
    if labels not in LABELS:
        raise CifarlabError(f"--labels must be fine or coarse (got {labels!r})")
    files = _read_files(path)
    meta_name = next((m for m in _META if m in files), None)
    if meta_name is None:
        raise CifarlabError(f"{path}: no batches.meta or meta file; not a CIFAR python dataset")
    meta = _unpickle(files[meta_name], meta_name, path)
    if _META[meta_name] == "cifar10":
        layout, names_key, labels_key = CIFAR10_FILES, b"label_names", b"labels"
    else:
        layout = CIFAR100_FILES
        names_key, labels_key = f"{labels}_label_names".encode(), f"{labels}_labels".encode()
    classes = tuple(_decode_name(n) for n in _require(meta, names_key, meta_name, path))
    splits = {}
    for split, batch_names in layout.items():
        missing = [n for n in batch_names if n not in files]
        if missing:
            raise CifarlabError(
                f"{path}: missing {', '.join(missing)} beside {meta_name}; the dataset is "
                "incomplete: use a fresh copy"
            )
        parts = [_batch(files[n], n, labels_key, len(classes), path) for n in batch_names]
        images = np.concatenate([p[0] for p in parts])
        splits[split] = SplitArrays(images, np.concatenate([p[1] for p in parts]))
    _check_every_class_trains(splits["train"].labels, classes, meta_name, path)
    ignored = _META[meta_name] == "cifar10" and labels != "fine"
    notes = (f"--labels {labels} is for CIFAR-100; {path} is CIFAR-10, which has one set",)
    return DecodedDataset(splits["train"], splits["test"], classes, notes * ignored)


_WANTED = {*_META, *CIFAR10_FILES["train"], *CIFAR10_FILES["test"], "train", "test"}


def _read_files(path: Path) -> dict[str, bytes]:
    """{base name: bytes} of the CIFAR files in the meta file's folder, from the folder or
    the archive in place."""
    if path.is_dir():
        root = _find_root(path) or path
        return {f.name: f.read_bytes() for f in root.iterdir() if f.name in _WANTED and f.is_file()}
    files = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = safe_member(member.name, path)
                if member.isfile() and parts and parts[-1] in _WANTED:
                    files[parts] = archive.extractfile(member).read()
            read_to_end(archive)
    except ARCHIVE_ERRORS as err:
        raise CifarlabError(
            f"{path}: cannot read the archive ({first_line(err)}); it may be truncated or corrupt, "
            "download it again"
        ) from None
    return _one_folder(files, path)


def _one_folder(files: dict[tuple[str, ...], bytes], path: Path) -> dict[str, bytes]:
    """The files beside the archive's one meta file: a stray ``backup/data_batch_1``
    elsewhere in the archive must not stand in for the real one."""
    metas = sorted("/".join(p) for p in files if p[-1] in _META)
    if len(metas) > 1:
        raise CifarlabError(
            f"{path}: holds {len(metas)} CIFAR datasets ({', '.join(metas)}); "
            "pack one dataset per archive"
        )
    folder = next((p[:-1] for p in files if p[-1] in _META), None)
    return {p[-1]: blob for p, blob in files.items() if folder is None or p[:-1] == folder}


def _require(batch: dict, key: bytes, name: str, source: Path):
    """``batch[key]``; a batch saved again by Python 3 has str keys, which serve as well."""
    for k in (key, key.decode()):
        if k in batch:
            return batch[k]
    found = ", ".join(repr(k) for k in list(batch)[:6])
    raise CifarlabError(
        f"{source}: {name} has no key {key.decode()!r} (found {found}); "
        "not a CIFAR batch of this kind"
    )


def _batch(
    blob: bytes, name: str, labels_key: bytes, n_classes: int, source: Path
) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(blob, name, source)
    data = np.asarray(_require(batch, b"data", name, source))
    labels = np.asarray(_require(batch, labels_key, name, source))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise CifarlabError(
            f"{source}: {name} data is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
        )
    if labels.shape != (len(data),):
        raise CifarlabError(
            f"{source}: {name} has labels of shape {labels.shape} for {len(data)} images; "
            "expected one label per image"
        )
    if labels.size and labels.dtype.kind not in "iu":  # 1.5 must not train as class 1
        raise CifarlabError(f"{source}: {name} labels are {labels.dtype}, expected integers")
    labels = labels.astype(np.int64)
    if labels.size and not 0 <= labels.min() <= labels.max() < n_classes:
        raise CifarlabError(
            f"{source}: {name} has labels {labels.min()}..{labels.max()}, but its meta file "
            f"names {n_classes} classes (0..{n_classes - 1})"
        )
    # rows are channel-major (1024 R, 1024 G, 1024 B): CHW -> NHWC
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _check_every_class_trains(
    labels: np.ndarray, classes: tuple[str, ...], meta_name: str, path: Path
) -> None:
    """A class the meta file names but no training image has would train as a dead output."""
    empty = [c for c, n in zip(classes, np.bincount(labels, minlength=len(classes))) if not n]
    if empty:
        shown = ", ".join(map(repr, empty[:5])) + (f" and {len(empty) - 5} more" * (len(empty) > 5))
        raise CifarlabError(
            f"{path}: {meta_name} names {len(classes)} classes, but no training image is "
            f"labelled {shown}; fix the meta file's label names"
        )


def _decode_name(name: bytes | str) -> str:
    if not isinstance(name, bytes):
        return str(name)
    try:
        return name.decode()
    except UnicodeDecodeError:  # Python 2 pickles hold whatever bytes their author typed
        return name.decode("latin-1")
