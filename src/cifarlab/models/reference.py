"""Reference nets beyond the blog: a CIFAR ResNet-18 and the airbench94-style speedrun net.

Only the architectures live here; the speedrun training recipe (label smoothing,
Nesterov SGD, schedules, lookahead, TTA) belongs to the trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.errors import CifarlabError
from cifarlab.models.layers import GlobalMaxPool2d
from cifarlab.models.registry import register_model, register_spec
from cifarlab.models.spec import ImageSize, ModelSpec, image_hw

# CIFAR variant: a 3x3 stem and no initial max-pool, so 32x32 images keep their detail.
RESNET18 = ModelSpec(
    "resnet18",
    (
        "conv 64 3", "bn", "relu",
        "res 64", "res 64",
        "res 128 stride 2", "res 128",
        "res 256 stride 2", "res 256",
        "res 512 stride 2", "res 512",
        "gap", "linear",
    ),
    "CIFAR ResNet-18: 3x3 stem, 4 stages of 2 basic blocks (reaches ~95% with a long recipe)",
)  # fmt: skip
register_spec(RESNET18)

# airbench94's BatchNorm: torch momentum 0.4 (its "0.6" counts the other way) and a tiny eps.
BN_MOMENTUM, BN_EPS = 0.4, 1e-12
WHITEN_KERNEL = 2
LOGIT_SCALE = 1 / 9  # airbench scales logits down instead of tuning the head's init


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU (pooling early saves FLOPs)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act2 = nn.GELU()
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)  # airbench: BN scales stay 1, only biases train
        for conv in (self.conv1, self.conv2):
            # airbench: the first in_channels filters start as identities (dirac), so each
            # group starts close to passing its input through; training starts faster
            nn.init.dirac_(conv.weight.data[: conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


def speedrun_net(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: ImageSize = 32,
    widths: tuple[int, int, int] = (64, 256, 256),
) -> nn.Sequential:
    """airbench94's net; call ``init_whitening(model, train_images)`` before training."""
    height, width = image_hw(image_size)
    if min(height, width) < 9:  # the 2x2 whitening conv and three /2 pools must leave 1 pixel
        raise CifarlabError(f"speedrun needs images of at least 9x9, got {height}x{width}")
    whiten_width = 2 * in_channels * WHITEN_KERNEL**2  # +/- each patch eigenvector
    return nn.Sequential(
        nn.Conv2d(in_channels, whiten_width, WHITEN_KERNEL, padding=0, bias=True),
        nn.GELU(),
        ConvGroup(whiten_width, widths[0]),
        ConvGroup(widths[0], widths[1]),
        ConvGroup(widths[1], widths[2]),
        GlobalMaxPool2d(),  # airbench: MaxPool2d(3) over the last 3x3; same on 32x32
        nn.Flatten(),
        nn.Linear(widths[2], num_classes, bias=False),
        Mul(LOGIT_SCALE),
    )


register_model(
    "speedrun",
    "airbench94-style net: 2x2 whitening stem, conv groups 64/256/256 (~94% with its recipe)",
)(speedrun_net)


@register_model(
    "speedrun-small",
    "the speedrun net at half width (32/128/128): ~1/4 of the FLOPs, for quick CPU runs",
)
def speedrun_small(
    num_classes: int = 10, in_channels: int = 3, image_size: ImageSize = 32
) -> nn.Module:
    return speedrun_net(num_classes, in_channels, image_size, widths=(32, 128, 128))


@register_model(
    "speedrun-tiny",
    "the speedrun net at quarter width (16/64/64): quick-cpu's recipe on CPUs without bf16",
)
def speedrun_tiny(
    num_classes: int = 10, in_channels: int = 3, image_size: ImageSize = 32
) -> nn.Module:
    # in fp32 on 2 AVX2 cores, `--preset quick-cpu --model speedrun-tiny --epochs 6` beat the
    # blog's 83% in half quick-cpu's time: 83.48% in 3.3 min (one seed; BENCHMARKS.md)
    return speedrun_net(num_classes, in_channels, image_size, widths=(16, 64, 64))


@torch.no_grad()
def init_whitening(model: nn.Module, train_images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the first conv's weights to whiten the 2x2 patches of ``train_images`` (N,C,H,W).

    As airbench: eigen-decompose the patch covariance and use each eigenvector,
    scaled by 1/sqrt(eigenvalue + eps), twice (+v and -v) so the GELU after it
    loses nothing. Unlike airbench the patches are centred and the bias cancels
    their mean, so the first half of the outputs has exactly identity covariance.
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("it has no conv layer")
    c, k = conv.in_channels, conv.kernel_size[0]
    if conv.out_channels != 2 * c * k * k or conv.kernel_size != (k, k) or conv.groups != 1:
        raise ValueError(
            f"its first conv has {conv.out_channels} outputs, kernel {conv.kernel_size[0]}x"
            f"{conv.kernel_size[1]}; a {k}x{k} whitening stem has {2 * c * k * k}"
        )
    x = train_images.to(torch.float64)
    patches = x.unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
    mean = patches.mean(0)
    centred = patches - mean
    covariance = centred.T @ centred / len(centred)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # largest first
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)).T  # one per row
    weight = torch.cat([filters, -filters]).reshape(conv.weight.shape)
    conv.weight.copy_(weight.to(conv.weight.dtype))
    conv.weight.requires_grad_(False)  # airbench keeps the whitening fixed; only its bias trains
    if conv.bias is not None:
        bias = -torch.cat([filters, -filters]) @ mean
        conv.bias.copy_(bias.to(conv.bias.dtype))
