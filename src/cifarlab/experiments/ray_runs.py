"""A sweep's runs as Ray tasks, spread over the machines of a Ray cluster:

    cifarlab sweep study.toml --ray auto              # the cluster this machine is part of
    cifarlab sweep study.toml --ray local             # start one here, for this sweep

Each run trains on a worker, in a workspace of its own there (a temporary folder), and
comes back whole: its row, its epochs and its folder (checkpoints, the model file's copy)
land in this sweep's workspace, which only this process writes. So the workspace needs no
shared filesystem (SQLite's WAL does not work over one), only the data (the same path on
every machine) and model files do. Until its result lands, a run's row says it is running,
owned by this process: a second sweep does not take it, and if this one dies it reads as
stopped. A run cut short (Ctrl-C, a lost node) trains from its start at the next sweep:
its epochs stayed on the worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarlab.config import RunConfig
from cifarlab.errors import CifarlabError, first_line
from cifarlab.experiments.store import RUN_SUMMARY, ResultsStore
from cifarlab.process import current_owner

if TYPE_CHECKING:
    from cifarlab.experiments.sweep import PlannedRun


@dataclass(frozen=True)
class RayOptions:
    address: str  # "auto", "local", or a cluster's address (host:6379, ray://host:10001)
    cpus: float = 1.0  # per run: also its torch threads
    gpus: float | None = None  # per run; None: 1 where the cluster has GPUs, else 0


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


def connect(options: RayOptions) -> float:
    """Join (or start) the cluster; the GPUs each run asks for."""
    import ray

    if not ray.is_initialized():
        local = options.address == "local"
        try:
            ray.init(
                address=None if local else options.address,
                include_dashboard=False if local else None,
                logging_level=logging.ERROR,  # Ray's start-up chatter
                log_to_driver=False,  # the runs are quiet; a failure comes back as one line
            )
        except ConnectionError as err:
            said = first_line(err).split(". ")[0].rstrip(".")  # Ray's advice is for its own CLI
            raise CifarlabError(
                f"--ray {options.address}: no Ray cluster there ({said}); start one (`ray start "
                "--head`), or pass --ray local to start one for the sweep"
            ) from None
    if options.gpus is not None:
        return options.gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def on_ray(
    todo: list[PlannedRun], store: ResultsStore, workspace: Path, options: RayOptions
) -> Iterator[tuple[RunConfig, str]]:
    """Train ``todo`` as Ray tasks; yield each run's config and status as it lands."""
    import ray

    gpus = connect(options)  # joined already (run_sweep): the resources asked of it
    task = ray.remote(_train_remote).options(num_cpus=options.cpus, num_gpus=gpus, max_retries=0)
    pending: dict[Any, tuple[RunConfig, str]] = {}
    try:
        for p in todo:
            run_id = _claim(store, p)
            pending[task.remote(p.config, int(options.cpus))] = (p.config, run_id)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            config, run_id = pending.pop(ref)
            try:
                shipped = ray.get(ref)
            except ray.exceptions.RayError as err:  # its worker died, or the node
                shipped = {"record": None, "error": f"its Ray task failed: {first_line(err)}"}
            yield config, _land(store, workspace, run_id, shipped)
    except BaseException as stop:  # Ctrl-C, SIGTERM, or a failure here: no task goes on
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        why = "interrupted" if isinstance(stop, KeyboardInterrupt) else first_line(stop)
        store.fail_running(current_owner(), f"{why} (its Ray task was cancelled)")
        raise


def _claim(store: ResultsStore, p: PlannedRun) -> str:
    """The run's row, running, owned by this process: a stopped or failed run's own row
    (its epochs are dropped: it trains again from its start), else a new one."""
    from cifarlab.models import model_label
    from cifarlab.runner import record_of

    if p.previous and p.action in ("resume", "restart") and not p.edited:
        store.reopen_run(p.previous["id"], keep_epochs=0)
        return p.previous["id"]
    base = f"{model_label(p.config.model)}-{p.config.hash()[:8]}"
    return store.start_run(base, p.config.short_name(), record_of(p.config), p.config.hash())


def _train_remote(config: RunConfig, threads: int) -> dict[str, Any]:
    """On a Ray worker: train ``config`` in a workspace of its own, and return the run whole
    (its record, epochs and folder's files)."""
    import torch

    from cifarlab.runner import run_training
    from cifarlab.train import cpu_share

    torch.set_num_threads(threads)
    # the sweep's other tasks on this node share its cores on purpose: "cores taken" counts
    # only what else took them (Ray's workers are children of its raylet)
    cpu_share.count_as_own_job(os.getppid())
    with tempfile.TemporaryDirectory(prefix="cifarlab-ray-") as tmp:
        here = config.model_copy(update={"workspace": tmp, "quiet": True, "resume": None})
        error = None
        try:
            run_training(here)
        except Exception as err:  # noqa: BLE001 - recorded below, or said as one line
            error = first_line(err)
        db = Path(tmp) / "runs.db"
        if not db.exists():  # failed before it was recorded: bad input on that machine
            return {"record": None, "error": error or "it was not recorded"}
        with ResultsStore(db) as store:
            (record,) = store.runs()
            epochs = store.epochs(record["id"])
        folder = Path(tmp) / record["id"]
        files = {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*")
                 if f.is_file()}  # fmt: skip
        return {"record": record, "epochs": epochs, "files": files, "error": error}


def _land(store: ResultsStore, workspace: Path, run_id: str, shipped: dict[str, Any]) -> str:
    """Write a run that came back into ``run_id``'s row and folder; its status."""
    record = shipped["record"]
    if record is None:
        store.finish_run(run_id, "failed", error=shipped["error"])
        print(f"cifarlab: run {run_id} failed: {shipped['error']}", file=sys.stderr)
        return "failed"
    landing = workspace / f".landing-{run_id}"  # whole or not at all: a rename
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir()  # a run that diverged in its first epoch has no checkpoint: no files
    for name, data in shipped["files"].items():
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_bytes(data)
    _rename_checkpoints(landing, run_id)
    shutil.rmtree(workspace / run_id, ignore_errors=True)  # an earlier attempt's
    landing.rename(workspace / run_id)
    for metrics in shipped["epochs"]:
        store.add_epoch(run_id, metrics["epoch"], metrics)
    summary = {key: record.get(key) for key in RUN_SUMMARY}
    store.finish_run(run_id, record["status"], summary, error=record["error"], info=record["info"])
    if record["status"] == "failed":
        print(f"cifarlab: run {run_id} failed: {record['error']}", file=sys.stderr)
    return record["status"]


def _rename_checkpoints(folder: Path, run_id: str) -> None:
    """The checkpoints name the run they belong to: this workspace's id, not the worker's."""
    import torch

    for path in folder.glob("*.pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("run_id") not in (None, run_id):
            state["run_id"] = run_id
            torch.save(state, path)
