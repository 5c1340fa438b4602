"""The ``cifarlab`` console command's entry point.

It imports nothing heavy itself, so that Ctrl-C while the CLI's modules load (pydantic, then
torch: a few tenths of a second) ends like Ctrl-C anywhere later: one line, exit status 130,
no traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from cifarlab.cli import main as cli_main
    except KeyboardInterrupt:
        print("cifarlab: interrupted", file=sys.stderr)
        return 130
    return cli_main()
