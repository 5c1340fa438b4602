"""Where a training step's time goes: torch.profiler over a few steps of a preset or model.

    PYTHONPATH=src python benchmarks/profile_epoch.py [--preset speedrun-cpu] [--steps 6]
    PYTHONPATH=src python benchmarks/profile_epoch.py --preset none --model tutorial --steps 300

Prints JSON: the share of CPU time per category (conv forward/backward,
batchnorm, activations, pooling, optimizer, augmentation + loading, loss,
other) and the top operators by self time.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

from loader import SHARED, warm_trainer  # benchmarks/loader.py, beside this file
from torch.profiler import ProfilerActivity, profile, record_function

from cifarlab.config import make_run_config

CATEGORIES = (  # first match wins, on the lower-cased op name
    ("conv backward", ("convolution_backward", "mkldnn_convolution_backward")),
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
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    options = {"preset": None if args.preset == "none" else args.preset}
    options |= {"model": args.model} if args.model else {}
    options |= {"batch_size": args.batch_size} if args.batch_size else {}
    config = make_run_config(data=args.data, **options)
    trainer, precision = warm_trainer(args.data, config.batch_size * args.steps, **options)
    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function("epoch"):
        trainer.train_epoch(1)
    events = [e for e in prof.key_averages() if e.key != "epoch"]
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = defaultdict(float)
    for e in events:
        name = e.key.lower()
        category = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        shares[category] += e.self_cpu_time_total / total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    print(json.dumps({
        "preset": args.preset, "model": config.model, "precision": precision,
        "batch_size": config.batch_size, "steps": args.steps,
        "share_of_cpu_time": {k: round(v, 3) for k, v in ranked},
        "top_ops": [(e.key, round(e.self_cpu_time_total / total, 3)) for e in top],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
