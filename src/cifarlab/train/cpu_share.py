"""Who else used this process's CPUs during an epoch: other processes, and the hypervisor.

On a shared machine a slow epoch is usually someone else's work: one busy core halved the
speedrun net's speed on our 2-core machines (../shared/DESIGN.md), and a VM's host can
take its cores too (steal time). Each epoch records both, in cores, so that a timing is
read with the conditions it was taken in, and a run warns when they cost it
(``WarnWhenBusy``).

Linux only (``/proc/stat``); elsewhere nothing is recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_job_root: int | None = None  # see count_as_own_job


def count_as_own_job(root_pid: int | None) -> None:
    """Count process ``root_pid`` and its other children as this process's own work, not
    another's: a parallel sweep and its workers are one job (``sweep --workers``), so one
    worker's "cores taken" then says what work outside the sweep took. None: stop."""
    global _job_root
    _job_root = root_pid


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
    own_seconds = own.user + own.system + own.children_user + own.children_system
    return own_seconds + _job_seconds(), busy, steal


def _job_seconds() -> float:
    """CPU seconds of the job's other processes (count_as_own_job): its root and the root's
    children, this process aside. They may start and end between two samples: a worker that
    ends mid-epoch only leaves part of its time out of the count."""
    if _job_root is None:
        return 0.0
    total, me = 0, os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # pid (comm) state ppid ... utime(14) stime(15): after the ")" comm may hold
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended while we looked
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid != me and (pid == _job_root or ppid == _job_root):
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS_PER_SECOND


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
