"""Experiments: the results store (sweeps come later)."""

from cifarlab.experiments.store import ResultsStore

__all__ = ["ResultsStore"]
