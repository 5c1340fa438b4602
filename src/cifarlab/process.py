"""Processes that train runs: who owns a run right now, and children that die with us.

A run in the results database says ``running`` both while it trains and after its
process was killed (``kill -9``, a crash of the machine). Each run records its owner
(host, pid and the process's start time, so a recycled pid is not mistaken for it);
a second process then refuses to train a run whose owner is alive.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from cifarlab.errors import CifarlabError, RunInProgress, Terminated


def current_owner() -> str:
    """This process, as recorded in a run it trains: ``host:pid:start``."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def owner_gone(owner: str | None) -> bool:
    """True when the process that owns a run ran on this machine and has ended: a run it
    left "running" was stopped without being recorded (``kill -9``, a crash, power loss)."""
    if not owner:
        return False
    host, pid, _ = owner.rsplit(":", 2)  # another machine's process: nothing to tell here
    return host == socket.gethostname() and int(pid) != os.getpid() and owner_pid(owner) is None


def owner_pid(owner: str | None) -> int | None:
    """The pid of a live process that owns a run, other than this one; None when none."""
    if not owner:
        return None
    host, pid_text, start = owner.rsplit(":", 2)
    pid = int(pid_text)
    if host != socket.gethostname() or pid == os.getpid():
        return None  # another machine's pid means nothing here; this process is not training it
    if not pid_alive(pid) or _start_time(pid) != start:  # gone, or a recycled pid
        return None
    return pid


def refuse_if_owned(run_id: str, status: str, owner: str | None) -> None:
    """Refuse a run that a live process (not this one) is training right now."""
    pid = owner_pid(owner) if status == "running" else None
    if pid is not None:
        raise RunInProgress(
            f"run {run_id} is being trained right now by process {pid}; wait for it to "
            f"finish, or stop it (kill {pid}) and resume then"
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: only asks
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[19]  # field 22; the name may hold spaces
    except (OSError, IndexError):
        return ""


def one_of_several_ranks() -> bool:
    """Whether a launcher (torchrun) started this process as one rank of several: read from
    WORLD_SIZE alone, so commands that need no torch stay light."""
    return os.environ.get("WORLD_SIZE", "1") not in ("", "1")


def flush_output() -> None:
    """Flush stdout and stderr, so a results table piped elsewhere is not lost at exit; a
    closed pipe (`... | head`) has nothing left to take."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send this worker SIGTERM when its parent dies (Linux), so a sweep or
    a decode pool killed with ``kill -9`` leaves no orphans training or holding memory."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # it died before the line above took effect
        os._exit(1)


def init_decode_worker(parent_pid: int) -> None:
    """A forked decode worker: it dies with its parent, and it leaves Ctrl-C and SIGTERM to
    the parent (a handler inherited from the CLI would raise inside a pool worker, which
    then waits forever on its queue instead of ending)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def terminate_as_interrupt() -> signal.Handlers | None:
    """Turn SIGTERM (plain ``kill``, job schedulers, ``docker stop``) into ``Terminated``, so
    a run it stops is recorded as failed instead of ``running`` forever. Returns the previous
    handler; only the main thread may install one (elsewhere nothing changes)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        return None


sigterm_received = False  # some C++ callers (Ray's) re-raise Terminated as KeyboardInterrupt


def _raise_terminated(signum: int, frame: object) -> None:
    global sigterm_received
    sigterm_received = True
    raise Terminated()


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then act on the first one as it
    would have been. For writes in C++ that call back into Python (``torch.save``): an
    exception raised in such a callback leaves the writer broken, and the run ended with a
    RuntimeError traceback, or the process aborted, instead of being recorded as stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread gets signals, and only it may set handlers
        return
    caught: list[int] = []
    # a handler set outside Python reads as None and could not be put back: left as it is
    stops = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in stops}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            _deliver(caught[0], previous[caught[0]])


def _deliver(signum: int, handler: object) -> None:
    """Act on a held signal as ``handler`` (what signal.signal returned) would have."""
    if callable(handler):
        handler(signum, None)  # Python's own: KeyboardInterrupt; the CLI's: Terminated
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default: the process ends by this signal


def check_main_guarded(call: str) -> None:
    """Refuse to start spawned workers from a script without ``if __name__ == "__main__":``.

    Each spawned worker imports the main script first; unguarded, its call to ``call`` ran
    again in every worker, which printed a traceback each and broke the pool."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if name == "__main__" or name.endswith(".__main__"):  # python -m pkg: spawn skips it
        return
    path = getattr(main, "__file__", None)
    if not path:  # a notebook or the interactive prompt: nothing is run again
        return
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return
    if "__main__" not in text:
        raise CifarlabError(
            f"{path} calls {call} with more than one worker outside `if __name__ == "
            '"__main__":`; each worker process imports the script and would run it again: '
            "put the call under that guard, or use one worker"
        )
