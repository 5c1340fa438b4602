"""The model registry: built-in nets by name, each a factory of an ``nn.Module``.

``create_model`` also takes a TOML spec file (``my.toml``), a Python file
(``path/net.py:ClassOrFactory``, which runs the user's code) or, from Python, a
spec as a dict or list of layer strings.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from cifarlab.errors import CifarlabError, check_whole_number, suggest
from cifarlab.model_files import model_source

if TYPE_CHECKING:
    from cifarlab.models.spec import ImageSize

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``factory(num_classes=, in_channels=, image_size=)``."""

    name: str
    factory: ModelFactory
    description: str
    # builtin | spec | file | user (register_model): file and user models are checked on a batch
    source: str = "builtin"
    code_file: str | None = None  # a user model's source file: its lines name its errors
    user_factory: Any = None  # a model registered from Python: its class or function


_REGISTRY: dict[str, ModelEntry] = {}
_BUILTINS: frozenset[str] = frozenset()  # set once the built-in modules have registered


def freeze_builtins() -> None:
    """Mark every name registered so far as built-in: a user's model cannot take one."""
    global _BUILTINS
    _BUILTINS = frozenset(_REGISTRY)


def register_model(
    name: str, description: str | None = None
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a class or factory to the registry under ``name``. Registering a name
    again replaces the earlier factory, as redefining a function does: a notebook cell run
    twice raised "already registered". A built-in's name is refused.

    As with ``file.py:Class``, your callable gets ``num_classes`` / ``in_channels`` /
    ``image_size`` only where its signature takes them, and its model must map a batch of
    the data's images to (batch, num_classes) logits, checked before training."""

    if callable(name):  # @register_model without its name: the class became `add`, unseen
        raise CifarlabError(
            f"register_model needs a name: write @cifarlab.register_model('my-net') above "
            f"{getattr(name, '__name__', 'your net')}"
        )

    def add(factory: ModelFactory) -> ModelFactory:
        _check_free(name)
        if _BUILTINS:  # frozen: this is a user's model, built and checked as file models are
            _check_usable(name)
            _check_factory(factory)
            from cifarlab.models.pyfile import build_user_model

            about = description or f"registered from Python ({_qualified(factory)})"
            build = partial(build_user_model, factory, name)
            _REGISTRY[name] = ModelEntry(name, build, about, "user", _code_file(factory),
                                         factory)  # fmt: skip
        else:
            _REGISTRY[name] = ModelEntry(name, factory, description or "")
        return factory

    return add


def _check_usable(name: Any) -> None:
    """A name --model and run ids can carry: "" trained as run "-467c3c87", and "x.toml" or
    "net.py:Net" were then looked for as files."""
    if not isinstance(name, str) or name.strip() != name or not name or "/" in name or "\\" in name:
        raise CifarlabError(f"model name {name!r}: give a word such as 'my-net'")
    if model_source(name) is not None:
        raise CifarlabError(
            f"model name {name!r} reads as a file (.toml, .py); register it as e.g. 'my-net'"
        )


def _check_factory(factory: Any) -> None:
    """A class or a function that returns a net: a built net registered trained as its forward
    called with num_classes=10, which said nothing of the mistake."""
    kind = type(factory).__name__
    if isinstance(factory, nn.Module):
        raise CifarlabError(
            f"register_model takes a class or a function that returns a net, not a built "
            f"{kind} object; register {kind} itself"
        )
    if not callable(factory):
        raise CifarlabError(
            f"register_model takes a class or a function that returns a net, not {factory!r} "
            f"(a {kind})"
        )


def registered_digest(name: Any) -> str | None:
    """The version of the code a model registered from Python in this process runs now
    (else None): read at each call, as a cell its net uses may be run again unregistered."""
    if not registered_here(name):
        return None
    from cifarlab.models.code_version import factory_digest

    return factory_digest(_REGISTRY[name].user_factory)


def _check_free(name: str) -> None:
    if isinstance(name, str) and name.lower() in {b.lower() for b in _BUILTINS}:
        raise CifarlabError(
            f"model {name!r} is a built-in model (`cifarlab models` lists them); "
            "register yours under another name"
        )


def _code_file(factory: Any) -> str | None:
    """The file of a factory function, or of a class's own methods (``forward`` first, where
    errors arise): an inherited ``forward`` (an nn.Sequential subclass) is torch's file."""
    functions = (
        [factory]
        if not isinstance(factory, type)
        else [vars(factory)[name] for name in ("forward", *vars(factory)) if name in vars(factory)]
    )
    codes = [getattr(f, "__code__", None) for f in functions]
    return next((code.co_filename for code in codes if code is not None), None)


def is_registered(name: Any) -> bool:
    """Whether ``name`` is a model name this process knows (built-in, or registered here)."""
    return isinstance(name, str) and name in _REGISTRY


def registered_here(name: Any) -> bool:
    """Whether ``name`` is a model registered from Python in this process, which no other
    process (a sweep's workers) knows."""
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    return entry is not None and entry.source == "user"


def user_code_file(name: Any) -> Path | None:
    """The source file of a model registered from Python, if ``name`` is one."""
    code_file = _REGISTRY[name].code_file if registered_here(name) else None
    return Path(code_file).resolve() if code_file else None


def _qualified(factory: Any) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"


def list_models() -> list[ModelEntry]:
    """Built-ins in registration order: the blog's nets first, then the reference nets."""
    return list(_REGISTRY.values())


def register_spec(spec: Any) -> ModelEntry:
    """Register a declarative spec (ModelSpec, dict or layer list) under its name."""
    from cifarlab.models.spec import as_spec, build_spec

    spec = as_spec(spec)
    _check_free(spec.name)
    _REGISTRY[spec.name] = ModelEntry(spec.name, partial(build_spec, spec), spec.description,
                                      "spec" if _BUILTINS else "builtin")  # fmt: skip
    return _REGISTRY[spec.name]


def get_model_entry(name: Any) -> ModelEntry:
    """The entry for a built-in name, a ``.toml`` spec, a ``file.py:Name`` or a spec object."""
    from cifarlab.models import spec as specs

    if isinstance(name, os.PathLike):  # Path("net.toml") names what "net.toml" names
        name = os.fspath(name)
    if isinstance(name, nn.Module):
        raise CifarlabError(
            f"model: pass a name, a spec or a file, not a built {type(name).__name__} object; "
            "register its class with cifarlab.register_model, or save it as file.py:Class"
        )
    if not isinstance(name, str):  # a spec from Python: dict, list of layers or ModelSpec
        spec = specs.as_spec(name)
        return ModelEntry(spec.name, partial(specs.build_spec, spec), spec.description, "spec")
    source = model_source(name)
    if source is not None and source[0].suffix == ".toml":
        spec = specs.load_spec(name)
        return ModelEntry(spec.name, partial(specs.build_spec, spec), spec.description, "spec")
    if source is not None:
        from cifarlab.models.pyfile import load_python_model

        return ModelEntry(name, load_python_model(name), f"user code from {name}", "file")
    if name not in _REGISTRY:
        hint = suggest(name, _REGISTRY)
        raise CifarlabError(
            f"unknown model {name!r}; {hint}choose one of {', '.join(sorted(_REGISTRY))} "
            "(`cifarlab models` lists them), or pass a spec.toml or file.py:Class"
        )
    return _REGISTRY[name]


def create_model(
    name: Any, *, num_classes: int = 10, in_channels: int = 3, image_size: ImageSize = 32
) -> nn.Module:
    """Build model ``name`` (see get_model_entry) for images of the given shape and class count.

    ``image_size`` is a square's side, or (height, width) for other images."""
    check_whole_number("num_classes", num_classes, 1)
    check_whole_number("in_channels", in_channels, 1)
    entry = get_model_entry(name)
    shape = dict(num_classes=num_classes, in_channels=in_channels,
                 image_size=_image_size(image_size))  # fmt: skip
    model = entry.factory(**shape)
    if entry.source in ("file", "user"):  # user code: prove it maps images to logits first
        from cifarlab.models.pyfile import check_logits

        check_logits(model, name, **shape)
    return model


def _image_size(given: Any) -> ImageSize:
    """``image_size`` as factories take it: an int, or (height, width) of ints (numpy's and
    torch's integers too); a float, a string or a bool is refused in a line."""
    pair = isinstance(given, tuple | list)
    try:  # a bool is left out, so the count below refuses it
        sides = [operator.index(v) for v in (given if pair else [given]) if type(v) is not bool]
    except TypeError:
        sides = []
    if len(sides) != (2 if pair else 1) or min(sides) < 1:
        raise CifarlabError(
            f"image_size must be a whole number of at least 1, or (height, width), not {given!r}"
        )
    return (sides[0], sides[1]) if pair else sides[0]


def check_model(name: Any) -> None:
    """Fail fast on what needs no data: an unknown name, a bad spec, a file that does not
    import or whose constructor raises, a net with nothing to train. Whether a file model's
    logits fit is checked when it is built for the data's shape (``create_model``): a net
    fixed at 100 classes is right for CIFAR-100, whatever a default would say."""
    model = get_model_entry(name).factory(num_classes=10, in_channels=3, image_size=32)
    if not any(p.requires_grad for p in model.parameters()):  # the optimizer's raw ValueError
        raise CifarlabError(
            f"model {name!r} has no trainable parameters (none, or all with requires_grad "
            "False), so training could not change it; give it a layer with weights"
        )


def model_label(name: Any) -> str:
    """A short, filesystem-safe label for run ids: ``nets/my.py:Net`` -> ``my-Net``."""
    if not isinstance(name, str):
        return get_model_entry(name).name
    source = model_source(name)
    label = name if source is None else source[0].stem + (f"-{source[1]}" if source[1] else "")
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in label)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
