"""cifarlab: fast, trustworthy CIFAR-10 style image-classification experiments.

import cifarlab
result = cifarlab.train(model="tutorial", optimizer="adam", epochs=2, data="cifar10.tar.gz")
cifarlab.results()          # every run of the workspace, as plain records
cifarlab.report(experiment="blog")  # charts + one HTML page; returns its path
"""

from cifarlab.config import RunConfig, make_run_config
from cifarlab.data import load_dataset
from cifarlab.errors import CifarlabError
from cifarlab.models import create_model, list_models, register_model
from cifarlab.report import report
from cifarlab.results import results
from cifarlab.runner import RunResult, run_training

__version__ = "0.1.0"


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
    "report",
    "results",
    "train",
]
