"""The PyTorch CIFAR-10 tutorial's net, the blog's "Default Net"."""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.models.registry import register_model


class TutorialNet(nn.Module):
    """conv 3->6 k5, pool, conv 6->16 k5, pool, fc 400->120->84->classes, ReLU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        side = ((image_size - 4) // 2 - 4) // 2  # inferred, not hand-computed as in the blog
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("tutorial", "the PyTorch tutorial net, the blog's Default Net (~60%)")
def tutorial(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return TutorialNet(num_classes, in_channels, image_size)
