"""What every benchmark script shares: one-line errors instead of tracebacks, counts checked
before any work starts, and scratch folders that go away with the run."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cifarlab.config import make_run_config
from cifarlab.errors import CifarlabError
from cifarlab.train.precision import cpu_supports_bf16


def run(main: Callable[[], None]) -> None:
    """``main()``, with bad input (a CifarlabError) as one line on stderr and exit status 2."""
    try:
        main()
    except CifarlabError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        sys.exit(2)


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--epochs 0`` is refused, not ignored)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def check_presets(names: list[str], **options: object) -> None:
    """Refuse a preset name (or option) before the first run trains, not after it."""
    for name in names:
        make_run_config(preset=name, **options)


@contextlib.contextmanager
def workspace(given: str | None, prefix: str) -> Iterator[str]:
    """``given``, kept; else a scratch workspace removed at the end (a run's checkpoints
    are tens of MB, and the JSON printed is the result)."""
    if given is not None:
        yield given
        return
    scratch = tempfile.mkdtemp(prefix=prefix)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def machine() -> str:
    """The CPU by name, its cores and whether it runs bf16 natively: figures from an AVX2
    laptop and an AMX server differ 3-5x for the same code, so every JSON says which."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    bf16 = "native bf16" if cpu_supports_bf16() else "no native bf16"
    return f"{name}, {os.cpu_count()} cores, {bf16}"
