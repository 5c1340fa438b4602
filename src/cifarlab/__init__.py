"""cifarlab: fast, trustworthy CIFAR-10 style image-classification experiments.

import cifarlab
result = cifarlab.train(model="tutorial", optimizer="adam", epochs=2, data="cifar10.tar.gz")
cifarlab.results()          # every run of the workspace, as plain records
cifarlab.report(experiment="blog")  # charts + one HTML page; returns its path
"""

from pathlib import Path
from typing import TYPE_CHECKING

from cifarlab.config import RunConfig, make_run_config
from cifarlab.data import load_dataset
from cifarlab.errors import CifarlabError
from cifarlab.models import create_model, list_models, register_model
from cifarlab.report import report
from cifarlab.results import grouped_results, results
from cifarlab.runner import RunResult, run_training

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cifarlab.experiments.sweep import SweepReport


def sweep(
    path_or_definition: str | Path | dict,
    workspace: str | Path = "cifarlab-runs",
    workers: int = 1,
    quiet: bool = False,
) -> "SweepReport":
    """Run the missing runs of an experiment (a TOML path or a dict); returns a SweepReport."""
    from cifarlab.experiments.spec import build_experiment, load_experiment
    from cifarlab.experiments.sweep import run_sweep

    if isinstance(path_or_definition, dict):
        experiment = build_experiment(path_or_definition)
    else:
        experiment = load_experiment(path_or_definition)
    return run_sweep(experiment, workspace, workers=workers, quiet=quiet)


def train(**options) -> RunResult:
    """Train one model; keyword names are the CLI's options with underscores."""
    return run_training(make_run_config(**options))


__all__ = [
    "CifarlabError",
    "RunConfig",
    "RunResult",
    "create_model",
    "list_models",
    "load_dataset",
    "register_model",
    "grouped_results",
    "report",
    "results",
    "sweep",
    "train",
]
