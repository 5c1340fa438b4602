"""Writing a user's output file so that a stop or a failure midway never leaves it
truncated: the old file stays whole until the new one is."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cifarlab.errors import CifarlabError


@contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to, renamed onto ``path`` when the block
    ends without an error. Its name ends as ``path``'s does: the suffix (or its absence)
    tells matplotlib the format."""
    make_folder(path.parent)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_folder(folder: Path) -> None:
    """``folder`` and its parents, made where missing; a one-line error saying why it cannot
    be (a part of it is a file, permission) instead of the errno of a temp file inside it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = (
            "a part of that path is a file, not a folder"
            if isinstance(err, FileExistsError | NotADirectoryError)
            else err.strerror or str(err)
        )
        raise CifarlabError(f"cannot write to {str(folder)!r}: {why}; pick another path") from None


def leftover_temp_files(folder: Path, pattern: str = "*") -> list[Path]:
    """The temporary files of ``written_atomically`` in ``folder`` for targets matching
    ``pattern``, any process's: those of a process killed mid-write (``kill -9``)."""
    return sorted(folder.glob(f".tmp*-{pattern}"))


def image_file(path: str | os.PathLike) -> Path:
    """``path``, with ``.png`` added when it has no suffix, as matplotlib's savefig would
    add it: the path a caller returns is then the file written."""
    path = Path(path)
    return path if path.suffix else path.with_name(path.name + ".png")
