"""Sweeps: run every configuration of an experiment that is not done yet.

A run is known by the hash of its settings, so re-running a sweep after a crash
(even ``kill -9``) skips what completed, resumes what was interrupted from its
last checkpoint, and starts the rest. Failed runs are recorded and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from cifarlab.config import RunConfig
from cifarlab.distributed import launched_world
from cifarlab.errors import (
    BusyMachineWarning,
    CifarlabError,
    CifarlabWarning,
    MachineFailure,
    RunInProgress,
    Terminated,
    as_path,
    bar_disabled,
    check_whole_number,
    note,
    say_run_failed,
    show_warning,
    warn,
)
from cifarlab.experiments.ray_runs import RayOptions, check_ray_options, connect, leave, on_ray
from cifarlab.experiments.spec import Experiment, name_problem
from cifarlab.experiments.store import FINISHED, ResultsStore, database_path, prepare_workspace
from cifarlab.filters import config_matches
from cifarlab.model_files import model_code_digest, model_source
from cifarlab.process import check_main_guarded, die_with_parent, owner_pid
from cifarlab.tables import and_list
from cifarlab.train import cpu_share

if TYPE_CHECKING:  # decoding imports torch: at first use only
    from cifarlab.data.dataset import DecodedSource

TO_RUN = ("new", "resume", "restart")  # the plan's actions that train; "done", "busy" do not


@dataclass
class PlannedRun:
    config: RunConfig
    previous: dict[str, Any] | None  # the run standing for these settings, if any
    edited: bool = False  # its data (or model code) was edited since: trained again, anew
    checkpointed: bool = False  # the previous run left a checkpoint to resume from
    code_edited: bool = False  # a helper module its model file imports was edited since
    data_unchecked: bool = False  # a dry run could not tell whether its data changed

    @property
    def action(self) -> str:
        """new, done, busy (another live process is training it right now), resume (from
        its checkpoint), or restart: it stopped before its first checkpoint."""
        if self.previous is None or self.edited:
            return "new"
        if self.previous["status"] in FINISHED:
            return "done"
        if self.previous["status"] == "running" and owner_pid(self.previous.get("owner")):
            return "busy"
        return "resume" if self.checkpointed else "restart"


def planned_run(config: RunConfig, store: ResultsStore, edited: bool = False) -> PlannedRun:
    """``config`` with the run standing for its settings in ``store``'s workspace (``edited``:
    its data changed since, see ``mark_changed_data``)."""
    previous = store.standing_run(config.hash())
    last = store.path.parent / previous["id"] / "last.pt" if previous else None
    # a helper module is not part of the settings (runs recorded before helpers counted
    # keep their identity): an edited one trains the run again, as edited data does
    code = ((previous or {}).get("info") or {}).get("model_code_sha256")
    code_edited = bool(code) and code != model_code_digest(config.model)
    checkpointed = last is not None and last.exists()
    return PlannedRun(config, previous, edited or code_edited, checkpointed, code_edited)


@dataclass
class SweepReport:
    experiment: str
    planned: list[PlannedRun]
    outcomes: dict[str, str] = field(default_factory=dict)  # config hash -> final status
    seconds: float = 0.0
    runs: int = 0  # the experiment's runs, --only and --max-runs aside
    not_run: int = 0  # of those, runs without a result that this sweep left out

    @property
    def failed(self) -> int:
        """Runs that crashed or were stopped (a diverged run is a result: it is settled)."""
        return sum(status == "failed" for status in self.outcomes.values())

    @property
    def unsettled(self) -> int:
        """Runs this sweep leaves with no result: failed, or still running in another
        process. Completed and diverged runs are settled: rerunning gives the same answer."""
        return sum(status not in FINISHED for status in self.outcomes.values())

    def outcome_counts(self) -> str:
        """ "2 completed, 1 diverged": how the runs of this sweep ended ("" for none)."""
        counts = sorted(Counter(self.outcomes.values()).items())
        return ", ".join(f"{n} {status}" for status, n in counts)

    def __repr__(self) -> str:  # a notebook shows this, not every planned config
        done = self.outcome_counts()
        before = sum(p.action == "done" for p in self.planned)  # a rerun: trained nothing
        if before:
            done += f"; {'all' if before == len(self.planned) else before} done before"
        left = f", {self.not_run} of {self.runs} not run yet" if self.not_run else ""
        runs = f"{len(self.planned)} run{'s' * (len(self.planned) != 1)}"
        return (
            f"SweepReport({self.experiment!r}: {runs} ({done or 'none run'}) "
            f"in {self.seconds:.0f} s{left})"
        )


def plan_sweep(
    experiment: Experiment,
    store: ResultsStore,
    only: dict[str, Any] | None = None,
    max_runs: int | None = None,
) -> list[PlannedRun]:
    """The experiment's runs (filtered by ``only``), each with what a sweep will do."""
    configs = [c for c in experiment.configs if config_matches(c, only or {})]
    if not configs:
        shown = " ".join(f"{k}={v}" for k, v in (only or {}).items())
        raise CifarlabError(
            f"--only {shown} matches none of the {len(experiment.configs)} runs of experiment "
            f"{experiment.name!r}; `--dry-run` without --only lists them"
        )
    planned = [planned_run(c, store) for c in configs]
    if max_runs is not None:
        todo = [p for p in planned if p.action in TO_RUN][:max_runs]
        planned = [p for p in planned if p.action not in TO_RUN or p in todo]
    return planned


