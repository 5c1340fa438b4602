"""Training throughput: cifarlab vs a plain PyTorch loop, next to the machine's matmul peak.

    PYTHONPATH=src python benchmarks/throughput.py [--models tutorial,speedrun] [--steps 8]
    PYTHONPATH=src python benchmarks/throughput.py --device cuda --steps 50

For each net: training images/s through cifarlab's trainer (tensor loader with
crop-flip, `--precision auto`, channels_last) and through the PyTorch tutorial's
loop (per-image PIL decode + transforms in a DataLoader, fp32, NCHW, no autocast),
the achieved GFLOP/s of each (training FLOPs per image from `cifarlab summary`),
and the fp32 / bf16 matmul peak of this machine measured in the same run.
``--device cuda`` runs all of it on the GPU (the plain loop still decodes on the CPU,
as the tutorial's does). Prints JSON. Compare ratios within one run: the machines are
shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import at_least_one, machine, run  # benchmarks/, beside this file
from loader import SHARED, TutorialDataset, cifarlab_images_per_s

from cifarlab.data import load_dataset
from cifarlab.data.imagefolder import encoded_images
from cifarlab.models import create_model
from cifarlab.models.summary import summarize_model
from cifarlab.train.precision import cpu_supports_bf16, resolve_device

BATCH = {"tutorial": 64, "simple": 64, "stacked": 64, "wobbly": 64, "resnet18": 128,
         "speedrun": 1024, "speedrun-small": 512}  # fmt: skip
# tiny nets take ~5 ms a step: time enough steps (~2 s) to rise above the noise
MIN_STEPS = {"tutorial": 300, "simple": 300}


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 1.0, tries: int = 3):
    """GFLOP/s of square matmuls, the machine's practical ceiling for convs.

    The best of a few tries: a shared machine's neighbours only ever lower it
    (single tries of bf16 varied from 565 to 1,900 GFLOP/s here).
    """
    n = 8192 if device.type == "cuda" else 2048  # a GPU needs a big product to fill it
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(tries):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
            _sync(device)  # a GPU queues the work: the clock must wait for it
        best = max(best, 2 * n**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop_images_per_s(name: str, dataset, batch: int, steps: int, device) -> float:
    """The tutorial's loop: DataLoader of per-image PIL work, fp32, contiguous, SGD."""
    torch.manual_seed(0)
    model = create_model(name).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = torch.utils.data.DataLoader(dataset, batch, shuffle=True, num_workers=0)
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 1:  # the first batch warms up
            _sync(device)
            seen, start = 0, time.perf_counter()
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if i == steps:
            break
    _sync(device)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--models", default="tutorial,wobbly,resnet18,speedrun")
    parser.add_argument(
        "--steps",
        type=at_least_one,
        default=8,
        help="timed training steps per net (tutorial and simple: at least 300)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    out: dict = {
        "machine": machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data": args.data,
        "matmul_peak_gflops": {
            "fp32": round(matmul_peak(torch.float32, device)),
            # emulated bf16 (no AVX-512 BF16 or AMX) is no peak: one 2048x2048 product took
            # 63 s (0.27 GFLOP/s) on an AVX2 CPU
            "bf16": round(matmul_peak(torch.bfloat16, device))
            if device.type == "cuda" or cpu_supports_bf16()
            else None,
        },
        "nets": {},
    }
    data = load_dataset(args.data, val_size=0)
    entries = encoded_images(Path(args.data))["train"]
    classes = sorted({cls for cls, _ in entries})
    items = sorted(entries.items())
    dataset = TutorialDataset([b for _, b in items], [classes.index(c) for (c, _), _ in items],
                              data.mean, data.std)  # fmt: skip
    names = args.models.split(",")
    steps = {name: max(args.steps, MIN_STEPS.get(name, 0)) for name in names}
    # every plain loop first: cifarlab's training tunes this process's allocator for good
    plain = {name: plain_loop_images_per_s(name, dataset, BATCH.get(name, 64),
                                           max(2, steps[name] // 2), device)
             for name in names}  # fmt: skip
    for name in names:
        batch = BATCH.get(name, 64)
        flops = summarize_model(create_model(name), (3, 32, 32), batch).train_flops
        ours = cifarlab_images_per_s(args.data, batch * steps[name], model=name, batch_size=batch,
                                     optimizer="sgd", lr=0.01, device=args.device)  # fmt: skip
        peak = out["matmul_peak_gflops"]["bf16" if ours["precision"] == "bf16" else "fp32"]
        out["nets"][name] = {
            "batch_size": batch,
            "steps": steps[name],
            "train_gflop_per_image": round(flops / 1e9, 3),
            "cifarlab_images_per_s": round(ours["images_per_s"]),
            "cifarlab_precision": ours["precision"],
            "cifarlab_gflops": round(ours["images_per_s"] * flops / 1e9),
            "cifarlab_fraction_of_matmul_peak": round(ours["images_per_s"] * flops / 1e9 / peak, 2),
            "plain_loop_images_per_s": round(plain[name]),
            "speedup_vs_plain_loop": round(ours["images_per_s"] / plain[name], 2),
            "cifarlab_pass_cores_taken_by_other_work": ours["cores_taken"],
        }
        print(json.dumps({name: out["nets"][name]}), flush=True)
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run(main)
