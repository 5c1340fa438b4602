"""How often a finished torchrun launch still ends with a failure status: each try is a
1-epoch, 2-rank run of the tutorial net on a tiny image folder made here, and a try
counts as failed when torchrun's status is not 0 after the run was recorded.

    PYTHONPATH=src .venv/bin/python benchmarks/spread_exits.py --tries 200

Prints JSON: tries, failures, and how many of those aborted ("terminate called without an
active exception", gloo's teardown at interpreter exit; see ``distributed.exit_rank``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_folder(root: Path, per_class: int = 30) -> Path:
    """train/ and test/ folders of 3 classes of random 32x32 images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 3)):
        for label in ("a", "b", "c"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def one_launch(data: Path, workspace: Path) -> tuple[int, str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "cifarlab", "train", "--model", "tutorial",
               "--data", str(data), "--workspace", str(workspace), "--val-size", "30",
               "--batch-size", "16", "--epochs", "1", "--quiet"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # a thread a rank, as on a 2-core machine
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    return done.returncode, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=100)
    args = parser.parse_args()
    failures, aborted = 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        data = tiny_folder(Path(tmp) / "data")
        for i in range(args.tries):
            code, stderr = one_launch(data, Path(tmp) / f"ws{i}")
            failures += code != 0
            aborted += "terminate called without an active exception" in stderr
            print(f"try {i + 1}/{args.tries}: status {code}", file=sys.stderr, flush=True)
    print(json.dumps({"tries": args.tries, "failures": failures, "aborted": aborted}))


if __name__ == "__main__":
    main()
