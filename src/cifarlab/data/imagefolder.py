"""Read an image-folder dataset (``train/<class>/*``, ``test/<class>/*``).

The source may be a folder or a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive of
one, read in place (nothing is extracted to disk). Every image is decoded once
with Pillow into one uint8 array per split, NHWC, so the rest of cifarlab never
touches an image file again.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import multiprocessing
import os
import posixpath
import stat
import sys
import tarfile
import unicodedata
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from cifarlab.data.arrays import SPLITS, DecodedDataset, SplitArrays
from cifarlab.errors import CifarlabError, bar_disabled, first_line, warn
from cifarlab.experiments.store import database_path
from cifarlab.process import init_decode_worker

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
_IGNORED_PARTS = ("__MACOSX",)
_IGNORED_FILES = ("thumbs.db", "desktop.ini", "icon\r")  # Windows Explorer's, Finder's
# the files that make a CIFAR-10 or a CIFAR-100 python batch folder
_CIFAR_BATCHES = ({"batches.meta", "data_batch_1", "test_batch"}, {"meta", "train", "test"})
_ALL_SPLITS = (*SPLITS, "val", "valid", "validation")  # the last three: not read, but said
_IN_MEMORY_LIMIT = 512 << 20  # archives smaller than this are decompressed in one go
_CHUNK = 2048  # images per decoding task
_HARMLESS_PAX = {b"comment", b"mtime", b"atime", b"ctime", b"uid", b"gid", b"uname", b"gname"}
DEFAULT_SIDE = 32  # images of several sizes are resized to CIFAR's, unless --image-size says
_GRAY_MODES = ("1", "LA", "F")  # kept single-channel (16-bit: _to_8bit)
# what reading a broken archive raises: zlib's own error escapes gzip on some damage
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error,
                  lzma.LZMAError)  # fmt: skip


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def encoded_images(path: Path) -> dict[str, dict[tuple[str, str], bytes]]:
    """Each split's image files, undecoded, by (class, file name): what a per-image pipeline
    such as the PyTorch tutorial's reads (the benchmarks time one against ours)."""
    return _parse_layout(_iter_files(path), path)[0]


def read_image_folder(
    path: Path, image_size: int | None = None, quiet: bool = False
) -> DecodedDataset:
    """Decode every image of an image-folder dataset at ``path`` (folder or archive).

    ``image_size`` resizes every image to a square of that side; without it images
    keep their size, unless they come in several (then 32x32). Channels follow the
    data: all grayscale gives C=1, a mix of grayscale and colour is converted to RGB
    with a warning.
    """
    entries, layout_notes = _parse_layout(_iter_files(path), path)
    classes = _check_classes(entries, path)
    blobs, names, counts, labels = [], [], {}, {}
    for split in SPLITS:
        items = sorted(entries[split].items())  # (class, name) order: deterministic
        blobs += [blob for _, blob in items]
        names += [f"{split}/{cls}/{name}" for (cls, name), _ in items]
        counts[split] = len(items)
        labels[split] = np.array([classes.index(cls) for (cls, _), _ in items], dtype=np.int64)
    images, converted, size_notes = _decode_all(blobs, names, path, image_size, quiet)
    train, test = images[: counts["train"]], images[counts["train"] :]
    if converted:
        size_notes += (f"{path}: {converted} grayscale/non-RGB image(s) converted to RGB",)
    notes = layout_notes + size_notes
    return DecodedDataset(
        SplitArrays(train, labels["train"]), SplitArrays(test, labels["test"]), classes, notes
    )


