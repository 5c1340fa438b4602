"""The report's charts: one matplotlib (Agg) PNG each, with a caption computed from its data.

Every chart function takes run groups (configurations with their seeds pooled,
see ``aggregate.group``) and an output folder, and returns a ``Chart`` or None when the
data has nothing to show. Colours follow the model everywhere; the optimizer
shows as a facet (line charts) or a hatch (bar charts).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from cifarlab.errors import missing_glyphs_said
from cifarlab.experiments.analysis import BUDGET_KEYS, varying_keys
from cifarlab.report.aggregate import (
    best_per,
    beyond_noise,
    by_pair,
    curve,
    noise_words,
    pareto_front,
    pct,
    picked_by,
    pool_time,
    short,
    slowed_by_others,
    spread,
    test_acc_label,
    val_score,
)
from cifarlab.tables import and_list

if TYPE_CHECKING:  # predict.py needs torch and the data layer; the charts only its fields
    from cifarlab.report.predict import Predictions

P = ParamSpec("P")
R = TypeVar("R")

DPI = 110
WIDTH = 10.0  # inches: ~1100 px, sharp at 1280 px and still legible scaled to 400 px
MAX_LINES = 8  # lines per facet before a chart keeps only each model's best configuration
MAX_BARS = 20  # bars in the time chart before it pools configurations per model/optimizer
PALETTE = matplotlib.colormaps["tab10"].colors
HATCHES = ("", "//", "..", "xx", "\\\\", "oo")
# applied around each chart only: importing cifarlab leaves a notebook's own style alone
STYLE = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 11,
    "axes.titleweight": "bold",
    "figure.dpi": DPI,
}


def _styled(chart: Callable[P, R]) -> Callable[P, R]:
    """Draw ``chart`` in the report's style, without touching matplotlib's global settings."""

    @functools.wraps(chart)
    def draw(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(STYLE), missing_glyphs_said(f"the {chart.__name__} chart"):
            return chart(*args, **kwargs)

    return draw


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs):
    """A figure and its axes, outside pyplot: no backend to choose, no figure to close."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


@dataclass
class Chart:
    name: str  # file stem, e.g. "final-accuracy"
    title: str
    caption: str
    path: Path


# -- colours ---------------------------------------------------------------------------


def model_colours(groups: list[dict[str, Any]]) -> dict[str, tuple]:
    """One colour per model, in order of first appearance: the same in every chart."""
    models = list(dict.fromkeys(g["model"] for g in groups))
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


# -- 1. final accuracy ---------------------------------------------------------------


