"""What users see when something goes wrong: CifarlabError (one line, exit status 2) and the
exceptions a run's end raises, warnings as one line, the machine's trouble named, and the
one rule for when progress bars show."""

import contextlib
import difflib
import errno
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


class CifarlabError(Exception):
    """A problem the user can fix: its message names the problem and the fix.

    The CLI prints it as one line on stderr and exits with status 2; the Python
    API lets it propagate. Raise it for bad input, never for bugs.
    """

    @property
    def _render_traceback_(self) -> Callable[[], list[str]]:
        """What IPython and Jupyter show for it: its line, not 30 lines of cifarlab's frames
        above it (``%debug`` still has them). With CIFARLAB_TRACEBACK=1 the attribute is
        missing, so IPython shows the whole traceback (an exception raised from the method
        printed IPython's own "Unexpected exception formatting exception" dump)."""
        if os.environ.get("CIFARLAB_TRACEBACK"):
            raise AttributeError("_render_traceback_")
        return lambda: [f"{type(self).__name__}: {self}"]


class RecordedFailure(CifarlabError):
    """A run stopped by its own model code: recorded as failed, so the CLI exits 3, not the 2
    that promises nothing was recorded."""


class MachineFailure(CifarlabError):
    """The machine stopped the work (a worker process killed, for one when memory ran out):
    the CLI exits 1, as for other trouble of the machine, not the 2 of bad input."""


class RunInProgress(CifarlabError):
    """The run is being trained right now by another live process."""


class CifarlabWarning(UserWarning):
    """Something the user should know that does not stop the work (``cifarlab: warning:``)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM stops the work as Ctrl-C does (``process.terminate_as_interrupt``)."""


class BusyMachineWarning(CifarlabWarning):
    """Other work took a good share of the CPUs a run trained on (its timings suffered)."""


def first_line(err: BaseException, empty: str | None = None) -> str:
    """An exception's message cut to its first line, for one-line errors; ``empty`` (default:
    the exception's type name) when it has no message."""
    text = str(err).strip()
    if not text:
        return type(err).__name__ if empty is None else empty
    return text.splitlines()[0].rstrip(":")


def warn(message: str, category: type[CifarlabWarning] = CifarlabWarning) -> None:
    """Issue a cifarlab warning that points at the first caller outside cifarlab, so a
    notebook shows the user's own line (Python 3.12's ``skip_file_prefixes``, by hand)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2  # level 2: warn()'s caller
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning``: cifarlab's own warnings as one ``cifarlab: warning:`` line
    (the CLI and sweep workers install it); others as Python shows them."""
    if issubclass(category, CifarlabWarning):
        print(f"cifarlab: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def missing_glyphs_said(image: str | os.PathLike) -> Iterator[None]:
    """Around drawing: matplotlib warns, with its source line, once per character its font
    lacks (a CJK class name gave one warning per character); say it in one line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    missing = [w for w in caught if "missing from font" in str(w.message)]
    for w in caught:
        if w not in missing:  # anything else is passed on as it came
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        glyphs = len({str(w.message) for w in missing})  # each is met at layout and at saving
        warn(f"{image}: {glyphs} character(s) of its labels are not in the plotting font "
             "and show as boxes; a font that has them (e.g. Noto Sans CJK) draws them")  # fmt: skip


def _allocation(message: str) -> str:
    """torch's out-of-memory line, shortened: the size it asked for, readable (cut at 120
    characters, 4.8 TB read as "you tried to allocate 47988480")."""
    asked = re.search(r"tried to allocate (\d+) bytes", message)
    if asked:
        size, unit = float(asked[1]), "bytes"
        for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
            if float(f"{size:.3g}") < 1000 or unit == "PB":  # 999.6 MB shows as 1e+03 MB
                break
            size /= 1000
        return f"tried to allocate {size:.3g} {unit}"
    return re.sub(r"^\[enforce fail at [^\]]*\] ", "", message)[:120]


def machine_trouble(err: BaseException, command: str | None = None) -> str | None:
    """A one-line message for an error the machine caused (disk, permissions, memory, a
    locked database), which a user fixes without a traceback; None for anything else.
    ``command`` (train, data...) picks the advice for memory."""
    import sqlite3

    if isinstance(err, sqlite3.OperationalError):
        return (
            f"the workspace's results database: {first_line(err)}; another process may hold "
            "it, or its folder is read-only or full (try another --workspace)"
        )
    if isinstance(err, sqlite3.DatabaseError):  # damaged past its first pages
        return (
            f"the workspace's results database is damaged ({first_line(err)}); move runs.db "
            "away (the run folders keep their checkpoints) or use another --workspace"
        )
    if isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError)
        and any(s in str(err) for s in ("out of memory", "can't allocate memory"))
    ):
        detail = _allocation(first_line(err, ""))
        advice = {
            "data": "the decoded images must fit in memory: try a smaller --image-size",
            "summary": "try a smaller --image-size or --batch-size",
            "diagram": "try a smaller --image-size",
        }.get(command or "", "try a smaller --batch-size or model")
        return f"out of memory{f' ({detail})' if detail else ''}; {advice}"
    if lost_other_ranks(err):
        return (
            "lost the other ranks of this torchrun launch: one of them stopped (its error, or "
            "torchrun's report below, says why)"
        )
    if isinstance(err, OSError) and err.errno is not None:  # disk full, permission denied...
        where = f": '{err.filename}'" if err.filename else ""
        if err.errno == errno.ENOSPC:
            return (f"{err.strerror}{where}; free some space, or pass a --workspace (or "
                    "CIFARLAB_CACHE) on another disk")  # fmt: skip
        return err.strerror + where
    return None


def lost_other_ranks(err: BaseException) -> bool:
    """A collective of a spread run failed because another rank is gone (killed, crashed) or
    stuck: gloo's closed connections, NCCL's aborts and timeouts, torch's Dist* errors. Only
    where ranks were connected: one process's "Connection reset by peer" is its own error."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_initialized():
        return False
    if type(err).__name__ in ("DistBackendError", "DistNetworkError", "DistStoreError"):
        return True
    signs = (
        "Connection closed by peer",
        "Connection reset by peer",
        "collective operation timeout",
    )
    return isinstance(err, RuntimeError) and any(s in str(err) for s in signs)


