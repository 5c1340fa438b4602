"""The matmul weight gradient of small-map 3x3 convs (train/small_map_conv.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.train.small_map_conv import (
    MAX_PIXELS,
    SmallMapConv2d,
    use_matmul_weight_grad,
    weight_grad_by_matmuls,
)

CL = torch.channels_last


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)


@pytest.mark.parametrize("shape", [(4, 5, 7, 3, 3), (3, 6, 4, 4, 5), (2, 16, 8, 8, 8)])
def test_matmul_weight_grad_equals_the_convs_weight_gradient(shape):
    n, c_in, c_out, h, w = shape
    x, grad = _bf16(n, c_in, h, w, seed=0), _bf16(n, c_out, h, w, seed=1)
    # the exact gradient of the same bf16 numbers, in float64
    x64 = x.double().requires_grad_()
    weight64 = torch.zeros(c_out, c_in, 3, 3, dtype=torch.float64, requires_grad=True)
    F.conv2d(x64, weight64, None, 1, 1).backward(grad.double())
    ours = weight_grad_by_matmuls(grad, x)
    assert ours.shape == weight64.shape and ours.dtype == torch.bfloat16
    assert ours.is_contiguous(memory_format=CL)  # the layout of a channels_last weight
    error = (ours.double() - weight64.grad).norm() / weight64.grad.norm()
    assert error < 1e-2  # bf16 rounding of the result; a wrong tap or shift is ~1


@pytest.fixture(autouse=True)
def _switch_on(monkeypatch):
    monkeypatch.delenv("CIFARLAB_MATMUL_WGRAD", raising=False)  # the user's opt-out, if set


def _pair(bias: bool) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 12, 3, padding=1, bias=bias).to(memory_format=CL)
    switched = copy.deepcopy(plain)
    assert use_matmul_weight_grad(switched) == 1
    return plain, switched


def _train_step(conv: nn.Conv2d, x: torch.Tensor, autocast: bool = True):
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = conv(x)
    out.float().square().sum().backward()
    return out, x.grad


@pytest.mark.parametrize("bias", [False, True])
def test_switched_conv_trains_like_nn_conv2d(bias):
    plain, switched = _pair(bias)
    x = _bf16(6, 8, 5, 6, seed=2)  # 30 pixels: the matmul path
    out_a, grad_x_a = _train_step(plain, x)
    out_b, grad_x_b = _train_step(switched, x)
    assert "MatmulWeightGrad" in type(out_b.grad_fn).__name__  # the path was taken
    assert torch.equal(out_a, out_b)  # the forward is oneDNN's own
    torch.testing.assert_close(grad_x_a, grad_x_b)
    params = [(plain.weight, switched.weight)] + ([(plain.bias, switched.bias)] if bias else [])
    for a, b in params:
        assert (a.grad - b.grad).norm() / a.grad.norm() < 1e-2
    assert switched.state_dict().keys() == plain.state_dict().keys()


def test_other_cases_keep_nn_conv2d(monkeypatch):
    _, switched = _pair(bias=False)
    side = int(MAX_PIXELS**0.5) + 1  # a map just too large
    big, small = _bf16(2, 8, side, side, seed=3), _bf16(2, 8, 4, 4, seed=4)
    out, _ = _train_step(switched, big)
    assert "MatmulWeightGrad" not in type(out.grad_fn).__name__
    out, _ = _train_step(switched, small.float(), autocast=False)  # fp32: oneDNN is fine
    assert "MatmulWeightGrad" not in type(out.grad_fn).__name__
    switched.weight.requires_grad_(False)  # a frozen weight: nothing to gain
    out, _ = _train_step(switched, small)
    assert "MatmulWeightGrad" not in type(out.grad_fn).__name__
    # only plain 3x3 stride-1 padding-1 convs are switched
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                        nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding="same"))  # fmt: skip
    assert use_matmul_weight_grad(net) == 2
    assert [type(m) is SmallMapConv2d for m in net] == [True, False, False, True]
    monkeypatch.setenv("CIFARLAB_MATMUL_WGRAD", "0")
    assert use_matmul_weight_grad(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))) == 0


def test_a_gradient_of_the_gradient_matches_nn_conv2d():
    # create_graph=True (a gradient penalty) takes oneDNN's differentiable backward
    plain, switched = _pair(bias=True)
    x = _bf16(2, 8, 4, 4, seed=5)
    penalties = []
    for conv in (plain, switched):
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(xg)
        (grad_x,) = torch.autograd.grad(out.float().square().sum(), xg, create_graph=True)
        grad_x.float().square().sum().backward()
        penalties.append(conv.weight.grad.double())
    assert "MatmulWeightGrad" in type(out.grad_fn).__name__
    # the exact penalty gradient of the same bf16 numbers, in float64
    weight = plain.weight.detach().to(torch.bfloat16).double().requires_grad_()
    bias = plain.bias.detach().to(torch.bfloat16).double()
    x64 = x.double().requires_grad_()
    out = F.conv2d(x64, weight, bias, 1, 1)
    (grad_x,) = torch.autograd.grad(out.square().sum(), x64, create_graph=True)
    grad_x.square().sum().backward()
    # Both within bf16 rounding of it (0.35% each, measured on an AVX2 CPU, where oneDNN's
    # emulated bf16 rounds the two paths differently); a missing or wrong second-order term
    # is off by ~100%.
    for penalty in penalties:
        assert (penalty - weight.grad).norm() / weight.grad.norm() < 2e-2