@_styled
def final_accuracy(groups: list[dict[str, Any]], out: Path) -> Chart:
    best = best_per(groups, "model", "optimizer")
    colours = model_colours(groups)
    models = list(dict.fromkeys(g["model"] for g in best))
    optimizers = list(dict.fromkeys(g["optimizer"] for g in best))
    cell = {(g["model"], g["optimizer"]): g for g in best}
    fig, ax = _subplots(figsize=(WIDTH, 4.6))
    width = min(0.8 / len(optimizers), 0.3)  # few models: keep bars from turning into walls
    for j, opt in enumerate(optimizers):
        for i, model in enumerate(models):
            g = cell.get((model, opt))
            if g is None:
                continue
            mean, std = g["test_acc_mean"] * 100, (g["test_acc_std"] or 0) * 100
            x = i + (j - (len(optimizers) - 1) / 2) * width
            ax.bar(
                x,
                mean,
                width * 0.92,
                yerr=std or None,
                capsize=4 if std else 0,
                color=colours[model],
                alpha=1 - 0.35 * (j > 0),
                hatch=HATCHES[j % len(HATCHES)],
                edgecolor="white",
            )
            ax.annotate(
                f"{mean:.1f}",
                (x, mean + std),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
    bars = {m: [cell[m, o] for o in optimizers if (m, o) in cell] for m in models}
    ticks = [_budget_tick(m, bars[m]) for m in models]
    ax.set_xticks(range(len(models)), ticks, fontsize=8)
    top = max(g["test_acc_mean"] + (g["test_acc_std"] or 0) for g in best) * 100
    ax.set_ylim(0, min(100, top * 1.15 + 2))
    ax.set_ylabel(f"{test_acc_label(best)} (%)")
    ax.set_xlabel("model")
    handles = [
        Patch(
            facecolor="#999",
            hatch=HATCHES[j % len(HATCHES)],
            edgecolor="white",
            alpha=1 - 0.35 * (j > 0),
            label=o,
        )
        for j, o in enumerate(optimizers)
    ]
    ax.legend(handles=handles, title="optimizer", loc="upper left", bbox_to_anchor=(1.01, 1))
    seeds = " (mean ± std over seeds)" if any(g["n"] > 1 for g in best) else ""
    title = f"Test accuracy by model and optimizer{seeds}"
    if len(best) < len(groups):
        title = f"Test accuracy: each model/optimizer's best configuration by {picked_by(best[0])}"
        title += seeds
    caption = final_caption(best)
    if any(" | " in tick for tick in ticks):
        caption += (
            " Where a model's bars differ in a setting, its label gives their values left to right."
        )
    return _save(fig, out, "final-accuracy", title, caption)


def final_caption(best: list[dict[str, Any]]) -> str:
    """Who wins between the two most common optimizers, how often and by how much; the best."""
    top = max(best, key=val_score)
    lead = (
        f"Best by {picked_by(top)}: {top['label']}, {pct(top['test_acc_mean'])}"
        f"{spread(top['test_acc_std'])} test accuracy"
        f" ({top['n']} seed{'s' * (top['n'] > 1)})."
    )
    optimizers = [o for o, _ in Counter(g["optimizer"] for g in best).most_common()]
    if len(optimizers) < 2:
        models = sorted(best, key=lambda g: g["test_acc_mean"], reverse=True)
        if len(models) < 2:
            return lead
        a, b = models[0], models[1]
        diff = (a["test_acc_mean"] - b["test_acc_mean"]) * 100
        # a 30-epoch simple "ahead" of a 4-epoch tutorial: the labels say the budgets
        name_a, name_b = (g["label"] if _budgets(g) else g["model"] for g in (a, b))
        ahead = (
            f"On test accuracy {name_a} is {diff:.1f} points ahead of {name_b}, "
            f"{noise_words(beyond_noise(a, b))}."
        )
        if round(diff, 1) == 0:  # "leads ..., 0.0 points ahead" said a tie was a lead
            ahead = f"{name_a} and {name_b} tie on test accuracy."
        return f"{lead} {ahead}"
    a, b = optimizers[:2]
    diffs = optimizer_diffs(best, a, b)
    if not diffs:
        return lead
    if sum(d > 0 for d in diffs.values()) < sum(d < 0 for d in diffs.values()):
        a, b = b, a
        diffs = {m: -d for m, d in diffs.items()}
    wins = sum(d > 0 for d in diffs.values())
    mean = statistics.fmean(diffs.values())
    if not wins:  # and, after the swap above, no losses either
        which = "the one model" if len(diffs) == 1 else f"all {len(diffs)} models"
        return f"{a} and {b} tie on {which} compared. {lead}"
    cell = {(g["model"], g["optimizer"]): g for g in best}
    verdicts = {m: beyond_noise(cell[m, a], cell[m, b]) for m in diffs}
    if len(diffs) == 1:
        model = next(iter(diffs))
        words = noise_words(verdicts[model])
        return f"{a} beats {b} on {model} by {mean:.1f} points, {words}. {lead}"
    if set(verdicts.values()) == {"one seed"}:
        noise = "With one seed per configuration, there is no spread to judge these leads by."
    else:
        ahead = sum(v == "clear" and diffs[m] > 0 for m, v in verdicts.items())
        behind = sum(v == "clear" and diffs[m] < 0 for m, v in verdicts.items())
        on = {0: "none of them", len(diffs): "all of them"}.get(ahead, f"{ahead} of them")
        noise = f"{a}'s lead is beyond seed noise (95% Welch interval) on {on}"
        noise += f"; {b} is clearly ahead on {behind}." if behind else "."
    return (
        f"{a} beats {b} on {wins} of {len(diffs)} models, by {mean:.1f} points on average. "
        f"{noise} {lead}"
    )


def _budget_tick(model: str, bars: list[dict[str, Any]]) -> str:
    """The model's name over the budgets its bars differ from other models' in, one per line
    (side by side, long labels ran into the next model's); where its own bars differ, their
    values left to right."""
    lines = [model]
    for key in dict.fromkeys(k for g in bars for k in _budgets(g)):
        values = [short(g["members"][0]["config"].get(key), key) for g in bars]
        lines.append(f"{key}={' | '.join(values if len(set(values)) > 1 else values[:1])}")
    return "\n".join(lines)


def _budgets(g: dict[str, Any]) -> list[str]:
    """The budget settings a group's label names (they differ between the groups)."""
    return [k for k in g["label_keys"] if k in BUDGET_KEYS]


def optimizer_diffs(best: list[dict[str, Any]], a: str, b: str) -> dict[str, float]:
    """Per model: mean test accuracy of optimizer ``a`` minus ``b``, in points."""
    cell = {(g["model"], g["optimizer"]): g["test_acc_mean"] for g in best}
    models = dict.fromkeys(g["model"] for g in best)
    return {m: (cell[m, a] - cell[m, b]) * 100 for m in models if (m, a) in cell and (m, b) in cell}


# -- 2-4. per-epoch curves -----------------------------------------------------------


def _mean_with_spread(ax, g: dict[str, Any], colour, metric: str) -> None:
    """A group's mean curve of a fraction metric in percent, shaded min-max over seeds."""
    e, mean, lo, hi = curve(g, metric)
    full = every_seed(g, metric)
    _plot_faded_tail(ax, e, mean * 100, full, color=colour, marker="o", ms=3, label=g["label"])
    if g["n"] > 1 and len(e) == 1:  # a band over one epoch has no width: a bar instead
        spread = np.array([mean - lo, hi - mean]) * 100
        ax.errorbar(e, mean * 100, yerr=spread, color=colour, capsize=4, alpha=0.6)
    elif g["n"] > 1:  # over the epochs every seed reached: the rest is not a spread of seeds
        ax.fill_between(e[:full], lo[:full] * 100, hi[:full] * 100, color=colour, alpha=0.2, lw=0)


def every_seed(g: dict[str, Any], metric: str) -> int:
    """How many of the group's first curve points (``curve``'s epochs) hold every seed; after
    them seeds that stopped early (--early-stop) have left the mean to the others."""
    counts: dict[int, int] = {}
    for run in g["members"]:
        for row in run["epochs"]:
            if row.get(metric) is not None:
                counts[row["epoch"]] = counts.get(row["epoch"], 0) + 1
    n = [counts[e] for e in sorted(counts)]
    return next((i for i, c in enumerate(n) if c < max(n)), len(n))


def _plot_faded_tail(ax, e, y, full: int, **style) -> None:
    """``y`` over ``e``, faded after its first ``full`` points (fewer seeds there): a mean of
    one seed after one of two jumped, and read as the pair's."""
    ax.plot(e[:full], y[:full], **style)
    if full < len(e):
        ax.plot(e[full - 1 :], y[full - 1 :], **{**style, "label": None, "alpha": 0.35})


@_styled
def accuracy_curves(groups: list[dict[str, Any]], out: Path) -> Chart:
    def draw(ax, g, colour):
        _mean_with_spread(ax, g, colour, "test_acc")

    shown = _facets(groups, draw, "test accuracy (%)", "test_acc")
    peaks = []
    for g in shown.drawn:
        e, mean, _, _ = curve(g, "test_acc")
        if len(e):
            peaks.append((g, e[int(np.argmax(mean))], float(mean.max()), e[-1]))
    # the curve described is the one validation picks: "peaks highest" chose it on test
    g, at, value, last = max(peaks, key=lambda p: val_score(p[0]))
    gap = int(last - at)  # numpy ints: "s" * (gap > 1) needs a Python bool
    when = "its last" if gap == 0 else f"{gap} epoch{'s' * (gap > 1)} before its last"
    caption = f"{g['label']} peaks at {pct(value)} in epoch {at}, {when}."
    if len(peaks) > 1:
        rising = sum(at_ == last_ for _, at_, _, last_ in peaks)
        caption = (
            f"Best by {picked_by(g)}: {caption} {rising} of {len(peaks)} configurations "
            f"{'was' if rising == 1 else 'were'} still at their peak in their last epoch."
        )
    title = "Test accuracy per epoch"
    if any(g["n"] > 1 for g in shown.drawn):
        title += " (mean, shaded: min–max over seeds)"
    return _save_facets(shown, out, "accuracy-curves", title, caption, groups)


@_styled
def loss_curves(groups: list[dict[str, Any]], out: Path) -> Chart:
    def draw(ax, g, colour):
        e, train, _, _ = curve(g, "train_loss")
        dot = "o" if len(e) == 1 else None  # a line through one epoch draws nothing
        full = every_seed(g, "train_loss")
        _plot_faded_tail(ax, e, train, full, color=colour, marker=dot, label=g["label"])
        e, val, _, _ = curve(g, "val_loss")
        if len(e):  # --eval-every scores some epochs: mark them, the dashes between are not
            scored = "s" if dot or np.any(np.diff(e) > 1) else None
            _plot_faded_tail(ax, e, val, every_seed(g, "val_loss"), color=colour, ls="--",
                             marker=scored, ms=dot and 6 or 3, mfc="none")  # fmt: skip
            onsets = [r["overfit_epoch"] for r in g["members"] if r.get("overfit_epoch")]
            for onset in sorted(set(onsets)):
                y = val[list(e).index(onset)] if onset in e else None
                if y is not None:
                    ax.plot(onset, y, marker="v", ms=9, color=colour, mec="black")

    shown = _facets(groups, draw, "cross-entropy loss", "train_loss", style_legend=True)
    runs = [r for g in groups for r in g["members"]]
    onsets = [r["overfit_epoch"] for r in runs if r.get("overfit_epoch")]
    if onsets:
        caption = (
            f"Validation loss turned up while training loss kept falling (overfitting, marked ▼) "
            f"in {len(onsets)} of {len(runs)} runs, from epoch {min(onsets)} "
            f"(median {statistics.median(onsets):g})."
        )
    elif any(r.get("best_val_acc") is not None for r in runs):
        lengths = sorted({len(r["epochs"]) for r in runs})
        span = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}–{lengths[-1]}"
        caption = (
            f"No run overfit within its {'one epoch' if span == '1' else span + ' epochs'}: "
            "validation loss never rose for "
            "several epochs in a row while training loss fell."
        )
    else:
        caption = "No validation split: training loss only, and no overfitting to detect."
    smoothed = [r for r in runs if r["config"].get("label_smoothing")]
    smoothing = sorted({r["config"]["label_smoothing"] for r in smoothed})
    if smoothing:  # the training loss is against smoothed targets: it cannot reach 0
        # said of every run, it described a tutorial run beside one quick-cpu run wrongly
        whose = "Training loss is" if len(smoothed) == len(runs) else (
            f"The training loss of {len(smoothed)} of the {len(runs)} runs "
            f"({and_list(_models_of(groups, smoothed))}) is"
        )  # fmt: skip
        caption += (
            f" {whose} against targets smoothed by {'/'.join(map(str, smoothing))} "
            "(--label-smoothing), which keeps it well above zero; validation loss is plain "
            "cross-entropy, so the two are on different scales (validation can sit below)."
        )
    has_val = any(curve(g, "val_loss")[0].size for g in shown.drawn)
    title = "Loss per epoch: training (solid) and validation (dashed)" if has_val else (
        "Training loss per epoch")  # fmt: skip
    return _save_facets(shown, out, "loss-curves", title, caption, groups)


