"""``--only KEY=VALUE`` filters, as every command and the Python API read them.

A value is typed as a run option reads it, so ``lr=1e-3`` matches 0.001 and
``optimizer=SGD`` matches sgd; runs are matched as configs (a sweep's plan) or as
stored records (``results``, ``--compare``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from cifarlab.config import RUN_SETTINGS, STORED, RunConfig
from cifarlab.errors import CifarlabError, suggest
from cifarlab.tables import split_version


def config_matches(config: RunConfig, wanted: dict[str, Any]) -> bool:
    """Whether a run's config has the typed settings ``wanted``."""
    return all(getattr(config, key) == value for key, value in wanted.items())


def record_matches(record: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a stored run record has the typed settings ``wanted`` (a record holds JSON,
    and maybe a versioned model name)."""
    config = record["config"]
    return all(_matches(k, config.get(k), v) for k, v in wanted.items())


def _matches(key: str, recorded: Any, wanted: Any) -> bool:
    if recorded_value(key, recorded) == wanted:
        return True
    # a version (my-net@3f9a1c, data/@90767f) is one of the model or data asked for by name:
    # --only model=my-net matched no run once two versions were named apart
    base, version = split_version(recorded) if isinstance(recorded, str) else (recorded, "")
    return bool(version) and recorded_value(key, base) == wanted


def parse_only(items: list[str], option: str = "--only") -> dict[str, Any]:
    """``["model=tutorial", "lr=0.01"]`` -> typed values, checked like run options, so
    ``lr=1e-3`` matches 0.001 and ``optimizer=SGD`` matches sgd."""
    raw: dict[str, Any] = {}
    shown: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CifarlabError(f"{option} {item!r}: expected KEY=VALUE with a run option as KEY")
        key = key.strip().replace("-", "_")
        if key in raw:  # the last one silently won: a run has one value of each setting
            raise CifarlabError(
                f"{option} {item!r}: {key} is given twice ({shown[key]!r} too), and a run has "
                f"one {key}: keep one of them"
            )
        raw[key], shown[key] = value.strip(), item
    return typed_only(raw, option, shown)


def typed_only(
    wanted: dict[str, Any], option: str = "only=", shown: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run settings to match, each value typed as a run reads it ({"lr": "1e-3"} -> 0.001);
    "lr=0.01" or a list of such strings reads as the CLI's --only."""
    if isinstance(wanted, str | list | tuple):
        return parse_only([wanted] if isinstance(wanted, str) else list(wanted), option)
    if not isinstance(wanted, dict):
        raise CifarlabError(f"{option} takes a dict like {{'model': 'tutorial'}}, not {wanted!r}")
    typed: dict[str, Any] = {}
    for key, value in wanted.items():
        where = f"{option} {(shown or {}).get(key, f'{key}={value!r}')!r}"
        if key not in RUN_SETTINGS:  # workspace, quiet, resume: where and how, not what ran
            hint = suggest(key, RUN_SETTINGS).strip() or "see `cifarlab train --help`"
            raise CifarlabError(f"{where}: unknown setting {key!r}; {hint}")
        try:
            # read as records are: a run's recorded value is found even where a check added
            # since it ran refuses it (a seed past today's range)
            typed[key] = getattr(RunConfig.model_validate({key: value}, context=STORED), key)
        except ValidationError:
            raise CifarlabError(f"{where}: {value!r} is not a valid {key}") from None
    return typed


def recorded_value(key: str, value: Any) -> Any:
    """A run record's config value as ``parse_only`` types it (a record holds JSON: lists
    for tuples); as it is where it no longer validates, e.g. a versioned model file name."""
    try:
        return getattr(RunConfig.model_validate({key: value}, context=STORED), key)
    except ValidationError:
        return value
