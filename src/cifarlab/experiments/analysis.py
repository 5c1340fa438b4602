"""Seeds with error bars: group runs that differ only in seed, compare groups with a CI."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

GROUP_METRICS = ("best_val_acc", "test_acc", "final_test_acc", "train_seconds", "images_per_sec")
# Settings that never define a group: they vary between repeats of one configuration, or
# say where it ran (a run's record holds no session fields, config.SESSION_FIELDS, at all).
# Data does define one: results.name_data_versions names each run's data by its content.
REPEAT_KEYS = {"seed"}
NEVER_GROUP = {"device", "tensorboard"}
# Settings that set how much a run trained on or was scored on: runs that differ in them are
# not repeats of one another, and groups that differ in them are not a like-for-like race.
BUDGET_KEYS = ("data", "labels", "image_size", "epochs", "limit_train", "limit_test", "val_size")


def pooled_budgets(records: list[dict[str, Any]], by: list[str]) -> list[str]:
    """The budget settings that differ inside a group of ``records`` grouped ``by`` (a
    chosen --group-by pools whatever it leaves out, as if seeds)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(_hashable(record["config"].get(k)) for k in by), []).append(record)
    return [
        k
        for k in BUDGET_KEYS
        if k not in by
        and any(len({repr(r["config"].get(k)) for r in g}) > 1 for g in groups.values())
    ]


def varying_keys(records: list[dict[str, Any]]) -> list[str]:
    """Config keys whose values differ between the runs (the sweep's axes), in config order."""
    if not records:
        return []
    keys = [k for k in records[0]["config"] if k not in REPEAT_KEYS | NEVER_GROUP]
    return [k for k in keys if len({_hashable(r["config"].get(k)) for r in records}) > 1]


def group_runs(records: list[dict[str, Any]], by: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per group: its key values, n, and mean/std of each metric over its runs.

    By default runs are grouped by every setting that varies except the seed,
    so each row is one configuration with its seeds pooled. Only completed runs count
    (``n``, the metrics); the others are named in ``not_completed`` ("1 diverged"), so a
    configuration whose every run failed still has its row: in an lr study that is a finding.
    """
    by = by if by is not None else varying_keys(records)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        key = tuple(_hashable(record["config"].get(k)) for k in by)
        groups.setdefault(key, []).append(record)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(by, key))
        done = [m for m in members if m.get("status", "completed") == "completed"]
        row["n"] = len(done)
        row["runs"] = [m["id"] for m in done]
        other = Counter(m["status"] for m in members if m.get("status", "completed") != "completed")
        row["not_completed"] = ", ".join(f"{n} {s}" for s, n in sorted(other.items())) or None
        for metric in GROUP_METRICS:
            values = [m[metric] for m in done if m.get(metric) is not None]
            row[f"{metric}_mean"] = statistics.fmean(values) if values else None
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
            row[f"{metric}_n"] = len(values)  # fewer than n where a run lacks it (no val split)
        rows.append(row)
    return rows


def fewer_runs(group: dict[str, Any], metric: str) -> str:
    """`` (n=7)`` after a mean over fewer runs than the row's n (one had no validation split)."""
    counted = group.get(f"{metric}_n", group["n"])
    return f" (n={counted})" if group[f"{metric}_mean"] is not None and counted < group["n"] else ""


def compare_means(a: list[float], b: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Difference of means (a - b) with a Welch t confidence interval.

    Welch's interval does not assume equal spread in both groups; it needs at
    least two values per group (more seeds, narrower interval).
    """
    diff = statistics.fmean(a) - statistics.fmean(b)
    result: dict[str, Any] = {"diff": diff, "n_a": len(a), "n_b": len(b), "low": None, "high": None}
    if len(a) < 2 or len(b) < 2:
        return result
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        result.update(low=diff, high=diff)
        return result
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, df) * se
    result.update(low=diff - half, high=diff + half, df=df)
    return result


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (p > 0.5)."""
    low, high = 0.0, 1e3
    for _ in range(200):  # bisection on the CDF: plenty for 1e-10 accuracy
        mid = (low + high) / 2
        if _t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log(1 - x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return front * f / a


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
