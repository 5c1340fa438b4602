"""One run spread over the processes torchrun starts (ranks), on GPUs or CPU cores:

    torchrun --nproc_per_node 4 -m cifarlab train --preset speedrun

Every rank draws the same batches (the loader is seeded) and trains on its slice of each;
the gradients are averaged over the ranks before every step. So N ranks with
``--batch-size B`` take the steps one process with batch B takes: equal up to the order of
float sums for nets without BatchNorm (tested); BatchNorm normalizes each rank's slice, as
``DistributedDataParallel`` does without SyncBatchNorm. Rank 0 keeps the run's books (the
checks, the results database, checkpoints, progress); evaluation is shared out by batch.

Why not ``DistributedDataParallel``: the speedrun recipe freezes the stem's bias after a
few epochs (``requires_grad_(False)``), which DDP's reducer does not survive, and these
nets' gradients are a few MB: one all-reduce after the backward pass cost 8 ms for
speedrun-small between 2 CPU ranks, under 1% of its ~1.2 s step there
(``benchmarks/allreduce.py``, BENCHMARKS.md).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

from cifarlab.errors import CifarlabError
from cifarlab.process import flush_output, one_of_several_ranks

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """Where this process stands among the run's ranks; one process: rank 0 of 1."""

    rank: int = 0
    local_rank: int = 0  # the rank among this machine's processes: its GPU
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def spread(self) -> bool:
        return self.size > 1

    def share(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of a batch all ranks drew alike. Slices are equal, so the mean of
        the ranks' gradients is the whole batch's; a last batch is cut to a multiple of the
        ranks (at most size - 1 images left out, and only from it)."""
        if not self.spread:
            return x, y
        per = len(y) // self.size
        rows = slice(self.rank * per, (self.rank + 1) * per)
        return x[rows], y[rows]

    def takes(self, batch: int) -> bool:
        """Whether this rank evaluates the ``batch``-th batch: they take turns."""
        return batch % self.size == self.rank


ONE_PROCESS = World()


def launched_world() -> World:
    """The ranks torchrun started, read from what it sets; one process otherwise."""
    if not one_of_several_ranks():
        return ONE_PROCESS
    env = {key: os.environ.get(key) for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    try:
        world = World(
            int(env["RANK"]), int(env["LOCAL_RANK"] or env["RANK"]), int(env["WORLD_SIZE"])
        )
    except (TypeError, ValueError):
        raise CifarlabError(
            f"WORLD_SIZE={env['WORLD_SIZE']} but RANK={env['RANK']} and LOCAL_RANK="
            f"{env['LOCAL_RANK']}: start a spread run with torchrun, which sets all three"
        ) from None
    if not 0 <= world.rank < world.size:
        raise CifarlabError(
            f"RANK={world.rank} is outside WORLD_SIZE={world.size}; start with torchrun"
        )
    return world


_joined = False  # set by join: the group is this package's, which ends it (exit_rank)


def join(world: World) -> None:
    """Connect this rank to the others (once a process): NCCL between GPUs, gloo on CPUs."""
    if not world.spread or dist.is_initialized():
        return
    if not os.environ.get("MASTER_ADDR"):  # WORLD_SIZE from another launcher, or by hand
        raise CifarlabError(
            f"WORLD_SIZE={world.size} but no MASTER_ADDR: cifarlab spreads a run over the "
            "processes torchrun starts; start it with torchrun, or unset WORLD_SIZE"
        )
    gpus = torch.cuda.is_available() and dist.is_nccl_available()
    backend = "cpu:gloo,cuda:nccl" if gpus else "gloo"
    # a rank that waits longer than this on the others has lost them: say so, don't hang
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    atexit.register(_leave)
    global _joined
    _joined = True


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def joined() -> bool:
    """Whether this process is a rank of a spread run connected to the others (``join``)."""
    return _joined and dist.is_initialized()


def exit_rank(code: int) -> NoReturn:
    """End a rank's process with ``code`` once its command is done, skipping the
    interpreter's teardown: a rank could abort there after its run was finished and
    recorded ("terminate called without an active exception", gloo), which made torchrun's
    status a failure: 9 of 200 launches before, 0 of 200 since (BENCHMARKS.md).
    The exit handlers run first, so the group is destroyed (``_leave``) as in any exit."""
    atexit._run_exitfuncs()  # the handlers Python would run on its way out, in their order
    flush_output()  # what the handlers printed
    os._exit(code)


def refuse_device_index(world: World, device: str) -> None:
    if world.spread and device.startswith("cuda:"):
        raise CifarlabError(
            f"--device {device} under torchrun: each rank trains on the GPU of its "
            "local rank; pass --device cuda (or auto), and CUDA_VISIBLE_DEVICES to pick GPUs"
        )


def check_spread(world: World, batch_size: int) -> None:
    """What a run spread over ranks needs: a batch the ranks can share equally."""
    if world.spread and batch_size < 2 * world.size:
        raise CifarlabError(
            f"--batch-size {batch_size} over {world.size} ranks gives each fewer than 2 "
            f"images a step, which BatchNorm cannot normalize; pass --batch-size {2 * world.size} "
            "or more"
        )
    if world.spread and batch_size % world.size:
        fit = batch_size - batch_size % world.size or world.size
        raise CifarlabError(
            f"--batch-size {batch_size} does not split over {world.size} ranks: each "
            f"trains on an equal share of every batch; pass --batch-size {fit} (or a multiple of "
            f"{world.size})"
        )


def rank_device(world: World, device: torch.device) -> torch.device:
    """Each rank's GPU is its local rank's (torchrun's convention); CPU ranks share the CPU."""
    if device.type != "cuda" or not world.spread:
        return device
    count = torch.cuda.device_count()
    here = int(os.environ.get("LOCAL_WORLD_SIZE") or world.local_rank + 1)
    if max(here, world.local_rank + 1) > count:  # every rank says it, rank 0 included
        raise CifarlabError(
            f"{here} ranks on this machine but {count} GPU{'s' * (count != 1)}; start torchrun "
            f"with --nproc_per_node {count} or fewer"
        )
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def seed_generators(seed: int, device: torch.device, rank: int = 0) -> None:
    """Seed this process's generators; each rank's stream apart from the others' (dropout)."""
    seed += RANK_SEED_STRIDE * rank
    if device.type == "cuda":
        torch.manual_seed(seed)  # the CPU's generator and every GPU's
    else:  # manual_seed would also queue a seed for the GPUs of the machine: the caller's
        torch.default_generator.manual_seed(seed)


RANK_SEED_STRIDE = 1_000_003  # a prime: rank r's seeds never meet rank 0's nearby ones


def rank_0_result(world: World, produce: Callable[[], T]) -> T:
    """``produce()`` run on rank 0 alone, its result handed to every rank. If it raises, the
    other ranks stop too (``StoppedWithMain``): rank 0 says why."""
    if not world.spread:
        return produce()
    box: list[Any] = [None]
    if world.main:
        try:
            box[0] = ("ok", produce())
        except BaseException:
            dist.broadcast_object_list([("failed", None)], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    outcome, value = box[0]
    if outcome == "failed":
        raise StoppedWithMain()
    return value


class StoppedWithMain(CifarlabError):
    """A rank other than 0 ends because rank 0 failed; rank 0 prints the reason, and the
    launch's exit status is rank 0's (this rank exits 0: see cli.main)."""

    def __init__(self) -> None:
        super().__init__("rank 0 failed (its error is above); this rank stops with it")


# Rank 0 records a failed run, then says so here (torchrun's key-value store), so that a
# rank meeting the same failure (a user's model raising, a batch BatchNorm refuses) ends
# quietly instead of repeating it, and without exiting first: torchrun stops every rank
# when one exits non-zero, which killed rank 0 before its record was written.
_FAILED_KEY = "cifarlab/rank-0-failed"


def tell_main_failed() -> None:
    """In rank 0's command, failing: tell the other ranks (no-op elsewhere)."""
    with contextlib.suppress(CifarlabError):  # torchrun's variables garbled: nobody to tell
        say_main_failed(launched_world())


def ends_quietly(err: BaseException) -> bool:
    """On a rank other than 0, failing with ``err``: whether rank 0 says this failure, so
    this rank ends quietly, with status 0. The launch's status is then rank 0's, and rank 0
    is not stopped by torchrun (which stops every rank when one ends with an error) before
    it has recorded the run. Rank 0 says it when it told so (``say_main_failed``), and for
    anything before the ranks connect: the command line, the same on every rank."""
    try:
        world = launched_world()
    except CifarlabError:
        return False
    if world.main or getattr(err, "rank_own", False):  # its own: rank 0 was waited for
        return False
    return isinstance(err, StoppedWithMain) or not dist.is_initialized() or main_failed(world)


def say_main_failed(world: World) -> None:
    """On rank 0, once the failed run is recorded: tell the other ranks."""
    if world.spread and world.main and dist.is_initialized():
        with contextlib.suppress(Exception):  # the store went with the launch: nothing to tell
            dist.distributed_c10d._get_default_store().set(_FAILED_KEY, "1")


def main_failed(world: World, within: float = 10.0) -> bool:
    """On another rank: whether rank 0 said it failed, waiting up to ``within`` seconds."""
    if not (world.spread and dist.is_initialized()):
        return False
    deadline = time.monotonic() + within
    try:
        store = dist.distributed_c10d._get_default_store()
        while not store.check([_FAILED_KEY]):  # polled: store.wait logs its timeout in C++
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    except Exception:  # noqa: BLE001 - the store went with the launch: this rank's own failure
        return False


def all_sum(world: World, *values: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over the ranks (float64: counts stay exact), as one all-reduce."""
    flat = torch.stack([v.detach().reshape(()).double() for v in values])
    if world.spread:
        dist.all_reduce(flat)
    return list(flat.unbind())


def sum_in_place(world: World, tensors: Iterable[torch.Tensor]) -> None:
    """Sum each tensor over the ranks, in place."""
    if world.spread:
        for t in tensors:
            dist.all_reduce(t)


def average_gradients(world: World, parameters: Iterable[torch.nn.Parameter]) -> None:
    """Every rank's gradients become the mean over the ranks."""
    if world.spread:
        grads = [p.grad for p in parameters if p.grad is not None]
        _flat_by_dtype(grads, lambda flat: (dist.all_reduce(flat), flat.div_(world.size)))


def rank_0_weights(world: World, module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers (BatchNorm's running statistics) on every rank."""
    if world.spread:
        tensors = [t.data for t in (*module.parameters(), *module.buffers())]
        _flat_by_dtype(tensors, lambda flat: dist.broadcast(flat, src=0))


def _flat_by_dtype(tensors: list[torch.Tensor], collective: Callable[[torch.Tensor], Any]) -> None:
    """One collective per dtype over the tensors laid end to end, written back in place: one
    message, not one per tensor, and any layout (channels_last) goes."""
    # in order of first appearance: a set's order follows the dtypes' addresses, which differ
    # between processes, and ranks then paired float32 with int64 (gloo: "size doesn't match")
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        same = [t for t in tensors if t.dtype == dtype]
        flat = torch.cat([t.reshape(-1) for t in same])
        collective(flat)
        parts = flat.split([t.numel() for t in same])
        torch._foreach_copy_(same, [part.view_as(t) for part, t in zip(parts, same)])


def gathered(world: World, value: T) -> list[T]:
    """``value`` from every rank, in rank order (small picklable values)."""
    if not world.spread:
        return [value]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out