def bar_disabled(quiet: bool = False) -> bool | None:
    """tqdm's ``disable`` for every bar: off when quiet; on in a notebook (its stderr is no
    terminal, yet it draws widgets); elsewhere tqdm's own rule, on for a terminal only, so a
    log file (`2> log`, nohup, CI) gets the epoch lines without a carriage return a refresh."""
    if quiet:
        return True
    return False if "ipykernel" in sys.modules else None


def as_path(value: Any, option: str) -> Path:
    """``value`` as a Path, or a one-line error naming ``option`` when it is no path."""
    if isinstance(value, str | os.PathLike) and os.fspath(value) == "":  # pathlib's "."
        raise CifarlabError(f"{option} is an empty path; give a folder or file name")
    if isinstance(value, str | os.PathLike):
        return Path(value).expanduser()
    raise CifarlabError(f"{option} must be a path (a str or Path), not {value!r}")


def check_whole_number(name: str, value: Any, least: int) -> None:
    """Refuse ``value`` unless it is an int (not a bool) of at least ``least``: what Python
    callers pass is unchecked by the CLI's parser."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise CifarlabError(f"{name} must be a whole number of at least {least}, not {value!r}")


def looked_in(path: str | os.PathLike) -> str:
    """For a missing relative path: where it was looked for. Paths in an experiment file are
    read from the current folder, not the file's, which a "does not exist" alone hides."""
    if os.path.isabs(path):
        return ""
    return f" (relative paths are read from the current folder, {os.getcwd()})"


def comma_list(text: str) -> list[str]:
    """``"model, optimizer"`` -> ``["model", "optimizer"]``, as every comma option reads."""
    return [part.strip() for part in text.split(",") if part.strip()]


def suggest(word: str, choices: Iterable[str], *, cutoff: float = 0.6, show=repr) -> str:
    """ "did you mean 'adam'? " for the choice closest to ``word``; "" when none is close."""
    choices = list(choices)
    by_case = {c.lower(): c for c in choices}  # "TUTORIAL" is 'tutorial', in any case
    close = difflib.get_close_matches(word.lower(), list(by_case), n=1, cutoff=cutoff)
    return f"did you mean {show(by_case[close[0]])}? " if close else ""


def note(quiet: bool, message: str) -> None:
    """A line of information on stderr (``cifarlab: ...``), unless the run is quiet."""
    if not quiet:
        print(f"cifarlab: {message}", file=sys.stderr)


def say_run_failed(run_id: str, error: object) -> None:
    """A sweep's run that failed, in one line: the sweep goes on to its next run."""
    print(f"cifarlab: run {run_id} failed: {error}", file=sys.stderr)