def _models_of(groups: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """The models of ``runs`` as the groups (and so the legends) name them: a model file by
    its name, not the path runs record."""
    ids = {r["id"] for r in runs}
    return sorted({g["model"] for g in groups for r in g["members"] if r["id"] in ids})


@_styled
def gap_curves(groups: list[dict[str, Any]], out: Path) -> Chart:
    def draw(ax, g, colour):
        _mean_with_spread(ax, g, colour, "gap")
        ax.axhline(0, color="black", lw=0.8)

    shown = _facets(groups, draw, "train − validation accuracy (points)", "gap")
    last = [(g, float(curve(g, "gap")[1][-1]) * 100) for g in shown.drawn]
    if not last:
        caption = "No validation split, so no train/validation gap to show."
    elif len(last) == 1:
        caption = f"At the last epoch the gap is {last[0][1]:+.1f} points."
    else:  # by size: a gap of -4 (validation ahead) is wider than one of 0.4
        wide, narrow = (f(last, key=lambda p: abs(p[1])) for f in (max, min))
        caption = (
            f"At the last epoch the gap is widest for {wide[0]['label']} ({wide[1]:+.1f} "
            f"points) and narrowest for {narrow[0]['label']} ({narrow[1]:+.1f} points)."
        )
        if any(v < 0 for _, v in last):  # the blog preset trains without augmentation
            runs = [r for g in groups for r in g["members"]]
            augmented = any(r["config"].get("augment", "crop-flip") != "none" for r in runs)
            caption += (
                " Below zero, validation beats training: training accuracy is the epoch's "
                "running mean while the net still improved"
                + (", and augmentation handicaps the training images" if augmented else "")
                + "; the model does not yet overfit."
            )
    title = "Overfitting: train minus validation accuracy per epoch"
    return _save_facets(shown, out, "gap-curves", title, caption, groups)


def _facets(groups, draw, ylabel, metric, style_legend=False) -> Facets:
    """One subplot per optimizer, one line per group that has ``metric`` (each model's best
    if too many); the legend names only what is drawn."""
    colours = model_colours(groups)  # before the filter: a model's colour is the report's
    groups = [g for g in groups if curve(g, metric)[0].size]
    optimizers = list(dict.fromkeys(g["optimizer"] for g in groups))
    cols = max(min(len(optimizers), 3), 1)
    rows = max(math.ceil(len(optimizers) / cols), 1)
    fig, axes = _subplots(rows, cols, figsize=(WIDTH, 3.9 * rows), squeeze=False, sharey=True)
    pooled, panels = False, []
    for opt in optimizers:
        mine = [g for g in groups if g["optimizer"] == opt]
        if len(mine) > MAX_LINES:
            mine, pooled = best_per(mine, "model"), True
        panels.append(mine)
    drawn = [g for mine in panels for g in mine]
    pairs = [(g["model"], g["optimizer"]) for g in drawn]
    by_config = not pooled and len(set(pairs)) < len(pairs)  # several lines of one model
    if by_config:  # colour by setting, or an lr study's lines would all be one blue
        colours = setting_colours(drawn)
    for ax, opt, mine in zip(axes.flat, optimizers, panels):
        for g in mine:
            draw(ax, g, colours[_setting(g) if by_config else g["model"]])
        ax.set_title(f"optimizer: {opt}", fontsize=10)
        ax.set_xlabel("epoch")
        epochs = {int(e) for g in mine for e in curve(g, metric)[0]}
        if len(epochs) == 1:  # one epoch: the default ticks read 0.96, 0.98, 1.00...
            ax.set_xticks(sorted(epochs))
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes.flat[len(optimizers) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
        if "accuracy (%)" in ylabel:
            _clamp_percent(ax)
    handles = [Line2D([], [], color=c, lw=2, label=m) for m, c in colours.items()]
    if by_config:  # name each line
        handles = [h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]]
        handles = list({h.get_label(): h for h in handles}.values())
    if style_legend:
        handles.append(Line2D([], [], color="#444", label="training"))
        if any(curve(g, "val_loss")[0].size for g in drawn):
            handles.append(Line2D([], [], color="#444", ls="--", label="validation"))
        if any(r.get("overfit_epoch") for g in drawn for r in g["members"]):
            handles.append(
                Line2D([], [], color="#444", marker="v", ls="", mec="black", label="overfit onset")
            )
    return Facets(fig, handles, pooled, drawn, metric)


@dataclass
class Facets:
    """A faceted line chart before its caption: the figure, its legend, and the groups drawn
    (captions speak of these: with many configurations only each model's best is drawn)."""

    fig: Figure
    handles: list
    pooled: bool
    drawn: list[dict[str, Any]]
    metric: str


def _save_facets(shown: Facets, out, name, title, caption, groups) -> Chart:
    if any(every_seed(g, shown.metric) < len(curve(g, shown.metric)[0]) for g in shown.drawn):
        caption += (
            " Where a line fades, some of its seeds had stopped early (--early-stop): it is "
            "the mean of those still training."
        )
    if shown.pooled:
        caption += (
            f" Of the {len(groups)} configurations, each panel draws one line per model: "
            f"its best with that panel's optimizer (by {picked_by(shown.drawn[0])})."
        )
    # below the plots: a legend at the side would squeeze them, one on top could cover data
    ncol = _legend_columns([h.get_label() for h in shown.handles])
    shown.fig.legend(handles=shown.handles, loc="outside lower center", ncol=ncol, fontsize=9)
    return _save(shown.fig, out, name, title, caption)


def setting_colours(groups: list[dict[str, Any]]) -> dict[str, tuple]:
    """One colour per setting (a label without its optimizer), alike in every panel."""
    settings = list(dict.fromkeys(_setting(g) for g in groups))
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(settings)}


