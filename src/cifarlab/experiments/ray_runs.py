"""A sweep's runs as Ray tasks, spread over the machines of a Ray cluster:

    cifarlab sweep study.toml --ray auto              # the cluster this machine is part of
    cifarlab sweep study.toml --ray local             # start one here, for this sweep

Each run trains on a worker, in a workspace of its own there (a temporary folder), and
comes back whole: its row, its epochs and its folder (checkpoints, the model file's copy)
land in this sweep's workspace, which only this process writes. So the workspace needs no
shared filesystem (SQLite's WAL does not work over one), only the data (the same path on
every machine) and model files do. A stopped run goes out with its checkpoint and resumes
there. Until its result lands, a run's row says it is running, owned by this process: a
second sweep does not take it, and if this one dies it reads as stopped, as it was (its
epochs and checkpoint stay until a result replaces them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarlab import process
from cifarlab.config import RunConfig
from cifarlab.errors import (
    BusyMachineWarning,
    CifarlabError,
    CifarlabWarning,
    RunInProgress,
    Terminated,
    first_line,
    say_run_failed,
    warn,
)
from cifarlab.experiments.store import ResultsStore, database_path, summary_of
from cifarlab.process import current_owner, signals_held

if TYPE_CHECKING:
    from cifarlab.experiments.sweep import PlannedRun


@dataclass(frozen=True)
class RayOptions:
    address: str  # "auto", "local", or a cluster's address (host:6379, ray://host:10001)
    cpus: float = 1.0  # per run: also its torch threads
    gpus: float | None = None  # per run; None: 1 where the cluster has GPUs and runs use them


def ray_options(address: str | None, cpus: float, gpus: float | None) -> RayOptions | None:
    """The Ray options given (--ray, --ray-cpus, --ray-gpus), or None for a sweep here."""
    if address:
        return RayOptions(address, cpus, gpus)
    if cpus != 1 or gpus is not None:
        raise CifarlabError("--ray-cpus and --ray-gpus are for --ray: pass --ray ADDRESS too")
    return None


def check_ray_options(options: RayOptions | None, workers: int) -> None:
    """Refuse what cannot work, before anything is read or recorded."""
    if options is None:
        return
    if workers > 1:
        raise CifarlabError(
            "--workers with --ray: Ray decides how many runs train at once, from each run's "
            "--ray-cpus and --ray-gpus and the cluster's size; drop --workers"
        )
    if options.cpus < 1 or (options.gpus is not None and options.gpus < 0):
        raise CifarlabError("--ray-cpus must be at least 1 and --ray-gpus at least 0")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise CifarlabError("--ray needs Ray: pip install 'cifarlab[ray]'") from None


_joined: dict[str, Any] = {}  # the address this process joined, and whether it started it


def connect(options: RayOptions, configs: list[RunConfig]) -> float:
    """Join (or start) the cluster, and check it can ever run a run; the GPUs a run asks."""
    import ray

    if ray.is_initialized() and _joined.get("address") not in (None, options.address):
        raise CifarlabError(
            f"--ray {options.address}: this process is joined to Ray at "
            f"{_joined['address']!r} already; sweep there, or in a new process"
        )
    if not ray.is_initialized():
        _reachable(options.address)
        sigterm = signal.getsignal(signal.SIGTERM)  # ray.init sets its own: ours records runs
        try:
            ray.init(
                address=options.address,  # "local": a new cluster here, even if one runs
                include_dashboard=False if options.address == "local" else None,
                logging_level=logging.ERROR,  # Ray's start-up chatter
                log_to_driver=False,  # the runs are quiet; what they say comes back (_land)
                runtime_env={"env_vars": _our_variables()},
            )
        except ConnectionError as err:
            said = first_line(err).split(". ")[0].rstrip(".")  # Ray's advice is for its own CLI
            raise CifarlabError(
                f"--ray {options.address}: no Ray cluster there ({said}); start one (`ray start "
                "--head`), or pass --ray local to start one for the sweep"
            ) from None
        finally:
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        _joined.update(address=options.address, started=options.address == "local")
    gpus = options.gpus
    if gpus is None:  # CPU runs take no GPU; runs that may use one take one where there are
        on_cpu = all(c.device == "cpu" for c in configs)
        gpus = 0.0 if on_cpu or not ray.cluster_resources().get("GPU", 0) else 1.0
    if not gpus and any(c.device.startswith("cuda") for c in configs):
        raise CifarlabError(
            "runs set to train on cuda would get no GPU on Ray (--ray-gpus 0, or a cluster "
            "without GPUs); pass --ray-gpus 1, or device auto or cpu"
        )
    _check_fits(options.cpus, gpus)
    return gpus


def leave() -> None:
    """Shut down a cluster this process started for its sweep (--ray local)."""
    import ray

    if _joined.pop("started", False):
        ray.shutdown()
        _joined.clear()


def _reachable(address: str) -> None:
    """A host:port with nothing listening: said at once (ray.init retried for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address in ("auto", "local") or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as err:
        raise CifarlabError(
            f"--ray {address}: nothing answers there ({err.strerror or err}); check the address "
            "(`ray status` on the cluster's head prints it), or pass --ray local"
        ) from None


def _our_variables() -> dict[str, str]:
    """cifarlab's settings (CIFARLAB_CACHE, CIFARLAB_MATMUL_WGRAD...) for every worker."""
    return {k: v for k, v in os.environ.items() if k.startswith("CIFARLAB_")}


def _check_fits(cpus: float, gpus: float) -> None:
    """A run asking more than any machine has would wait for ever, silently."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    raise CifarlabError(
        f"--ray-cpus {cpus:g} --ray-gpus {gpus:g}: no machine of the cluster has that much (at "
        f"most {most_cpus:g} CPUs and {most_gpus:g} GPUs); ask for less per run"
    )


def on_ray(
    todo: list[PlannedRun], store: ResultsStore, workspace: Path, options: RayOptions
) -> Iterator[tuple[RunConfig, str]]:
    """Train ``todo`` as Ray tasks on the cluster ``connect`` joined (``options.gpus`` as it
    settled); yield each run's config and status as it lands."""
    import ray

    gpus = options.gpus
    task = ray.remote(_train_remote).options(num_cpus=options.cpus, num_gpus=gpus, max_retries=0)
    pending: dict[Any, tuple[RunConfig, str]] = {}
    for stale in workspace.glob(".landing-*"):  # a landing cut short (kill -9): the sweep's lock
        shutil.rmtree(stale, ignore_errors=True)  # is held, so none is under way
    process.sigterm_received = False  # this sweep's stop, not an earlier one's
    try:
        for p in todo:
            run_id, action = _claim(store, p)
            if run_id is None:  # done or training elsewhere since the plan: its status
                yield p.config, action
                continue
            resume = _kit(store, workspace, run_id) if action == "resume" else None
            # "auto" would find a GPU Ray did not give the task; an explicit device stays
            config = p.config.model_copy(update={"device": "cpu"}) if not gpus and \
                p.config.device == "auto" else p.config  # fmt: skip
            pending[task.remote(config, int(options.cpus), run_id, resume)] = (p.config, run_id)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            config, run_id = pending.pop(ref)
            try:
                shipped = ray.get(ref)
            except ray.exceptions.RayError as err:  # its worker died, or the node
                shipped = {"record": None, "error": f"its Ray task failed: {first_line(err)}"}
            yield config, _land(store, workspace, run_id, shipped)
    except BaseException as stop:  # Ctrl-C, SIGTERM, or a failure here: no task goes on
        for ref in pending:  # not forced: the task's run stops as by Ctrl-C and cleans up
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        why = "interrupted" if isinstance(stop, KeyboardInterrupt) else first_line(stop)
        terminated = isinstance(stop, Terminated) or process.sigterm_received
        why = "terminated (SIGTERM)" if terminated else why
        store.fail_running(current_owner(), f"{why} (its Ray task was cancelled)")
        if terminated and not isinstance(stop, Terminated):
            raise Terminated() from None  # ray.wait re-raised it as a plain KeyboardInterrupt
        raise


def _claim(store: ResultsStore, p: PlannedRun) -> tuple[str | None, str]:
    """(run id, action): the run's row, running, owned by this process: a stopped or failed
    run's own row, its epochs kept until a result replaces them, else a new one. (None,
    status) for a run done or taken by another process since the plan, minutes old maybe."""
    from cifarlab.experiments.sweep import planned_run
    from cifarlab.runner import open_new_run

    now = planned_run(p.config, store, edited=p.edited)
    if now.action in ("done", "busy"):
        return None, now.previous["status"]
    if now.action in ("resume", "restart"):
        try:
            store.reopen_run(now.previous["id"], keep_epochs=now.previous["epochs_done"] or 0)
        except RunInProgress:  # claimed by another process between the look and the claim
            return None, "running"
        return now.previous["id"], now.action
    return open_new_run(store, p.config), "new"


def _kit(store: ResultsStore, workspace: Path, run_id: str) -> dict[str, Any]:
    """What a worker needs to resume a stopped run: its row, epochs and folder's files."""
    folder = workspace / run_id
    return {"record": store.run(run_id), "epochs": store.epochs(run_id), "files": _files(folder)}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


def _train_remote(
    config: RunConfig, threads: int, run_id: str, resume: dict[str, Any] | None
) -> dict[str, Any]:
    """On a Ray worker: train ``config`` (resume it from ``resume``) in a workspace of its
    own, and return the run whole: its record, epochs, folder's files and warnings."""
    import torch

    import cifarlab
    from cifarlab.runner import run_training
    from cifarlab.train import cpu_share

    torch.set_num_threads(threads)
    # the sweep's other tasks on this node share its cores on purpose: "cores taken" counts
    # only what else took them (Ray's workers are children of its raylet)
    cpu_share.count_as_own_job(os.getppid())
    with tempfile.TemporaryDirectory(prefix="cifarlab-ray-") as tmp:
        here = config.model_copy(update={"workspace": tmp, "quiet": True, "resume": None})
        if resume:
            _unpack(Path(tmp), run_id, resume)
            here = here.model_copy(update={"resume": run_id})
        error = None
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            try:
                run_training(here)
            except Exception as err:  # noqa: BLE001 - recorded below, or said as one line
                error = first_line(err)
        notes = list(dict.fromkeys(
            (str(w.message), issubclass(w.category, CifarlabWarning)) for w in said
            if not issubclass(w.category, BusyMachineWarning)
        ))  # fmt: skip
        shipped = {"warnings": notes, "version": cifarlab.__version__, "error": error}
        db = database_path(tmp)
        if not db.exists():  # failed before it was recorded: bad input on that machine
            return shipped | {"record": None, "error": error or "it was not recorded"}
        with ResultsStore(db) as store:
            (record,) = store.runs()
            epochs = store.epochs(record["id"])
        if error and record["status"] == "failed":  # a resume refused before it reopened
            record["error"] = record["error"] or error
        return shipped | {
            "record": record,
            "epochs": epochs,
            "files": _files(Path(tmp) / record["id"]),
        }


def _unpack(workspace: Path, run_id: str, kit: dict[str, Any]) -> None:
    """A stopped run as it stands in the sweep's workspace, in a worker's, to resume there."""
    record = kit["record"]
    with ResultsStore(database_path(workspace)) as store:
        store.create_run(run_id, record["name"], record["config"], record["config_hash"])
        _add_epochs(store, run_id, kit["epochs"])
        # no error of its own: one the resume meets there is the one to say (_train_remote)
        store.finish_run(run_id, "failed", summary_of(record), None, record["info"])
    _write_files(workspace / run_id, kit["files"])


def _land(store: ResultsStore, workspace: Path, run_id: str, shipped: dict[str, Any]) -> str:
    """Write a run that came back into ``run_id``'s row and folder; its status."""
    import cifarlab

    for message, ours in shipped.get("warnings", ()):
        if ours:
            warn(message)
        else:  # torch's and others': as they are, not as cifarlab's
            warnings.warn(message, stacklevel=2)
    if shipped.get("version", cifarlab.__version__) != cifarlab.__version__:
        warn(f"run {run_id} trained with cifarlab {shipped['version']} on its Ray worker; "
             f"this sweep runs {cifarlab.__version__}: install one on every machine")  # fmt: skip
    record = shipped["record"]
    if record is None:  # what the run had (a resumable one's info: its data and code) stays
        before = store.run(run_id)
        store.finish_run(run_id, "failed", summary_of(before), shipped["error"], before["info"])
        say_run_failed(run_id, shipped["error"])
        return "failed"
    with signals_held():  # a stop waits: the folder and the rows change together
        if shipped["files"]:
            _replace_folder(workspace, run_id, shipped["files"])
        store.drop_epochs(run_id)  # the result's rows, not the claimed run's older ones
        _add_epochs(store, run_id, shipped["epochs"])
        store.finish_run(run_id, record["status"], summary_of(record), record["error"],
                         record["info"])  # fmt: skip
    if record["status"] == "failed":
        say_run_failed(run_id, record["error"])
    return record["status"]


def _add_epochs(store: ResultsStore, run_id: str, epochs: list[dict[str, Any]]) -> None:
    for metrics in epochs:
        store.add_epoch(run_id, metrics["epoch"], metrics)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    """``files`` (paths relative to ``folder``, with their bytes) written into ``folder``."""
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _replace_folder(workspace: Path, run_id: str, files: dict[str, bytes]) -> None:
    """The run's folder becomes ``files``: written beside it, then renamed in, the old one
    (an earlier attempt's, a stopped run's checkpoint) moved aside until then."""
    landing, old = workspace / f".landing-{run_id}", workspace / f".landing-{run_id}-old"
    for stale in (landing, old):
        shutil.rmtree(stale, ignore_errors=True)
    _write_files(landing, files)
    _rename_checkpoints(landing, run_id)
    if (workspace / run_id).exists():
        (workspace / run_id).rename(old)
    landing.rename(workspace / run_id)
    shutil.rmtree(old, ignore_errors=True)


def _rename_checkpoints(folder: Path, run_id: str) -> None:
    """The checkpoints name the run they belong to: this workspace's id, not the worker's."""
    import torch

    for path in folder.glob("*.pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("run_id") not in (None, run_id):
            state["run_id"] = run_id
            torch.save(state, path)
