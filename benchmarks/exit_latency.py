"""How long a `cifarlab` command lingers after its last line of output.

    PYTHONPATH=src python benchmarks/exit_latency.py [--runs 4] [-- data info --data PATH]

Runs the command (default: `cifarlab data info` on the shared copy) as a user would, through
the console launcher, and times the gap between the last line it prints and its exit, which is
interpreter teardown after torch. Prints JSON: every gap and their median, in seconds. The
command's own work is not timed, so a busy machine moves the figure less than a timing would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import at_least_one, run  # benchmarks/, beside this file
from loader import SHARED

from cifarlab.errors import CifarlabError

LAUNCHER = "from cifarlab.launch import main; raise SystemExit(main())"


def exit_gap(args: list[str]) -> float:
    """Seconds between the command's last output line and its exit."""
    started = time.perf_counter()
    last_line = started
    with subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for _ in process.stdout:
            last_line = time.perf_counter()
        code = process.wait()
    if code != 0:
        raise CifarlabError(f"`cifarlab {' '.join(args)}` exited {code}: run it alone to see why")
    return time.perf_counter() - last_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=at_least_one, default=4)
    parser.add_argument("command", nargs="*", help="cifarlab's arguments, after `--`")
    options = parser.parse_args()
    args = options.command or ["data", "info", "--data", str(SHARED)]
    gaps = [round(exit_gap(args), 3) for _ in range(options.runs)]
    print(
        json.dumps(
            {"command": args, "gaps_s": gaps, "median_gap_s": round(statistics.median(gaps), 3)}
        )
    )


if __name__ == "__main__":
    run(main)
