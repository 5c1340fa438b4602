"""Optimizer factory: a name and hyper-parameters -> a torch optimizer over param groups."""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.errors import CifarlabError


def param_groups(model: nn.Module, weight_decay: float, decay_norm_bias: bool = True) -> list:
    """One group, or two when norm weights and biases (1-d tensors) are exempt from decay.

    Decaying BatchNorm scales and biases only shrinks them toward zero without
    regularising anything useful, which is why most modern recipes exempt them.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_bias or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    decay_norm_bias: bool = True,
) -> torch.optim.Optimizer:
    """sgd (momentum, nesterov), adam, adamw, adagrad or rmsprop."""
    groups = param_groups(model, weight_decay, decay_norm_bias)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    raise CifarlabError(f"unknown optimizer {name!r}; choose sgd, adam, adamw, adagrad or rmsprop")