def _iter_files(path: Path) -> Iterator[tuple[tuple[str, ...], bytes | None]]:
    """Yield (relative path parts, file bytes) per regular file and (parts, None) per folder."""
    if path.is_dir():
        ours = workspace_folders(path)
        for file, is_file in walk_folder(path):
            parts = file.relative_to(path).parts
            if parts[0] in ours:
                continue
            if is_file and not {part.lower() for part in parts[:2]} & set(SPLITS):
                # outside train/ and test/ (or one top folder's): named in a warning, never
                # read. A dangling link there stopped the run, and `--data ~` read the home.
                yield parts, b""
            else:
                yield parts, (_read(file, path) if is_file else None)
        return
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = _zip_name(info).replace("\\", "/")  # zipped on Windows by some tools
                    blob = None if name.endswith("/") else _zip_read(archive, info, name, path)
                    yield safe_member(name.rstrip("/"), path), blob
        elif path.stat().st_size < _IN_MEMORY_LIMIT:
            # Parsing from memory is 2x faster than streaming through gzip for small files,
            # and plain ustar headers parse ~10x faster by hand than through tarfile.
            raw = _read_decompressed(path)
            members = _fast_tar(raw)
            if members is None:
                yield from _tar_members(path, io.BytesIO(raw))
            else:
                yield from ((safe_member(n, path), b) for n, b in members)
        else:
            yield from _tar_members(path, None)
    except ARCHIVE_ERRORS as err:
        raise CifarlabError(
            f"{path}: cannot read the archive ({first_line(err)}); it may be truncated or corrupt, "
            "download or build it again"
        ) from None


def workspace_folders(root: Path) -> set[str]:
    """The cifarlab workspaces in a data folder's top (a folder holding runs.db): not data."""
    try:
        return {p.name for p in root.iterdir() if database_path(p).is_file()}
    except OSError:
        return set()


def _zip_name(info: zipfile.ZipInfo) -> str:
    """A member's name. Info-ZIP's `zip` stores UTF-8 names without the flag that says so,
    and zipfile then reads them as cp437: class `chat_é` came out `chat_├⌐`."""
    if info.flag_bits & 0x800:  # flagged UTF-8: zipfile decoded it right
        return info.filename
    try:
        return info.orig_filename.encode("cp437").decode("utf-8")
    except UnicodeError:  # really cp437 (old DOS tools)
        return info.filename


def _zip_read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, source: Path) -> bytes:
    if info.flag_bits & 0x1:
        raise CifarlabError(
            f"{source}: {name!r} is encrypted; unzip it with its password and pass the folder"
        )
    if stat.S_ISLNK(info.external_attr >> 16):  # `zip -y` keeps a link as its target's path
        raise CifarlabError(
            f"{source}: {name!r} is a symbolic link; zip without -y (--symlinks) so the file "
            "itself is stored, or extract the zip and pass the folder"
        )
    try:
        return archive.read(info)
    except NotImplementedError as err:  # Deflate64 (Windows Explorer's, for large zips)...
        raise CifarlabError(
            f"{source}: cannot read {name!r} ({err}); zip it again with ordinary deflate "
            "(`zip -r`), or extract it and pass the folder"
        ) from None


def _read(file: Path, source: Path) -> bytes:
    try:
        if not stat.S_ISREG(file.stat().st_mode):  # reading a named pipe would wait forever
            raise CifarlabError(
                f"{source}: {file.relative_to(source)} is not a regular file (a pipe, socket "
                "or device); remove it"
            )
        return file.read_bytes()
    except OSError as err:  # a dangling link, a file without read permission
        raise CifarlabError(
            f"{source}: cannot read {file.relative_to(source)} ({err.strerror or err}); "
            "fix or remove it"
        ) from None


