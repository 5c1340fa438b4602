"""The report page: one self-contained HTML file (charts inlined as data URIs) plus the PNGs.

No network: no CDN scripts, no web fonts; a few lines of inline JavaScript sort
the tables. The layout is one column that reflows from 1280 px down to phones.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError, as_path
from cifarlab.experiments.analysis import fewer_runs, pooled_budgets, varying_keys
from cifarlab.experiments.store import WORKSPACE, ResultsStore, database_path
from cifarlab.files import make_folder
from cifarlab.model_files import model_of_run, short_model_names
from cifarlab.process import pid_alive, signals_held
from cifarlab.report import aggregate, charts
from cifarlab.report.aggregate import pct
from cifarlab.report.charts import Chart
from cifarlab.results import epochs_done

SENSITIVITY_KEYS = ("batch_size", "lr")
REPORT_MANIFEST = ".cifarlab-report.json"  # the chart files this folder's report drew


def build_report(
    workspace: str | Path = WORKSPACE,
    experiment: str | None = None,
    run_id: str | None = None,
    output: str | Path | None = None,
) -> Path:
    """Write ``index.html`` and chart PNGs for an experiment, one run, or the whole workspace."""
    workspace = as_path(workspace, "workspace")
    output = as_path(output, "output") if output is not None else None
    if isinstance(run_id, os.PathLike):  # a run's folder (RunResult.run_dir) names the run
        run_id = Path(run_id).name
    title, records = load_records(workspace, experiment, run_id)
    slug = run_id or experiment or "all"
    out = output or workspace / f"report-{slug}"
    make_folder(out)
    # Charts are drawn in a staging folder and moved in when the page is ready: a report
    # stopped half-way (Ctrl-C) leaves the earlier one whole.
    _remove_abandoned_staging(out)
    theirs = output is not None and not (out / REPORT_MANIFEST).exists()  # not a report's
    if theirs:
        _refuse_to_replace(out, ["index.html"])  # before the work, where it is known
    with tempfile.TemporaryDirectory(prefix=f".report-{os.getpid()}-", dir=out) as staging:
        page = _render(title, records, workspace, Path(staging), whole=not (experiment or run_id))
        if theirs:
            _refuse_to_replace(out, [png.name for png in Path(staging).glob("*.png")])
        with signals_held():  # a stop between the renames left new charts under the old page
            _publish(Path(staging), page, out)
    return out / "index.html"


def _refuse_to_replace(out: Path, names: list[str]) -> None:
    """``-o`` names a folder no report wrote: a file of the user's that a report would
    write over (their own index.html, a confusion.png) is refused, not replaced."""
    taken = sorted(name for name in names if (out / name).exists())
    if taken:
        raise CifarlabError(
            f"{str(out)!r} already holds {', '.join(taken)}, which no cifarlab report wrote; "
            "give -o a new or empty folder"
        )


def _remove_abandoned_staging(out: Path) -> None:
    """Staging folders of reports killed outright (``kill -9``): their process is gone."""
    for folder in out.glob(".report-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _render(
    title: str, records: list[dict[str, Any]], workspace: Path, out: Path, whole: bool = False
) -> str:
    """The page, with its chart PNGs written to ``out`` (``whole``: every run of the
    workspace, not one experiment's)."""
    groups = aggregate.group(records)
    notes: list[str] = [*_budget_note(groups, whole)]
    sections: list[tuple[str, list[Chart]]] = []
    if groups:
        sections = _chart_sections(groups, records, workspace, out, notes)
    else:
        notes.append("No run completed, so there is nothing to chart.")
    models = _model_section(groups, workspace, out, notes)
    return render_page(title, records, groups, sections, models, notes)


def _publish(staging: Path, page: str, out: Path) -> None:
    """Move the new charts in, then the page (each by an atomic rename); then remove the
    charts an earlier report here drew and this one does not, so none outlives its data.
    Only PNGs a report listed in its manifest are ever removed: `-o` may point at a folder
    that holds the user's own."""
    new = sorted(png.name for png in staging.glob("*.png"))
    earlier = _charts_drawn_before(out)
    for name in new:
        os.replace(staging / name, out / name)
    (staging / "index.html").write_text(page, encoding="utf-8")
    os.replace(staging / "index.html", out / "index.html")
    (staging / REPORT_MANIFEST).write_text(json.dumps({"charts": new}), encoding="utf-8")
    os.replace(staging / REPORT_MANIFEST, out / REPORT_MANIFEST)
    for name in sorted(set(earlier) - set(new)):
        (out / name).unlink(missing_ok=True)


def _charts_drawn_before(out: Path) -> list[str]:
    """The chart files the last report in ``out`` wrote, from its manifest ([] if none)."""
    try:
        charts = json.loads((out / REPORT_MANIFEST).read_text(encoding="utf-8"))["charts"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    # names only, never a path: a hand-edited manifest cannot reach outside the folder
    return [c for c in charts if isinstance(c, str) and c == Path(c).name and c.endswith(".png")]


def load_records(
    workspace: Path, experiment: str | None, run_id: str | None
) -> tuple[str, list[dict[str, Any]]]:
    """The runs to report on, each with its ``epochs`` rows and ``info``, and a page title."""
    from cifarlab.results import (
        name_data_versions,
        name_model_versions,
        open_store,
        results,
        stopped_if_orphaned,
    )

    if run_id is not None:
        with open_store(workspace) as store:
            if store.run(run_id) is None:
                raise CifarlabError(
                    f"no run {run_id!r} in {str(workspace)!r}; `cifarlab results` lists the runs"
                )
        ids, title = [run_id], f"Run {run_id}"
    else:
        ids = [r["id"] for r in results(workspace, experiment)]
        title = f"Experiment {experiment}" if experiment else f"All runs in {workspace}"
    with ResultsStore(database_path(workspace)) as store:
        # a run whose process died reads "stopped", with how to go on, as `results` says
        runs = [stopped_if_orphaned(store.run(i), workspace) | {"epochs": store.epochs(i)}
                for i in ids]  # fmt: skip
    records = name_data_versions(name_model_versions(runs))
    shown = short_model_names(r["model"] for r in records)  # the runs table's column
    return title, [r | {"model": shown[r["model"]]} for r in records]


def _budget_note(groups: list[dict[str, Any]], whole: bool = True) -> list[str]:
    """A page may rank a 1-epoch run on 500 images beside a 10-epoch one on 45,000 (runs of
    several studies in a workspace, or an experiment that sets budgets per model), so it
    says so once, at the top."""
    runs = [r for g in groups for r in g["members"]]
    differ = pooled_budgets(runs, [])
    if not differ:
        return []
    shown = []
    for key in differ:
        raw = {r["config"].get(key) for r in runs}
        values = [aggregate.short(v, key) for v in sorted(raw, key=_in_order)]
        listed = ", ".join(values[:4]) + (", ..." if len(values) > 4 else "")
        shown.append(f"{key} ({listed})")
    one = " `cifarlab report --experiment NAME` reports one study." if whole else ""
    return [
        f"These runs differ in {', '.join(shown)}: the rankings and charts below set them side "
        f"by side as they are.{one}"
    ]


def _in_order(value: Any) -> tuple[bool, float, str]:
    """Unset first, then numbers by size (2 before 10), then text."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return value is not None, value if number else float("inf"), str(value)


def _chart_sections(groups, records, workspace, out, notes) -> list[tuple[str, list[Chart]]]:
    has_gap = any(aggregate.curve(g, "gap")[1].size for g in groups)  # needs a validation split
    curves = [
        charts.accuracy_curves(groups, out),
        charts.loss_curves(groups, out),
        *([charts.gap_curves(groups, out)] if has_gap else []),
    ]
    if len(groups) == 1:  # one configuration: nothing to rank, compare or trade off
        sections = [("Learning curves and overfitting", curves)]
    else:
        sections = [
            ("Which model and optimizer win", [charts.final_accuracy(groups, out)]),
            ("Learning curves and overfitting", curves),
            ("What it cost", [charts.time_bars(groups, out), charts.pareto(groups, out)]),
        ]
        failed = [r for r in records if r["status"] != "completed"]
        sensitivity = [charts.sensitivity(groups, k, out, failed) for k in SENSITIVITY_KEYS]
        if any(sensitivity):
            sections.append(("Batch size and learning rate", [c for c in sensitivity if c]))
    best_group = max(groups, key=aggregate.val_score)
    best = max(best_group["members"], key=lambda r: r["best_val_acc"] or r["final_test_acc"] or 0)
    try:
        from cifarlab.report.predict import predict_run

        pred = predict_run(best, workspace)
    except (CifarlabError, OSError, RuntimeError, KeyError) as err:
        notes.append(
            f"Best-run charts (confusion matrix, per-class accuracy, mistakes) skipped: {err}"
        )
        return sections
    colour = charts.model_colours(groups)[best_group["model"]]
    found = [
        charts.confusion(pred, out),
        charts.per_class(pred, out, colour),
        charts.mistakes(pred, out),
    ]
    chosen = f"chosen by {aggregate.picked_by(best_group)}"
    if len(records) == 1:
        sections.append((f"Inside the run ({best['id']})", found))
    else:
        sections.append((f"Inside the best run ({best['id']}, {chosen})", found))
    return sections


def _model_section(groups, workspace: Path, out, notes) -> list[dict[str, Any]]:
    """A diagram and a summary row for each model of the report (at its run's image shape)."""
    from cifarlab.models import create_model, draw_diagram, model_label, summarize_model
    from cifarlab.models.spec import image_size_of

    rows = []
    for g in aggregate.best_per(groups, "model"):
        run = g["members"][0]
        c, h, w = _image_shape(run)
        try:
            classes = len(run["info"].get("classes") or []) or 10
            model = create_model(model_of_run(run, workspace), num_classes=classes,
                                 in_channels=c, image_size=image_size_of(h, w))  # fmt: skip
            summary = summarize_model(model, (c, h, w), batch_size=run["config"]["batch_size"])
            path = out / f"diagram-{model_label(g['model'])}.png"
            draw_diagram(summary, path, title=g["model"])
        except (CifarlabError, OSError, RuntimeError, ValueError) as err:
            notes.append(f"Model {g['model']}: no diagram or summary ({err}).")
            continue
        rows.append({"model": g["model"], "summary": summary, "path": path})
    return rows


def _image_shape(run: dict[str, Any]) -> tuple[int, int, int]:
    """(channels, height, width) of the run's images; runs from before it was recorded: RGB,
    at their --image-size or CIFAR's 32."""
    side = run["config"].get("image_size") or 32
    c, h, w = run["info"].get("image_shape") or (3, side, side)
    return c, h, w


# -- rendering ------------------------------------------------------------------------------


def render_page(
    title: str,
    records: list[dict[str, Any]],
    groups: list[dict[str, Any]],
    sections: list[tuple[str, list[Chart]]],
    models: list[dict[str, Any]],
    notes: list[str],
) -> str:
    """The whole self-contained page: headline, notes, chart sections, models, run table."""
    parts = [f"<h1>{_e(title)}</h1>", _meta(records), _headline(groups, records)]
    parts += [f'<p class="note">{_e(n)}</p>' for n in notes]
    if sections or models:
        parts.append('<p class="meta hint">Tap a chart to open it full size.</p>')
    if groups:
        parts += ["<h2>Results</h2>", _groups_table(groups)]
    for heading, found in sections:
        parts.append(f"<h2>{_e(heading)}</h2>")
        parts += [_figure(c) for c in found]
    if models:
        parts += ["<h2>The models</h2>", _models_table(models)]
        parts += [
            _figure_file(m["path"], f"Architecture of {m['model']}", _arch_caption(m))
            for m in models
        ]
    parts += ["<h2>Every run</h2>", _runs_details(records)]
    body = "\n".join(parts)
    return PAGE.format(title=_e(title), css=CSS, js=JS, body=body)


def _meta(records: list[dict[str, Any]]) -> str:
    """The runs' data and hardware, one value each where they all agree."""
    infos = [r["info"] for r in records if r.get("info")]
    bits = [f"{len(records)} run{'s' * (len(records) != 1)}"]

    def agreed(field: str, fmt=str) -> str:
        values = list(dict.fromkeys(fmt(i.get(field, "?")) for i in infos))
        more = f" and {len(values) - 3} more" if len(values) > 3 else ""
        return values[0] if len(values) == 1 else " or ".join(values[:3]) + f"{more} (by run)"

    if infos:
        bits += [
            f"data: {agreed('data_source', lambda v: Path(v).name)}",
            f"{agreed('train_images', '{:,}'.format)} train / "
            f"{agreed('val_images', '{:,}'.format)} validation / "
            f"{agreed('test_images', '{:,}'.format)} test images",
            f"device: {agreed('device')} ({agreed('precision')})",
        ]
    bits.append(f"generated {time.strftime('%Y-%m-%d %H:%M')}")
    return f'<p class="meta">{_e(" · ".join(bits))}</p>'


def _headline(groups: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    if not groups:  # a report of one diverged run said only "no completed runs yet"
        bad = _not_charted(records, varying_keys(records))
        return f'<ul class="headline"><li>{bad}</li></ul>' if bad else ""
    best = max(groups, key=aggregate.val_score)
    n = best["n"]
    lead = (
        "Configuration"
        if len(groups) == 1
        else f"Best configuration by {aggregate.picked_by(best)}"
    )
    # the settings that tell runs apart, failed ones included: one completed configuration
    # beside a diverged one is still "lr=0.01", not just "tutorial · sgd"
    axes = varying_keys(records)
    label = best["label"]
    named = [k for k in axes if k not in ("model", "optimizer")]  # the label has those
    if len(groups) == 1 and named:
        label = " · ".join([label, _settings(best["members"][0], named)])
    items = [
        f"<b>{lead}:</b> {_e(label)} — "
        f"<b>{pct(best['test_acc_mean'])}</b>{_e(aggregate.spread(best['test_acc_std']))} test "
        + (
            f"accuracy at its best-validation epoch ({n} seed{'s' * (n > 1)}), "
            f"{pct(best['best_val_acc_mean'])} validation, "
            if best["best_val_acc_mean"] is not None
            else f"accuracy at its last epoch ({n} seed{'s' * (n > 1)}; no validation split, "
            "so no epoch was chosen), "
        )
        + f"in {best['train_seconds_mean']:.1f} s per run, training and evaluation."
    ]
    items += [
        _model_ranking(groups),
        _optimizer_ranking(aggregate.best_per(groups, "model", "optimizer")),
        _not_charted(records, axes),
        _selection_note(groups),
    ]
    return '<ul class="headline">' + "".join(f"<li>{i}</li>" for i in items if i) + "</ul>"


def _model_ranking(groups: list[dict[str, Any]]) -> str | None:
    """Models, each at its best configuration, and whether seeds can tell the first two
    apart; None for a single model."""
    per_model = sorted(aggregate.best_per(groups, "model"), key=aggregate.val_score, reverse=True)
    if len(per_model) < 2:
        return None
    ranks = ", ".join(f"{i}. {g['model']} {_rank_score(g)}" for i, g in enumerate(per_model, 1))
    first, second = per_model[:2]
    metric = "best_val_acc" if first["best_val_acc_mean"] is not None else "final_test_acc"
    verdict = aggregate.beyond_noise(first, second, metric)
    if verdict != "clear":  # the order of the first two may be the seeds' luck
        ranks += (f"; {first['model']} and {second['model']} are within seed noise"
                  if verdict == "noise" else "; one seed each: no spread to judge the order "
                  "of the first two by")  # fmt: skip
    by = _ranked_by(groups)
    return f"<b>Models</b> (each at its best configuration, by {by}): {_e(ranks)}."


def _selection_note(groups: list[dict[str, Any]]) -> str:
    """What chose each reported epoch: the validation split, or nothing (--val-size 0)."""
    if all(g["best_val_acc_mean"] is not None for g in groups):
        return (
            "Model selection uses the validation split only; test accuracy is reported, "
            "never used to choose."
        )
    text = (
        "Runs without a validation split (--val-size 0) selected nothing: each reports "
        "its last epoch"
    )
    if len(groups) > 1:
        text += (
            ", and they are ranked by its test accuracy, the only score they have. "
            "Rankings by test accuracy flatter the winner a little; a validation split "
            "gives an unbiased choice"
        )
    return text + "."


def _not_charted(records: list[dict[str, Any]], axes: list[str]) -> str | None:
    """The runs that did not complete, each with why (its error)."""
    bad = [r for r in records if r["status"] != "completed"]
    if not bad:
        return None
    states = " · ".join(  # errors hold ";" themselves
        f"{r['id']}"
        + (f" ({_settings(r, axes)})" if axes else "")
        + f" {r['status']}"
        + (f": {r['error']}" if r.get("error") else "")
        for r in bad
    )
    return f"<b>Not in the charts:</b> {_e(states.rstrip('.'))}."


def _settings(record: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={aggregate.short(record['config'].get(k), k)}" for k in keys)


def _rank_score(g: dict[str, Any]) -> str:
    """What ranks a model, then its test accuracy: ranked by validation but showing test
    alone, "1. tutorial 15.5%, 2. simple 15.8%" read as a sorting bug."""
    if g["best_val_acc_mean"] is None:
        return pct(g["test_acc_mean"])
    return f"{pct(g['best_val_acc_mean'])} validation ({pct(g['test_acc_mean'])} test)"


def _optimizer_ranking(pairs: list[dict[str, Any]]) -> str | None:
    """Optimizers by mean test accuracy over the models every one of them trained: means over
    different models ranked the models as much as the optimizers."""
    cell = {(g["model"], g["optimizer"]): g["test_acc_mean"] for g in pairs}
    optimizers = list(dict.fromkeys(g["optimizer"] for g in pairs))
    models = [m for m in dict.fromkeys(g["model"] for g in pairs)
              if all((m, o) in cell for o in optimizers)]  # fmt: skip
    if len(optimizers) < 2 or not models:
        return None
    means = {o: statistics.fmean(cell[m, o] for m in models) for o in optimizers}
    ranked = sorted(means, key=means.get, reverse=True)
    ranks = ", ".join(f"{i}. {o} {pct(means[o])}" for i, o in enumerate(ranked, 1))
    every = "both" if len(optimizers) == 2 else f"all {len(optimizers)}"
    others = len(models) < len(dict.fromkeys(g["model"] for g in pairs))
    if len(models) == 1:  # "over the one model trained with each" read as: one model each
        what = f"test accuracy of {models[0]}" + (f", the one model trained with {every}"
                                                 if others else "")  # fmt: skip
    else:
        what = f"mean test accuracy over the {len(models)} models" + (
            f" trained with {every}" if others else "")  # fmt: skip
    groups = {(g["model"], g["optimizer"]): g for g in pairs}
    first, second = ranked[:2]
    verdicts = {  # a clear lead counts where it is the first's, not the runner-up's
        aggregate.beyond_noise(groups[m, first], groups[m, second])
        if cell[m, first] > cell[m, second] else "behind"
        for m in models
    }  # fmt: skip
    noise = ""
    if verdicts == {"one seed"}:  # a 30-point lead is not "within noise": it is unjudged
        noise = "; with one seed per configuration, no spread to judge these leads by"
    elif "clear" not in verdicts:  # the order is then the seeds' luck as much as the optimizers'
        noise = f"; on no model is {ranked[0]}'s lead over {ranked[1]} beyond seed noise"
    return f"<b>Optimizers</b> ({_e(what)}): {_e(ranks)}{noise}."  # noise: optimizer names only


def _ranked_by(groups: list[dict[str, Any]]) -> str:
    with_val = [g["best_val_acc_mean"] is not None for g in groups]
    if all(with_val):
        return "validation"
    if not any(with_val):
        return "final test accuracy, as there is no validation split"
    return "validation, or final test accuracy for runs without a validation split"


def _groups_table(groups: list[dict[str, Any]]) -> str:
    # the settings the labels name (a preset's own settings stay in "Every run" below)
    varying = varying_keys([m for g in groups for m in g["members"]])
    named = {k for g in groups for k in g["label_keys"]} | {"lr", "batch_size"}  # the blog's
    named |= {"preset"} if any(g["members"][0]["config"].get("preset") for g in groups) else set()
    keys = ["model", "optimizer", *(k for k in varying if k in named)]
    head = [*keys, "seeds", "best val", "test@best", "final test", "time (s)", "img/s",
            "cores taken"]  # fmt: skip
    rows = []
    for g in sorted(groups, key=aggregate.val_score, reverse=True):
        config = g["members"][0]["config"]
        shown = {**config, "model": g["model"]}  # a model file by its name, as the charts
        cells = [_td(shown.get(k), aggregate.short) for k in keys] + [_td(g["n"])]
        cells.append(_accuracy_cell(g, "best_val_acc"))
        cells.append(_accuracy_cell(g, "test_acc", aggregate.spread(g["test_acc_std"])))
        cells.append(_accuracy_cell(g, "final_test_acc"))
        cells.append(_td(g["train_seconds_mean"], "{:.1f}".format))
        cells.append(_td(g["images_per_sec_mean"], "{:,.0f}".format))
        # by other work, mean over the seeds: what slowed a run that looks slow
        taken = [r["cpu_contention"] for r in g["members"] if r.get("cpu_contention") is not None]
        cells.append(_td(statistics.fmean(taken) if taken else None, "{:.1f}".format))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _table(head, rows, "results")


def _accuracy_cell(group: dict[str, Any], metric: str, spread: str = "") -> str:
    # "(n=7)" where a run of the row lacks the metric: the mean is not over its n seeds
    return _td(group[f"{metric}_mean"], lambda v: pct(v) + spread + fewer_runs(group, metric))


def _models_table(models: list[dict[str, Any]]) -> str:
    head = [
        "model",
        "parameters",
        "forward MFLOP / image",
        "training MFLOP / image",
        "batch",
        "training memory (MiB)",
    ]
    rows = []
    for m in models:
        s = m["summary"]
        rows.append(
            "<tr>"
            + _td(m["model"])
            + _td(s.params, "{:,}".format)
            + _td(s.flops / 1e6, "{:,.2f}".format)
            + _td(s.train_flops / 1e6, "{:,.1f}".format)
            + _td(s.batch_size)
            + _td(s.memory["total"] / 2**20, "{:,.1f}".format)
            + "</tr>"
        )
    note = (
        '<p class="caption">Training memory, an estimate at each run\'s batch size: fp32 '
        "weights, gradients, two optimizer moments per weight (Adam's; SGD with momentum "
        "keeps one) and the activations kept for the backward pass.</p>"
    )
    return _table(head, rows, "models") + note


def _runs_details(records: list[dict[str, Any]]) -> str:
    # the budgets the page's note says these runs differ in, each run's own
    extra = [k for k in pooled_budgets(records, []) if k != "epochs"]
    whole = "{:.0f}".format
    columns = [  # (header, the run's value, its format)
        ("run", lambda r: r["id"], str),
        ("model", lambda r: r["model"], str),
        ("optimizer", lambda r: r["optimizer"], str),
        ("lr", lambda r: r["lr"], "{:g}".format),
        ("batch", lambda r: r["batch_size"], str),
        ("seed", lambda r: r["seed"], str),
        *((k, lambda r, k=k: r["config"].get(k), partial(aggregate.short, key=k)) for k in extra),
        ("status", lambda r: r["status"], str),
        ("epochs", epochs_done, str),  # 3/10: stopped short
        # no validation split: nothing was chosen, the last epoch is reported
        ("best epoch", lambda r: r["best_epoch"] if r["config"].get("val_size") else None, whole),
        ("best val", lambda r: r["best_val_acc"], pct),
        ("test@best", lambda r: r["test_acc"], pct),
        ("overfit epoch", lambda r: r["overfit_epoch"], whole),
        ("time (s)", lambda r: r["train_seconds"], "{:.1f}".format),
        ("cores taken", lambda r: r.get("cpu_contention"), "{:.1f}".format),  # why it is slow
    ]
    head = [header for header, _, _ in columns]
    cells = ("".join(_td(value(r), fmt) for _, value, fmt in columns) for r in records)
    rows = [f"<tr>{row}</tr>" for row in cells]
    configs = "".join(
        f"<details><summary>{_e(r['id'])}</summary><pre>"
        f"{_e(json.dumps({'config': r['config'], 'info': r['info']}, indent=2))}</pre></details>"
        for r in records
    )
    return (
        f"<details open><summary>{len(records)} run{'s' * (len(records) != 1)}</summary>"
        f"{_table(head, rows, 'runs')}"
        f"</details><details><summary>Full configuration of every run</summary>{configs}"
        "</details>"
    )


def _table(head: list[str], rows: list[str], name: str) -> str:
    # a header aligns like its column: right for numbers, left for words; an empty cell ("–")
    # says nothing either way
    numeric = [False] * len(head)
    for row in rows:
        for i, cell in enumerate(row.split("<td")[1 : len(head) + 1]):
            numeric[i] |= cell.startswith(' class="num" data-v="') and not cell.startswith(
                ' class="num" data-v=""'
            )
    th = "".join(
        f'<th scope="col"{" class=num" if i < len(numeric) and numeric[i] else ""}>{_e(h)}</th>'
        for i, h in enumerate(head)
    )
    return (
        f'<div class="scroll"><table class="sortable" id="{name}-table"><thead><tr>{th}</tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _td(value: Any, fmt=str) -> str:
    """A cell: shown formatted, sorted on its raw value (``data-v``)."""
    if value is None:
        return '<td class="num" data-v="">–</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num" data-v="{value!r}">{_e(fmt(value))}</td>'
    return f'<td data-v="{_e(value)}">{_e(fmt(value))}</td>'


def _figure(chart: Chart) -> str:
    return _figure_file(chart.path, chart.title, chart.caption)


def _figure_file(path: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure id="{_e(path.stem)}"><a href="{_e(path.name)}" title="open full size">'
        f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}"></a>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _arch_caption(m: dict[str, Any]) -> str:
    s = m["summary"]
    return (
        f"{m['model']}: {len(s.blocks)} layers, {s.params:,} parameters, "
        f"{s.flops / 1e6:,.2f} MFLOP per image forward."
    )


def _e(text: Any) -> str:
    return html.escape(str(text))


CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.9rem; margin: 0 0 4px; line-height: 1.2; }
h2 { font-size: 1.35rem; margin: 40px 0 12px; padding-bottom: 6px;
     border-bottom: 1px solid var(--line); }
.meta, .caption { color: var(--muted); font-size: .9rem; }
.hint { display: none; }
.note { background: #fff8c5; border: 1px solid #d4a72c66; padding: 8px 12px; border-radius: 6px; }
.headline { background: #f6f8fa; border: 1px solid var(--line); border-radius: 8px;
            padding: 14px 14px 14px 34px; }
.headline li { margin: 4px 0; }
figure { margin: 24px 0; }
img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: var(--muted); margin-top: 6px; font-size: .95rem; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: .9rem;
        font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; text-align: left; white-space: nowrap;
         border-bottom: 1px solid var(--line); }
.num { text-align: right; }
th { background: #f6f8fa; cursor: pointer; user-select: none; position: sticky; top: 0; }
th:hover { color: var(--accent); }
th[aria-sort=ascending]::after { content: " ▲"; }
th[aria-sort=descending]::after { content: " ▼"; }
tbody tr:hover { background: #f6f8fa; }
details { margin: 10px 0; }
summary { cursor: pointer; font-weight: 600; }
pre { background: #f6f8fa; padding: 10px; border-radius: 6px; overflow-x: auto;
      font-size: .8rem; }
@media (max-width: 600px) {
  body { font-size: 15px; }
  main { padding: 14px 10px 40px; }
  h1 { font-size: 1.45rem; }
  .headline { padding-left: 24px; }
  .hint { display: block; }
}
"""

# Click a header to sort by it (again: reverse). Cells sort on data-v: numbers as numbers.
JS = """
document.querySelectorAll("table.sortable th").forEach((th, col) => {
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0];
    const asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    const value = row => row.cells[col].dataset.v;
    const rows = [...body.rows].sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === "" || y === "") return (x === "") - (y === "");  // blanks last
      const nx = Number(x), ny = Number(y);
      const c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    body.append(...rows);
  });
});
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title} — cifarlab report</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
<p class="meta">Made by <code>cifarlab report</code>.</p>
</main>
<script>{js}</script>
</body>
</html>
"""
