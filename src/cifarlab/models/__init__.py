"""Models: built-in nets by name, declarative specs, user Python files; summaries, diagrams."""

from cifarlab.models import blog as _blog  # noqa: F401  (registers the blog's nets)
from cifarlab.models import reference as _reference  # noqa: F401  (resnet18, speedrun)
from cifarlab.models.diagram import draw_diagram
from cifarlab.models.reference import init_whitening
from cifarlab.models.registry import (
    ModelEntry,
    check_model,
    count_parameters,
    create_model,
    freeze_builtins,
    get_model_entry,
    list_models,
    model_label,
    register_model,
    register_spec,
)
from cifarlab.models.spec import ModelSpec, build_spec, load_spec
from cifarlab.models.summary import ModelSummary, summarize_model

freeze_builtins()  # the names above are cifarlab's; a user's registration may not take one

__all__ = [
    "ModelEntry",
    "ModelSpec",
    "ModelSummary",
    "build_spec",
    "count_parameters",
    "check_model",
    "create_model",
    "draw_diagram",
    "get_model_entry",
    "init_whitening",
    "list_models",
    "load_spec",
    "model_label",
    "register_model",
    "register_spec",
    "summarize_model",
]
