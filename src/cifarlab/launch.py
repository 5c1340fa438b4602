"""The ``cifarlab`` console command's entry point.

It imports nothing heavy itself, so that Ctrl-C or SIGTERM while the CLI's modules load
(pydantic, then torch: a few tenths of a second) ends like a stop anywhere later: one line,
exit status 130 or 143, no traceback.
"""

from __future__ import annotations

import gc
import signal
import sys
import traceback

from cifarlab.errors import Terminated
from cifarlab.process import flush_output, terminate_as_interrupt


def main() -> int:
    terminate_as_interrupt()  # before the imports: SIGTERM's default ends us without a word
    try:
        from cifarlab.cli import main as cli_main

        code = cli_main()
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM before the CLI's own handling
        code = 0 if _left_to_rank_0(stop) else 143 if isinstance(stop, Terminated) else 130
        if code:
            word = "terminated" if isinstance(stop, Terminated) else "interrupted"
            print(f"cifarlab: {word}", file=sys.stderr)
    except Exception:  # a bug, with its traceback: on a rank, still past the teardown
        if not _spread_rank():
            raise
        traceback.print_exc()
        code = 1
    finally:
        # the work is done: a SIGTERM from here on ends the process as by default, and
        # the output is flushed first
        flush_output()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # the collector's last passes over torch's objects made `data info` linger 0.9-1.0 s
        # after its last line; 0.16-0.17 s without them (benchmarks/exit_latency.py, AVX2 CPU)
        gc.freeze()
    if _spread_rank():  # gloo's teardown at interpreter exit can abort: skip it
        sys.modules["cifarlab.distributed"].exit_rank(code)
    return code


def _left_to_rank_0(stop: KeyboardInterrupt) -> bool:
    """A rank other than 0 that torchrun stopped as it was already ending (rank 0 failed
    and left first): rank 0 has said why, this rank ends quietly (``cli._left_to_rank_0``)."""
    cli = sys.modules.get("cifarlab.cli")
    return cli is not None and cli._left_to_rank_0(stop)


def _spread_rank() -> bool:
    """Whether this process is a rank of a torchrun launch that joined the others."""
    spread = sys.modules.get("cifarlab.distributed")  # loaded by a torchrun launch only
    return spread is not None and spread.joined()
