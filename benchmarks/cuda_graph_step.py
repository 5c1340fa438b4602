"""What CUDA graphs could give: one training step, eager vs replayed from a CUDA graph.

    PYTHONPATH=src python benchmarks/cuda_graph_step.py [--model speedrun] [--steps 50]

A CUDA graph launches a whole step's kernels at once, so it removes the host's launch
overhead and nothing else. This times the same step (bf16 autocast, channels_last,
Nesterov SGD, label smoothing, one fixed batch) both ways, with CUDA events, in turns,
best of ``--repeats``: the ratio is the most graphs could save on the training steps
(data, lookahead and evaluation not included). On an H200 it was 1.05-1.06x
(BENCHMARKS.md): the speedrun step is bound by its kernels, not by launches. Prints JSON.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from cifarlab.models import create_model


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True,
                                weight_decay=5e-4)  # fmt: skip

    def step() -> None:
        # graphs replay fixed kernels: autocast's weight-cast cache must be off
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.2)
        loss.backward()
        optimizer.step()

    return step, optimizer


def capture(step, optimizer: torch.optim.Optimizer) -> torch.cuda.CUDAGraph:
    """Warm up on a side stream (the optimizer makes its state), then record one step."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # gradients are then allocated from the graph's pool
    with torch.cuda.graph(graph):
        step()
    return graph


def time_ms(run, steps: int) -> float:
    """Mean milliseconds per call of ``run`` over ``steps`` calls, by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()  # an empty queue: queued steps would hide the launches timed here
    start.record()
    for _ in range(steps):
        run()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="speedrun")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_graph_step.py: needs a CUDA device (CUDA graphs are GPU-only)")
    torch.backends.cudnn.benchmark = True
    cl = torch.channels_last
    x = torch.randn(args.batch_size, 3, 32, 32, device="cuda").contiguous(memory_format=cl)
    y = torch.randint(0, 10, (args.batch_size,), device="cuda")

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model(args.model).to("cuda", memory_format=cl).train()

    eager_step, eager_optimizer = make_step(fresh_model(), x, y)

    def eager() -> None:
        eager_optimizer.zero_grad(set_to_none=True)
        eager_step()

    graph_step, graph_optimizer = make_step(fresh_model(), x, y)
    graph = capture(graph_step, graph_optimizer)
    for _ in range(5):  # cuDNN's autotuning and the allocator settle
        eager()
        graph.replay()
    best = {"eager": float("inf"), "graph": float("inf")}
    for _ in range(args.repeats):
        best["eager"] = min(best["eager"], time_ms(eager, args.steps))
        best["graph"] = min(best["graph"], time_ms(graph.replay, args.steps))
    out = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "model": args.model,
        "batch_size": args.batch_size,
        "eager_ms_per_step": round(best["eager"], 3),
        "graph_ms_per_step": round(best["graph"], 3),
        "speedup": round(best["eager"] / best["graph"], 2),
        "eager_images_per_s": round(args.batch_size / best["eager"] * 1e3),
        "graph_images_per_s": round(args.batch_size / best["graph"] * 1e3),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    from common import run  # benchmarks/, beside this file

    run(main)
