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

from common import at_least_one, check_presets, run, workspace  # benchmarks/, beside this
from loader import SHARED

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
    parser.add_argument("--runs", type=at_least_one, default=1, help="seeds per variant (0..N-1)")
    parser.add_argument("--only", help=f"comma-separated tricks to take out, of: "
                        f"{', '.join(WITHOUT)} (default: all)")  # fmt: skip
    parser.add_argument("--epochs", type=at_least_one, help="override the preset's epochs")
    args = parser.parse_args()
    tricks = [t.strip() for t in args.only.split(",")] if args.only else list(WITHOUT)
    unknown = [t for t in tricks if t not in WITHOUT]
    if unknown:  # before the first training, not after it
        parser.error(
            f"--only: unknown trick(s) {', '.join(unknown)}; choose from {', '.join(WITHOUT)}"
        )
    extra = {"epochs": args.epochs} if args.epochs is not None else {}
    check_presets([args.preset], **extra)
    with workspace(None, "cifarlab-ablation-") as scratch:
        measure(args, tricks, scratch, extra)


def measure(args: argparse.Namespace, tricks: list[str], workspace: str, extra: dict) -> None:
    out: dict = {"preset": args.preset, "data": args.data, "runs": args.runs, **extra}
    base = final_accuracy(args.preset, args.data, workspace, args.runs, **extra)
    out["preset_as_is"] = base
    print(json.dumps({"preset_as_is": base}), flush=True)
    for trick in tricks:
        options = {**extra, **WITHOUT[trick]}
        result = final_accuracy(args.preset, args.data, workspace, args.runs, **options)
        result["points_vs_preset"] = round(
            (result["final_test_acc"] - base["final_test_acc"]) * 100, 2
        )
        out[f"without {trick}"] = result
        print(json.dumps({f"without {trick}": result}), flush=True)
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run(main)