def walk_folder(root: Path) -> Iterator[tuple[Path, bool]]:
    """Every folder and file under ``root`` as (path, is_file), sorted, following symbolic
    links as torchvision's ImageFolder does; a link back to a folder above it (a loop) is
    not followed, while two links to one folder each count."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        real = os.path.realpath(folder)
        if any(os.path.realpath(root / up) == real for up in here.relative_to(root).parents):
            dirs.clear()  # a loop: this folder is one of its own ancestors
            continue
        dirs.sort()
        if here != root:
            yield here, False
        for name in sorted(files):
            yield here / name, True


def _tar_members(
    path: Path, fileobj: io.BytesIO | None
) -> Iterator[tuple[tuple[str, ...], bytes | None]]:
    with tarfile.open(
        None if fileobj else path, "r:*", fileobj=fileobj, tarinfo=_EndMarkingTarInfo
    ) as archive:
        folder_links = []
        for member in archive:
            if member.isfile():
                yield safe_member(member.name, path), archive.extractfile(member).read()
            elif member.islnk() or member.issym():
                # a second name of a file (GNU tar stores hard links so), as the folder's
                # link would be followed; the bytes come from the archive, never the disk
                blob = _link_target(archive, member)
                if blob is None:  # a folder, maybe further on: its files come at the end
                    folder_links.append(member)
                else:
                    yield safe_member(member.name, path), blob
            elif member.isdir():
                yield safe_member(member.name, path), None
        if not getattr(archive, "ended_cleanly", False):
            # tarfile stops quietly where an archive is cut between members or garbled
            raise tarfile.ReadError("no end-of-archive marker after the last whole member")
        for link in folder_links:
            yield from _linked_folder(archive, link, path)
        read_to_end(archive)


class _EndMarkingTarInfo(tarfile.TarInfo):
    """Marks the TarFile when it reads the all-zero block that ends an archive."""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:
            archive.ended_cleanly = True
            raise


def _link_target(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | None:
    """The linked file's bytes; None where the link may name a folder (see
    ``_linked_folder``); b"" (an unreadable image, named if it is used) for a hard link to
    a member the archive does not hold."""
    try:
        linked = archive.extractfile(member)
    except KeyError:  # no such member: a folder tar stored without its own entry, or nothing
        return None if member.issym() else b""
    return linked.read() if linked else None


def _linked_folder(
    archive: tarfile.TarFile, link: tarfile.TarInfo, source: Path
) -> Iterator[tuple[tuple[str, ...], bytes | None]]:
    """The files of the folder a symbolic link in the archive names, under the link's name,
    as a link on disk is followed; (link, b"") where it names nothing inside the archive
    (outside it, or missing): an unreadable image, named if it is used."""
    target = posixpath.normpath(posixpath.join(posixpath.dirname(link.name), link.linkname))
    inside = [m for m in archive.getmembers() if m.isfile() and m.name.startswith(target + "/")]
    if link.name.startswith(target + "/"):  # a loop back to a folder above it, as on disk
        return
    if target.startswith(("../", "/")) or target == ".." or not inside:
        yield safe_member(link.name, source), b""
        return
    for member in inside:
        name = link.name.rstrip("/") + member.name[len(target) :]
        yield safe_member(name, source), archive.extractfile(member).read()


def read_to_end(archive: tarfile.TarFile) -> None:
    """Read a compressed tar past its last member: gzip, bz2 and xz check their CRC only at
    the stream's end, and without it a flipped byte loads as a wrong image."""
    while archive.fileobj.read(1 << 20):
        pass


