"""Global pooling layers that stay deterministic on CUDA.

torch's adaptive pools have no deterministic CUDA backward, so ``--deterministic``
training on a GPU raised at the first step (found running the tests on an H100).
These compute the same numbers with ops that have one; they subclass the
adaptive pools so summaries and diagrams treat them alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d(1)`` as a mean over height and width."""

    def __init__(self) -> None:
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class GlobalMaxPool2d(nn.AdaptiveMaxPool2d):
    """``AdaptiveMaxPool2d(1)`` as one max-pool window over the whole image."""

    def __init__(self) -> None:
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, x.shape[-2:])
