"""Built-in experiments: the blog's study and the explorations it did by hand."""

from __future__ import annotations

import copy
import re
from typing import Any

from cifarlab.errors import CifarlabError, suggest

BLOG_MODELS = ["tutorial", "simple", "stacked", "channel", "wobbly"]

PRESETS: dict[str, dict[str, Any]] = {
    # Five nets x two optimizers, trained "equally": lr 0.001, batch 64, no augmentation
    # (the blog added augmentation only later), the same epochs for all.
    "blog": {
        "name": "blog",
        "description": "the blog's five nets, SGD (momentum 0.9) vs Adam at lr 0.001, batch 64",
        "base": {"epochs": 15, "batch_size": 64, "lr": 0.001, "augment": "none"},
        "grid": {"model": BLOG_MODELS, "optimizer": ["sgd", "adam"], "seed": [0]},
    },
    # "Batch size <= 16 took way too long, >= 128 makes little difference."
    "batch-size": {
        "name": "batch-size",
        "description": "the blog's batch sizes 4..256 for one model, Adam at lr 0.001",
        "base": {"epochs": 10, "lr": 0.001, "optimizer": "adam", "model": "tutorial"},
        "grid": {"batch_size": [4, 8, 16, 32, 64, 128, 256], "seed": [0]},
    },
    # "Nothing seems to work beyond or under 0.001": a log grid says how true that is.
    "lr": {
        "name": "lr",
        "description": "a log grid of learning rates for SGD and Adam, batch 64",
        "base": {"epochs": 10, "batch_size": 64, "model": "tutorial"},
        "grid": {
            "optimizer": ["sgd", "adam"],
            "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
            "seed": [0],
        },
    },
}


def preset_definition(
    name: str,
    *,
    epochs: int | None = None,
    seeds: int | None = None,
    models: list[str] | None = None,
    **base_overrides: Any,
) -> dict[str, Any]:
    """The preset's experiment definition with the quick-run overrides applied.

    Overrides change the runs, so they also change the experiment's name
    (``blog`` -> ``blog-e5-s2``): a quick look never collides with a full study.
    """
    if name not in PRESETS:
        raise CifarlabError(
            f"unknown preset {name!r}; {suggest(name, PRESETS)}choose one of {', '.join(PRESETS)}"
        )
    limits = [
        (f"--{k.replace('_', '-')}", base_overrides.get(k)) for k in ("limit_train", "limit_test")
    ]
    for flag, value in (("--epochs", epochs), ("--seeds", seeds), *limits):
        if value is not None and value < 1:  # named as typed, not as grid.seed
            raise CifarlabError(f"{flag} must be at least 1 (got {value})")
    if models is not None and not models:  # `--models ''`, or `--models ,`
        raise CifarlabError(
            "--models names no model; list them with commas (--models tutorial,simple), or "
            "leave --models out for the preset's"
        )
    definition = copy.deepcopy(PRESETS[name])
    suffix = []
    if epochs is not None:
        definition["base"]["epochs"] = epochs
        suffix.append(f"e{epochs}")
    if seeds is not None:
        definition["grid"]["seed"] = list(range(seeds))
        suffix.append(f"s{seeds}")
    if models:
        definition["grid"]["model"] = models
        definition["base"].pop("model", None)
        # a model file (nets/my.py:Net) in the name would be a path: keep its letters only
        suffix.append(re.sub(r"[^A-Za-z0-9_.]+", "-", "-".join(models)).strip("-."))
    for key, value in base_overrides.items():
        if value is not None:
            definition["base"][key] = value
            if key != "data":
                suffix.append(f"{key.replace('_', '')}{value}")
    if suffix:
        definition["name"] = "-".join([name, *suffix])
    return definition
