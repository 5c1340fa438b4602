"""Continuing a stopped run: which run ``--resume`` means, the settings it continues
with, what it refuses (edited code) or warns of (other threads, other ranks) and the
precision it goes on in, and its last checkpoint loaded into the trainer. Its data is
checked in runner.py, once loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cifarlab.config import NOT_HASHED, RunConfig, stored_run_config
from cifarlab.distributed import World
from cifarlab.errors import CifarlabError, first_line, note, warn
from cifarlab.experiments.store import ResultsStore, database_path
from cifarlab.model_files import (
    is_version,
    model_file_digest,
    model_source,
    refuse_other_registered_version,
    trained_version,
)
from cifarlab.process import refuse_if_owned
from cifarlab.tables import setting_text
from cifarlab.train.checkpoint import load_checkpoint
from cifarlab.train.precision import resolve_precision
from cifarlab.train.trainer import Trainer
from cifarlab.train_presets import TRAIN_PRESETS


def find_resumed(workspace: Path, config: RunConfig) -> tuple[RunConfig, dict | None]:
    """``resolve_resume`` against the workspace's database, without making one where the
    workspace holds none (a new workspace has no run to resume)."""
    if database_path(workspace).exists():
        with ResultsStore(database_path(workspace)) as store:
            return resolve_resume(store, config)
    if config.resume != "auto":
        raise CifarlabError(
            f"--resume {config.resume}: no such run in {str(workspace)!r}, which holds no runs; "
            "pass the --workspace the run was recorded in"
        )
    note(config.quiet, "no earlier run with these settings; starting a new one")
    return config, None


def resolve_resume(store: ResultsStore, config: RunConfig) -> tuple[RunConfig, dict | None]:
    """Find the run ``config.resume`` names and the config to continue it with.

    ``resume="auto"`` picks the latest run with the same settings (none: a new
    run). A run id takes that run's settings; options given explicitly must
    agree with them where they change results.
    """
    if config.resume == "auto":
        record = store.latest_with_hash(config.hash())
        if record is None:
            other = _other_length(store, config) or _nearest_stopped(store, config)
            note(config.quiet, f"no earlier run with these settings{other}; starting a new one")
        return config, record
    record = store.run(config.resume)
    if record is None:
        raise CifarlabError(
            f"--resume {config.resume}: no such run in {str(store.path.parent)!r}; "
            "`cifarlab results` lists the runs"
        )
    session = {k: getattr(config, k) for k in NOT_HASHED}
    stored = stored_run_config(**{**record["config"], **session})
    preset = TRAIN_PRESETS.get(config.preset or "", {})
    for name in sorted(config.model_fields_set - NOT_HASHED):
        mine, theirs = getattr(config, name), getattr(stored, name)
        if mine == theirs:
            continue
        option = f"--{name.replace('_', '-')} {_typed(mine)}"
        if preset.get(name) == mine:  # the user typed --preset, not this option
            option = f"--preset {config.preset} sets {option}, which"
        raise CifarlabError(
            f"--resume {config.resume}: {option} differs from the run's {_typed(theirs)}; drop the "
            "option or start a new run"
        )
    return stored, record


def _typed(value: Any) -> str:
    """A setting as the command line types it: ``on``/``off`` for a switch, ``3,6`` for
    milestones (Python's ``True`` and ``(3, 6)`` named no option's value)."""
    if value is None:
        return "unset"
    return ("on" if value else "off") if isinstance(value, bool) else setting_text(value)


def _other_length(store: ResultsStore, config: RunConfig) -> str:
    """ ", but run X has them with --epochs N", where only the epochs differ: a schedule that
    has run its course cannot be lengthened, so that run is not continued."""
    for record in reversed(store.runs()):
        epochs = record["config"].get("epochs")
        if epochs == config.epochs:
            continue
        if config.model_copy(update={"epochs": epochs}).hash() == record["config_hash"]:
            return (f" (run {record['id']} has them with --epochs {epochs}: its learning-rate "
                    "schedule is set by its length, so it is not lengthened)")  # fmt: skip
    return ""


def _nearest_stopped(store: ResultsStore, config: RunConfig, most: int = 3) -> str:
    """ " (stopped run X has --model simple; `...` continues it)": the stopped run whose
    settings differ from ``config``'s in the fewest (at most ``most``; the latest of those),
    as a mistyped option on --resume would otherwise start a long run without a word about
    the one meant."""
    from cifarlab.results import resume_command, stopped_if_orphaned

    fields = [k for k in type(config).model_fields if k not in NOT_HASHED]
    nearest, fewest = None, most
    for record in store.runs():  # oldest first: the latest of the nearest wins
        # stopped: by Ctrl-C or a crash ("failed"), or killed, its process gone ("running")
        if stopped_if_orphaned(record, config.workspace)["status"] not in ("failed", "stopped"):
            continue
        try:
            stored = stored_run_config(**record["config"])
        except CifarlabError:  # settings this version no longer takes
            continue
        differ = [k for k in fields if getattr(config, k) != getattr(stored, k)]
        if differ and len(differ) <= fewest:
            nearest, fewest = (record, stored, differ), len(differ)
    if nearest is None:
        return ""
    record, stored, differ = nearest
    options = ", ".join(f"--{k.replace('_', '-')} {_typed(getattr(stored, k))}" for k in differ)
    command = resume_command(record["id"], config.workspace)
    return f" (stopped run {record['id']} has {options}; `{command}` continues it)"


def refuse_if_training_elsewhere(record: dict[str, Any]) -> None:
    """Refused early, before the data loads; ``reopen_run`` makes the claim itself."""
    refuse_if_owned(record["id"], record["status"], record.get("owner"))


def restore_checkpoint(
    trainer: Trainer, workspace: Path, resumed: dict[str, Any], config: RunConfig
) -> dict[str, Any] | None:
    """Load the run's ``last.pt`` into ``trainer`` (None: no checkpoint yet, start over)."""
    last = workspace / resumed["id"] / "last.pt"
    if not last.exists():  # stopped before its first epoch ended
        done = resumed.get("epochs_done") or 0
        if done:  # its folder deleted: the epochs recorded go, and that is said under --quiet too
            warn(f"run {resumed['id']} has {done} epoch(s) recorded but no checkpoint (its folder "
                 f"{str(last.parent)!r} is gone or was emptied); it restarts from epoch 1 and "
                 "its recorded epochs are replaced")  # fmt: skip
        else:
            note(config.quiet, f"run {resumed['id']} has no checkpoint yet; restarting it from "
                               "epoch 1")  # fmt: skip
        return None
    try:
        state = load_checkpoint(last, map_location=trainer.device)
    except CifarlabError as err:  # and the way on: a run without last.pt restarts (above)
        raise CifarlabError(
            f"{err}; without last.pt the run restarts from epoch 1 (`--resume` again)"
        ) from None
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise CifarlabError(
            f"checkpoint of run {resumed['id']} does not fit model {config.model!r} "
            f"({first_line(err)[:120]}); start a new run instead"
        ) from None
    return state