def check_sweep_options(workers: int, max_runs: int | None) -> None:
    if launched_world().spread:  # each rank would sweep: the lock lets one, the rest fail
        raise CifarlabError(
            "a sweep under torchrun: torchrun spreads one run over processes, a sweep spreads "
            "its runs; run the sweep without torchrun, with --workers N"
        )
    check_whole_number("--workers", workers, 1)
    if max_runs is not None:
        check_whole_number("--max-runs", max_runs, 1)
    if workers > 1:
        check_main_guarded("cifarlab.sweep")


def register_experiment(experiment: Experiment, store: ResultsStore) -> None:
    """Record the experiment by name (``check_experiment_name`` first: run_sweep calls it
    before reading the data)."""
    hashes = [c.hash() for c in experiment.configs]
    store.save_experiment(experiment.name, experiment.fingerprint, experiment.definition, hashes)


def check_experiment_name(experiment: Experiment, store: ResultsStore, force: bool) -> None:
    """Refuse a name the workspace already holds for a different set of runs, or one that
    cannot name a report folder (``--new-name ../x``)."""
    if name_problem(experiment.name):
        raise CifarlabError(f"experiment name: {name_problem(experiment.name)}")
    if not force and other_runs_named(experiment, store):
        raise CifarlabError(
            f"experiment {experiment.name!r} already exists in {str(store.path.parent)!r} with "
            f"different runs (an edited grid or model file); {GROWN_GRID_FIX}"
        )


# "replace" read as if it deleted runs: --force re-points the name, and runs are kept
GROWN_GRID_FIX = (
    "pass --force to point the name at these runs (finished ones are reused, none deleted) "
    "or --new-name NAME to keep both (from Python: force=True, new_name=)"
)


def other_runs_named(experiment: Experiment, store: ResultsStore) -> bool:
    """Whether the workspace records the experiment's name for another set of runs."""
    existing = store.experiment(experiment.name)
    return bool(existing) and existing["fingerprint"] != experiment.fingerprint


@dataclass
class SweepPlan:
    """What a sweep would do, with nothing written (``--dry-run``, ``sweep(dry_run=True)``)."""

    experiment: str
    planned: list[PlannedRun]
    needs_choice: bool  # the name stands for other runs: --force or --new-name

    def text(self) -> str:
        """A line per run (its action, the id already there, its settings), then a summary."""
        axes = _other_axes([p.config for p in self.planned])
        # a run's id, as `results` shows it and `train --resume` takes it; a new run has none
        ids = [p.previous["id"] if p.previous and p.action != "new" else "-" for p in self.planned]
        width = max(map(len, ids), default=1)
        lines = []
        for p, run_id in zip(self.planned, ids):
            action = p.action + "*" * p.data_unchecked
            lines.append(f"{action:8s}{run_id:{width}s}  {_describe_run(p.config, axes)}")
        todo, n = sum(p.action in TO_RUN for p in self.planned), len(self.planned)
        lines.append(f"{self.experiment}: {n} run{'s' * (n != 1)}, {todo} to run")
        if any(p.data_unchecked for p in self.planned):
            lines.append(
                "* its data is not cached as it is now (edited since, or decoded elsewhere): "
                "the sweep reads it, and trains the run again if it changed"
            )
        if self.needs_choice:
            lines.append(
                f"note: experiment {self.experiment!r} holds other runs here (an edited grid "
                f"or model file); the sweep needs a choice: {GROWN_GRID_FIX}"
            )
        return "\n".join(lines)

    __repr__ = text  # a notebook shows the plan


