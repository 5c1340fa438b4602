"""Who else used this process's CPUs during an epoch: other processes, and the hypervisor.

On a shared machine a slow epoch is usually someone else's work: one busy core halved the
speedrun net's speed on our 2-core machines (DESIGN.md), and a VM's host can take its cores
too (steal time). Each epoch records both, in cores, so that a timing is read with the
conditions it was taken in, and a run warns when they cost it (``WarnWhenBusy``).

Linux only (``/proc/stat``); elsewhere nothing is recorded.
"""

from __future__ import annotations

import os
import time

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def allowed_cpus() -> int:
    """How many CPUs this process may run on (its affinity set; the cgroup quota is ignored)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _sample() -> tuple[float, int, int] | None:
    """(this process's CPU seconds, busy and steal ticks of the CPUs it may run on)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    except (OSError, AttributeError):
        return None
    busy = steal = 0
    for line in lines:
        name, *ticks = line.split()
        if name in cpus:  # user nice system idle iowait irq softirq steal ...
            user, nice, system, _, _, irq, softirq, stolen = map(int, ticks[:8])
            busy += user + nice + system + irq + softirq
            steal += stolen
    own = os.times()  # every thread of this process, and its children that have ended
    return own.user + own.system + own.children_user + own.children_system, busy, steal


def cores_taken(metrics: dict) -> float | None:
    """Cores that other work (processes and hypervisor) took during an epoch; None where
    nothing was measured."""
    if "others_cpu" not in metrics:
        return None
    return metrics["others_cpu"] + metrics["steal_cpu"]


class CpuShareMeter:
    """Started when an epoch starts; ``stop()`` gives what others took of its CPUs since."""

    def __init__(self) -> None:
        self.started, self.first = time.perf_counter(), _sample()

    def stop(self) -> dict[str, float]:
        """``others_cpu`` (cores busy with other processes) and ``steal_cpu`` (cores the
        hypervisor took), as means over the time since the start; {} where not measurable."""
        last = _sample()
        if self.first is None or last is None:
            return {}
        seconds = max(time.perf_counter() - self.started, 1e-6)
        own = last[0] - self.first[0]
        busy, steal = ((b - a) / _TICKS_PER_SECOND for a, b in zip(self.first[1:], last[1:]))
        # own time and the kernel's ticks are counted apart: clamp the rounding at zero
        return {"others_cpu": max(0.0, busy - own) / seconds, "steal_cpu": steal / seconds}