def _setting(g: dict[str, Any]) -> str:
    """A group's label without its optimizer, which each panel's title already names."""
    return " · ".join(part for part in g["label"].split(" · ") if part != g["optimizer"])


def _legend_columns(labels: list[str]) -> int:
    """As many columns as the figure's width holds for the longest label (at 9 pt about 13
    characters an inch, plus the line sample), spread so no row holds a lone entry."""
    longest = max((len(label) for label in labels), default=1)
    fits = max(int(WIDTH * 13) // (longest + 6), 1)
    rows = math.ceil(len(labels) / fits) if labels else 1
    return max(math.ceil(len(labels) / rows), 1)


# -- 5. time and the accuracy/time trade-off ---------------------------------------------


@_styled
def time_bars(groups: list[dict[str, Any]], out: Path) -> Chart:
    colours = model_colours(groups)
    rows = groups
    if len(groups) > MAX_BARS:  # pool to model/optimizer so the chart stays readable
        rows = pool_time(groups)
    rows = sorted(rows, key=lambda g: g["train_seconds_mean"])
    fig, ax = _subplots(figsize=(WIDTH, max(2.6, 1.2 + 0.32 * len(rows))))
    y = range(len(rows))
    stds = [g["train_seconds_std"] for g in rows]
    busy = [any(slowed_by_others(r) for r in g.get("members", [])) for g in rows]
    ax.barh(
        y,
        [g["train_seconds_mean"] for g in rows],
        xerr=[np.nan if s is None else s for s in stds],  # nan: no stray cap on a single run
        color=[colours[g["model"]] for g in rows],
        hatch=["///" if b else "" for b in busy],
        edgecolor="white",
        capsize=3,
    )
    ax.set_yticks(list(y), [g["label"] for g in rows], fontsize=8)
    ax.set_xlabel("time per run, training and evaluation (s)")
    ax.grid(axis="y", visible=False)
    fast, slow = rows[0], rows[-1]
    ratio = slow["train_seconds_mean"] / max(fast["train_seconds_mean"], 1e-9)
    caption = (
        f"{slow['label']} trains slowest ({slow['train_seconds_mean']:.1f} s per run), "
        f"{ratio:.1f}x as long as {fast['label']} ({fast['train_seconds_mean']:.1f} s)."
        if len(rows) > 1
        else f"{fast['label']} took {fast['train_seconds_mean']:.1f} s per run."
    )
    if any(busy):
        caption += (
            f" Hatched ({sum(busy)} of {len(rows)}): other work took a quarter or more of the "
            'CPU from a run there ("cores taken" in the runs table), so it trained slower '
            "than the machine can."
        )
    seeds = " (mean ± std over seeds)" if any(s is not None for s in stds) else ""
    title = f"Training time per configuration{seeds}"
    return _save(fig, out, "train-time", title, caption)


@_styled
def pareto(groups: list[dict[str, Any]], out: Path) -> Chart:
    colours, key = model_colours(groups), lambda g: g["model"]
    pairs = [(g["model"], g["optimizer"]) for g in groups]
    if len(set(pairs)) < len(pairs) and len(setting_colours(groups)) <= len(PALETTE):
        colours, key = setting_colours(groups), _setting  # an lr study: dots told apart
    optimizers = list(dict.fromkeys(g["optimizer"] for g in groups))
    markers = "os^Dvp*"
    points = [(g["train_seconds_mean"], g["test_acc_mean"] * 100) for g in groups]
    front = pareto_front(points)
    fig, ax = _subplots(figsize=(WIDTH, 4.8))
    for g, (t, a) in zip(groups, points):
        m = markers[optimizers.index(g["optimizer"]) % len(markers)]
        ax.scatter(t, a, color=colours[key(g)], marker=m, s=55, alpha=0.85, zorder=3)
    fx, fy = zip(*(points[i] for i in front))
    ax.plot(fx, fy, color="black", lw=1.2, ls=":", zorder=2, drawstyle="steps-post")
    ax.scatter(fx, fy, s=170, facecolors="none", edgecolors="black", lw=1.3, zorder=4)
    times = [t for t, _ in points]
    log = min(times) > 0 and max(times) / min(times) > 20
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("time per run, training and evaluation (s" + (", log scale)" if log else ")"))
    ax.set_ylabel(f"{test_acc_label(groups)} (%)")
    _clamp_percent(ax)
    handles = [Line2D([], [], color=c, marker="o", ls="", label=m) for m, c in colours.items()]
    handles += [
        Line2D([], [], color="#666", marker=markers[i % len(markers)], ls="", label=o)
        for i, o in enumerate(optimizers)
    ]
    handles.append(
        Line2D([], [], color="black", ls=":", marker="o", mfc="none", ms=10, label="Pareto front")
    )
    labels = [h.get_label() for h in handles]
    if max(map(len, labels)) > 16:  # at the side, long names squeezed the plot to 40%
        ncol = _legend_columns(labels)
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8)
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    cheap, best = groups[front[0]], groups[front[-1]]
    caption = f"{len(front)} of {len(groups)} configurations "
    caption += f"{'is' if len(front) == 1 else 'are'} on the Pareto front"
    if len(front) > 1:
        caption += (
            f", from {cheap['label']} ({pct(cheap['test_acc_mean'])} in "
            f"{cheap['train_seconds_mean']:.1f} s) to {best['label']} "
            f"({pct(best['test_acc_mean'])} in {best['train_seconds_mean']:.1f} s)."
        )
    else:
        caption += f": {best['label']} is the fastest, and none is more accurate."  # ties too
    title = "Accuracy vs training time (circled: nothing is both faster and more accurate)"
    return _save(fig, out, "pareto", title, caption)