def plan_dry_run(
    experiment: Experiment,
    workspace: str | Path,
    only: dict[str, Any] | None = None,
    max_runs: int | None = None,
    force: bool = False,
) -> SweepPlan:
    """The sweep's plan against ``workspace``, writing nothing (a workspace without a
    database plans against an empty one); bad paths and names fail as the sweep would."""
    db = database_path(as_path(workspace, "workspace"))
    with ResultsStore(db if db.exists() else ":memory:") as store:
        check_experiment_name(experiment, store, force=True)  # a name that cannot be
        planned = plan_sweep(experiment, store, only, max_runs)
        # a grown grid: its plan is what one wants to see before choosing --force
        needs_choice = not force and other_runs_named(experiment, store)
    check_paths([p.config for p in planned if p.action in TO_RUN])  # as the sweep will
    mark_changed_data(planned, dry_run=True)  # edited data trains again: it said done
    check_known_sources([p.config for p in planned if p.action in TO_RUN])
    return SweepPlan(experiment.name, planned, needs_choice)


_DESCRIBED = ("model", "optimizer", "lr", "batch_size", "seed")


def _describe_run(c: RunConfig, axes: list[str]) -> str:
    from cifarlab.tables import setting_text

    text = f"{c.model:10s} {c.optimizer:7s} lr={c.lr:g} bs={c.batch_size} seed={c.seed}"
    return " ".join([text, *(f"{k}={setting_text(getattr(c, k))}" for k in axes)])


def _other_axes(configs: list[RunConfig]) -> list[str]:
    """Settings besides the usual five that differ between ``configs``: a grid over
    milestones must not print identical lines."""
    fields = [k for k in type(configs[0]).model_fields if k not in _DESCRIBED] if configs else []
    return [k for k in fields if len({repr(getattr(c, k)) for c in configs}) > 1]


def run_sweep(
    experiment: Experiment,
    workspace: str | Path,
    *,
    workers: int = 1,
    only: dict[str, Any] | None = None,
    max_runs: int | None = None,
    force: bool = False,
    quiet: bool = False,
    ray: RayOptions | None = None,
    new_name: str | None = None,
    dry_run: bool = False,
) -> SweepReport | SweepPlan:
    """Run what is missing of ``experiment`` and report every run's final status: here, in
    ``workers`` processes, or as tasks of a Ray cluster (``ray``). ``new_name`` records it
    under that name; ``dry_run`` returns its plan, training and writing nothing."""
    if new_name is not None:
        experiment = replace(experiment, name=new_name)
    # a dry run is refused what the sweep would be refused
    check_sweep_options(workers, max_runs)
    check_ray_options(ray, workers)
    if dry_run:
        return plan_dry_run(experiment, workspace, only, max_runs, force)
    if not database_path(workspace).exists():  # all to run: a refusal makes no database
        check_paths(experiment.configs)
    if workers > 1 or ray:
        _refuse_models_registered_here(experiment.configs)
    workspace = prepare_workspace(workspace)
    with contextlib.ExitStack() as ending:
        if ray:
            ending.callback(leave)  # a cluster started for this sweep ends with it
        return _sweep_locked(experiment, workspace, workers, only, max_runs, force, quiet, ray)


def _sweep_locked(
    experiment: Experiment,
    workspace: Path,
    workers: int,
    only: dict[str, Any] | None,
    max_runs: int | None,
    force: bool,
    quiet: bool,
    ray: RayOptions | None,
) -> SweepReport:
    with _sweeping(workspace, experiment.name), ResultsStore(database_path(workspace)) as store:
        planned = plan_sweep(experiment, store, only, max_runs)  # a bad --only fails here
        check_experiment_name(experiment, store, force)  # before minutes of reading data
        if ray and any(p.action in TO_RUN for p in planned):
            # no cluster there, or none that fits a run: said before anything is recorded
            gpus = connect(ray, [p.config for p in planned if p.action in TO_RUN])
            ray = replace(ray, gpus=gpus)  # what each run asks, settled once
        _warn_edited_code(planned)
        read = mark_changed_data(planned, quiet)
        # a bad data source fails once, before anything is recorded; runs then hit the cache
        check_sources([p.config for p in planned if p.action in TO_RUN], quiet, read)
        register_experiment(experiment, store)
        report = _run_planned(experiment.name, planned, workspace, workers, quiet, ray, store)
        left = [c for c in experiment.configs if c.hash() not in report.outcomes]
        # left out by --only or --max-runs, and still to train
        report.not_run = sum(planned_run(c, store).action in TO_RUN
                             for c in left)  # fmt: skip
        report.runs = len(experiment.configs)
        return report


