"""Reading results back: run records and seed-grouped summaries, as table/CSV/JSON/markdown."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from cifarlab.errors import CifarlabError, as_path, comma_list, suggest
from cifarlab.experiments.analysis import (
    BUDGET_KEYS,
    GROUP_METRICS,
    compare_means,
    fewer_runs,
    group_runs,
    pooled_budgets,
    varying_keys,
)
from cifarlab.experiments.store import (
    WORKSPACE,
    ResultsStore,
    database_path,
    refuse_database_folder,
)
from cifarlab.model_files import short_model_names, trained_version
from cifarlab.process import owner_gone
from cifarlab.tables import and_list, data_name, format_table, setting_text

RESULT_FIELDS = (
    "id", "name", "model", "optimizer", "lr", "batch_size", "epochs", "seed", "status",
    "epochs_done", "best_epoch", "best_val_acc", "test_acc", "final_val_acc", "final_test_acc",
    "overfit_epoch", "stopped_epoch", "train_seconds", "images_per_sec", "cpu_contention",
    "started_at", "finished_at", "error",
)  # fmt: skip

RUN_COLUMNS = (
    ("id", "run", "{}"),
    ("model", "model", "{}"),
    ("optimizer", "opt", "{}"),
    ("lr", "lr", "{:g}"),
    ("batch_size", "batch", "{}"),
    ("epochs_done", "epochs", "{}"),  # done, or done/planned (epochs_done)
    ("status", "status", "{}"),
    ("best_val_acc", "best val", "{:.2%}"),
    ("test_acc", "test@best", "{:.2%}"),
    ("final_test_acc", "final test", "{:.2%}"),
    ("train_seconds", "time (s)", "{:.1f}"),
    ("images_per_sec", "img/s", "{:,.0f}"),
    ("cpu_contention", "cores taken", "{:.1f}"),  # by other work: a slow run's likely cause
)
GROUP_COLUMNS = (
    ("best_val_acc", "best val", "{:.2%}"),
    ("test_acc", "test@best", "{:.2%}"),
    ("train_seconds", "time (s)", "{:.1f}"),
    ("images_per_sec", "img/s", "{:,.0f}"),
)


def open_store(workspace: str | Path) -> ResultsStore:
    """The workspace's results database, or a one-line error when it has none yet."""
    db = database_path(as_path(workspace, "workspace"))
    refuse_database_folder(db.parent)
    if not db.is_file():
        raise CifarlabError(
            f"no results in {str(workspace)!r} (no runs.db there); train a model first "
            "or pass --workspace DIR"
        )
    return ResultsStore(db)


