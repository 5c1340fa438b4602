"""The weight gradient of a 3x3 conv on a small map, as nine matmuls (CPU, bf16).

oneDNN computes a bf16 conv's weight gradient slowly when the feature map is small:
on our 2-core CPU it ran at 64-233 GFLOP/s on 3x3 to 8x8 maps, a quarter to a third of
the same conv's forward, while the same sums written as matmuls ran at 214-421
(``benchmarks/conv_kernels.py``). Those late, wide convs carry about half of the
speedrun net's and ResNet-18's FLOPs: a training step got 1.13-1.21x (speedrun) and
1.23-1.31x (ResNet-18) faster, measured in turns in one process. Whole runs in separate
processes could not show it through this machine's noise (BENCHMARKS.md, conv kernels).

A 3x3 conv with padding 1 sums, for each of its nine taps (dy, dx), the input shifted
by that tap times one C_in x C_out slice of the weight. So the weight gradient of tap
(dy, dx) is a single matmul: the output gradient (pixels x C_out) transposed, times the
input shifted by (dy, dx) (pixels x C_in), with pixels = batch x height x width. On
channels_last tensors both are plain matrices after one copy of the shifted input.

The forward pass and the input gradient stay with oneDNN, which is fast at these sizes,
so the outputs are bit-identical to ``nn.Conv2d``'s; the weight and bias gradients
differ only in rounding (summation order; the bias gradient is summed in fp32). Maps
of more than 64 pixels keep oneDNN's weight gradient, which is faster there, and so does
a backward that builds its own graph (``create_graph=True``, e.g. a gradient penalty).
Opt out with ``CIFARLAB_MATMUL_WGRAD=0``; the run's info records how many convs took it.
torch.func transforms and TorchScript don't support this conv: the switch is for
cifarlab's own training loop (and is off under ``--compile``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

# Largest map (height x width) that takes the matmul path. Measured on our 2-core CPU, bf16,
# speedrun's and ResNet-18's convs: the matmuls 1.6-5.2x faster than oneDNN on 3x3 to 8x8
# maps, slower from 15x15 (and on quick-cpu's 128-channel 7x7 conv in a fast moment).
MAX_PIXELS = 64


class _MatmulWeightGradConv3x3(torch.autograd.Function):
    """conv2d(x, w, b, stride 1, padding 1) whose backward computes dW by nine matmuls."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, 1, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled():  # create_graph: the mm(out=...) below is not differentiable
            return torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None,
                [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias],
            )  # fmt: skip
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]  # fmt: skip
        grad_w = weight_grad_by_matmuls(grad, x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum((0, 2, 3), dtype=torch.float32).to(grad.dtype) if ctx.has_bias else None
        return grad_x, grad_w, grad_b


def weight_grad_by_matmuls(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dW (C_out, C_in, 3, 3) in channels_last, from NHWC ``grad`` and ``x``: one matmul per tap."""
    n, c_in, h, w = x.shape
    c_out = grad.shape[1]
    padded = F.pad(x, (1, 1, 1, 1))
    grad_t = grad.permute(0, 2, 3, 1).reshape(-1, c_out).t()  # C_out x pixels, no copy
    grad_w = torch.empty(c_out, 3, 3, c_in, dtype=x.dtype, device=x.device)
    for dy in range(3):
        for dx in range(3):
            shifted = padded[:, :, dy : dy + h, dx : dx + w].permute(0, 2, 3, 1).reshape(-1, c_in)
            torch.mm(grad_t, shifted, out=grad_w[:, dy, dx])
    return grad_w.permute(0, 3, 1, 2)  # (C_out, C_in, 3, 3) with channels_last strides


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, padding 1) whose weight gradient on small maps
    comes from matmuls when training on the CPU under bf16 autocast. Same parameters,
    same state dict; every other case runs ``nn.Conv2d.forward``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._takes_matmul_path(x):
            return super().forward(x)
        dtype = torch.get_autocast_dtype("cpu")
        bias = self.bias.to(dtype) if self.bias is not None else None
        with torch.autocast("cpu", enabled=False):  # the casts above are autocast's own
            return _MatmulWeightGradConv3x3.apply(x.to(dtype), self.weight.to(dtype), bias)

    def _takes_matmul_path(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and x.dim() == 4
            and x.shape[-2] * x.shape[-1] <= MAX_PIXELS
            and x.is_contiguous(memory_format=torch.channels_last)
        )


def switchable(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` that SmallMapConv2d can stand in for: 3x3, stride 1, padding 1."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.padding in ((1, 1), "same")
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def use_matmul_weight_grad(model: nn.Module) -> int:
    """Switch ``model``'s plain 3x3 convs to SmallMapConv2d in place; returns how many.

    A no-op (0) when ``CIFARLAB_MATMUL_WGRAD=0``. Parameters and state dict are unchanged.
    """
    if os.environ.get("CIFARLAB_MATMUL_WGRAD", "1") == "0":
        return 0
    convs = [m for m in model.modules() if switchable(m)]
    for conv in convs:
        conv.__class__ = SmallMapConv2d
    return len(convs)
