"""Stratified, seeded subsets: the validation hold-out and the quick-run limits."""

from __future__ import annotations

import numpy as np


def stratified_pick(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` items whose class proportions match ``labels``' (sorted).

    Each class gets its share rounded by largest remainder, so the counts add up
    to exactly ``n`` and a balanced dataset gives exactly balanced picks.
    """
    n = min(n, len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == cls))[:k] for cls, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def split_off(
    labels: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (a stratified ``n``-item part, the rest)."""
    part = stratified_pick(labels, n, rng) if n > 0 else np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), part, assume_unique=True)
    return part, rest
