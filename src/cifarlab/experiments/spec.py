"""Experiment files: a name, base settings and grid axes -> the list of RunConfigs to run.

    name = "blog"
    [base]
    epochs = 15
    [grid]
    model = ["tutorial", "wobbly"]
    optimizer = ["sgd", "adam"]
    [[include]]            # extra single runs (merged over base)
    model = "resnet18"
    [[exclude]]            # drop grid combinations matching all these keys
    model = "wobbly"
    optimizer = "sgd"

Every problem in a file is reported, one line each with its key path, before
anything runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cifarlab.config import RUN_SETTINGS, SESSION_FIELDS, RunConfig, validation_message
from cifarlab.errors import CifarlabError, suggest, warn
from cifarlab.models.registry import get_model_entry
from cifarlab.train_presets import TRAIN_PRESETS

TOP_KEYS = ("name", "description", "base", "grid", "include", "exclude")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an experiment, or None: it names a report folder and is
    typed after --experiment, so no path separators and no leading '-' or '.'."""
    if _SAFE_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} may hold only ASCII letters, digits, '_', '-' and '.', and must start "
        "with a letter, digit or '_'"
    )


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: its name, its definition and the runs it expands to."""

    name: str
    definition: dict[str, Any]
    configs: tuple[RunConfig, ...]

    @property
    def fingerprint(self) -> str:
        """Changes when the set of runs changes (not when only the order does)."""
        hashes = sorted(c.hash() for c in self.configs)
        return hashlib.sha256(json.dumps(hashes).encode()).hexdigest()[:16]


def load_experiment(path: str | Path, **overrides: Any) -> Experiment:
    """Read, validate and expand an experiment TOML file."""
    path = Path(path)
    try:
        definition = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CifarlabError(f"experiment file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise CifarlabError(f"{path} is a folder; pass an experiment file (.toml)") from None
    except UnicodeDecodeError:
        raise CifarlabError(f"{path}: not a text file; save it as UTF-8 TOML") from None
    except OSError as err:
        raise CifarlabError(f"{path}: cannot be read ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise CifarlabError(f"{path}: not valid TOML ({err})") from None
    return build_experiment(definition, source=str(path), **overrides)


def build_experiment(
    definition: dict[str, Any], source: str = "experiment", **overrides: Any
) -> Experiment:
    """Validate a definition (a parsed file or a dict) and expand it into RunConfigs.

    ``overrides`` (e.g. ``workspace``, ``quiet``, or ``epochs`` from the command
    line) are applied to every run.
    """
    if not isinstance(definition, dict):
        raise CifarlabError(f"{source}: must be a table of name, base, grid, include, exclude")
    problems = _definition_problems(definition, source)
    if problems:
        raise CifarlabError("\n".join(f"{source}: {p}" for p in problems))
    _warn_base_over_presets(source, definition)
    configs, problems, excluded = _expand_configs(definition, source, overrides)
    if problems:
        raise CifarlabError("\n".join(f"{source}: {p}" for p in problems))
    if not configs:
        raise CifarlabError(
            f"{source}: [[exclude]] drops all {excluded} grid runs; loosen an exclude or "
            "add values to [grid]"
        )
    return Experiment(definition["name"], definition, tuple(configs))


def _definition_problems(definition: dict[str, Any], source: str) -> list[str]:
    """What is wrong with each part of a definition (all of it, not the first), warning of
    what is allowed but likely a mistake."""
    problems = _check_shape(definition)
    # a part of the wrong shape is reported above and read as empty, so the rest is checked
    base, grid = _table(definition, "base"), _table(definition, "grid")
    problems += _check_values("base", base)
    for key, values in grid.items():
        if key not in RUN_SETTINGS:
            problems += _check_value(f"grid.{key}", key, None)
        elif isinstance(values, list | tuple):
            for i, value in enumerate(values):
                problems += _check_value(f"grid.{key}[{i}]", key, value)
            repeated = [v for i, v in enumerate(values) if v in values[:i]]  # 0.01 and 1e-2 too
            if repeated:
                warn(f"{source}: grid.{key} lists {repeated[0]!r} more than once; a setting "
                     "runs once, so the grid has fewer runs than its lists suggest")  # fmt: skip
    for section in ("include", "exclude"):
        for i, table in enumerate(_tables(definition, section)):
            problems += _check_values(f"{section}[{i}]", table)
            if section == "exclude" and table == {}:  # it matched, and dropped, every run
                problems.append(f"exclude[{i}]: empty; name the settings of the runs to drop, "
                                'e.g. model = "wobbly"')  # fmt: skip
    seeds = grid.get("seed") if isinstance(grid.get("seed"), list) else []
    for i, table in enumerate(_tables(definition, "include")):
        if len(seeds) > 1 and "seed" not in table:  # its one run read as n=1 beside n=3
            warn(f"{source}: include[{i}] is one run, with seed {base.get('seed', 0)}, where "
                 f"the grid runs seeds {seeds}; repeat it with seed = N for each, to compare "
                 "like for like")  # fmt: skip
    return problems


def _expand_configs(
    definition: dict[str, Any], source: str, overrides: dict[str, Any]
) -> tuple[list[RunConfig], list[str], int]:
    """The definition's runs, each once, less the excluded ones; the problems of runs that do
    not validate, and how many runs the excludes dropped."""
    grid = _table(definition, "grid")
    configs, problems, seen, excluded = [], [], set(), 0
    excludes = _tables(definition, "exclude")
    used: set[int] = set()  # the excludes that matched a run
    for i, (options, from_grid) in enumerate(_expand(definition)):
        try:
            config = RunConfig(**{**options, **overrides})
        except ValidationError as err:
            where = ", ".join(f"{k}={v}" for k, v in options.items() if k in grid) or f"run {i}"
            problems += [f"{where}: {validation_message(e)}" for e in err.errors()]
            continue
        matched = _excluded(config, options, overrides, excludes) if from_grid else None
        if matched is not None:
            excluded += 1
            used.add(matched)
            continue
        if config.hash() not in seen:  # two ways to the same run: run it once
            seen.add(config.hash())
            configs.append(config)
    if not problems:
        for i in sorted(set(range(len(excludes))) - used):  # a typo'd value drops nothing
            warn(f"{source}: exclude[{i}] matches none of the grid's runs, so it drops "
                 "nothing; check its values against [grid]")  # fmt: skip
    return configs, problems, excluded


def _check_shape(definition: dict[str, Any]) -> list[str]:
    problems = [
        f"unknown key {k!r}{_did_you_mean(k, TOP_KEYS)}" for k in definition if k not in TOP_KEYS
    ]
    name = definition.get("name")
    if name is None or name == "":
        problems.append('name: missing; give the experiment a name, e.g. name = "blog"')
    elif not isinstance(name, str):
        problems.append(f'name: must be a string, e.g. name = "{name}" (got {name!r})')
    elif name_problem(name):
        problems.append(f"name: {name_problem(name)}")
    for table in ("base", "grid"):
        if not isinstance(definition.get(table, {}), dict):
            problems.append(f"{table}: must be a table ([{table}])")
    grid = definition.get("grid", {})
    if isinstance(grid, dict):
        for key, values in grid.items():
            if not isinstance(values, list | tuple):  # a tuple from Python is a list too
                problems.append(f"grid.{key}: must be a list of values, e.g. {key} = [{values!r}]")
            elif not values:
                problems.append(f"grid.{key}: empty list; give at least one value")
        if not grid and not definition.get("include"):
            problems.append("grid: empty; add at least one axis under [grid] or an [[include]]")
    for section in ("include", "exclude"):
        tables = definition.get(section, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            problems.append(f"{section}: must be an array of tables ([[{section}]])")
    return problems


def _check_values(where: str, options: Any) -> list[str]:
    """Problems with one table of run options, each as ``where.key: what is wrong``."""
    if not isinstance(options, dict):
        return []
    problems = []
    for key, value in options.items():
        problems += _check_value(f"{where}.{key}", key, value)
    return problems


def _check_value(path: str, key: str, value: Any) -> list[str]:
    """Validate one option on its own; cross-field checks wait for the expanded runs."""
    if key == "resume":
        return [f"{path}: a sweep resumes its interrupted runs itself; run it again instead"]
    if key in SESSION_FIELDS:
        return [f"{path}: {key} is set per command, not in a file; pass --{key} to sweep"]
    if key not in RUN_SETTINGS:
        return [f"{path}: unknown key{_did_you_mean(key, RUN_SETTINGS)}"]
    try:
        RunConfig(**{key: value})
    except ValidationError as err:
        field_errors = [e for e in err.errors() if e["loc"]]  # loc () is a cross-field check
        # lr = [0.1, 0.01] in [base]: values to try are a grid axis
        hint = "; values to try go under [grid]" if path.startswith("base.") and isinstance(
            value, list) else ""  # fmt: skip
        return [f"{path}: {validation_message(e)} (got {value!r}){hint}" for e in field_errors]
    if key == "model":  # a misspelled name fails here, not as a failed run mid-sweep
        try:
            get_model_entry(value)
        except CifarlabError as err:
            return [f"{path}: {err}"]
    return []


def _table(definition: dict[str, Any], key: str) -> dict[str, Any]:
    value = definition.get(key, {})
    return value if isinstance(value, dict) else {}


def _tables(definition: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = definition.get(key, [])
    return value if isinstance(value, list) and all(isinstance(t, dict) for t in value) else []


def _expand(definition: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """Each run's options, and whether it came from the grid (excludes apply) or an include."""
    base, grid = _table(definition, "base"), _table(definition, "grid")
    runs = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)) if keys else []:
        runs.append(({**base, **dict(zip(keys, values))}, True))
    runs += [({**base, **extra}, False) for extra in _tables(definition, "include")]
    return runs


