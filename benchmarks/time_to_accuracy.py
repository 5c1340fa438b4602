"""Time to accuracy: training time of the presets to reach the blog's 83%, 93% and 94%.

    PYTHONPATH=src python benchmarks/time_to_accuracy.py [--presets quick-cpu,speedrun-cpu]
    PYTHONPATH=src python benchmarks/time_to_accuracy.py --presets speedrun --runs 10  # GPU

Trains each preset on the full CIFAR-10 training split and prints JSON with the
test accuracy and cumulative time after every epoch. Time counts from the first
training step to the final test accuracy, evaluation and TTA included (the run's
``train_seconds``: each epoch's steps and evaluation; the bookkeeping between epochs,
checkpoints and result rows, is not counted, nor is building the model and its whitening
stem before the first step); loading the data once is excluded but reported (a cache hit where
it was decoded before). With
``--runs N`` each preset trains N times (seeds 0..N-1) and the mean is reported,
as airbench reports its 94%. On a GPU one untimed 1-epoch run per preset warms up
cuDNN's algorithm search and the CUDA context first, as airbench does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from common import at_least_one, check_presets, machine, run, workspace  # benchmarks/, beside this
from loader import SHARED, cores_taken

import cifarlab
from cifarlab.data import load_dataset

TARGETS = {"quick-cpu": 0.83, "speedrun-cpu": 0.93, "speedrun": 0.94}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--presets", default="quick-cpu,speedrun-cpu")
    parser.add_argument("--epochs", type=at_least_one, help="override the presets' epochs")
    parser.add_argument("--runs", type=at_least_one, default=1,
                        help="runs per preset (seeds 0..N-1)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--precision", help="override the presets' precision (fp32/bf16/fp16)")
    parser.add_argument("--workspace", help="keep the runs here (default: a scratch folder)")
    args = parser.parse_args()
    extra = ({"epochs": args.epochs} if args.epochs is not None else {}) | {"compile": args.compile}
    extra |= {"precision": args.precision} if args.precision else {}
    check_presets(args.presets.split(","), **extra)
    with workspace(args.workspace, "cifarlab-tta-") as args.workspace:
        measure(args, extra)


def measure(args: argparse.Namespace, extra: dict) -> None:
    out: dict = {
        "machine": machine(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "data": f"{args.data} (CIFAR-10, JPEG q75 copy)" if "jpeg" in args.data else args.data,
        "precision": args.precision or "the preset's",
    }
    start = time.perf_counter()
    load_dataset(args.data, val_size=0)
    out["data_load_seconds"] = round(time.perf_counter() - start, 2)
    for preset in args.presets.split(","):
        if torch.cuda.is_available():  # untimed: CUDA context, cuDNN autotuning, allocator
            cifarlab.train(preset=preset, data=args.data, workspace=args.workspace, quiet=True,
                           **{**extra, "epochs": 1, "seed": 10_000})  # fmt: skip
        runs = [one_run(preset, args, seed, extra) for seed in range(args.runs)]
        out[preset] = runs[0] if len(runs) == 1 else summarize_runs(runs)
        print(json.dumps({preset: out[preset]}), flush=True)
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


def one_run(preset: str, args: argparse.Namespace, seed: int, extra: dict) -> dict:
    result = cifarlab.train(preset=preset, data=args.data, workspace=args.workspace, seed=seed,
                            quiet=args.runs > 1, **extra)  # fmt: skip
    if result.status != "completed":
        raise SystemExit(f"{preset} seed {seed}: {result.status}: {result.error}")
    elapsed, curve = 0.0, []
    for m in result.history:
        elapsed += m["epoch_seconds"] + m["eval_seconds"]
        curve.append({"epoch": m["epoch"], "test_acc": round(m["test_acc"], 4),
                      "seconds": round(elapsed, 2), "cores_taken": cores_taken(m)})  # fmt: skip
    target = TARGETS.get(preset)
    reached = next((c["seconds"] for c in curve if target and c["test_acc"] >= target), None)
    run = {
        "seed": seed,
        "final_test_acc": round(result.summary["final_test_acc"], 4),
        "train_seconds": round(result.summary["train_seconds"], 2),
        # evaluation and the final TTA count in the time: how much of it they are
        "eval_seconds": round(sum(m["eval_seconds"] for m in result.history), 2),
        "target": target,
        "seconds_to_target": reached,
        "images_per_sec": round(result.summary["images_per_sec"]),
        # mean CPU cores other processes and the hypervisor took: the run's conditions
        "cpu_contention": round(result.summary.get("cpu_contention") or 0, 2),
        "precision": result.info["precision"],
        "epochs": curve,
    }
    if args.runs > 1:
        print(json.dumps({preset: {k: v for k, v in run.items() if k != "epochs"}}), flush=True)
    return run


def summarize_runs(runs: list[dict]) -> dict:
    """Mean and spread over seeds; the last run's per-epoch curve as an example."""
    accs = [r["final_test_acc"] for r in runs]
    secs = [r["train_seconds"] for r in runs]
    return {
        "runs": len(runs),
        "mean_final_test_acc": round(statistics.mean(accs), 4),
        "std_final_test_acc": round(statistics.stdev(accs), 4),
        "min_final_test_acc": min(accs),
        "max_final_test_acc": max(accs),
        "mean_train_seconds": round(statistics.mean(secs), 2),
        "mean_eval_seconds": round(statistics.mean(r["eval_seconds"] for r in runs), 2),
        "median_train_seconds": round(statistics.median(secs), 2),
        "target": runs[0]["target"],
        "mean_reaches_target": statistics.mean(accs) >= (runs[0]["target"] or 0),
        "images_per_sec": round(statistics.mean(r["images_per_sec"] for r in runs)),
        "precision": runs[0]["precision"],
        "epochs_of_last_run": runs[-1]["epochs"],
    }


if __name__ == "__main__":
    run(main)