def in_the_precision_it_trained(
    resumed: dict[str, Any], config: RunConfig, device: torch.device, precision: str
) -> tuple[RunConfig, str]:
    """--precision auto picks by machine: a run resumed on another goes on in the precision
    it trained in, not switched half-way (its record and checkpoint say one)."""
    then = (resumed.get("info") or {}).get("precision")
    if config.precision != "auto" or not then or then == precision:
        return config, precision
    try:
        precision = resolve_precision(then, device, config.channels_last)
    except CifarlabError:  # fp16, which only CUDA runs
        raise CifarlabError(
            f"run {resumed['id']} trained in {then} (--precision auto on a GPU), which this "
            f"{device.type} cannot run; resume it on a GPU, or start a new run"
        ) from None
    note(config.quiet, f"run {resumed['id']} trained in {then} (--precision auto chose it on "
                       f"its machine); it goes on in {then} here")  # fmt: skip
    return config.model_copy(update={"precision": then}), precision


def warn_if_other_threads(resumed: dict[str, Any]) -> None:
    """Floats summed by another number of threads round apart (a sweep's worker trains with
    its share of the cores): the run goes on, but not bitwise as it would have."""
    info = resumed.get("info") or {}
    then, now = info.get("threads"), torch.get_num_threads()
    if then and then != now and info.get("device") == "cpu":  # a GPU sums on the GPU
        warn(
            f"run {resumed['id']} trained with {then} thread{'s' * (then > 1)} and resumes with "
            f"{now}: its numbers will differ in the last digits from an uninterrupted run's"
        )


def warn_if_other_ranks(resumed: dict[str, Any], world: World) -> None:
    """Another number of ranks splits BatchNorm's batches and draws dropout's masks apart."""
    then = (resumed.get("info") or {}).get("ranks", 1)
    if then != world.size:
        warn(
            f"run {resumed['id']} trained over {then} rank{'s' * (then > 1)} and resumes over "
            f"{world.size}: its numbers will differ from an uninterrupted run's (BatchNorm "
            "normalizes each rank's share of a batch, and dropout draws per rank)"
        )


def refuse_edited_model_file(resumed: dict[str, Any], config: RunConfig) -> None:
    """A run's checkpoint belongs to the code it trained: resumed with an edited model file,
    its later epochs trained another net (same shapes: silently) than the one it records."""
    if model_source(config.model) is None:  # a name: built-in, or registered from Python
        refuse_other_registered_version(resumed, config.model, "resume it")
        return
    if any(trained_version(resumed)) and not is_version(resumed, config.model):
        now = model_file_digest(config.model)
        what = "is gone" if now is None else "has changed"
        if now == trained_version(resumed)[0]:
            what = "imports a helper module that has changed"
        raise CifarlabError(
            f"model file '{model_source(config.model)[0]}' {what} since run {resumed['id']} "
            "trained it; restore that version (the run keeps a copy in its folder) to resume "
            "it, or train without --resume for a new run"
        )
