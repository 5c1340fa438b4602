"""How often a torchrun launch whose run finished still ends with a failure status: each try
is a 1-epoch, 2-rank run of the tutorial net on a tiny image folder made here.

    PYTHONPATH=src .venv/bin/python benchmarks/spread_exits.py --tries 200

Prints JSON: tries; failures (status not 0); of those, the ones whose run was recorded as
completed (a failure at the end, not in the run) and the ones that aborted ("terminate called
without an active exception": gloo's teardown at interpreter exit, ``distributed.exit_rank``);
and hung tries (stopped after --timeout seconds). To measure other code, point PYTHONPATH at
its src/: the launches inherit it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import cifarlab


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


def one_launch(data: Path, workspace: Path, timeout: float) -> tuple[int | None, str]:
    """torchrun's status (None: hung, its whole process group stopped) and its stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "cifarlab", "train", "--model", "tutorial",
               "--data", str(data), "--workspace", str(workspace), "--val-size", "30",
               "--batch-size", "16", "--epochs", "1", "--quiet"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # a thread a rank, as on a 2-core machine
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env, start_new_session=True) as launch:  # fmt: skip
        try:
            _, stderr = launch.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)  # torchrun and both ranks
            return None, launch.communicate()[1]
    return launch.returncode, stderr


def recorded_completed(workspace: Path) -> bool:
    runs = cifarlab.results(workspace) if (workspace / "runs.db").exists() else []
    return len(runs) == 1 and runs[0]["status"] == "completed"


def main() -> None:
    from common import at_least_one  # benchmarks/, beside this file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=at_least_one, default=100)
    parser.add_argument("--timeout", type=at_least_one, default=300, help="seconds a try")
    args = parser.parse_args()
    tally = {"tries": args.tries, "failures": 0, "after_a_completed_run": 0, "aborted": 0,
             "hung": 0}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = tiny_folder(Path(tmp) / "data")
        for i in range(args.tries):
            workspace = Path(tmp) / f"ws{i}"
            code, stderr = one_launch(data, workspace, args.timeout)
            tally["hung"] += code is None
            if code != 0:
                tally["failures"] += 1
                tally["after_a_completed_run"] += recorded_completed(workspace)
                tally["aborted"] += "terminate called without an active exception" in stderr
            print(f"try {i + 1}/{args.tries}: status {code}", file=sys.stderr, flush=True)
    print(json.dumps(tally))


if __name__ == "__main__":
    from common import run

    run(main)
