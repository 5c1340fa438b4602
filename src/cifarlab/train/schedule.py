"""Learning-rate schedules as pure functions of the step: ``lr = base_lr * factor(step)``.

A function of the step alone needs no state of its own, so a resumed run gets
exactly the learning rates an uninterrupted one would. Every schedule is applied
per batch; ``step`` and ``multistep`` change only at epoch boundaries, as defined.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from cifarlab.config import SCHEDULES  # the names; a test keeps them and the factory equal

LrFactor = Callable[[int], float]

ONECYCLE_START = 1 / 25  # one-cycle starts at max_lr/25 ...
ONECYCLE_END = 1 / 25e4  # ... and ends at max_lr/25e4 (torch's OneCycleLR defaults)
ONECYCLE_RISE = 0.3  # fraction of the run spent warming up
# airbench94's triangle: 0.2 -> 1 over the first 23% of steps, then down to 0.07
TRIANGLE_START, TRIANGLE_PEAK, TRIANGLE_END = 0.2, 0.23, 0.07


def build_schedule(
    name: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    step_size: int = 10,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> LrFactor:
    """The multiplier of the base (or, for onecycle, the peak) learning rate at each step."""
    total = epochs * steps_per_epoch
    # a warm-up asked for lasts a step at least (0.01 epochs of 3 steps rounded to none)
    warmup = max(1, round(warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 0

    def epoch_of(step: int) -> int:
        return step // steps_per_epoch

    if name == "constant":
        return lambda step: 1.0
    if name == "step":
        return lambda step: gamma ** (epoch_of(step) // step_size)
    if name == "multistep":
        return lambda step: gamma ** sum(epoch_of(step) >= m for m in milestones)
    if name == "cosine":
        return lambda step: _cosine(step / total)
    if name == "onecycle":
        rise = max(1, round(ONECYCLE_RISE * total))

        def onecycle(step: int) -> float:
            if step < rise:
                return ONECYCLE_START + (1 - ONECYCLE_START) * (1 - _cosine(step / rise))
            return ONECYCLE_END + (1 - ONECYCLE_END) * _cosine((step - rise) / (total - rise))

        return onecycle
    if name in ("warmup-linear", "warmup-cosine"):
        decay = _linear if name == "warmup-linear" else _cosine

        def warmed(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return decay((step - warmup) / max(1, total - warmup))

        return warmed
    if name == "triangular":  # the peak moves with --warmup-epochs when given
        peak = warmup or int(TRIANGLE_PEAK * total)

        def triangular(step: int) -> float:
            if step < peak:
                return TRIANGLE_START + (1 - TRIANGLE_START) * step / peak
            t = min((step - peak) / max(1, total - peak), 1.0)
            return 1 + (TRIANGLE_END - 1) * t

        return triangular
    raise ValueError(f"unknown schedule {name!r}; choose {', '.join(SCHEDULES)}")


def _cosine(t: float) -> float:
    """1 -> 0 along half a cosine as t goes 0 -> 1."""
    return 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def _linear(t: float) -> float:
    return 1 - min(max(t, 0.0), 1.0)
