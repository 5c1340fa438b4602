"""cifarlab: fast, trustworthy CIFAR-10 style image-classification experiments.

import cifarlab
result = cifarlab.train(model="tutorial", optimizer="adam", epochs=2, data="cifar10.tar.gz")
cifarlab.results()          # every run of the workspace, as plain records
cifarlab.report(experiment="blog")  # charts + one HTML page; returns its path
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cifarlab.train  # noqa: F401  (the subpackage first: `def train` below then wins the name)
from cifarlab.errors import CifarlabError
from cifarlab.experiments.store import WORKSPACE
from cifarlab.report import report  # the same for `report` and `results`
from cifarlab.results import grouped_results, results

if TYPE_CHECKING:
    from cifarlab.config import RunConfig
    from cifarlab.data import load_dataset
    from cifarlab.experiments.sweep import SweepPlan, SweepReport
    from cifarlab.models import create_model, list_models, register_model
    from cifarlab.runner import RunResult, run_training
    from cifarlab.trained import TrainedModel, load_trained

__version__ = "0.1.0"

# Names whose modules import pydantic or torch load on first use (PEP 562): `import
# cifarlab` takes milliseconds, `cifarlab --help` and `cifarlab results` start in a fraction
# of the time, and Ctrl-C during those imports reaches the CLI's handler (cifarlab.launch).
_LAZY = {
    "RunConfig": "cifarlab.config",
    "make_run_config": "cifarlab.config",
    "load_dataset": "cifarlab.data",
    "create_model": "cifarlab.models",
    "list_models": "cifarlab.models",
    "register_model": "cifarlab.models",
    "RunResult": "cifarlab.runner",
    "TrainedModel": "cifarlab.trained",
    "load_trained": "cifarlab.trained",
    "run_training": "cifarlab.runner",
}


_SUBPACKAGES = ("data", "experiments", "models")  # cifarlab.models.summarize_model, as shown


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"cifarlab.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def sweep(
    path_or_definition: str | Path | dict,
    workspace: str | Path = WORKSPACE,
    workers: int = 1,
    quiet: bool = False,
    new_name: str | None = None,
    force: bool = False,
    only: dict[str, Any] | None = None,
    max_runs: int | None = None,
    data: str | Path | None = None,
    dry_run: bool = False,
    ray: str | None = None,
    ray_cpus: float = 1.0,
    ray_gpus: float | None = None,
) -> SweepReport | SweepPlan:
    """Run the missing runs of an experiment (a TOML path or a dict); returns a SweepReport.

    An experiment whose runs changed (an edited grid or model file) keeps its old record
    unless ``new_name`` records it apart or ``force`` points the name at the new runs
    (finished ones are reused); ``only`` ({"model": "tutorial"}), ``max_runs``, ``data``
    (for every run) and ``dry_run`` (returns the SweepPlan, trains nothing, writes nothing)
    are the CLI's --only, --max-runs, --data and --dry-run; ``ray`` ("auto", "local" or an
    address), ``ray_cpus`` and ``ray_gpus`` train the runs on a Ray cluster (--ray...)."""
    from cifarlab.experiments.ray_runs import check_ray_options, ray_options
    from cifarlab.experiments.spec import build_experiment, load_experiment
    from cifarlab.experiments.sweep import check_sweep_options, run_sweep
    from cifarlab.filters import typed_only

    check_sweep_options(workers, max_runs)  # the call's own arguments before any file is read
    on_ray = ray_options(ray, ray_cpus, ray_gpus)
    check_ray_options(on_ray, workers)
    if not isinstance(path_or_definition, dict | str | os.PathLike):
        raise CifarlabError(
            f"sweep takes an experiment file's path or a dict, not {path_or_definition!r}"
        )
    if new_name is not None and not isinstance(new_name, str):
        raise CifarlabError(f"new_name must be a string, not {new_name!r}")
    overrides = {"data": str(data)} if data is not None else {}
    if isinstance(path_or_definition, dict):
        experiment = build_experiment(path_or_definition, **overrides)
    else:
        experiment = load_experiment(path_or_definition, **overrides)
    try:
        return run_sweep(experiment, workspace, new_name=new_name, dry_run=dry_run,
                         workers=workers, only=typed_only(only or {}), max_runs=max_runs,
                         force=force, quiet=quiet, ray=on_ray)  # fmt: skip
    except KeyboardInterrupt as stop:  # the stopped run's note named train(resume=...)
        if dry_run:  # nothing ran: nothing to continue
            raise
        stop.__notes__ = [
            f"cifarlab: sweep {new_name or experiment.name!r} stopped; the same "
            "cifarlab.sweep(...) call again skips its finished runs and resumes the stopped ones"
        ]
        raise


def train(**options: Any) -> RunResult:
    """Train one model; keyword names are the CLI's options with underscores.

    A run that diverges returns its status (``result.status``) with a warning saying why;
    bad input, and a run that fails (its model's code raised, the machine ran out of
    memory), raise CifarlabError with one line saying what went wrong (the failed run is
    recorded as such). Stopped (Ctrl-C, a notebook's interrupt), it is recorded, and
    ``train(resume=run_id, workspace=...)`` continues it."""
    from cifarlab.config import make_run_config
    from cifarlab.errors import warn
    from cifarlab.runner import run_training

    result = run_training(make_run_config(**options))
    if result.status != "completed":  # the CLI prints this line; a notebook would see nothing
        warn(f"run {result.run_id} {result.status}: {result.error}")
    return result


__all__ = [
    "CifarlabError",
    "RunConfig",
    "RunResult",
    "TrainedModel",
    "create_model",
    "list_models",
    "load_dataset",
    "load_trained",
    "make_run_config",
    "register_model",
    "grouped_results",
    "report",
    "results",
    "run_training",
    "sweep",
    "train",
]
