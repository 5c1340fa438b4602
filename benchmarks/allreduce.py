"""What averaging a net's gradients over torchrun's ranks costs: one all-reduce of all its
parameters' worth of floats, as ``cifarlab.distributed.average_gradients`` does each step.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/allreduce.py \
        --models tutorial,speedrun-tiny,speedrun-small,speedrun

Prints JSON from rank 0: per net, its parameters and the median milliseconds of 20 all-reduces.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cifarlab.distributed import World, average_gradients, join, launched_world
from cifarlab.models import create_model


def time_allreduce(world: World, model: torch.nn.Module, repeats: int = 20) -> float:
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    average_gradients(world, model.parameters())  # warm-up: gloo's first message sets up pairs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        average_gradients(world, model.parameters())
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tutorial,speedrun-tiny,speedrun-small,speedrun")
    args = parser.parse_args()
    world = launched_world()
    join(world)
    results = {}
    for name in args.models.split(","):
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        results[name] = {"parameters": params, "allreduce_ms": time_allreduce(world, model)}
    if world.main:
        print(json.dumps({"ranks": world.size, "threads": torch.get_num_threads(), **results},
                         indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
