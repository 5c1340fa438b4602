"""Which precision and memory layout train fastest on this CPU: what `--precision auto` and
the presets' channels_last should pick here.

    PYTHONPATH=src python benchmarks/precision_layout.py [--models speedrun-small,tutorial]

For each net, cifarlab's trainer on ready-made batches (no data work: the step alone) in
four settings, fp32 or bf16 autocast, NCHW or channels_last, timed in turns within one
process (`--rounds` passes of each, best kept), so the machine's drift hits all four alike.
Prints JSON: images/s per setting, each as a ratio to fp32 NCHW, which setting
`--precision auto` takes here, and whether oneDNN runs bf16 natively on this CPU
(AVX-512 BF16 or AMX; elsewhere bf16 is emulated).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from common import at_least_one, machine, run  # benchmarks/, beside this file
from loader import SHARED, ReadyBatches, warm_trainer
from throughput import BATCH  # each net's usual batch size

from cifarlab.models import check_model
from cifarlab.train.precision import resolve_precision

SETTINGS = {  # name: (precision, channels_last)
    "fp32 NCHW": ("fp32", False),
    "fp32 channels_last": ("fp32", True),
    "bf16 NCHW": ("bf16", False),
    "bf16 channels_last": ("bf16", True),
}


def compare(data: str, model: str, steps: int, rounds: int) -> dict:
    batch = BATCH.get(model, 64)
    trainers = {}
    for name, (precision, channels_last) in SETTINGS.items():
        trainer, _ = warm_trainer(data, steps * batch, model=model, batch_size=batch,
                                  precision=precision, channels_last=channels_last)  # fmt: skip
        ready = next(iter(trainer.train_loader))
        trainer.train_loader = ReadyBatches(ready, steps)
        trainers[name] = trainer
    best = dict.fromkeys(SETTINGS, 0.0)
    for _ in range(rounds):
        for name, trainer in trainers.items():
            rate = trainer.train_epoch(1)["images_per_sec"]
            best[name] = max(best[name], rate)
    base = best["fp32 NCHW"]
    auto = resolve_precision("auto", torch.device("cpu"), channels_last=True)
    return {
        "batch_size": batch,
        "images_per_s": {name: round(rate) for name, rate in best.items()},
        "vs_fp32_nchw": {name: round(rate / base, 2) for name, rate in best.items()},
        "auto_with_channels_last": auto,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--models", default="speedrun-small,tutorial")
    parser.add_argument("--steps", type=at_least_one, default=10, help="steps per pass")
    parser.add_argument("--rounds", type=at_least_one, default=3, help="passes of each setting")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        check_model(model)  # a misspelt name fails now, not after the first net's passes
    out = {"machine": machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    for model in models:
        out[model] = compare(args.data, model, args.steps, args.rounds)
        print(json.dumps({model: out[model]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run(main)
