"""Conv kernels on this CPU: where a bf16 training step's conv time goes, and the
matmul weight gradient (``train/small_map_conv.py``) against oneDNN's. Prints JSON.

    PYTHONPATH=src python benchmarks/conv_kernels.py [--models speedrun,resnet18] [--repeats 3]

Part 1, per 3x3 stride-1 conv shape of each net at its training batch size: GFLOP/s
of oneDNN's forward, input gradient and weight gradient, and of the nine-matmul
weight gradient, next to the bf16 matmul peak measured in the same run; and the
GFLOP/s of a step made of the net's convs alone at those rates, a ceiling no whole
net of them can beat.

Part 2, the whole training step: cifarlab's trainer on each net under each
``--max-pixels`` threshold (default 0, 16 and the current rule; 0 is oneDNN's weight
gradient everywhere), passes taken in turns; the best and median images/s of each, and
their ratios to the first threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from loader import SHARED, warm_trainer  # beside this file
from throughput import BATCH, matmul_peak

from cifarlab.models import create_model
from cifarlab.train import small_map_conv
from cifarlab.train.small_map_conv import MAX_PIXELS, weight_grad_by_matmuls

CL = torch.channels_last


def conv_shapes(name: str, batch: int) -> dict[tuple[int, int, int, int, int], int]:
    """How many 3x3 stride-1 convs of each (batch, C_in, C_out, H, W) net ``name`` has."""
    model = create_model(name).to(memory_format=CL)
    shapes: dict = {}

    def hook(module, inputs, output):
        x = inputs[0]
        shape = (batch, x.shape[1], module.out_channels, x.shape[2], x.shape[3])
        shapes[shape] = shapes.get(shape, 0) + 1

    for m in model.modules():
        if small_map_conv.switchable(m):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32).contiguous(memory_format=CL))
    return shapes


def conv_gflop(n: int, c_in: int, c_out: int, h: int, w: int) -> float:
    """GFLOP of one pass (forward, dX or dW) of a 3x3 conv of this shape."""
    return 2 * n * c_in * c_out * 9 * h * w / 1e9


def conv_ceiling(rates: dict, shapes: dict) -> int:
    """GFLOP/s of a step made of these convs alone, each part at its measured rate
    (the weight gradient by the path SmallMapConv2d picks): no net of them beats it."""
    flops = seconds = 0.0
    for shape, count in shapes.items():
        r = rates[shape]
        weight_grad = r["weight_grad_matmul" if r["matmul_path"] else "weight_grad_onednn"]
        gflop = count * conv_gflop(*shape)
        flops += 3 * gflop
        seconds += gflop * (1 / r["forward"] + 1 / r["input_grad"] + 1 / weight_grad)
    return round(flops / seconds)


def best_seconds(fn, tries: int = 3) -> float:
    fn()  # oneDNN builds its kernel on first use
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def kernel_rates(n: int, c_in: int, c_out: int, h: int, w: int) -> dict:
    """GFLOP/s of each part of one bf16 channels_last conv, random data."""
    x = torch.randn(n, c_in, h, w, dtype=torch.bfloat16).contiguous(memory_format=CL)
    weight = torch.randn(c_out, c_in, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=CL)
    grad = torch.randn(n, c_out, h, w, dtype=torch.bfloat16).contiguous(memory_format=CL)
    flops = conv_gflop(n, c_in, c_out, h, w) * 1e9  # each of forward, dX and dW

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
        )

    seconds = {
        "forward": best_seconds(lambda: torch.nn.functional.conv2d(x, weight, None, 1, 1)),
        "input_grad": best_seconds(backward([True, False, False])),
        "weight_grad_onednn": best_seconds(backward([False, True, False])),
        "weight_grad_matmul": best_seconds(lambda: weight_grad_by_matmuls(grad, x)),
    }
    rates = {k: round(flops / s / 1e9) for k, s in seconds.items()}
    rates["matmul_path"] = h * w <= MAX_PIXELS  # what SmallMapConv2d picks
    return rates


def step_rates(data: str, name: str, steps: int, repeats: int, thresholds: list[int]) -> dict:
    """Images/s of cifarlab's trainer per MAX_PIXELS threshold (0: oneDNN everywhere).

    One trainer, its convs switched; the threshold is read at every forward, so each pass
    runs under its own. Passes are taken in turns: the neighbours slow them all alike.
    """
    batch = BATCH.get(name, 64)
    before = os.environ.pop("CIFARLAB_MATMUL_WGRAD", None)  # a user's opt-out would hide it
    try:
        trainer, _ = warm_trainer(data, batch * steps, model=name, batch_size=batch,
                                  optimizer="sgd", lr=0.01)  # fmt: skip
    finally:
        if before is not None:
            os.environ["CIFARLAB_MATMUL_WGRAD"] = before
    passes: dict[int, list[float]] = {t: [] for t in thresholds}
    try:
        for epoch in range(1, repeats + 1):
            for t in thresholds:
                small_map_conv.MAX_PIXELS = t
                passes[t].append(round(trainer.train_epoch(epoch)["images_per_sec"], 1))
    finally:
        small_map_conv.MAX_PIXELS = MAX_PIXELS
    best = {t: max(p) for t, p in passes.items()}
    median = {t: statistics.median(p) for t, p in passes.items()}
    off = thresholds[0]
    return {
        "batch_size": batch,
        "max_pixels": thresholds,
        "best_images_per_s": best,
        "median_images_per_s": median,
        "every_pass": passes,
        f"speedup_of_best_vs_{off}": {t: round(best[t] / best[off], 3) for t in thresholds},
        f"speedup_of_median_vs_{off}": {t: round(median[t] / median[off], 3) for t in thresholds},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--models", default="speedrun,resnet18")
    parser.add_argument("--steps", type=int, default=4, help="training steps per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes of each, in turns")
    parser.add_argument("--skip-step", action="store_true", help="part 1 only")
    parser.add_argument("--max-pixels", default=f"0,16,{MAX_PIXELS}",
                        help="thresholds to compare in part 2, the first as the baseline "
                             "(0: oneDNN's weight gradient everywhere)")  # fmt: skip
    args = parser.parse_args()
    out: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16_matmul_peak_gflops": round(matmul_peak(torch.bfloat16, torch.device("cpu"))),
        "convs": {},
        "training_step": {},
    }
    for name in args.models.split(","):
        shapes = conv_shapes(name, BATCH.get(name, 64))
        rates = {shape: kernel_rates(*shape) for shape in shapes}
        out["convs"][name] = {
            "convs_alone_ceiling_gflops": conv_ceiling(rates, shapes),
            **{"x".join(map(str, shape)): r for shape, r in rates.items()},
        }
        print(json.dumps({name: out["convs"][name]}), flush=True)
    if not args.skip_step:
        for name in args.models.split(","):
            thresholds = [int(t) for t in args.max_pixels.split(",")]
            out["training_step"][name] = step_rates(args.data, name, args.steps, args.repeats,
                                                    thresholds)  # fmt: skip
            print(json.dumps({name: out["training_step"][name]}), flush=True)
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    from common import run  # benchmarks/, beside this file

    run(main)
