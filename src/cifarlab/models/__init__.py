"""Models: a registry of built-in nets by name."""

from cifarlab.models import tutorial as _tutorial  # noqa: F401  (registers the net)
from cifarlab.models.registry import (
    ModelEntry,
    count_parameters,
    create_model,
    get_model_entry,
    list_models,
    register_model,
)

__all__ = [
    "ModelEntry",
    "count_parameters",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
