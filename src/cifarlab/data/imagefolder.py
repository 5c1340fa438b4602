"""Read an image-folder dataset (``train/<class>/*``, ``test/<class>/*``).

The source may be a folder or a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive of
one, read in place (nothing is extracted to disk). Every image is decoded once
with Pillow into one uint8 array per split, NHWC, so the rest of cifarlab never
touches an image file again.
"""

from __future__ import annotations

import gzip
import io
import multiprocessing
import os
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from cifarlab.errors import CifarlabError

SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_IGNORED_PARTS = ("__MACOSX",)
_IN_MEMORY_LIMIT = 512 << 20  # archives smaller than this are decompressed in one go
_CHUNK = 2048  # images per decoding task


@dataclass(frozen=True)
class SplitArrays:
    """One split: uint8 images (N, H, W, C) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DecodedDataset:
    """What a source decodes to: the official train and test splits and class names."""

    train: SplitArrays
    test: SplitArrays
    classes: tuple[str, ...]


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def read_image_folder(path: Path, image_size: int | None = None) -> DecodedDataset:
    """Decode every image of an image-folder dataset at ``path`` (folder or archive).

    ``image_size`` resizes every image to a square of that side; without it all
    images must already share one size.
    """
    files = list(_iter_files(path))
    entries = _parse_layout(files, path)
    classes = _check_classes(entries, path)
    splits = {}
    for split in SPLITS:
        items = sorted(entries[split].items())  # (class, name) order: deterministic
        blobs = [blob for _, blob in items]
        names = [f"{split}/{cls}/{name}" for (cls, name), _ in items]
        labels = np.array([classes.index(cls) for (cls, _), _ in items], dtype=np.int64)
        images = _decode_all(blobs, names, path, image_size)
        splits[split] = SplitArrays(images, labels)
    shapes = {splits[s].images.shape[1:] for s in SPLITS}
    if len(shapes) > 1:
        raise CifarlabError(
            f"{path}: train and test images differ in size ({sorted(shapes)}); "
            "pass --image-size N to resize them all to NxN"
        )
    return DecodedDataset(splits["train"], splits["test"], classes)


def _iter_files(path: Path) -> Iterator[tuple[PurePosixPath, bytes]]:
    """Yield (relative posix path, file bytes) for every regular file of the source."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file():
                yield PurePosixPath(file.relative_to(path).as_posix()), file.read_bytes()
        return
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        yield _safe_member(info.filename, path), archive.read(info)
        else:
            # Parsing from memory is 2x faster than streaming through gzip for small files.
            small = path.stat().st_size < _IN_MEMORY_LIMIT
            source = io.BytesIO(_read_decompressed(path)) if small else None
            with tarfile.open(path if source is None else None, "r:*", fileobj=source) as archive:
                for member in archive:
                    if member.isfile():
                        member_path = _safe_member(member.name, path)
                        yield member_path, archive.extractfile(member).read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise CifarlabError(
            f"{path}: cannot read the archive ({err}); it may be truncated or corrupt, "
            "download or build it again"
        ) from None


def _read_decompressed(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    """Refuse members that would escape the dataset root (absolute paths, ``..``)."""
    member = PurePosixPath(name)
    if member.is_absolute() or ".." in member.parts or name.startswith("\\"):
        raise CifarlabError(
            f"{archive}: refusing unsafe archive member {name!r} (absolute path or '..'); "
            "use an archive whose paths stay inside it"
        )
    return member


def _parse_layout(
    files: list[tuple[PurePosixPath, bytes]], source: Path
) -> dict[str, dict[tuple[str, str], bytes]]:
    """Map each split to {(class, file name): bytes}, accepting one optional top folder."""
    entries: dict[str, dict[tuple[str, str], bytes]] = {s: {} for s in SPLITS}
    for rel, blob in files:
        parts = rel.parts
        if any(p.startswith(".") or p in _IGNORED_PARTS for p in parts):
            continue  # macOS/editor litter such as .DS_Store or __MACOSX/
        if len(parts) == 4 and parts[1] in SPLITS:
            parts = parts[1:]  # one wrapping folder, e.g. cifar10-jpeg/train/cat/0001.jpg
        if len(parts) == 3 and parts[0] in SPLITS:
            entries[parts[0]][(parts[1], parts[2])] = blob
    missing = [s for s in SPLITS if not entries[s]]
    if missing:
        raise CifarlabError(
            f"{source}: not an image-folder dataset: no images under "
            f"{' or '.join(m + '/<class>/' for m in missing)}; expected train/<class>/*.png "
            "and test/<class>/*.png (optionally inside one top folder)"
        )
    return entries


def _check_classes(entries: dict[str, dict[tuple[str, str], bytes]], source: Path) -> tuple:
    per_split = {s: sorted({cls for cls, _ in entries[s]}) for s in SPLITS}
    if per_split["train"] != per_split["test"]:
        only_train = set(per_split["train"]) - set(per_split["test"])
        only_test = set(per_split["test"]) - set(per_split["train"])
        raise CifarlabError(
            f"{source}: train and test have different classes (only in train: "
            f"{sorted(only_train) or 'none'}, only in test: {sorted(only_test) or 'none'}); "
            "give both splits the same class folders"
        )
    if len(per_split["train"]) < 2:
        raise CifarlabError(f"{source}: found one class only; a classifier needs at least two")
    return tuple(per_split["train"])


def _decode_all(
    blobs: list[bytes], names: list[str], source: Path, image_size: int | None
) -> np.ndarray:
    starts = range(0, len(blobs), _CHUNK)
    args = [(blobs[i : i + _CHUNK], names[i : i + _CHUNK], source, image_size) for i in starts]
    workers = min(os.cpu_count() or 1, len(args))
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        # Decoding holds the GIL, so threads don't help; forked processes halve the time.
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            decoded = list(pool.map(_decode_chunk, *zip(*args)))
    else:
        decoded = [_decode_chunk(*a) for a in args]
    arrays = [a for chunk, _ in decoded for a in chunk]
    converted = sum(n for _, n in decoded)
    if converted:
        warnings.warn(
            f"{source}: {converted} grayscale/non-RGB image(s) converted to RGB", stacklevel=3
        )
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise CifarlabError(
            f"{source}: images have different sizes ({', '.join(map(str, sorted(shapes)[:3]))}); "
            "pass --image-size N to resize them all to NxN"
        )
    return np.stack(arrays)


def _decode_chunk(
    blobs: list[bytes], names: list[str], source: Path, image_size: int | None
) -> tuple[list[np.ndarray], int]:
    out, converted = [], 0
    for blob, name in zip(blobs, names):
        try:
            with Image.open(io.BytesIO(blob)) as image:
                if image.mode != "RGB":
                    converted += 1
                    image = image.convert("RGB")
                if image_size is not None and image.size != (image_size, image_size):
                    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                out.append(np.asarray(image, dtype=np.uint8))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise CifarlabError(
                f"{source}: {name} is not a readable image ({type(err).__name__}); "
                "remove it or replace it with a valid PNG/JPEG"
            ) from None
    return out, converted
