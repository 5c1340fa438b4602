"""The model registry: built-in nets by name, each a factory of an ``nn.Module``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cifarlab.errors import CifarlabError

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``factory(num_classes=, in_channels=, image_size=)``."""

    name: str
    factory: ModelFactory
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a factory to the registry under ``name``."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, factory, description)
        return factory

    return add


def list_models() -> list[ModelEntry]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CifarlabError(
            f"unknown model {name!r}; {hint}choose one of {', '.join(sorted(_REGISTRY))} "
            "(`cifarlab models` lists them)"
        )
    return _REGISTRY[name]


def create_model(
    name: str, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    """Build the registered model ``name`` for images of the given shape and class count."""
    entry = get_model_entry(name)
    return entry.factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
