"""Per-layer shapes, parameters and MACs of any model, from forward hooks on one image.

What counts as a MAC: the multiply-accumulates of convs and linears only (as
``torch.utils.flop_counter`` counts them, FLOPs = 2 x MACs). BatchNorm, pooling,
activations, residual adds and the speedrun's logit scale are cheap element-wise
work and are not counted; neither are operations a user's ``forward`` calls
functionally (``F.relu``), which no hook sees. Training costs about 3x the
forward FLOPs (forward, plus gradients for inputs and for weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from cifarlab.errors import CifarlabError
from cifarlab.models.spec import ResBlock
from cifarlab.tables import format_table

BYTES_FP32 = 4
ADAM_STATE_COPIES = 2  # exp_avg and exp_avg_sq: the costliest common optimizer
KINDS: dict[type, str] = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.BatchNorm2d: "bn",
    nn.BatchNorm1d: "bn",
    nn.ReLU: "relu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Tanh: "tanh",
    nn.MaxPool2d: "maxpool",
    nn.AvgPool2d: "avgpool",
    nn.AdaptiveAvgPool2d: "gap",
    nn.AdaptiveMaxPool2d: "gmp",
    nn.Dropout: "dropout",
    nn.Flatten: "flatten",
    ResBlock: "res",
}


@dataclass
class LayerRow:
    name: str  # qualified module name, e.g. "3.conv1"
    kind: str
    output_shape: tuple[int, ...]  # per image, no batch dimension
    params: int
    macs: int  # per image


@dataclass(repr=False)  # its repr is the table: a notebook cell shows what `summary` prints
class ModelSummary:
    rows: list[LayerRow]  # leaf modules in execution order
    blocks: list[LayerRow]  # top-level layers (one per spec layer), for diagrams
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    batch_size: int
    params: int
    trainable_params: int
    macs: int  # forward, per image
    memory: dict[str, int] = field(default_factory=dict)  # bytes, training at batch_size

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def train_flops(self) -> int:
        return 3 * self.flops

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "batch_size": self.batch_size,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "flops": self.flops,
            "train_flops": self.train_flops,
            "memory_bytes": self.memory,
            "layers": [asdict(r) | {"output_shape": list(r.output_shape)} for r in self.rows],
        }

    def __repr__(self) -> str:
        return self.format_table()

    def format_table(self) -> str:
        head = ("layer", "kind", "output", "params", "MACs")
        lines = [
            (r.name, r.kind, _shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}")
            for r in self.rows
        ]
        mib = {k: v / 2**20 for k, v in self.memory.items()}
        return "\n".join([
            format_table(head, lines, right=(3, 4)), "",
            f"input {_shape(self.input_shape)} -> output {_shape(self.output_shape)}",
            f"parameters        {self.params:,} ({self.trainable_params:,} trainable)",
            f"forward / image   {self.macs:,} MACs = {_flop(self.flops)}",
            f"training / image  ~{_flop(self.train_flops)} (3x forward)",
            f"training memory at batch {self.batch_size} (fp32, Adam): ~{mib['total']:.1f} MiB "
            f"(weights {mib['weights']:.1f}, grads {mib['grads']:.1f}, "
            f"optimizer {mib['optimizer']:.1f}, activations {mib['activations']:.1f})",
        ])  # fmt: skip


def summarize_model(
    model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32), batch_size: int = 64
) -> ModelSummary:
    """Run one image through ``model`` (eval mode, no grad) and record every leaf layer."""
    if not isinstance(model, nn.Module):
        raise CifarlabError(
            f"summarize_model takes a net (an nn.Module), not {type(model).__name__} "
            f"{model!r:.40}; build one by name with cifarlab.create_model"
        )
    rows: list[LayerRow] = []
    blocks: list[LayerRow] = []
    leaves = {m for m in model.modules() if not list(m.children())}
    top = _top_level(model)
    names = {m: n for n, m in model.named_modules()}

    def record(into: list[LayerRow], is_leaf: bool):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
            own = sum(p.numel() for p in module.parameters())
            macs = _macs(module, shape) if is_leaf else 0
            into.append(LayerRow(names[module] or "model", _kind(module), shape, own, macs))

        return hook

    handles = [
        m.register_forward_hook(record(rows, True))
        for m in leaves
        if not isinstance(m, nn.Identity)
    ]
    handles += [m.register_forward_hook(record(blocks, False)) for m in top if m is not model]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for block in blocks:  # a block's MACs are those of the leaves inside it
        inside = [r for r in rows if r.name == block.name or r.name.startswith(block.name + ".")]
        block.macs = sum(r.macs for r in inside)
    if not blocks:
        blocks = list(rows)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    activations = _numel(input_shape) + sum(_numel(r.output_shape) for r in rows)
    memory = {
        "weights": params * BYTES_FP32,
        "grads": trainable * BYTES_FP32,
        "optimizer": ADAM_STATE_COPIES * trainable * BYTES_FP32,
        "activations": activations * batch_size * BYTES_FP32,
    }
    memory["total"] = sum(memory.values())
    return ModelSummary(
        rows, blocks, tuple(input_shape), tuple(out.shape[1:]), batch_size,
        params, trainable, sum(r.macs for r in rows), memory,
    )  # fmt: skip


def _flop(flops: float) -> str:
    """In the unit that keeps the number readable: a tutorial net is 0.7 MFLOP, not 0.001 G."""
    return f"{flops / 1e9:.3f} GFLOP" if flops >= 1e8 else f"{flops / 1e6:.2f} MFLOP"


def _top_level(model: nn.Module) -> list[nn.Module]:
    """The model's layers: its children, looking through single-child wrappers and plain
    ``nn.Sequential`` groups (a ``features``/``head`` net is its layers, not two blocks);
    other modules with children (residual blocks) stay one block each."""
    while len(list(model.children())) == 1:
        model = next(model.children())
    layers = []
    for child in model.children():
        layers += _top_level(child) if type(child) is nn.Sequential else [child]
    return layers or [model]


def _macs(module: nn.Module, out_shape: tuple[int, ...]) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return _numel(out_shape) * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return _numel(out_shape) * module.in_features
    return 0


def _kind(module: nn.Module) -> str:
    kind = next((k for cls, k in KINDS.items() if isinstance(module, cls)), None)  # subclasses too
    return kind or type(module).__name__.lower()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "-"
