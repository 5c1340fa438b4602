"""Parts of the speedrun recipe (airbench94) as general callbacks and helpers.

Each is an option any run can use: lookahead and a frozen whitening bias
(test-time augmentation, an evaluation step, is in ``tta.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cifarlab.errors import warn
from cifarlab.train.trainer import Callback, Trainer


class Lookahead(Callback):
    """Every ``every`` steps, pull the weights toward a slow copy, and the copy toward them.

    airbench94's variant: the slow copy moves with ``1 - alpha`` where alpha
    grows as (step/total)^3 to 0.95^5, so late training is heavily averaged; at
    the last step the weights become the slow copy. As in airbench the first pull is
    after the first step (the slow copy then takes the weights whole); unlike it, the last
    step also pulls, so no step is thrown away (airbench's last ~4 of ~500 steps were;
    a 3-step run ended on its starting weights). Taking it out of `quick-cpu` cost 0.10
    points in one seed, within noise (`benchmarks/ablation.py`).
    """

    def __init__(self, total_steps: int, every: int = 5) -> None:
        self.total_steps, self.every = total_steps, every
        self.slow: list[torch.Tensor] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.slow is None:  # a resumed run brought its own
            self.slow = [t.detach().clone() for t in _float_tensors(trainer.model)]
            if self.total_steps < 10 * self.every:
                warn(f"--lookahead averages weights every {self.every} steps; this run has too "
                     f"few steps for it ({self.total_steps}; its result leans on early "
                     "weights): pass --no-lookahead")  # fmt: skip

    def on_batch_end(self, trainer: Trainer, loss, correct, n) -> None:
        self.on_fit_start(trainer)  # also when train_epoch is driven directly, without fit
        step = trainer.step  # steps taken, this one included
        last = step >= self.total_steps
        if (step - 1) % self.every and not last:
            return
        decay = 0.95**5 * (min(step, self.total_steps) / self.total_steps) ** 3
        fast = _float_tensors(trainer.model)
        with torch.no_grad():  # one kernel per op for all tensors (a GPU pays per launch)
            torch._foreach_lerp_(self.slow, fast, 1 - decay)
            torch._foreach_copy_(fast, self.slow)

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slow = state["slow"]


class FreezeStemBias(Callback):
    """Train the first conv's bias for ``epochs`` epochs, then freeze it (airbench: 3)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
        if conv.bias is not None:
            conv.bias.requires_grad_(epoch < self.epochs)  # frozen: no grad, SGD skips it


def _float_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in model.state_dict().values() if t.is_floating_point()]