# -- 6. the best run's predictions --------------------------------------------------------


@_styled
def confusion(pred: Predictions, out: Path) -> Chart:
    """Row-normalised confusion matrix: each true class's images, where they went."""
    k = len(pred.classes)
    matrix = confusion_matrix(pred.labels, pred.preds, k)
    # past 24 classes, a row per 0.18 in (6-point names fit): a bigger PNG, opened full size
    side = min(0.18 * k + 2.5, 30) if k > 24 else None  # past 150 classes, no names
    fig, ax = _subplots(
        figsize=(side or min(WIDTH, 3 + 0.6 * k), side or min(WIDTH, 2.4 + 0.55 * k))
    )
    ax.grid(False)
    im = ax.imshow(matrix * 100, cmap="Blues", vmin=0, vmax=100)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                v = matrix[i, j] * 100
                ax.text(
                    j,
                    i,
                    f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > 55 else "black",
                )
    small = {"fontsize": 6} if k > 24 else {}
    ax.set_xticks(range(k), pred.classes, rotation=90 if small else 45, ha="center" if small
                  else "right", **small)  # fmt: skip
    ax.set_yticks(range(k), pred.classes, **small)
    if k > 150:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="% of the true class's test images", shrink=0.8)
    off = matrix.copy()
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    caption = (
        f"Run {pred.run_id}: the most common mistake is {pred.classes[i]} taken for "
        f"{pred.classes[j]} ({off[i, j] * 100:.0f}% of {pred.classes[i]} test images)."
    )
    return _save(
        fig, out, "confusion", f"Confusion matrix of the best run ({pred.run_id})", caption
    )


