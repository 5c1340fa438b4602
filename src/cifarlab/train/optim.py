"""Optimizer factory: the optimizer's name and hyper-parameters -> a torch optimizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cifarlab.errors import CifarlabError


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD (with momentum, as the blog used) or Adam."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise CifarlabError(f"unknown optimizer {name!r}; choose sgd or adam")
