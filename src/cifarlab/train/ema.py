"""Exponential moving average of a model's weights, evaluated in place of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    Averaging the last few hundred steps' weights smooths out SGD noise and
    usually evaluates better than the raw weights. Buffers (BatchNorm running
    statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int = 10**9) -> None:
        """Average in ``model``'s weights after optimizer step ``step`` (0 for the first).

        The decay warms up as ``(1 + step) / (10 + step)`` until it reaches ``decay`` (as
        TensorFlow's ExponentialMovingAverage with num_updates): a fixed 0.999 over a
        short run would average mostly the random starting weights."""
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, list(model.parameters()), 1 - decay)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers()):
            ema_buf.copy_(buf)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