def results(
    workspace: str | Path = WORKSPACE,
    experiment: str | None = None,
    only: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Runs of the workspace (or of one experiment: the run standing for each of its
    configurations, see ``ResultsStore.standing_run``), those matching ``only`` (typed
    values, as ``parse_only`` gives them) where given.

    Accuracies are fractions in [0, 1]; each record also carries its full ``config``.
    """
    runs = name_data_versions(_stored_runs(workspace, experiment, only), merge=False)
    return [_result(run) for run in runs]


def _result(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run.get(k) for k in RESULT_FIELDS} | {"config": run["config"]}


def _stored_runs(
    workspace: str | Path, experiment: str | None, only: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """``results``' runs as the store holds them (with ``info``)."""
    from cifarlab.filters import record_matches, typed_only  # pydantic: not at `import cifarlab`

    wanted = typed_only(only) if only is not None else {}  # {"optimizer": "SGD"}: as --only
    with open_store(workspace) as store:
        runs = store.runs()
        if experiment is not None:
            entry = store.experiment(experiment)
            if entry is None:
                known = ", ".join(store.experiment_names()) or "none yet"
                raise CifarlabError(
                    f"no experiment {experiment!r} in {str(workspace)!r} (known: {known}); "
                    "run `cifarlab sweep FILE` first"
                )
            standing = (store.standing_run(h) for h in entry["config_hashes"])
            runs = [run for run in standing if run is not None]
    runs = [stopped_if_orphaned(run, workspace) for run in name_model_versions(runs)]
    return [run for run in runs if record_matches(run, wanted)]


def grouping_records(
    workspace: str | Path, experiment: str | None, only: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """``results``' records with each run's data named by its content, to group them (the
    plain list keeps each run's path as it was typed)."""
    return [_result(r) for r in name_data_versions(_stored_runs(workspace, experiment, only))]


def stopped_if_orphaned(run: dict[str, Any], workspace: str | Path) -> dict[str, Any]:
    """A run left "running" by a process that has ended is shown "stopped", with how to go on
    (the store keeps it as it is: resuming or sweeping picks it up)."""
    if run["status"] != "running" or not owner_gone(run.get("owner")):
        return run
    resume = f"`{resume_command(run['id'], workspace)}` continues it"
    return run | {"status": "stopped", "error": f"its process ended unrecorded (killed?); {resume}"}


def resume_command(run_id: str, workspace: str | Path) -> str:
    """The command that continues a run, to paste into a shell: its workspace named (without
    it, the hint failed from anywhere but the default's folder) and quoted (spaces)."""
    where = shlex.quote(os.path.abspath(workspace))  # a relative one held from its folder only
    return f"cifarlab train --resume {run_id} --workspace {where}"


def name_model_versions(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of a model file edited in between trained two different nets: where one file
    name stands for several versions, each run's config names its version
    (``net.toml@a24e21``), so groups, labels and --compare keep them apart instead of
    pooling them as seeds. Runs record the version in ``info``; the store is unchanged."""

    # a run recorded before helpers counted has only its file's digest: it is the version of
    # that file the later runs record, where they record one
    codes: dict[tuple, set[str]] = {}
    for run in runs:
        file_sha, code_sha = trained_version(run)
        if code_sha:
            codes.setdefault((run["config"]["model"], file_sha), set()).add(code_sha)

    def digest(run: dict[str, Any]) -> str | None:
        file_sha, code_sha = trained_version(run)
        known = codes.get((run["config"]["model"], file_sha), set())
        return code_sha or (next(iter(known)) if len(known) == 1 else file_sha)

    versions: dict[str, set[str]] = {}
    for run in runs:
        if digest(run):
            versions.setdefault(run["config"]["model"], set()).add(digest(run))
    named = []
    for run in runs:
        model = run["config"]["model"]
        if digest(run) and len(versions[model]) > 1:
            version = f"{model}@{digest(run)[:6]}"  # config.model_reference reads it back
            shown = f"{run['model']}@{digest(run)[:6]}"  # the plain table's column, too
            run = {**run, "model": shown, "config": {**run["config"], "model": version}}
        named.append(run)
    return named


def name_data_versions(runs: list[dict[str, Any]], merge: bool = True) -> list[dict[str, Any]]:
    """Runs are grouped by what their data is, not by how ``--data`` was typed: runs on
    one content (``info["data_content"]``) read its most used spelling, so a copy at another
    path pools as seeds; where one spelling stood for several contents (a folder edited
    between runs), each run's config names its version (``data/@3f9a1c``). A run that
    never loaded its data keeps its spelling. ``merge=False`` keeps every run's spelling
    (versions still named). A renamed run keeps its path in ``data_path``."""

    def content(run: dict[str, Any]) -> str | None:
        return (run.get("info") or {}).get("data_content")

    spellings: dict[str, Counter[str]] = {}
    for run in runs:
        if content(run):
            spellings.setdefault(content(run), Counter())[run["config"]["data"]] += 1
    label = {c: counts.most_common(1)[0][0] for c, counts in spellings.items()}
    contents_of = Counter(label.values())  # a spelling two contents read is ambiguous
    read_by = Counter(s for counts in spellings.values() for s in counts)  # unmerged
    named = []
    for run in runs:
        c, typed = content(run), run["config"]["data"]
        if c:
            spelling = label[c] if merge else typed
            ambiguous = (contents_of if merge else read_by)[spelling] > 1
            data = f"{spelling}@{c[:6]}" if ambiguous else spelling
            if data != typed:
                run = {**run, "data_path": typed, "config": {**run["config"], "data": data}}
        named.append(run)
    return named


def grouped_results(
    workspace: str | Path = WORKSPACE,
    experiment: str | None = None,
    group_by: list[str] | None = None,
    only: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Runs grouped (by default: all varying settings but the seed), mean +- std over each
    group's completed runs; ``not_completed`` names the rest ("1 diverged"). ``group_by``:
    a list of settings, or "model,optimizer" as the CLI takes it."""
    if isinstance(group_by, str):
        group_by = comma_list(group_by)
    if group_by is not None and (
        not isinstance(group_by, list | tuple) or not all(isinstance(k, str) for k in group_by)
    ):
        raise CifarlabError(
            f"group_by must be setting names, as a list or as 'model,optimizer'; not {group_by!r}"
        )
    records = grouping_records(workspace, experiment, only)
    _check_keys(records, group_by)
    return group_runs(records, group_by)


def group_table(
    workspace: str | Path = WORKSPACE,
    experiment: str | None = None,
    group_by: list[str] | None = None,
    sort: str | None = None,
    fmt: str = "table",
    only: dict[str, Any] | None = None,
) -> str:
    """The seed-grouped table ``cifarlab results`` prints: by ``group_by``, or by every
    setting the runs vary in but the seed (failed and diverged ones too: their row says so)."""
    from cifarlab.filters import typed_only

    records = grouping_records(workspace, experiment, only)
    _check_keys(records, group_by)
    # where --only leaves one configuration, its row is labelled by what --only chose; with
    # nothing to tell rows apart, by model and optimizer (the row had no label at all)
    by = group_by
    if by is None:
        by = varying_keys(records) or list(typed_only(only or {})) or ["model", "optimizer"]
    return format_groups(sort_records(group_runs(records, by), sort), by, fmt)


def pooling_note(
    workspace: str | Path,
    experiment: str | None,
    group_by: list[str],
    only: dict[str, Any] | None = None,
) -> str | None:
    """What a chosen ``--group-by`` pools as seeds that are not seeds (runs of 2 and 4
    epochs in one "n=8" row), for the table's reader."""
    mixed = pooled_budgets(grouping_records(workspace, experiment, only), group_by)
    if not mixed:
        return None
    return (
        f"note: some rows pool runs that differ in {and_list(mixed)} as if they were seeds; "
        f"add {'it' if len(mixed) == 1 else 'them'} to --group-by to split those rows"
    )


def unmatched_hint(workspace: str | Path, experiment: str | None, only: dict[str, Any]) -> str:
    """What the runs hold where ``--only`` matched none (``model=tutoral``), e.g. "; model here:
    simple, tutorial (did you mean 'tutorial'?)"; "" where each value asked for is there."""
    from cifarlab.filters import recorded_value

    runs = _stored_runs(workspace, experiment, None)
    hints = []
    for key, wanted in only.items():
        values = {recorded_value(key, r["config"].get(key)) for r in runs}
        if wanted not in values:
            shown = sorted(setting_text(v) for v in values)
            guess = suggest(setting_text(wanted), shown)
            hints.append(
                f"{key} here: {', '.join(shown[:12])}" + (f" ({guess.strip()})" if guess else "")
            )
    return "".join(f"; {h}" for h in hints)


def unstarted_note(workspace: str | Path, experiment: str | None) -> str | None:
    """How many of an experiment's runs have no result yet (a sweep under way or cut short):
    its rows showed n=1 of 3 seeds as if that were all."""
    if experiment is None:
        return None
    with open_store(workspace) as store:
        entry = store.experiment(experiment)
        hashes = entry["config_hashes"] if entry else []
        missing = sum(store.standing_run(h) is None for h in hashes)
    if not missing:
        return None
    return (
        f"note: {missing} of experiment {experiment!r}'s {len(hashes)} runs have not started "
        "yet; sweeping its file again runs them"
    )


def compare(
    records: list[dict[str, Any]], a: str, b: str, metric: str = "test_acc", fmt: str = "table"
) -> str:
    """One sentence: the difference in mean ``metric`` between filters ``a`` and ``b``, 95% CI
    (``fmt="json"``: the numbers)."""
    named = {k for spec in (a, b) for k in _filter_keys(spec)}
    sides = [_compare_side(records, spec, named) for spec in (a, b)]
    both = sorted(sides[0].ids & sides[1].ids)
    if both:  # "--compare lr=0.01 lr=0.01" set a group against itself
        raise CifarlabError(
            f"--compare: run {both[0]} matches both {a!r} and {b!r}; each side needs runs of "
            "its own (e.g. --compare optimizer=adam optimizer=sgd)"
        )
    stats = compare_means(*([r[metric] for r in side.done] for side in sides))
    # runs of 2 and 4 epochs are not repeats; nor are two sides of other budgets a race,
    # unless the budget is what is compared
    both_sides = [r for r in records if r["id"] in sides[0].ids | sides[1].ids]
    budgets = [k for side in sides for k in pooled_budgets(side.done, [])]
    budgets += [k for k in pooled_budgets(both_sides, []) if k not in named]
    budgets = list(dict.fromkeys(budgets))
    pooled = list(dict.fromkeys(k for side in sides for k in side.mix))
    if fmt == "json":
        out = {"a": a, "b": b, "metric": metric, **stats, "budgets_differ": budgets,
               "pooled": pooled, "left_out": [dict(s.left_out) for s in sides]}  # fmt: skip
        return json.dumps(out, indent=2)
    return _compare_sentence(a, b, metric, stats, sides, budgets, pooled)


class _Side(NamedTuple):
    ids: set[str]  # every run the filter matches
    done: list[dict[str, Any]]  # its completed runs: the values compared
    left_out: Counter  # statuses of the others
    mix: dict[str, set[str]]  # settings other than seeds that vary among its runs: values


def _compare_side(records: list[dict[str, Any]], spec: str, named: set[str]) -> _Side:
    match = _filter(records, spec)
    done = [r for r in match if r["status"] == "completed"]
    if not done:
        others = ", ".join(f"{r['id']} {r['status']}" for r in match)
        raise CifarlabError(
            f"--compare {spec!r}: no completed run matches it"
            + (f" (only {others})" if others else "")
        )
    # other settings that vary within a side: its runs are not all seeds of one config
    mixed = [k for k in varying_keys(done) if k not in named | set(BUDGET_KEYS)]
    return _Side(
        ids={r["id"] for r in match},
        done=done,
        left_out=Counter(r["status"] for r in match if r["status"] != "completed"),
        mix={k: {json.dumps(r["config"].get(k)) for r in done} for k in mixed},
    )


def _compare_sentence(
    a: str, b: str, metric: str, stats: dict[str, Any], sides: list[_Side],
    budgets: list[str], pooled: list[str],
) -> str:  # fmt: skip
    sentence = f"{a} vs {b}: {stats['diff'] * 100:+.2f} points {metric}"
    if stats["low"] is None:
        sentence += f" (n={stats['n_a']} vs {stats['n_b']}; add seeds for a 95% CI)"
    else:
        sentence += (
            f" (95% CI {stats['low'] * 100:+.2f} to {stats['high'] * 100:+.2f}, "
            f"Welch t, n={stats['n_a']} vs {stats['n_b']})"
        )
    # two diverged lr=0.1 runs left out flatter the side they belong to: it is named
    lost = [f"{and_list([f'{n} {s}' for s, n in sorted(side.left_out.items())])} of {spec}"
            for spec, side in zip((a, b), sides) if side.left_out]  # fmt: skip
    if lost:
        sentence += f"; left out: {'; '.join(lost)}"
    if pooled:  # "n=2 vs 2" were two models a side, read as seeds of one
        unequal = any(sides[0].mix.get(k) != sides[1].mix.get(k) for k in pooled)
        sentence += (
            f"; note: each side pools runs that differ in {and_list(pooled)}, not only seeds, "
            "so the interval is not a seed interval"
            + (" and the sides hold different mixes of them" if unequal else "")
            + ": filter both sides to one configuration (the report ranks like for like)"
        )
    if budgets:
        sentence += (
            f"; note: the runs compared differ in {and_list(budgets)}, and the difference "
            "mixes those in: filter both sides to one value of each"
        )
    return sentence


def sort_records(records: list[dict[str, Any]], key: str | None) -> list[dict[str, Any]]:
    """Sort by a field (a metric sorts best first); groups sort on the metric's mean."""
    if not key or not records:
        return records
    first, lists = records[0], ("config", "runs")  # a run's settings, a group's run ids
    field = key if key in first and key not in lists else f"{key}_mean"
    if field in first:
        value: Callable[[dict[str, Any]], Any] = lambda r: r.get(field)
    elif "config" in first and key in (first["config"] or {}):  # a setting, shown or not
        value = lambda r: (r.get("config") or {}).get(key)
    else:  # "best val" is the header; the key is its own
        keys = sorted(k.removesuffix("_mean") for k in first if k not in lists)
        keys = [k for k in keys if not k.endswith(("_std", "_n"))]
        hint = suggest(key, keys)
        settings = " (or a run's setting)" if "config" in first else ""
        raise CifarlabError(
            f"--sort {key!r}: not a column here; {hint}choose one of {', '.join(keys)}{settings}"
        )
    descending = field.removesuffix("_mean") in GROUP_METRICS and "seconds" not in field
    present = [r for r in records if value(r) is not None]
    missing = [r for r in records if value(r) is None]
    # numbers before words: a setting may hold both across runs (a model name, a file)
    order = lambda r: (0, value(r), "") if _is_number(value(r)) else (1, 0, str(value(r)))
    return sorted(present, key=order, reverse=descending) + missing


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_runs(records: list[dict[str, Any]], fmt: str, reasons: bool = True) -> str:
    """Runs as a table (with a line per failed or stopped run saying why), JSON or CSV."""
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        return _csv(records, RESULT_FIELDS)
    if not records:
        return "no runs yet"
    named = short_model_names(r["model"] for r in records)  # JSON and CSV keep whole paths
    shown = [{**r, "model": named[r["model"]], "epochs_done": epochs_done(r)} for r in records]
    # the settings that tell these runs apart beyond the fixed columns: four runs that differ
    # only in seed or training images read as one run four times
    extra = [k for k in ("seed", "preset", *BUDGET_KEYS) if k != "epochs"
             and len({repr((r.get("config") or {}).get(k)) for r in records}) > 1]  # fmt: skip
    columns = [*RUN_COLUMNS[:5], *((k, k, "{}") for k in extra), *RUN_COLUMNS[5:]]
    for r in shown:
        config = r.get("config") or {}
        r.update({k: _setting_cell(k, config.get(k)) for k in extra})
    raw = {(r.get("config") or {}).get("data") for r in records}
    if "data" in extra and len({data_name(v) for v in raw}) < len(raw):  # two paths, one name
        for r in shown:
            r["data"] = setting_text((r.get("config") or {}).get("data"))
    rows = [[_cell(r.get(k), f) for k, _, f in columns] for r in shown]
    table = format_table([h for _, h, _ in columns], rows, rule=True, fmt=fmt)
    why = [f"{r['id']} {r['status']}: {r['error']}" for r in records
           if reasons and r.get("error") and r["status"] != "completed"]  # fmt: skip
    return "\n".join([table, *why])


def _setting_cell(key: str, value: Any) -> str:
    """A setting as a table cell: a data path by its name (runs record absolute paths)."""
    return data_name(value) if key == "data" else setting_text(value)


def epochs_done(run: dict[str, Any]) -> Any:
    """``3/10`` for a run that stopped short of its epochs (a failed one read "0", as if it had
    been set to train none); the count alone for one that trained them all."""
    # the config's: the report's records hold the per-epoch rows under "epochs"
    planned = (run.get("config") or {}).get("epochs", run.get("epochs"))
    planned = planned if isinstance(planned, int) else None
    done = run.get("epochs_done")
    if planned and (done or 0) < planned:
        return f"{done or 0:.0f}/{planned}"
    return None if done is None else f"{done:.0f}"


def format_groups(groups: list[dict[str, Any]], by: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(groups, indent=2)
    if fmt == "csv":
        metrics = (f"{m}_{s}" for m in GROUP_METRICS for s in ("mean", "std", "n"))
        return _csv(groups, [*by, "n", *metrics, "not_completed"])
    if not groups:
        return "no runs yet"
    incomplete = any(g["not_completed"] for g in groups)  # its column only where it says something
    header = [*by, "n", *(h for _, h, _ in GROUP_COLUMNS)] + ["not completed"] * incomplete
    named = short_model_names(str(g["model"]) for g in groups if "model" in g)
    rows = []
    for g in groups:
        cells = [setting_text(named[g[k]] if k == "model" else g[k]) for k in by] + [str(g["n"])]
        for metric, _, f in GROUP_COLUMNS:
            mean, std = g[f"{metric}_mean"], g[f"{metric}_std"]
            cells.append(_cell(mean, f) + ("" if std is None else f" ± {_cell(std, f)}"))
            cells[-1] += fewer_runs(g, metric)
        rows.append(cells + [g["not_completed"] or ""] * incomplete)
    return format_table(header, rows, rule=True, fmt=fmt)


def _csv(records: list[dict[str, Any]], fields) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().rstrip("\n")


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _filter_keys(spec: str) -> list[str]:
    """The settings a --compare side names (``"model=x,lr=0.1"``: model, lr)."""
    return [p.partition("=")[0].strip().replace("-", "_") for p in spec.split(",") if "=" in p]


def _filter(records: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """``"model=wobbly,optimizer=adam"`` -> the records matching every pair, the values
    read as ``--only`` reads them."""
    from cifarlab.filters import parse_only, record_matches

    items: list[str] = []
    for part in (p for p in spec.split(",") if p.strip()):
        if "=" in part or not items:
            items.append(part)
        else:  # "milestones=3,6": the 6 belongs to the list, not a pair of its own
            items[-1] += f",{part}"
    if not items:
        raise CifarlabError(f"--compare {spec!r}: expected KEY=VALUE[,KEY=VALUE...]")
    wanted = parse_only(items, option="--compare")
    _check_keys(records, list(wanted), f"--compare {spec!r}")
    return [r for r in records if record_matches(r, wanted)]


def _check_keys(
    records: list[dict[str, Any]], keys: list[str] | None, option: str = "--group-by"
) -> None:
    if records and keys:
        known = records[0]["config"]
        unknown = [k for k in keys if k not in known]
        if unknown:
            hint = suggest(unknown[0], known)
            raise CifarlabError(
                f"{option}: unknown setting(s) {', '.join(unknown)}; {hint}settings are train's "
                "option names with underscores, e.g. model, optimizer, lr, batch_size"
            )