def _fast_tar(raw: bytes) -> list[tuple[str, bytes | None]] | None:
    """Members of a plain ustar archive, or None (let tarfile handle it) for anything else.

    Only regular files and folders with verified header checksums, and pax
    headers that only carry comments or times (as ``git archive`` writes); other
    extensions, links or a truncated end fall back to the tarfile module.
    """
    out: list[tuple[str, bytes | None]] = []
    starts: list[int] = []
    checksums: list[int] = []
    view, pos, end = memoryview(raw), 0, len(raw)
    while pos + 512 <= end:
        header = raw[pos : pos + 512]
        if header[:1] == b"\0":
            if header.strip(b"\0") or not _checksums_match(raw, starts, checksums):
                return None
            return out  # zero block: end of archive
        kind, size_field = header[156:157], header[124:136]
        if kind not in b"0\x005xg" or header[257:262] != b"ustar" or size_field[0] > 0x7F:
            return None
        checksums.append(int(header[148:156].split(b"\0")[0].strip() or b"-1", 8))
        starts.append(pos)
        name = header[:100].split(b"\0")[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0")[0].decode("utf-8", "replace")
        name = f"{prefix}/{name}" if prefix else name
        size = int(size_field.split(b"\0")[0].strip() or b"0", 8)
        if pos + 512 + size > end:
            return None
        blob = None if kind == b"5" else bytes(view[pos + 512 : pos + 512 + size])
        if kind in b"xg":  # pax records: fine only if they rename or resize nothing
            keys = {rec.split(b" ", 1)[-1].split(b"=")[0] for rec in blob.splitlines() if rec}
            if not keys <= _HARMLESS_PAX:
                return None
        else:
            out.append((name.rstrip("/"), blob))
        pos += 512 + -(-size // 512) * 512
    return None  # no end-of-archive marker: truncated


def _checksums_match(raw: bytes, starts: list[int], checksums: list[int]) -> bool:
    """Verify all header checksums at once (a Python loop over bytes would cost ~1 s)."""
    if not starts:
        return True
    headers = np.frombuffer(raw, np.uint8)[np.array(starts)[:, None] + np.arange(512)]
    sums = headers.sum(1, dtype=np.int64) - headers[:, 148:156].sum(1, dtype=np.int64) + 256
    return bool(np.array_equal(sums, np.array(checksums)))  # chksum field counts as spaces


def _read_decompressed(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    return bz2.decompress(raw) if raw[:3] == b"BZh" else raw


def safe_member(name: str, archive: Path) -> tuple[str, ...]:
    """A member's path parts (as ``PurePosixPath(name).parts`` without the root); refuses
    members that would escape the dataset root (absolute paths, ``..``).

    Plain string work: 60k PurePosixPath objects cost ~0.2 s of a first load here.
    """
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if name.startswith(("/", "\\")) or ".." in parts:
        raise CifarlabError(
            f"{archive}: refusing unsafe archive member {name!r} (absolute path or '..'); "
            "use an archive whose paths stay inside it"
        )
    return parts


def is_litter(parts: tuple[str, ...]) -> bool:
    """macOS, Windows and editor files that are not data: .DS_Store, __MACOSX/, Thumbs.db."""
    return any(p.startswith(".") or p in _IGNORED_PARTS or p.lower() in _IGNORED_FILES
               for p in parts)  # fmt: skip


def _parse_layout(
    files: Iterator[tuple[tuple[str, ...], bytes | None]], source: Path
) -> tuple[dict[str, dict[tuple[str, str], bytes]], tuple[str, ...]]:
    """Map each split to {(class, file name): bytes}, accepting one optional top folder, and
    say what was left out. Images in subfolders of a class folder belong to that class, as
    in torchvision's ImageFolder; split folders match in any case (Train/, TEST/)."""
    layout = _sort_members(files)
    _refuse_bad_layout(source, layout)
    return layout.entries, _layout_notes(source, layout.skipped, layout.other_splits)


class _Layout(NamedTuple):
    entries: dict[str, dict[tuple[str, str], bytes]]  # split -> {(class, name): bytes}
    class_dirs: set[tuple[str, str]]  # (split, class) of every class folder, empty ones too
    skipped: list[str]  # files outside train/<class>/ and test/<class>/
    other_splits: set[str]  # val/, valid/...: as spelled
    tops: set[str]  # the wrapping folders images were found under ("" for none)
    spelled: dict[tuple[str, str], set[str]]  # (top, split) -> train/, Train/...


def _sort_members(files: Iterator[tuple[tuple[str, ...], bytes | None]]) -> _Layout:
    """Each member (its path's parts, its bytes or None for a folder) where it belongs."""
    entries: dict[str, dict[tuple[str, str], bytes]] = {s: {} for s in SPLITS}
    class_dirs, skipped, other_splits, tops = set(), [], set(), set()
    spelled: dict[tuple[str, str], set[str]] = {}  # (top, split) -> train/, Train/...
    for parts, blob in files:
        if not parts or is_litter(parts):
            continue  # the archive's root ("./"), or macOS/Windows litter
        wrapped = len(parts) > 1 and parts[1].lower() in _ALL_SPLITS
        top = ""
        if wrapped and parts[0].lower() not in _ALL_SPLITS:
            top, parts = parts[0], parts[1:]  # one wrapping folder: cifar10-jpeg/train/cat/1.jpg
        split = parts[0].lower()
        if split not in SPLITS:
            if split in _ALL_SPLITS:
                other_splits.add(parts[0])
            elif blob is not None:
                skipped.append("/".join(parts))
            continue
        spelled.setdefault((top, split), set()).add(parts[0])
        cls = unicodedata.normalize("NFC", parts[1]) if len(parts) > 1 else ""  # macOS: NFD
        if blob is None:
            if len(parts) == 2:
                class_dirs.add((split, cls))
        elif len(parts) == 3 or (len(parts) > 3 and is_image_name(parts[-1])):
            entries[split][(cls, "/".join(parts[2:]))] = blob
            tops.add(top)
        else:  # a file beside the class folders, or a sidecar (.json, .txt) in a subfolder
            skipped.append("/".join(parts))
    return _Layout(entries, class_dirs, skipped, other_splits, tops, spelled)


def _refuse_bad_layout(source: Path, layout: _Layout) -> None:
    """One line for the first of the ways a folder is not one image-folder dataset."""
    entries, skipped, other_splits = layout.entries, layout.skipped, layout.other_splits
    tops, spelled, class_dirs = layout.tops, layout.spelled, layout.class_dirs
    if len(tops) > 1:  # pooled, they would mix two datasets and drop files of equal names
        shown = ", ".join(f"{t}/" if t else "train/ and test/ at the top" for t in sorted(tops))
        raise CifarlabError(
            f"{source}: holds {len(tops)} datasets' train/ and test/ folders ({shown}); "
            "point --data at one of them"
        )
    twice = sorted(next((names for names in spelled.values() if len(names) > 1), set()))
    if twice:  # pooled, a file of one name in both replaced the other without a word
        raise CifarlabError(
            f"{source}: holds both {'/ and '.join(twice)}/; merge them into one folder"
        )
    missing = [s for s in SPLITS if not entries[s]]
    batches = _cifar_batches(skipped)
    if missing and batches is not None:
        how = _how_to_read(source, batches)
        raise CifarlabError(f"{source}: holds CIFAR python batches; {how}")
    if missing == ["test"] and other_splits:  # Imagenette and friends ship train/ + val/
        found = sorted(other_splits)[0]
        raise CifarlabError(
            f"{source}: has {found}/ but no test/; rename {found}/ to test/ (validation is "
            "carved from train/ by --val-size)"
        )
    test_classes = {cls.lower() for cls, _ in entries["test"]}
    if missing == ["train"] and test_classes <= set(_ALL_SPLITS):  # test/train/cat/1.png
        raise CifarlabError(
            f"{source}: its train/ and test/ lie inside a folder named test/, which reads as "
            "the test split; rename that folder (or point --data at it)"
        )
    if missing:
        deeper = _split_folder_below(skipped)
        where = (f"; they lie deeper, in {deeper}/: point --data at that folder"
                 f"{' (extract the archive first)' if not source.is_dir() else ''}"
                 if deeper else "")  # fmt: skip
        raise CifarlabError(
            f"{source}: not an image-folder dataset: no images under "
            f"{' or '.join(m + '/<class>/' for m in missing)}; expected train/<class>/*.png "
            f"and test/<class>/*.png (optionally inside one top folder){where}"
        )
    full = {(s, cls) for s in SPLITS for cls, _ in entries[s]}
    empty = sorted(class_dirs - full)
    if empty:
        raise CifarlabError(
            f"{source}: class folder {'/'.join(empty[0])} is empty"
            f"{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}; "
            "add images to it or remove it"
        )


def _split_folder_below(skipped: list[str]) -> str | None:
    """The folder, two or more levels down, that holds a train/ folder of class folders
    (``outer/inner/train/cat/1.png``: outer/inner), if the files left out show one."""
    for name in skipped:
        parts = name.split("/")
        for i in range(2, len(parts) - 2):
            if parts[i].lower() == "train":
                return "/".join(parts[:i])
    return None


def _how_to_read(source: Path, batches: str) -> str:
    if source.name.lower().endswith(".zip"):
        return "cifarlab reads them from the official .tar.gz or a folder: extract the zip"
    if source.is_dir():
        return f"pass the folder holding them: --data {source / batches}"
    return f"they lie deeper ({batches}/) than cifarlab looks: extract it and pass that folder"


def _cifar_batches(names: list[str]) -> str | None:
    """The folder (relative, "" for the top) holding a CIFAR python batch set, if any."""
    folders: dict[str, set[str]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        folders.setdefault(folder, set()).add(base)
    for folder, bases in folders.items():
        if any(batch_set <= bases for batch_set in _CIFAR_BATCHES):
            return folder
    # CIFAR-100's train and test files land beside a wrapping folder's meta
    bases = {name.rpartition("/")[2] for name in names}
    return "" if _CIFAR_BATCHES[1] <= bases else None


def is_image_name(name: str) -> bool:
    """An extension Pillow reads (.png, .jpg, .webp...); other files in subfolders of a class
    are taken for sidecars (annotations, notes), as torchvision's ImageFolder skips them."""
    Image.init()
    kind = Image.registered_extensions().get(Path(name).suffix.lower())
    return kind in Image.OPEN  # not .pdf: Pillow writes it, it cannot read it


def _layout_notes(source: Path, skipped: list[str], other_splits: set[str]) -> tuple[str, ...]:
    notes = []
    if skipped:
        notes.append(
            f"{source}: {len(skipped)} file(s) outside train/<class>/ and test/<class>/ were "
            f"not used (e.g. {skipped[0]})"
        )
    for folder in sorted(other_splits):
        notes.append(
            f"{source}: the {folder}/ folder was not used: validation is carved from train/ "
            "(--val-size); move its images into train/ to train on them"
        )
    return tuple(notes)


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


_BLOBS: list[bytes] = []  # set before forking, so workers inherit the bytes instead of a pipe


def _decode_all(
    blobs: list[bytes], names: list[str], source: Path, image_size: int | None, quiet: bool
) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """All images as one (N, H, W, C) array, how many were converted to RGB, and notes."""
    global _BLOBS
    starts = range(0, len(blobs), _CHUNK)
    _BLOBS = blobs
    # shown only if decoding takes over a second: a big dataset's first load, not a test's
    bar = tqdm(total=len(blobs), unit="img", desc=f"decoding {source.name}", delay=1,
               disable=bar_disabled(quiet), file=sys.stderr)  # fmt: skip
    try:
        with _decode_pool(len(starts)) as run:
            # Sizes first, from the headers: images of several sizes are then resized as they
            # are decoded, not all held at full size first (benchmarks/decode_memory.py: 52
            # photos peaked at 3,210 MB before, 341 MB after)
            sizes: Counter[tuple[int, int] | None] = Counter()
            for chunk_sizes in run(_header_sizes, starts):
                sizes.update(chunk_sizes)
            side, notes = _target_side(sizes, image_size, source)
            tasks = [(i, min(i + _CHUNK, len(blobs)), source, side, names[i : i + _CHUNK])
                     for i in starts]  # fmt: skip
            decoded = [_counted(r, bar) for r in run(_decode_chunk, *zip(*tasks))]
    finally:
        _BLOBS = []
        bar.close()
    blocks = [block for chunk, _ in decoded for block in chunk]
    images, converted, combine_notes = _combine(blocks, sum(n for _, n in decoded), source)
    return images, converted, notes + combine_notes


@contextmanager
def _decode_pool(tasks: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """``map`` over forked worker processes (or in this one where they don't pay)."""
    workers = min(os.cpu_count() or 1, tasks)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield map
        return
    # Decoding holds the GIL, so threads don't help; forked processes halve the time.
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_decode_worker,
                             initargs=(os.getpid(),)) as pool:  # fmt: skip
        try:
            yield pool.map
        except BaseException:  # Ctrl-C: the workers ignore it; drop the queued chunks
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _header_sizes(start: int) -> Counter[tuple[int, int] | None]:
    """How many of ``_BLOBS[start:start + _CHUNK]`` have each (height, width); None: unknown."""
    return Counter(_header_size(blob) for blob in _BLOBS[start : start + _CHUNK])


def _target_side(
    sizes: Counter[tuple[int, int] | None], image_size: int | None, source: Path
) -> tuple[int | None, tuple[str, ...]]:
    """The side to resize every image to while decoding (None: keep), and a note saying so.

    Refuses data that would not fit in memory at the size it would be kept at."""
    known = sorted(size for size in sizes if size is not None)
    side, notes = image_size, ()
    if image_size is None and len(known) > 1:
        side, notes = DEFAULT_SIDE, (_resized_note(known, source),)
    counted = {size: n for size, n in sizes.items() if size is not None}
    pixels = sum(n * (side * side if side else h * w) for (h, w), n in counted.items())
    needed, free = pixels * 3, _free_memory()
    if free is not None and 2 * needed > free:  # loading holds the decoded images twice
        largest = f"{side}x{side}" if side else "x".join(map(str, max(known, key=_area)))
        fix = (
            f"pass a --image-size smaller than {side}, or free memory"
            if side
            else f"pass --image-size {DEFAULT_SIDE} (or another small N) to resize them to NxN as "
            "they are decoded"
        )
        raise CifarlabError(
            f"{source}: its {sizes.total():,} images at {largest} need {needed / 2**30:.1f} GiB "
            f"decoded (twice that while loading), more than the {free / 2**30:.1f} GiB of free "
            f"memory; {fix}"
        )
    return side, notes


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _resized_note(sizes: list[tuple[int, int]], source: Path) -> str:
    shown = ", ".join(f"{h}x{w}" for h, w in sizes[:3]) + (", ..." if len(sizes) > 3 else "")
    return (f"{source}: images come in {len(sizes)} sizes (HxW {shown}); all were resized "
            f"to {DEFAULT_SIDE}x{DEFAULT_SIDE}: pass --image-size N for NxN")  # fmt: skip


def _free_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _counted(result: tuple[list[np.ndarray], int], bar: tqdm) -> tuple[list[np.ndarray], int]:
    bar.update(sum(len(block) for block in result[0]))
    return result


def _combine(
    blocks: list[np.ndarray], converted: int, source: Path
) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """One (N, H, W, C) array; grayscale blocks become RGB only if colour images exist, and
    images of several sizes that their headers did not tell apart are resized to 32x32."""
    notes: tuple[str, ...] = ()
    sizes = sorted({b.shape[1:3] for b in blocks})
    if len(sizes) > 1:
        notes = (_resized_note(sizes, source),)
        blocks = [resize_images(b, DEFAULT_SIDE) for b in blocks]
    if len({b.shape[3] for b in blocks}) > 1:
        converted += sum(len(b) for b in blocks if b.shape[3] == 1)
        blocks = [np.repeat(b, 3, axis=3) if b.shape[3] == 1 else b for b in blocks]
    return np.concatenate(blocks), converted, notes


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 (n, H, W, C) images at side x side, bilinear, as ``--image-size`` resizes."""
    if images.shape[1:3] == (side, side):
        return images
    pils = [Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im) for im in images]
    out = np.stack([np.asarray(im.resize((side, side), Image.Resampling.BILINEAR))
                    for im in pils])  # fmt: skip
    return out[..., None] if out.ndim == 3 else out


# SOF markers of the JPEGs libjpeg decodes without help: baseline, extended, progressive
_PLAIN_SOF = (0xC0, 0xC1, 0xC2)
_JPEG_MODES = {1: "L", 3: "RGB"}


def _decode_plain_jpeg(blob: bytes) -> np.ndarray | None:
    """Decode a plain grayscale or YCbCr JPEG straight through PIL's JPEG decoder.

    ``Image.open`` probes formats and parses every marker in Python first, which for a
    32x32 image costs more than the decoding. Reading only the size and channel count
    from the frame header gives the same pixels (tested); the first load of the shared
    copy fell from 8.2 s to 5.2-5.4 s (``benchmarks/loader.py``). Anything unusual (an
    Adobe colour transform, CMYK, arithmetic coding, damage) returns None and takes the
    ``Image.open`` path, which also words the errors.
    """
    frame = _jpeg_frame(blob)
    if frame is None or not frame.plain:
        return None
    mode = _JPEG_MODES.get(frame.components) if frame.marker in _PLAIN_SOF else None
    if mode is None or not frame.height or not frame.width:
        return None
    if _too_large(frame.width * frame.height):
        return None  # Image.open words the errors and guards against decompression bombs
    try:
        image = Image.frombytes(mode, (frame.width, frame.height), blob, "jpeg", mode, "")
    except (OSError, ValueError):  # damaged: Image.open will say what is wrong
        return None
    return np.asarray(image, dtype=np.uint8)


class _JpegFrame(NamedTuple):
    marker: int  # which SOF: baseline, progressive, arithmetic...
    components: int
    height: int
    width: int
    plain: bool  # no Adobe colour transform flag or stray marker before the frame


def _jpeg_frame(blob: bytes) -> _JpegFrame | None:
    """A JPEG's frame header, read by walking its markers; None if it is not reached."""
    if blob[:2] != b"\xff\xd8":
        return None
    pos, end, plain = 2, len(blob) - 4, True
    while pos <= end:
        if blob[pos] != 0xFF:
            return None
        marker = blob[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0x01) or 0xD0 <= marker <= 0xD9:
            return None  # a scan before any frame, or stray markers
        plain = plain and marker != 0xEE  # Adobe's transform flag: Image.open reads it
        size = int.from_bytes(blob[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if pos + 10 > len(blob):
                return None
            height = int.from_bytes(blob[pos + 5 : pos + 7], "big")
            width = int.from_bytes(blob[pos + 7 : pos + 9], "big")
            return _JpegFrame(marker, blob[pos + 9], height, width, plain)
        pos += 2 + size
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _header_size(blob: bytes) -> tuple[int, int] | None:
    """An image's (height, width) from its header, without decoding it; None if unknown."""
    frame = _jpeg_frame(blob)
    if frame is not None:
        return (frame.height, frame.width) if frame.height and frame.width else None
    if blob[:8] == _PNG_SIGNATURE and blob[12:16] == b"IHDR":
        return int.from_bytes(blob[20:24], "big"), int.from_bytes(blob[16:20], "big")
    try:  # other formats: Image.open reads the header only
        with warnings.catch_warnings():  # a decompression bomb is worded when decoded
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(blob)) as image:
                return image.height, image.width
    except Exception:  # noqa: BLE001  (whatever is wrong is worded when it is decoded)
        return None


def _too_large(pixels: int) -> bool:
    return Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS


@contextmanager
def readable(name: str, in_dataset: bool) -> Iterator[None]:
    """Pillow's errors on one image as one line naming it, and what to do about it."""
    try:
        yield
    except Image.DecompressionBombError:
        raise CifarlabError(
            f"{name} has more pixels than Pillow decodes (its guard against decompression "
            f"bombs, PIL.Image.MAX_IMAGE_PIXELS); shrink {'or remove it' if in_dataset else 'it'}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        fix = "remove it or replace it with a valid image" if in_dataset else "give an image file"
        why = "no image format Pillow reads" if isinstance(err, UnidentifiedImageError) else None
        raise CifarlabError(
            f"{name} is not a readable image ({why or first_line(err)[:100]}); {fix} (PNG, "
            "JPEG, WebP, ...)"
        ) from None


@contextmanager
def bomb_warnings_as_ours() -> Iterator[None]:
    """Around a loop of ``Image.open``: Pillow's two-line warning on a very large image
    silenced, for ``say_if_huge`` to say it in one line naming the image."""
    with warnings.catch_warnings():  # once a loop: entering one per image reset the registry
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        yield


def say_if_huge(image: Image.Image, name: str) -> None:
    if _too_large(image.width * image.height):  # past it Pillow warns, past twice it refuses
        warn(f"{name} has more pixels than Pillow decodes without a warning (its guard against "
             "decompression bombs); it was read, but shrink it to be safe")  # fmt: skip


def plain_image(image: Image.Image) -> tuple[Image.Image, bool]:
    """``image`` as 8-bit gray (L) or RGB, as every image is trained on: 16-bit gray scaled,
    gray modes (1, LA, F) to L, the rest (P, RGBA, CMYK...) to RGB; and whether it took a
    colour conversion."""
    if image.mode.startswith("I"):  # 16-bit (or 32-bit int) grayscale
        image = _to_8bit(image)
    if image.mode in ("RGB", "L"):
        return image, False
    gray = image.mode in _GRAY_MODES
    return image.convert("L" if gray else "RGB"), not gray


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits (Pillow's convert("L") clips it: all white). A mode
    "I" image holding only 0-255 is kept as it is."""
    array = np.asarray(image, dtype=np.int64)
    if image.mode.startswith("I;16") or array.max(initial=0) > 255:
        array = np.clip(array, 0, 65535) >> 8
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")


def _decode_one(blob: bytes, name: str, image_size: int | None) -> tuple[np.ndarray, bool]:
    """One image through Pillow, as training reads it; and whether its colours changed."""
    with readable(name, in_dataset=True), Image.open(io.BytesIO(blob)) as image:
        say_if_huge(image, name)
        image, colour = plain_image(image)
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8), colour


def _decode_chunk(
    start: int, stop: int, source: Path, image_size: int | None, names: list[str]
) -> tuple[list[np.ndarray], int]:
    """Decode ``_BLOBS[start:stop]`` into blocks of equally shaped (n, H, W, C) arrays."""
    arrays, converted = [], 0
    with bomb_warnings_as_ours():
        for blob, name in zip(_BLOBS[start:stop], names):
            array = _decode_plain_jpeg(blob) if image_size is None else None
            if array is None:
                array, colour = _decode_one(blob, f"{source}: {name}", image_size)
                converted += colour
            arrays.append(array[..., None] if array.ndim == 2 else array)
    blocks, first = [], 0
    for i in range(1, len(arrays) + 1):  # consecutive runs of one shape stack into one block
        if i == len(arrays) or arrays[i].shape != arrays[first].shape:
            blocks.append(np.stack(arrays[first:i]))
            first = i
    return blocks, converted
