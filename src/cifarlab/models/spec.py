"""Declarative models: a name and a list of layer strings, built into an ``nn.Sequential``.

    name = "mynet"
    description = "two convs and a classifier"
    layers = ["conv 32 3", "bn", "relu", "maxpool 2", "res 64 stride 2", "gap", "linear"]

Input channels and image size come from the data; the builder tracks the shape
layer by layer, so a ``linear`` needs only its output size (a flatten is added in
front of it when an image arrives). The last ``linear`` may omit its size: it then
outputs the class count. A spec that does not end in a linear gets one appended
(flatten + ``linear`` to the class count), so ``[..., "gap"]`` is a whole model.
Convs followed by ``bn`` have no bias: the BatchNorm's shift makes it redundant.
Every spec error is one CifarlabError line naming the layer (1-based), its text,
the shape that arrived and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarlab.errors import CifarlabError, looked_in
from cifarlab.models.layers import GlobalAvgPool2d, GlobalMaxPool2d

Shape = tuple[int, ...]  # (C, H, W) for images, (N,) for vectors
ImageSize = int | tuple[int, int]  # a square's side, or (height, width)


def image_hw(image_size: ImageSize) -> tuple[int, int]:
    """(height, width) of ``image_size``: a side N means NxN."""
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def image_size_of(height: int, width: int) -> ImageSize:
    """The ``image_size`` models take for HxW images: the side when square."""
    return height if height == width else (height, width)


LAYER_FORMS = {
    "conv": "conv OUT K [stride S] [pad P]",
    "res": "res OUT [stride S]",
    "bn": "bn",
    "relu": "relu",
    "gelu": "gelu",
    "silu": "silu",
    "tanh": "tanh",
    "maxpool": "maxpool K",
    "avgpool": "avgpool K",
    "gap": "gap",
    "gmp": "gmp",
    "dropout": "dropout P",
    "flatten": "flatten",
    "linear": "linear [N]",
}
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: tuple[str, ...]
    description: str = ""
    source: str = field(default="", compare=False)  # where it was read from, for messages


class ResBlock(nn.Module):
    """A basic ResNet block: conv-bn-relu-conv-bn plus a shortcut, then relu.

    The shortcut is a 1x1 conv + bn when the shape changes (stride or width), else identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


