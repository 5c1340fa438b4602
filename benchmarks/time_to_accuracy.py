"""Time to accuracy: wall time of the CPU presets to reach the blog's 83% and 93%.

    PYTHONPATH=src python benchmarks/time_to_accuracy.py [--presets quick-cpu,speedrun-cpu]

Trains each preset on the full CIFAR-10 training split and prints JSON with the
test accuracy and cumulative time after every epoch. Time counts from the first
training step to the final test accuracy, evaluation and TTA included (the run's
``train_seconds``); one-time data decoding is excluded but reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch
from loader import SHARED  # benchmarks/loader.py, beside this file

import cifarlab
from cifarlab.data import load_dataset

TARGETS = {"quick-cpu": 0.83, "speedrun-cpu": 0.93, "speedrun": 0.94}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--presets", default="quick-cpu,speedrun-cpu")
    parser.add_argument("--epochs", type=int, help="override the presets' epochs")
    parser.add_argument("--workspace", default=tempfile.mkdtemp(prefix="cifarlab-tta-"))
    args = parser.parse_args()
    out: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "data": f"{args.data} (CIFAR-10, JPEG q75 copy)" if "jpeg" in args.data else args.data,
    }
    start = time.perf_counter()
    load_dataset(args.data, val_size=0)
    out["data_load_seconds"] = round(time.perf_counter() - start, 2)
    for preset in args.presets.split(","):
        extra = {"epochs": args.epochs} if args.epochs else {}
        result = cifarlab.train(preset=preset, data=args.data, workspace=args.workspace, **extra)
        elapsed, curve = 0.0, []
        for m in result.history:
            elapsed += m["epoch_seconds"] + m["eval_seconds"]
            curve.append({"epoch": m["epoch"], "test_acc": round(m["test_acc"], 4),
                          "seconds": round(elapsed, 1)})  # fmt: skip
        target = TARGETS.get(preset)
        reached = next((c["seconds"] for c in curve if target and c["test_acc"] >= target), None)
        out[preset] = {
            "final_test_acc": round(result.summary["final_test_acc"], 4),
            "train_seconds": round(result.summary["train_seconds"], 1),
            "target": target,
            "seconds_to_target": reached,
            "images_per_sec": round(result.summary["images_per_sec"]),
            "precision": result.info["precision"],
            "epochs": curve,
        }
        print(json.dumps({preset: out[preset]}), flush=True)
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
