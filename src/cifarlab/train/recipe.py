"""Parts of the speedrun recipe (airbench94) as general callbacks and helpers.

Each is an option any run can use: lookahead, a frozen whitening bias, and
test-time augmentation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.train.trainer import Callback, Trainer


class Lookahead(Callback):
    """Every ``every`` steps, pull the weights toward a slow copy, and the copy toward them.

    airbench94's variant: the slow copy moves with ``1 - alpha`` where alpha
    grows as (step/total)^3 to 0.95^5, so late training is heavily averaged; at
    the last step the weights become the slow copy. Worth ~0.2-0.3 points there.
    """

    def __init__(self, total_steps: int, every: int = 5) -> None:
        self.total_steps, self.every = total_steps, every
        self.slow: list[torch.Tensor] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.slow is None:  # a resumed run brought its own
            self.slow = [t.detach().clone() for t in _float_tensors(trainer.model)]

    def on_batch_end(self, trainer: Trainer, loss, correct, n) -> None:
        self.on_fit_start(trainer)  # also when train_epoch is driven directly, without fit
        step = trainer.step
        if step % self.every and step != self.total_steps:
            return
        decay = 1.0 if step >= self.total_steps else 0.95**5 * (step / self.total_steps) ** 3
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


def tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits averaged over test-time augmentations of ``x``.

    level 0: none; 1: + mirror; 2: + mirror of two 1-pixel diagonal shifts (airbench94).
    """
    if level == 0:
        return model(x)
    logits = 0.5 * (model(x) + model(x.flip(-1)))
    if level == 1:
        return logits
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
    translated = torch.stack([0.5 * (model(s) + model(s.flip(-1))) for s in shifted]).mean(0)
    return 0.5 * logits + 0.5 * translated