def as_spec(spec: ModelSpec | dict[str, Any] | list[str] | tuple[str, ...]) -> ModelSpec:
    """A ModelSpec from a dict (``name``, ``layers``, ``description``) or a bare layer list."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, list | tuple):
        spec = {"name": "custom", "layers": list(spec)}
    if not isinstance(spec, dict):
        raise CifarlabError(f"a model spec is a dict or a list of layer strings, not {spec!r}")
    unknown = set(spec) - {"name", "layers", "description"}
    if unknown:
        raise CifarlabError(
            f"unknown key(s) {', '.join(sorted(unknown))} in model spec; "
            "use name, description, layers"
        )
    layers = spec.get("layers")
    if not isinstance(layers, list | tuple) or not layers:
        raise CifarlabError("model spec needs `layers`, a non-empty list of layer strings")
    for i, text in enumerate(layers, 1):
        if not isinstance(text, str):
            raise CifarlabError(f'layer {i} {text!r}: layers are strings such as "conv 64 3"')
    return ModelSpec(
        str(spec.get("name", "custom")), tuple(layers), str(spec.get("description", ""))
    )


def load_spec(path: str | Path) -> ModelSpec:
    """Read a TOML spec file (``name``, ``description``, ``layers``)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else f"does not exist{looked_in(path)}"
        raise CifarlabError(f"model spec file '{path}' {what}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CifarlabError(f"model spec file '{path}' is not valid TOML: {err}") from None
    data.setdefault("name", path.stem)
    spec = as_spec(data)
    return ModelSpec(spec.name, spec.layers, spec.description, source=str(path))


def build_spec(
    spec: ModelSpec | dict[str, Any] | list[str],
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: ImageSize = 32,
) -> nn.Sequential:
    """Build the spec for images of ``in_channels x H x W`` (``image_size``: N, or (H, W))."""
    spec = as_spec(spec)
    shape: Shape = (in_channels, *image_hw(image_size))
    texts = list(spec.layers)
    kinds = [t.split()[0].lower() if t.split() else "" for t in texts]  # "Conv", "ReLU": fine
    last_linear = max((i for i, k in enumerate(kinds) if k == "linear"), default=-1)
    if last_linear != len(texts) - 1:
        texts.append("linear")  # documented: a spec without a final classifier gets one
        last_linear = len(texts) - 1
    modules: list[nn.Module] = []
    for i, text in enumerate(texts):
        kind, *args = text.split() or [""]
        kind = kind.lower()
        where = f'layer {i + 1} "{text}"'
        if kind not in LAYER_FORMS:
            raise CifarlabError(
                f"{where}: unknown layer kind {kind!r}; known: {', '.join(LAYER_FORMS)}"
            )
        bias = not (i + 1 < len(kinds) and kinds[i + 1] == "bn")
        try:
            new, shape = _build_layer(kind, args, shape, num_classes, i == last_linear, bias)
        except _SpecError as err:
            fix, (h, w) = "", image_hw(image_size)
            if "too small" in str(err) and min(h, w) < 32 and _fits(spec, in_channels, 32):
                fix = f"; the images are {h}x{w}: --image-size 32 resizes them"  # 8x8 ones
            raise CifarlabError(f"{where}: {err}{fix}") from None
        modules.extend(new)
    return nn.Sequential(*modules)


def _fits(spec: ModelSpec, in_channels: int, side: int) -> bool:
    """Whether the spec builds for images of ``side`` pixels (a fix worth suggesting)."""
    try:
        build_spec(spec, in_channels=in_channels, image_size=side)
    except CifarlabError:
        return False
    return True


class _SpecError(Exception):
    """Why one layer failed; build_spec adds the layer's index, text and input shape."""


def _build_layer(
    kind: str, args: list[str], shape: Shape, num_classes: int, is_last_linear: bool, bias: bool
) -> tuple[list[nn.Module], Shape]:
    arrived = "x".join(map(str, shape))
    if kind == "linear":
        return _linear(args, shape, num_classes, is_last_linear)
    if kind == "flatten":
        _no_args(kind, args)
        return [nn.Flatten()], (_numel(shape),)
    if kind == "dropout":
        (p,) = _numbers(kind, args, 1, 1, float, what="dropout probability")
        if not 0 <= p < 1:
            raise _SpecError(f"dropout probability must be in [0, 1), got {args[0]}")
        return [nn.Dropout(p)], shape  # element-wise on images too, as the blog's nets did
    if kind in _ACTIVATIONS:
        _no_args(kind, args)
        return [_ACTIVATIONS[kind]()], shape
    if len(shape) != 3:
        raise _SpecError(f"input is {arrived}, but {kind} needs an image (CxHxW); move it earlier")
    c, h, w = shape
    if kind == "bn":
        _no_args(kind, args)
        return [nn.BatchNorm2d(c)], shape
    if kind in ("gap", "gmp"):
        _no_args(kind, args)
        pool = GlobalAvgPool2d() if kind == "gap" else GlobalMaxPool2d()
        return [pool], (c, 1, 1)
    if kind in ("maxpool", "avgpool"):
        (k,) = _numbers(kind, args, 1, 1, int, what="pool size")
        if h < k or w < k:
            raise _SpecError(f"input is {arrived}, too small to pool")
        pool = nn.MaxPool2d(k) if kind == "maxpool" else nn.AvgPool2d(k)
        return [pool], (c, h // k, w // k)
    if kind == "conv":
        return _conv(args, shape, bias)
    if kind == "res":
        out, stride = _out_and_options(kind, args, {"stride": 1})
        if h < stride or w < stride:
            raise _SpecError(f"input is {arrived}, too small for stride {stride}")
        side = lambda n: (n - 1) // stride + 1  # 3x3, pad 1: only the stride shrinks the image
        return [ResBlock(c, out, stride)], (out, side(h), side(w))
    raise AssertionError(kind)  # every kind of LAYER_FORMS is handled above


def _conv(args: list[str], shape: Shape, bias: bool) -> tuple[list[nn.Module], Shape]:
    c, h, w = shape
    if len(args) < 2:
        raise _SpecError(f"conv needs OUT and K: {LAYER_FORMS['conv']}")
    (k,) = _numbers("conv", args[1:2], 1, 1, int, what="kernel size")
    out, stride, pad = _out_and_options("conv", args[:1] + args[2:], {"stride": 1, "pad": k // 2})
    if k % 2 == 0 and "pad" not in args:
        hint = f" (did you mean conv {k} {out}?)" if out % 2 and out < k else ""
        raise _SpecError(
            f"kernel {k} is even, so the default padding {k // 2} does not keep the size; "
            f"write `conv OUT K` with an odd K{hint}, or give its padding: `conv OUT K pad P`"
        )
    side = lambda n: (n + 2 * pad - k) // stride + 1
    if side(h) < 1 or side(w) < 1:
        raise _SpecError(f"input is {c}x{h}x{w}, too small for a {k}x{k} kernel with pad {pad}")
    return [nn.Conv2d(c, out, k, stride, pad, bias=bias)], (out, side(h), side(w))


def _linear(
    args: list[str], shape: Shape, num_classes: int, is_last: bool
) -> tuple[list[nn.Module], Shape]:
    if not args and not is_last:
        raise _SpecError("only the last linear may omit its size: write `linear N`")
    (n,) = _numbers("linear", args, 0, 1, int, what="output size") if args else (num_classes,)
    if is_last and n != num_classes:
        raise _SpecError(
            f"the last linear must output the class count {num_classes}, not {n}; "
            "write `linear` without a size"
        )
    flatten = [nn.Flatten()] if len(shape) != 1 else []  # no shape arithmetic for the user
    return [*flatten, nn.Linear(_numel(shape), n)], (n,)


def _out_and_options(kind: str, args: list[str], options: dict[str, int]) -> list[int]:
    """Parse ``OUT [name value]...`` into [OUT, options in order]; options keep their defaults."""
    if not args:
        raise _SpecError(f"{kind} needs OUT: {LAYER_FORMS[kind]}")
    (out,) = _numbers(kind, args[:1], 1, 1, int, what="output channels")
    rest, values = args[1:], dict(options)
    if len(rest) % 2:
        raise _SpecError(f"options come in pairs such as `stride 2`: {LAYER_FORMS[kind]}")
    names = rest[::2]
    for name, value in zip(names, rest[1::2]):
        if name not in options:
            raise _SpecError(f"unknown option {name!r}; {kind} takes: {LAYER_FORMS[kind]}")
        if names.count(name) > 1:  # the last one won, silently
            raise _SpecError(f"{name} is given {names.count(name)} times; give it once")
        minimum = 0 if name == "pad" else 1
        (values[name],) = _numbers(kind, [value], 1, 1, int, what=name, minimum=minimum)
    return [out, *values.values()]


def _numbers(
    kind: str,
    args: list[str],
    low: int,
    high: int,
    cast: type,
    what: str = "argument",
    minimum: int | None = 1,
) -> list[Any]:
    if not low <= len(args) <= high:
        raise _SpecError(f"wrong number of arguments; write {LAYER_FORMS[kind]}")
    try:
        values = [cast(a) for a in args]
    except ValueError:
        kind_word = "an integer" if cast is int else "a number"
        raise _SpecError(f"{what} must be {kind_word}, got {' '.join(args)!r}") from None
    if cast is int and minimum is not None and any(v < minimum for v in values):
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise _SpecError(f"{what} must be {bound}, got {' '.join(args)!r}")
    return values


def _no_args(kind: str, args: list[str]) -> None:
    if args:
        raise _SpecError(f"{kind} takes no arguments; write `{LAYER_FORMS[kind]}`")


def _numel(shape: Shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
