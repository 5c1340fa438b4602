"""Optimizer factory: a name and hyper-parameters -> a torch optimizer over param groups."""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.config import OPTIMIZERS  # the names; a test keeps them and the factory equal
from cifarlab.errors import CifarlabError

NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    decay_norm_bias: bool = True,
    norm_lr_scale: float = 1.0,
) -> list[dict]:
    """Split trainable parameters into weights, biases and norm-layer parameters.

    Decaying norm scales and biases only shrinks them toward zero without
    regularising anything useful, so modern recipes exempt them; airbench also
    trains BatchNorm biases at a 64x higher lr (``norm_lr_scale``), with decay divided by it:
    for SGD and AdamW that keeps lr x decay, the shrink per step, unchanged (not for Adam,
    Adagrad or RMSprop, whose decay is a gradient their step then rescales).
    """
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()
    }
    weights, biases, norms = [], [], []
    for p in model.parameters():
        if p.requires_grad:
            (norms if id(p) in norm_params else weights if p.ndim > 1 else biases).append(p)
    decay = weight_decay if decay_norm_bias else 0.0
    groups = [
        {"params": weights, "lr": lr, "weight_decay": weight_decay},
        {"params": biases, "lr": lr, "weight_decay": decay},
        {"params": norms, "lr": lr * norm_lr_scale, "weight_decay": decay / norm_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    decay_norm_bias: bool = True,
    norm_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """sgd (momentum, nesterov), adam, adamw, adagrad or rmsprop."""
    groups = param_groups(model, lr, weight_decay, decay_norm_bias, norm_lr_scale)
    fused = _can_fuse(model)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, fused=fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    raise CifarlabError(f"unknown optimizer {name!r}; choose {', '.join(OPTIMIZERS)}")


def _can_fuse(model: nn.Module) -> bool:
    """One kernel per step for all parameters instead of a few small ops per tensor.

    On the tutorial net (10 tensors) the gain was within this machine's noise (an ad hoc
    check, not kept); it grows with the number of tensors.
    """
    return all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters()
    )