@contextlib.contextmanager
def _sweeping(workspace: Path, name: str) -> Iterator[None]:
    """Hold the experiment's lock while sweeping it: a second sweep of it in the same
    workspace would plan the same runs and train them twice. The kernel drops the lock
    with the process, however it ends."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; runs in flight still plan as busy
        yield
        return
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    with open(workspace / f".sweep-{digest}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CifarlabError(
                f"experiment {name!r} is being swept right now by another process in "
                f"{str(workspace)!r}; wait for it to finish (`cifarlab results` shows its runs)"
            ) from None
        yield


def _refuse_models_registered_here(configs: tuple[RunConfig, ...] | list[RunConfig]) -> None:
    """Workers are other processes: a model registered from Python here is unknown there,
    and every run failed with "unknown model"."""
    from cifarlab.models.registry import registered_here

    names = sorted({c.model for c in configs if registered_here(c.model)})
    if names:
        raise CifarlabError(
            f"model {names[0]!r} is registered in this process (cifarlab.register_model), which "
            "the sweep's worker processes do not see; sweep it with one worker, or keep the net "
            "in a file.py and name it file.py:Class"
        )


def _run_planned(
    name: str,
    planned: list[PlannedRun],
    workspace: Path,
    workers: int,
    quiet: bool,
    ray: RayOptions | None = None,
    store: ResultsStore | None = None,
) -> SweepReport:
    report = SweepReport(name, planned)
    for p in planned:
        if p.action not in TO_RUN:  # done, or busy in another process: its status as it is
            report.outcomes[p.config.hash()] = p.previous["status"]
    todo = [p for p in planned if p.action in TO_RUN]
    actions = Counter(p.action for p in planned)  # what a rerun reuses, before minutes pass
    said = {"done": "done before", "resume": "to resume", "restart": "to restart", "new": "new",
            "busy": "training elsewhere"}  # fmt: skip
    counts = [f"{actions[a]} {words}" for a, words in said.items() if actions[a]]
    note(quiet, f"sweep {name}: {len(planned)} run{'s' * (len(planned) != 1)}: {and_list(counts)}")
    start = time.perf_counter()
    configs = [_for_workspace(p, workspace, quiet or workers > 1) for p in todo]
    anew = {p.config.hash() for p in todo if p.edited}  # not skipped as done
    if ray and todo:  # nothing to train: no cluster to join
        runs = on_ray(todo, store, workspace, ray)
    elif workers > 1:
        runs = _in_workers(configs, workers, anew)
    else:
        runs = ((c, _run_one(c, c.hash() in anew)) for c in configs)
    with tqdm(
        total=len(planned), initial=len(planned) - len(todo), desc=f"sweep {name}",
        unit="run", disable=bar_disabled(quiet), file=sys.stderr, position=0,
    ) as bar, contextlib.closing(runs):  # fmt: skip
        for config, status in runs:  # closing: Ctrl-C in this loop still stops the workers
            report.outcomes[config.hash()] = status
            bar.update()
    report.seconds = time.perf_counter() - start
    return report


def _in_workers(
    configs: list[RunConfig], workers: int, anew: set[str]
) -> Iterator[tuple[RunConfig, str]]:
    """Train ``configs`` in ``workers`` processes; yield each with its status as it ends."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    stop = ctx.Event()  # set on Ctrl-C: a worker still starting up then takes no run
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, os.getpid(), stop)) as pool:  # fmt: skip
        # Workers are spawned here and start with Ctrl-C ignored: pressed while they import
        # torch, it would print a traceback from each. _init_worker turns it back on.
        with _sigint_ignored():
            futures = {pool.submit(_run_one, c, c.hash() in anew): c for c in configs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BrokenProcessPool:  # a worker was killed (out of memory): the rest went with it
            raise MachineFailure(
                "a sweep worker process died (killed, for one, when memory runs out), which "
                "stopped the sweep; run it again to go on from where it stopped, with fewer "
                "--workers if memory was short"
            ) from None
        except BaseException as err:  # Ctrl-C or SIGTERM: no queued run may start after it
            stop.set()
            _pass_on(err)
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _pass_on(stop: BaseException) -> None:
    """Send the workers the stop the sweep got, so their runs end now, recorded as stopped.
    `kill PID`, `docker stop` and schedulers signal the sweep alone: it then waited for
    the runs under way to finish, minutes, and was killed when its grace period ran out."""
    signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
    for worker in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(worker.pid, signum)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_paths(configs: tuple[RunConfig, ...] | list[RunConfig]) -> None:
    """Each data path the runs name exists and is a folder or an archive (nothing is read:
    a dry run checks this much too)."""
    from cifarlab.data.dataset import check_source

    for data in sorted({c.data for c in configs if c.data is not None}):
        check_source(data)


Source = tuple[Any, ...]  # (data, image_size, labels): what decodes to one dataset


def check_sources(
    configs: list[RunConfig], quiet: bool = False, read: dict[Source, int] | None = None
) -> None:
    """Read each data source the runs use once, up front: a bad path, a corrupt archive or
    a --val-size the data cannot spare fails the sweep with one error instead of every run,
    and the runs then find it cached. ``read``: the training images of the sources that
    ``mark_changed_data`` read, not read again."""
    read = dict(read or {})
    for source in sorted({_source(c) for c in configs}, key=str):
        if source not in read:
            read[source] = len(_decoded(source, quiet).dataset.train)
        _check_val_sizes(configs, source, read[source])


def check_known_sources(configs: list[RunConfig]) -> None:
    """A dry run's ``check_sources``: it decodes nothing, so it checks --val-size only
    against the sources the cache knows."""
    from cifarlab.data.dataset import known_train_size

    for source in sorted({_source(c) for c in configs}, key=str):
        data, image_size, labels = source
        available = known_train_size(data, image_size=image_size, labels=labels)
        if available is not None:
            _check_val_sizes(configs, source, available)


def _check_val_sizes(configs: list[RunConfig], source: Source, available: int) -> None:
    for val_size in sorted({c.val_size for c in configs if _source(c) == source}):
        if val_size >= available:  # spelled for a file (and compare's option)
            tenth = max(available // 10, 1)
            raise CifarlabError(
                f"val_size {val_size} leaves no training images in {source[0]} (its "
                f"training split has {available:,}); set a smaller one ({tenth}, a tenth, "
                f"is usual; 0: no validation): val_size = {tenth} in the experiment's "
                f"[base], or compare's --val-size {tenth}"
            )


def mark_changed_data(
    planned: list[PlannedRun], quiet: bool = False, dry_run: bool = False
) -> dict[Source, int]:
    """Mark finished or stopped runs whose data was edited in place since they trained (the
    path, and so the run's settings, are the same): they train again, as new runs, with a
    warning (a stopped run's checkpoint belongs to the old data). Returns the training
    images of each source it decoded.

    A dry run decodes nothing: it asks the cache, and marks ``data_unchecked`` the runs whose
    data the cache holds no entry for as it is now (edited since, or never decoded here)."""
    now: dict[Source, str | None] = {}
    sizes: dict[Source, int] = {}
    for p in planned:
        trained_on = ((p.previous or {}).get("info") or {}).get("data_content")
        if p.action not in ("done", "resume", "restart") or not trained_on:
            continue
        source = _source(p.config)
        if source not in now:
            try:
                if dry_run:
                    now[source] = _cached_content_of(source)
                else:
                    decoded = _decoded(source, quiet)
                    now[source], sizes[source] = decoded.content_id, len(decoded.dataset.train)
            except CifarlabError:  # gone or unreadable: nothing to compare, the result stands
                now[source] = None
        if now[source] is None:
            p.data_unchecked = dry_run
        elif now[source] != trained_on:
            p.edited = True
            if not dry_run:
                warn(f"the data of run {p.previous['id']} ({p.config.data}) has changed since "
                     "it trained; training it again, as a new run")  # fmt: skip
    return sizes


def _warn_edited_code(planned: list[PlannedRun]) -> None:
    """Runs whose model's code changed since they trained (a helper module, or a net
    registered from Python): they train again, as new runs, and the sweep says why."""
    for p in planned:
        if p.code_edited:
            what = (f"a helper module that {p.config.model} imports" if model_source(p.config.model)
                    else f"model {p.config.model!r}, registered in this process,")  # fmt: skip
            warn(f"{what} has changed since run {p.previous['id']} trained; training it "
                 "again, as a new run")  # fmt: skip


def _source(config: RunConfig) -> Source:
    return config.data, config.image_size, config.labels


def _cached_content_of(source: Source) -> str | None:
    """What a source holds as far as the cache knows, without decoding it (None: unknown)."""
    from cifarlab.data.dataset import known_content_id

    data, image_size, labels = source
    return known_content_id(data, image_size=image_size, labels=labels)


def _decoded(source: Source, quiet: bool) -> DecodedSource:
    """Decode a source (or load it from the cache)."""
    from cifarlab.data.dataset import decode_source

    data, image_size, labels = source
    with warnings.catch_warnings():  # each run shows the source's warnings itself
        warnings.simplefilter("ignore", CifarlabWarning)
        return decode_source(data, image_size=image_size, labels=labels, quiet=quiet)


def _for_workspace(planned: PlannedRun, workspace: Path, quiet: bool) -> RunConfig:
    return planned.config.model_copy(update={"workspace": str(workspace), "quiet": quiet})


def _run_one(config: RunConfig, anew: bool = False) -> str:
    """Train one run; any failure is already recorded by the runner, so just report it.

    The plan may be minutes old: another process (a sweep of an experiment sharing these
    settings, a `train` by hand) may have finished the run or be training it now."""
    from cifarlab.runner import run_training

    if _stop is not None and _stop.is_set():  # the sweep was stopped while this worker started
        return "cancelled"
    with ResultsStore(database_path(config.workspace)) as store:
        standing = planned_run(config, store, edited=anew)
    if standing.action in ("done", "busy"):
        return standing.previous["status"]
    # resume what an earlier attempt left (its checkpoint), else start afresh
    config = config.model_copy(
        update={"resume": "auto" if standing.previous and not standing.edited else None}
    )
    global _training
    _training = True
    try:
        return run_training(config).status
    except RunInProgress:  # it started elsewhere between the look above and the run
        return "running"
    except KeyboardInterrupt as stop:
        if _in_worker:  # the runner recorded the run; a stopped worker takes no next one
            os._exit(143 if isinstance(stop, Terminated) else 130)
        raise
    except Exception as err:  # noqa: BLE001 - one bad run must not stop the sweep
        say_run_failed(_run_id(config), err)
        return "failed"
    finally:
        _training = False


def _run_id(config: RunConfig) -> str:
    """The id results, report --run and train --resume take; the name if none is recorded."""
    try:
        with ResultsStore(database_path(config.workspace)) as store:
            run = store.standing_run(config.hash())
    except Exception:  # noqa: BLE001 - the database may be what failed
        run = None
    return run["id"] if run else config.short_name()


_in_worker = False  # set in a sweep's worker processes
_training = False  # a run is under way in this process
_stop = None  # in a worker: the sweep's Event, set when it was stopped
_stopping = False  # in a worker: a stop arrived; the run under way is being recorded


def _stop_worker(signum: int, frame: object) -> None:
    """In a worker, Ctrl-C and SIGTERM (also sent when the sweep dies: ``die_with_parent``)
    stop the run under way, so it is recorded as interrupted or failed; an idle worker just
    ends, quietly (the sweep prints the one line). Only the first stop counts: a terminal's
    Ctrl-C reaches a worker both directly and through the sweep (``_pass_on``)."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    if _training:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    os._exit(128 + signum)


def _init_worker(threads: int, parent_pid: int, stop: Any) -> None:
    import torch

    global _in_worker, _stop
    _in_worker, _stop = True, stop
    signal.signal(signal.SIGTERM, _stop_worker)
    signal.signal(signal.SIGINT, _stop_worker)  # spawned with it ignored: see _in_workers
    die_with_parent(parent_pid)  # a sweep killed with `kill -9` leaves no worker training
    torch.set_num_threads(threads)
    warnings.showwarning = show_warning  # spawned: one-line warnings as in the parent
    # the sweep and its workers are one job: "cores taken" counts only work outside it
    cpu_share.count_as_own_job(parent_pid)
    # ... and stays in the results; a warning from every worker's every run would be noise
    warnings.simplefilter("ignore", BusyMachineWarning)
