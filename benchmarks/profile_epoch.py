"""Where a training step's time goes: torch.profiler over a few steps of a preset or model.

    PYTHONPATH=src python benchmarks/profile_epoch.py [--preset speedrun-cpu] [--steps 6]
    PYTHONPATH=src python benchmarks/profile_epoch.py --preset none --model tutorial --steps 300

Prints JSON: the share of CPU time per category (conv forward/backward,
batchnorm, activations, pooling, optimizer, augmentation + loading, loss,
other) and the top operators by self time. On a GPU (``--device cuda``) the shares
are of GPU kernel time, per operator that launched them, and ``gpu_busy`` says
what fraction of the epoch's wall time the GPU was computing (the rest is launch
and Python overhead).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import torch
from common import at_least_one, run  # benchmarks/, beside this file
from loader import SHARED, warm_trainer
from torch.profiler import ProfilerActivity, profile, record_function

from cifarlab.config import make_run_config

CATEGORIES = (  # first match wins, on the lower-cased op name
    # the small-map convs' weight gradient as matmuls (train/small_map_conv.py): its autograd
    # node here; the aten::mm it runs is moved out of "linear" below (_matmuls_of_convs)
    ("conv backward", ("convolution_backward", "mkldnn_convolution_backward", "matmulweightgrad")),
    ("conv forward", ("conv", "mkldnn_convolution")),
    ("batchnorm", ("batch_norm",)),
    ("activation", ("gelu", "relu")),
    ("pooling", ("pool",)),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("optimizer", ("optimizer", "sgd", "adam", "_foreach", "lerp")),
    ("linear", ("addmm", "mm", "linear")),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--preset", default="speedrun-cpu", help="a preset, or none: defaults")
    parser.add_argument("--model", help="profile this model (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="(default: the preset's)")
    parser.add_argument("--steps", type=at_least_one, default=6)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()
    options = {"preset": None if args.preset == "none" else args.preset, "device": args.device}
    options |= {"model": args.model} if args.model else {}
    options |= {"batch_size": args.batch_size} if args.batch_size else {}
    config = make_run_config(data=args.data, **options)
    trainer, precision = warm_trainer(args.data, config.batch_size * args.steps, **options)
    gpu = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof, record_function("epoch"):
        wall_us = trainer.train_epoch(1)["epoch_seconds"] * 1e6  # the epoch, not the profiler
    # on a GPU: kernel time, booked to the CPU-side op that launched each kernel
    metric = "self_device_time_total" if gpu else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if e.key != "epoch" and getattr(e, metric) > 0]
    if gpu:
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    total = sum(getattr(e, metric) for e in events)
    shares: dict[str, float] = defaultdict(float)
    for e in events:
        name = e.key.lower()
        category = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        shares[category] += getattr(e, metric) / total
    if not gpu:
        moved = _matmuls_of_convs(prof) / total
        shares["linear"] -= moved
        shares["conv backward"] += moved
    top = sorted(events, key=lambda e: -getattr(e, metric))[:12]
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    print(json.dumps({
        "preset": args.preset, "model": config.model, "precision": precision,
        "batch_size": config.batch_size, "steps": args.steps, "device": str(trainer.device),
        **({"gpu_busy": round(total / wall_us, 3)} if gpu else {}),
        f"share_of_{'gpu' if gpu else 'cpu'}_time": {k: round(v, 3) for k, v in ranked},
        "top_ops": [(e.key, round(getattr(e, metric) / total, 3)) for e in top],
    }, indent=2))  # fmt: skip


def _matmuls_of_convs(prof) -> float:
    """CPU µs of the aten::mm calls made inside the small-map convs' weight gradient: by
    name they are "linear", by what they compute a conv's backward."""

    def inside(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if "matmulweightgrad" in parent.name.lower():
                return True
            parent = parent.cpu_parent
        return False

    return sum(e.self_cpu_time_total for e in prof.events() if e.name == "aten::mm" and inside(e))


if __name__ == "__main__":
    run(main)
