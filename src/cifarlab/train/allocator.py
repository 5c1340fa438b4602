"""Keep glibc's allocator from returning activation memory to the OS every step.

A training step allocates and frees the same large activation buffers again and
again. Above glibc's mmap threshold each one is a fresh ``mmap`` whose pages the
kernel must fault in and zero, and freeing it gives them back: on our 2-core CPU
that is ~40% system time (the design notes, ../shared/DESIGN.md). Raising the thresholds
keeps the memory in the heap for reuse. Measured (``benchmarks/throughput.py --models
speedrun`` with ``CIFARLAB_TUNE_MALLOC=0`` then ``1``, bf16, three pairs): 1.13x-1.74x,
1.4x on geometric mean; see BENCHMARKS.md.

Opt out with ``CIFARLAB_TUNE_MALLOC=0``; the same settings can be given as
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = {
    _M_MMAP_THRESHOLD: 1 << 30,  # blocks up to 1 GiB come from the reusable heap, not mmap
    _M_TRIM_THRESHOLD: 1 << 30,  # don't give freed heap memory back until 1 GiB is idle
    _M_TOP_PAD: 1 << 28,  # grow the heap in 256 MiB steps: fewer brk calls
}
_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Apply the settings once per process; True when they are in effect.

    A no-op (False) off glibc Linux or when ``CIFARLAB_TUNE_MALLOC=0``.
    """
    global _tuned
    if _tuned is None:
        _tuned = _apply()
    return _tuned


def _apply() -> bool:
    if os.environ.get("CIFARLAB_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS.items())