def _warn_base_over_presets(source: str, definition: dict[str, Any]) -> None:
    """A preset named in [grid] or an [[include]] takes [base]'s settings over its own, as
    options given override a preset; [base] written for the other runs then reaches into it
    (a blog grid's lr = 0.001 took quick-cpu to 14%). Say so, with how to keep the preset's."""
    base, grid = _table(definition, "base"), _table(definition, "grid")
    presets = grid.get("preset") if isinstance(grid.get("preset"), list) else []
    named = [("grid.preset", p, grid) for p in presets]
    for i, table in enumerate(_tables(definition, "include")):
        named.append((f"include[{i}]", table.get("preset"), table))
    for where, preset, own in named:
        recipe = TRAIN_PRESETS.get(preset, {}) if isinstance(preset, str) else {}
        clashes = [k for k in base if k in recipe and k not in own and base[k] != recipe[k]]
        if clashes:
            shown = ", ".join(f"{k} = {base[k]!r} (the preset's {recipe[k]!r})" for k in clashes)
            warn(
                f"{source}: [base] overrides preset {preset!r} of {where}: {shown}; settings "
                f"given override a preset, so to keep the preset's, set them in {where}"
            )


def _excluded(
    config: RunConfig, options: dict[str, Any], overrides: dict[str, Any], excludes: list
) -> int | None:
    """The first exclude that matches (None: none does): setting its values leaves the run as
    it is. Values are compared as the run reads them, so "SGD" matches sgd and epochs = 10
    the default; every field counts (device too), and `sweep --data B` does not make an
    exclude on data A match."""
    for i, exclude in enumerate(excludes):
        try:
            same = RunConfig(**{**options, **overrides, **exclude}) == config
        except ValidationError:
            same = False  # its values make another (invalid) run, so not this one
        if same:
            return i
    return None


def _did_you_mean(key: str, choices: Any) -> str:
    hint = suggest(key, choices)
    return f"; {hint.strip()}" if hint else ""
