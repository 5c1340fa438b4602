"""Test-time augmentation: average the logits of a few mirrored and shifted views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