@_styled
def per_class(pred: Predictions, out: Path, colour: tuple) -> Chart:
    acc = per_class_accuracy(pred.labels, pred.preds, len(pred.classes))
    overall = float((pred.labels == pred.preds).mean())
    if len(pred.classes) > 12:  # names side by side overlap: a row each, the worst on top
        order = np.argsort(-acc, kind="stable")[-100:]  # past 100 classes, the 100 worst
        fig, ax = _subplots(figsize=(WIDTH, 1.2 + 0.19 * len(order)))
        ax.barh([pred.classes[i] for i in order], acc[order] * 100, color=colour)
        ax.axvline(
            overall * 100, color="black", ls="--", lw=1, label=f"all classes: {pct(overall)}"
        )
        ax.set_xlabel("test accuracy (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(-0.6, len(order) - 0.4)
        ax.tick_params(axis="y", labelsize=7)
    else:
        fig, ax = _subplots(figsize=(WIDTH, 3.8))
        ax.bar(pred.classes, acc * 100, color=colour)
        ax.axhline(
            overall * 100, color="black", ls="--", lw=1, label=f"all classes: {pct(overall)}"
        )
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlabel("class")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", rotation=30)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    lo, hi = int(np.argmin(acc)), int(np.argmax(acc))
    caption = (
        f"Per-class accuracy ranges from {pct(acc[lo])} ({pred.classes[lo]}) to "
        f"{pct(acc[hi])} ({pred.classes[hi]}); {pct(overall)} overall on "
        f"{len(pred.labels):,} test images.{_unbalanced_note(pred, acc)}"
        + (f" The chart shows the 100 worst of {len(acc)} classes." if len(acc) > 100 else "")
    )
    return _save(fig, out, "per-class", "Per-class test accuracy of the best run", caption)


def _unbalanced_note(pred: Predictions, acc: np.ndarray) -> str:
    """On a test set where one class is far the largest, accuracy flatters: answering that
    class alone scores its share. Say what that scores, and the mean over classes."""
    counts = np.bincount(pred.labels, minlength=len(pred.classes))
    big = int(np.argmax(counts))
    share = counts[big] / counts.sum()
    if share < max(1.5, 1 + 0.05 * len(pred.classes)) / len(pred.classes):  # near equal
        return ""
    return (
        f" The test set is unbalanced: always answering {pred.classes[big]} would score "
        f"{pct(share)}; the mean of the per-class accuracies (balanced accuracy) is "
        f"{pct(float(acc[counts > 0].mean()))}."
    )


@_styled
def mistakes(pred: Predictions, out: Path, count: int = 16) -> Chart:
    """The most confidently misclassified test images (none wrong: the least sure right ones)."""
    wrong = np.flatnonzero(pred.labels != pred.preds)
    if len(wrong):
        shown = wrong[np.argsort(-pred.confidence[wrong])][:count]
    else:
        shown = np.argsort(pred.confidence)[:count]
    cols = min(8, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = _subplots(rows, cols, figsize=(WIDTH, 1.85 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        ax.imshow(pred.images[i], interpolation="nearest")
        ax.set_title(
            f"true: {_short(pred.classes[pred.labels[i]])}\n"
            f"pred: {_short(pred.classes[pred.preds[i]])}\n"
            f"{pred.confidence[i]:.0%} sure",
            fontsize=8,
            fontweight="normal",
            linespacing=1.1,
        )
    conf = pred.confidence[shown]
    if len(wrong):
        title = "Most confident mistakes of the best run"
        caption = (
            f"The {len(shown)} most confidently wrong of {len(wrong):,} misclassified test "
            f"images, predicted with {conf.min():.0%} to {conf.max():.0%} confidence."
        )
    else:
        title = "No mistakes: the best run's least confident test predictions"
        caption = (
            f"All {len(pred.labels):,} test images are classified correctly; the least sure "
            f"{len(shown)} were predicted with {conf.min():.0%} to {conf.max():.0%} confidence."
        )
    return _save(fig, out, "mistakes", title, caption)


def _short(name: str, room: int = 14) -> str:
    """A class name that fits above one of 8 images a row: neighbours' titles overlapped."""
    return name if len(name) <= room else name[: room - 1] + "…"


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    counts = np.zeros((k, k))
    np.add.at(counts, (labels, preds), 1)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def per_class_accuracy(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    return np.diag(confusion_matrix(labels, preds, k))


# -- 7. sensitivity ------------------------------------------------------------------------


@_styled
def sensitivity(
    groups: list[dict[str, Any]], key: str, out: Path, failed: list[dict[str, Any]] = ()
) -> Chart | None:
    """Accuracy against ``key`` (batch_size or lr), one line per model/optimizer; the caption
    names the values whose runs diverged (``failed``: runs that did not complete)."""
    # copies: the caller's groups go on to the other charts and the page unchanged
    groups = [{**g, key: g["members"][0]["config"][key]} for g in groups]
    # a model/optimizer tried at one value has no sensitivity to show
    pairs = {
        pair: members
        for pair, members in by_pair(best_per(groups, "model", "optimizer", key)).items()
        if len(members) > 1
    }
    if not pairs:
        return None
    values = {g[key] for members in pairs.values() for g in members}
    colours = model_colours(groups)
    optimizers = list(dict.fromkeys(g["optimizer"] for g in groups))
    styles = ("-", "--", ":", "-.")
    fig, ax = _subplots(figsize=(WIDTH, 4.4))
    lines = []
    for (model, opt), members in pairs.items():
        members.sort(key=lambda g: g[key])
        x = [g[key] for g in members]
        y = np.array([g["test_acc_mean"] * 100 for g in members])
        err = [(g["test_acc_std"] or 0) * 100 for g in members]
        ax.errorbar(
            x,
            y,
            yerr=err if any(err) else None,  # single seeds: no bars, no caps in the legend
            color=colours[model],
            ls=styles[optimizers.index(opt) % 4],
            marker="o",
            ms=4,
            capsize=3,
            label=f"{model} · {opt}",
        )
        scores = np.array([val_score(g) * 100 for g in members])
        lines.append((f"{model} · {opt}", x, y, scores, picked_by(members[0])))
    ax.set_xscale("log", base=2 if key == "batch_size" else 10)
    if key == "batch_size":
        ax.set_xticks(sorted(values), [str(v) for v in sorted(values)])
    noun = "batch size" if key == "batch_size" else "learning rate"
    ax.set_xlabel(f"{noun} ({'images per step' if key == 'batch_size' else 'log scale'})")
    ax.set_ylabel(f"{test_acc_label(groups)} (%)")
    _clamp_percent(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    # chosen as the headline ranks: by validation, so the test set never picks (it did)
    label, x, y, scores, by = max(lines, key=lambda line: line[3].max())
    best, worst = int(np.argmax(scores)), int(np.argmin(y))
    shown = f"{y[best]:.1f}% test" + (
        f", {scores[best]:.1f}% validation" if by == "validation" else ""
    )
    caption = f"For {label}, {by} picks {noun} {x[best]:g} ({shown})"
    if worst != best:
        caption += (
            f"; {x[worst]:g} gives the lowest test accuracy, {y[best] - y[worst]:.1f} points below"
        )
    caption += "."
    runs = [r for members in pairs.values() for g in members for r in g["members"]]
    others = [k for k in varying_keys(runs) if k not in ("model", "optimizer", key)]
    if others:  # a point may be 8 epochs on 6,000 images, its neighbour 2 on 500
        caption += (
            f" Each point is the best configuration at that {noun} (by "
            f"{picked_by(groups[0])}), whatever its {', '.join(others)}: "
            "points can differ in those too."
        )
    drawn = {(m, o, g[key]) for (m, o), members in pairs.items() for g in members}
    caption += _diverged_at(failed, key, noun, drawn)
    name = "sensitivity-" + key.replace("_", "-")
    title = f"Test accuracy vs {noun}"
    if any(g["test_acc_std"] for members in pairs.values() for g in members):
        title += " (bars: ± std over seeds)"  # the curves' bands are min–max: say which
    return _save(fig, out, name, title, caption)


def _diverged_at(failed: list[dict[str, Any]], key: str, noun: str, drawn: set[tuple]) -> str:
    """The values of ``key`` at which runs diverged and no run completed (``drawn``: the
    model, optimizer and value of each point): an lr study's edge is a finding, and the
    chart, which draws completed runs only, ended before it without a word."""
    where: dict[Any, set[str]] = {}
    for run in failed:
        config = run["config"]
        point = (run["model"], config["optimizer"], config[key])
        if run["status"] == "diverged" and point not in drawn:
            where.setdefault(config[key], set()).add(f"{run['model']} · {config['optimizer']}")
    if not where:
        return ""
    shown = "; ".join(f"{v:g} ({', '.join(sorted(who))})" for v, who in sorted(where.items()))
    return f" Diverged, so not drawn: {noun} {shown}."


# -- helpers ----------------------------------------------------------------------------


def _clamp_percent(ax) -> None:
    """Accuracy axes never show impossible values: keep them within 0-100%."""
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0), min(high, 100.5))


def _save(fig, out: Path, name: str, title: str, caption: str) -> Chart:
    fig.suptitle(title, fontsize=12, fontweight="bold")
    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI, facecolor="white")
    return Chart(name, title, caption, path)
