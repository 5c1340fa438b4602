"""The blog's five nets as declarative specs (../shared/DESIGN.md section 4's reconstructions).

The post showed each only as a picture, so these follow its words. Layer sizes
are for CIFAR-10 (3x32x32); other image shapes work because linear inputs are inferred.
"""

from __future__ import annotations

from cifarlab.models.registry import register_spec
from cifarlab.models.spec import ModelSpec


def _conv_bn_relu(*widths: int) -> list[str]:
    return [layer for w in widths for layer in (f"conv {w} 3", "bn", "relu")]


TUTORIAL = ModelSpec(
    "tutorial",
    (
        "conv 6 5 pad 0", "relu", "maxpool 2",
        "conv 16 5 pad 0", "relu", "maxpool 2",
        "linear 120", "relu", "linear 84", "relu", "linear",
    ),
    "the PyTorch tutorial net, the blog's Default Net (blog: ~60%)",
)  # fmt: skip

SIMPLE = ModelSpec(
    "simple",
    (
        "conv 16 3", "relu", "maxpool 2",
        "conv 32 3", "relu", "maxpool 2",
        "linear 128", "relu", "linear",
    ),
    "a small variation of the tutorial net: 3x3 convs 16, 32 (blog: ~60%)",
)  # fmt: skip

STACKED = ModelSpec(
    "stacked",
    (
        "conv 32 3", "relu", "conv 32 3", "relu", "maxpool 2",
        "conv 64 3", "relu", "conv 64 3", "relu", "maxpool 2",
        "dropout 0.25", "linear 512", "relu", "dropout 0.5", "linear",
    ),
    "stacked conv layers with dropout (blog: ~70%)",
)  # fmt: skip

CHANNEL = ModelSpec(
    "channel",
    (
        *_conv_bn_relu(64, 128), "maxpool 2",
        *_conv_bn_relu(256), "maxpool 2",
        *_conv_bn_relu(512), "maxpool 2",
        "dropout 0.25", "linear 1024", "relu", "dropout 0.5",
        "linear 512", "relu", "dropout 0.5", "linear",
    ),
    "many more channels, BatchNorm and dropout (blog: 78% SGD / 80% Adam)",
)  # fmt: skip

WOBBLY = ModelSpec(
    "wobbly",
    (
        *_conv_bn_relu(64, 256), "maxpool 2",
        *_conv_bn_relu(128, 512), "maxpool 2",
        *_conv_bn_relu(256), "maxpool 2",
        "dropout 0.25", "linear 1024", "relu", "dropout 0.5",
        "linear 256", "relu", "linear 512", "relu", "dropout 0.5", "linear",
    ),
    "channels rise, fall, rise again in conv and fc; the blog's best (79% SGD / 83% Adam)",
)  # fmt: skip

for _spec in (TUTORIAL, SIMPLE, STACKED, CHANNEL, WOBBLY):
    register_spec(_spec)
