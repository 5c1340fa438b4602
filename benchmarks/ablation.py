"""Ablation: what each trick of a speedrun preset is worth, one trick removed at a time.

    PYTHONPATH=src python benchmarks/ablation.py [--preset quick-cpu] [--runs 1]

Trains the preset as it is, then once per trick with that trick taken out, on the full
CIFAR-10 training split, and prints JSON: final test accuracy (with the preset's TTA
unless the trick removed is TTA) and the difference from the preset, with the run's
time and the CPU cores other work took meanwhile. One seed moves the final accuracy by
a few tenths of a point, so read small differences with ``--runs 3`` or more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

from loader import SHARED  # benchmarks/loader.py, beside this file

import cifarlab

# each trick as the options that take it out of the preset
WITHOUT = {
    "tta": {"tta": 0},
    "lookahead": {"lookahead": False},
    "whitening": {"whiten": False, "whiten_bias_epochs": None},
    "label smoothing": {"label_smoothing": 0.0},
    "alternating flip": {"augment": "crop-flip"},
    "fast norm biases": {"norm_lr_scale": 1.0},
}


def final_accuracy(preset: str, data: str, workspace: str, seeds: int, **options) -> dict:
    runs = [cifarlab.train(preset=preset, data=data, workspace=workspace, seed=seed,
                           quiet=True, **options) for seed in range(seeds)]  # fmt: skip
    failed = [r for r in runs if r.status != "completed"]
    if failed:
        raise SystemExit(f"{preset} {options}: {failed[0].status}: {failed[0].error}")
    return {
        "final_test_acc": round(statistics.fmean(r.summary["final_test_acc"] for r in runs), 4),
        "train_seconds": round(statistics.fmean(r.summary["train_seconds"] for r in runs), 1),
        "cpu_contention": round(
            statistics.fmean(r.summary.get("cpu_contention") or 0 for r in runs), 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--preset", default="quick-cpu")
    parser.add_argument("--runs", type=int, default=1, help="seeds per variant (0..N-1)")
    parser.add_argument("--only", help="comma-separated tricks to take out (default: all)")
    args = parser.parse_args()
    workspace = tempfile.mkdtemp(prefix="cifarlab-ablation-")
    tricks = args.only.split(",") if args.only else list(WITHOUT)
    out: dict = {"preset": args.preset, "data": args.data, "runs": args.runs}
    out["preset_as_is"] = base = final_accuracy(args.preset, args.data, workspace, args.runs)
    print(json.dumps({"preset_as_is": base}), flush=True)
    for trick in tricks:
        result = final_accuracy(args.preset, args.data, workspace, args.runs, **WITHOUT[trick])
        result["points_vs_preset"] = round(
            (result["final_test_acc"] - base["final_test_acc"]) * 100, 2
        )
        out[f"without {trick}"] = result
        print(json.dumps({f"without {trick}": result}), flush=True)
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
