"""Run groups as the report sees them: completed runs with their seeds pooled, ranked by
validation, their curves over epochs and their bests; and how their numbers are written.
No drawing here (charts.py draws, html.py writes the page)."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from cifarlab.experiments.analysis import BUDGET_KEYS, compare_means, group_runs, varying_keys
from cifarlab.model_files import short_model_names
from cifarlab.tables import data_name, setting_text


def group(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed runs grouped by every varying setting but the seed, with their members.

    Each group gets ``model``, ``optimizer``, a short ``label`` and ``members``
    (the run records, each carrying its ``epochs`` rows).
    """
    done = [r for r in records if r["status"] == "completed"]
    keys = varying_keys(done)
    by_id = {r["id"]: r for r in done}
    groups = group_runs(done, keys)
    names = short_model_names(str(r["config"]["model"]) for r in done)
    for g in groups:
        g["members"] = [by_id[i] for i in g["runs"]]
        config = g["members"][0]["config"]
        g["model"], g["optimizer"] = names[str(config["model"])], config["optimizer"]
    for g in groups:
        g["label_keys"] = _label_keys(g, groups, keys)
        config = g["members"][0]["config"]
        preset = [f"preset={config['preset']}"] if config.get("preset") else []
        settings = [f"{k}={short(config[k], k)}" for k in g["label_keys"]]
        g["label"] = " · ".join([g["model"], g["optimizer"], *preset, *settings])
    return groups


def _label_keys(g: dict[str, Any], groups: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The settings that tell ``g`` from the groups of the same model, optimizer and preset,
    and any budget the groups differ in: its label names those after the three. A preset run
    beside a sweep would otherwise list every key its preset sets (19 of them), in every
    chart, caption and table; a 4-epoch tutorial beside a 2-epoch simple read as a fair race."""
    kin = ("model", "optimizer", "preset")
    peers = [p for p in groups if all(_value(p, k) == _value(g, k) for k in kin)]
    return [
        k
        for k in keys
        if k not in kin and (k in BUDGET_KEYS or len({_value(p, k) for p in peers}) > 1)
    ]


def _value(g: dict[str, Any], key: str) -> str:
    return repr(g["members"][0]["config"].get(key))


def val_score(g: dict[str, Any]) -> float:
    """What ranks groups: mean validation accuracy. A group trained without a validation
    split (--val-size 0, as the speedrun presets) reports its last epoch and selected
    nothing; it is ranked by that epoch's test accuracy, the only score it has, and the
    page says so (``picked_by``)."""
    v = g.get("best_val_acc_mean")
    return v if v is not None else g.get("final_test_acc_mean") or 0.0


def picked_by(g: dict[str, Any]) -> str:
    """How ``val_score`` ranked ``g``, for captions."""
    return "validation" if g.get("best_val_acc_mean") is not None else "final test accuracy"


def test_acc_label(groups: list[dict[str, Any]]) -> str:
    """What ``test_acc`` is for these groups, for an axis: the test accuracy at the epoch
    validation chose, or, for runs without a validation split, at their last epoch."""
    chosen = {picked_by(g) == "validation" for g in groups}
    if chosen == {True}:
        return "test accuracy at best-validation epoch"
    if chosen == {False}:
        return "test accuracy at the last epoch"
    return "test accuracy (best-validation epoch, else last)"


def slowed_by_others(run: dict[str, Any], share: float = 0.25) -> bool:
    """Other work took at least ``share`` of the run's threads' CPU time (the results'
    "cores taken"): its training time says more about the neighbours than the settings."""
    taken, threads = run.get("cpu_contention"), (run.get("info") or {}).get("threads") or 1
    return taken is not None and taken >= share * threads


def best_per(groups: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """For each combination of ``keys``, its group with the best mean validation accuracy."""
    best: dict[tuple, dict[str, Any]] = {}
    for g in groups:
        k = tuple(g[key] for key in keys)
        if k not in best or val_score(g) > val_score(best[k]):
            best[k] = g
    return list(best.values())


def by_pair(groups: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Groups by (model, optimizer), in order of first appearance."""
    pairs: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        pairs.setdefault((g["model"], g["optimizer"]), []).append(g)
    return pairs


def curve(g: dict[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Epochs and the mean, min and max of ``metric`` over the group's seeds at each epoch."""
    per_epoch: dict[int, list[float]] = {}
    for run in g["members"]:
        for row in run["epochs"]:
            if row.get(metric) is not None:
                per_epoch.setdefault(row["epoch"], []).append(row[metric])
    epochs = np.array(sorted(per_epoch))
    values = [per_epoch[e] for e in epochs]
    return (
        epochs,
        np.array([statistics.fmean(v) for v in values]),
        np.array([min(v) for v in values]),
        np.array([max(v) for v in values]),
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (seconds, accuracy) points no other point beats on both (cheaper and better)."""
    front = []
    for i, (t, a) in enumerate(points):
        dominated = any(
            t2 <= t and a2 >= a and (t2 < t or a2 > a)
            for j, (t2, a2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pool_time(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model/optimizer with the training time of all its runs: for charts with
    too many configurations to show one bar each."""
    rows = []
    for (model, opt), members in by_pair(groups).items():
        times = [r["train_seconds"] for g in members for r in g["members"]]
        rows.append(
            {
                "model": model,
                "optimizer": opt,
                "label": f"{model} · {opt} (all {len(members)})",
                "train_seconds_mean": statistics.fmean(times),
                "train_seconds_std": statistics.stdev(times) if len(times) > 1 else None,
            }
        )
    return rows


def beyond_noise(a: dict[str, Any], b: dict[str, Any], metric: str = "test_acc") -> str:
    """Whether seeds can tell group ``a``'s mean ``metric`` from ``b``'s: "clear" (the 95%
    Welch interval of the difference leaves out 0), "noise" (it holds 0), or "one seed"
    (a group has fewer than two runs, so there is no spread to judge by). A caption that
    named a winner 0.2 points ahead, one image in 500, now says which."""
    values = [[r[metric] for r in g["members"] if r.get(metric) is not None] for g in (a, b)]
    stats = compare_means(*values) if all(values) else {"low": None}
    if stats["low"] is None:
        return "one seed"
    return "clear" if stats["low"] > 0 or stats["high"] < 0 else "noise"


def noise_words(verdict: str) -> str:
    """``beyond_noise``'s verdict as a caption says it, after the difference."""
    return {
        "clear": "beyond seed noise (95% Welch interval)",
        "noise": "within seed noise (its 95% Welch interval holds 0): more seeds may reverse it",
        "one seed": "with one seed each, no spread to judge it by",
    }[verdict]


def pct(x: float | None) -> str:
    """0.9123 -> "91.2%", as every caption and the page write accuracies ("–": none)."""
    return "–" if x is None else f"{x * 100:.1f}%"


def spread(std: float | None) -> str:
    """ " ± 0.4" (points) after a mean over seeds; nothing for a single seed."""
    return "" if std is None else f" ± {std * 100:.1f}"


UNSET_READS = {"early_stop": "off", "patience": "off", "ema": "off", "grad_clip": "off",
               "cutout": "off", "limit_train": "all", "limit_test": "all"}  # fmt: skip


def short(v: Any, key: str = "") -> str:
    """A setting's value as labels write it: floats to 3 significant digits, data by its
    file or folder name (runs record absolute paths)."""
    if key == "data":
        return data_name(v)
    if v is None and key in UNSET_READS:  # "early_stop=-" read as a typo
        return UNSET_READS[key]
    return f"{v:.3g}" if isinstance(v, float) else setting_text(v)
