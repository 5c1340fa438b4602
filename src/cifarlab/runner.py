"""One training run end to end: check everything, record the run, train, record results.

Every check that can fail on user input (options, model name, device, data,
workspace, the checkpoint to resume) runs before anything is written to the
results database, so bad input never leaves a row.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cifarlab.config import SESSION_FIELDS, RunConfig, make_run_config
from cifarlab.data import CifarData, load_dataset
from cifarlab.distributed import (
    StoppedWithMain,
    World,
    check_spread,
    join,
    launched_world,
    main_failed,
    rank_0_result,
    rank_device,
    refuse_device_index,
    say_main_failed,
    seed_generators,
)
from cifarlab.errors import (
    CifarlabError,
    MachineFailure,
    RecordedFailure,
    Terminated,
    first_line,
    lost_other_ranks,
    note,
    warn,
)
from cifarlab.experiments.store import (
    ResultsStore,
    check_workspace,
    database_path,
    prepare_workspace,
    summary_of,
)
from cifarlab.model_files import (
    keep_model_file,
    model_code_digest,
    model_file_digest,
    model_source,
)
from cifarlab.models import (
    check_model,
    count_parameters,
    model_label,
)
from cifarlab.models.pyfile import code_place, user_code_line
from cifarlab.models.registry import user_code_file
from cifarlab.process import current_owner, signals_held
from cifarlab.results import resume_command
from cifarlab.resume import (
    find_resumed,
    in_the_precision_it_trained,
    refuse_edited_model_file,
    refuse_if_training_elsewhere,
    restore_checkpoint,
    warn_if_other_ranks,
    warn_if_other_threads,
)
from cifarlab.train import cpu_share
from cifarlab.train.build import build_trainer
from cifarlab.train.callbacks import (
    Checkpointer,
    EarlyStopping,
    ProgressBar,
    StoreEpochs,
    TensorBoardLogger,
    WarnWhenBusy,
)
from cifarlab.train.cpu_share import cores_taken
from cifarlab.train.precision import (
    cpu_supports_bf16,
    explain_precision,
    gpu_has_bf16,
    resolve_device,
    resolve_precision,
)
from cifarlab.train.selection import best_epoch, overfit_onset
from cifarlab.train.small_map_conv import SmallMapConv2d
from cifarlab.train.trainer import Callback, Diverged, Trainer


@dataclass
class RunResult:
    """What a finished run returns to Python callers."""

    run_id: str
    status: str
    config: RunConfig
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # a notebook shows this: one line, not the config and history
        acc = self.summary.get("test_acc")
        scored = f", test_acc={acc:.2%}" if acc is not None else ""
        return (
            f"RunResult({self.run_id!r}, {self.status}{scored}, {len(self.history)} epochs, "
            f"run_dir={str(self.run_dir)!r})"
        )

    def to_dataframe(self):
        """The per-epoch history as a pandas DataFrame (pandas is not a dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise CifarlabError("to_dataframe needs pandas: pip install pandas") from None

        return pd.DataFrame(self.history)


def run_training(config: RunConfig | None = None, **options: Any) -> RunResult:
    """Train one model as ``config`` (or keyword options) says and record it in the workspace."""
    config = config or make_run_config(**options)
    # the run seeds torch and builds nets: a notebook's torch.manual_seed(123) holds after it
    with torch.random.fork_rng(devices=_cuda_devices_of(config)):
        return _run_training(config)


def _run_training(config: RunConfig) -> RunResult:
    world = launched_world()  # torchrun's ranks, or this process alone
    refuse_device_index(world, config.device)  # the command line's: the same on every rank
    join(world)  # from here on a rank's failure is told to the others (cli.py)
    device = rank_device(world, resolve_device(config.device))
    if world.spread:  # torchrun's ranks here are one job: "cores taken" counts others' work
        cpu_share.count_as_own_job(os.getppid())
    loaded: list[CifarData] = []
    # rank 0 checks everything and reads (and caches) the data; the others then load it
    # from the cache, so no two ranks decode it at once
    plan = rank_0_result(world, lambda: _plan(config, world, device, loaded))
    if isinstance(plan, RunResult):  # completed already
        return plan
    config, resumed, precision, workspace = plan
    with contextlib.ExitStack() as stack:
        if not world.main:  # rank 0 says what there is to say, once
            config = config.model_copy(update={"quiet": True})
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        data = loaded[0] if world.main else _load(config)
        stack.enter_context(_determinism(config))  # a notebook's torch settings come back
        return _train_and_record(config, data, device, precision, workspace, resumed, world)


def _plan(
    config: RunConfig, world: World, device: torch.device, loaded: list[CifarData]
) -> tuple[RunConfig, dict[str, Any] | None, str, Path] | RunResult:
    """Check the run, find what it resumes, load its data into ``loaded``: all that fails on
    bad input, before anything is recorded. A completed run gives its stored result."""
    # the folder is made only when the run is recorded: bad input leaves none behind
    workspace = check_workspace(config.workspace)
    resumed: dict[str, Any] | None = None
    if config.resume:
        config, resumed = find_resumed(workspace, config)
        if resumed and resumed["status"] == "completed":
            note(config.quiet, f"run {resumed['id']} already completed; nothing to resume")
            return _stored_result(workspace, resumed["id"], config)
        if resumed:
            refuse_if_training_elsewhere(resumed)
            refuse_edited_model_file(resumed, config)
            warn_if_other_threads(resumed)
            warn_if_other_ranks(resumed, world)

    for unused in config.unused_options() if not resumed else ():  # said at the run's start
        warn(unused)
    check_spread(world, config.batch_size)
    precision = resolve_precision(config.precision, device, config.channels_last)
    if resumed:
        config, precision = in_the_precision_it_trained(resumed, config, device, precision)
    _warn_if_bf16_emulated(device, precision, resumed is not None)
    check_model(config.model)  # a bad name, spec or file fails here, before any data work
    if config.tensorboard:
        _require_tensorboard()
    if config.compile:
        _require_compiler(device)
    data = _load(config)
    if resumed:
        _refuse_changed_data(resumed, data)
    loaded.append(data)
    return config, resumed, precision, workspace


def _warn_if_bf16_emulated(device: torch.device, precision: str, resumed: bool) -> None:
    if device.type == "cpu" and precision == "bf16" and not cpu_supports_bf16():
        # measured on an AVX2 CPU: 5-6x slower on tutorial, 12-16x on speedrun-small
        # (benchmarks/precision_layout.py); still right for checking bf16's numerics
        fix = "resume it on a CPU with native bf16" if resumed else (
            "use --precision auto, which picks fp32 here")  # fmt: skip
        warn(
            "--precision bf16: this CPU runs bf16 emulated (it has no AVX-512 BF16 or AMX), "
            f"5-16x slower than fp32; {fix}"
        )
    if device.type == "cuda" and precision == "bf16" and not gpu_has_bf16(device):
        warn(
            "--precision bf16: this GPU has no bf16 tensor cores (they came with Ampere), so "
            "torch emulates bf16, slowly; use --precision fp16, or auto, which picks it here"
        )


def _refuse_changed_data(resumed: dict[str, Any], data: CifarData) -> None:
    trained_on = (resumed.get("info") or {}).get("data_content")
    if trained_on and trained_on != data.content_id:
        raise CifarlabError(
            f"the data at {data.source} has changed since run {resumed['id']} trained on it, "
            "so its checkpoint belongs to other data; train without --resume for a new run"
        )


def _load(config: RunConfig) -> CifarData:
    return load_dataset(
        config.data,
        val_size=config.val_size,
        limit_train=config.limit_train,
        limit_test=config.limit_test,
        seed=config.seed,
        image_size=config.image_size,
        labels=config.labels,
        quiet=config.quiet,
    )


def _train_and_record(
    config: RunConfig,
    data: CifarData,
    device: torch.device,
    precision: str,
    workspace: Path,
    resumed: dict[str, Any] | None,
    world: World,
) -> RunResult:
    seed_generators(config.seed, device)
    trainer = build_trainer(config, data, device, precision, world)
    if world.rank:  # dropout draws its own masks on each rank (the weights start alike)
        seed_generators(config.seed, device, world.rank)
    _check_last_batch(trainer, config, data)
    if resumed:
        restore_checkpoint(trainer, workspace, resumed, config)
    else:
        _warn_if_dropping(config, len(data.train))
    info = _run_info(config, data, device, precision, trainer.model) | {"ranks": world.size}
    if not world.main:
        return _follow(trainer, config, workspace, info)
    prepare_workspace(workspace)
    with ResultsStore(database_path(workspace)) as store:
        try:
            run_id = rank_0_result(world, lambda: _open_run(store, config, resumed, trainer.epoch))
            note(config.quiet, _start_line(run_id, config, info, trainer.epoch))
            return _fit_and_record(trainer, config, store, run_id, workspace / run_id, info)
        except BaseException as err:  # Ctrl-C or SIGTERM between the run's row and its try
            store.fail_running(current_owner(), _stop_message(err))
            say_main_failed(world)  # recorded: the other ranks may end
            raise


def _open_run(store: ResultsStore, config: RunConfig, resumed: dict[str, Any] | None,
              done: int) -> str:  # fmt: skip
    """The run's row: a new one, or the resumed run's, reopened after its ``done`` epochs."""
    if resumed:
        store.reopen_run(resumed["id"], keep_epochs=done)
        return resumed["id"]
    return open_new_run(store, config)


def open_new_run(store: ResultsStore, config: RunConfig) -> str:
    """A new running run's row for ``config``; its id (model-hash, or -2, -3... if taken)."""
    base = f"{model_label(config.model)}-{config.hash()[:8]}"
    return store.start_run(base, config.short_name(), record_of(config), config.hash())


def _follow(
    trainer: Trainer, config: RunConfig, workspace: Path, info: dict[str, Any]
) -> RunResult:
    """A rank other than 0 trains its share and keeps no books: rank 0 records the run. It
    ends after rank 0 has (torchrun stops every rank when one ends with an error)."""
    world = trainer.world
    early = _early_stopping(config)
    trainer.callbacks += [early] if early else []  # every rank must stop when rank 0 does
    status, error = "completed", None
    try:
        run_id = rank_0_result(world, lambda: "")  # rank 0's, once it is recorded
        try:
            trainer.fit(config.epochs)
        except Diverged as err:  # all ranks judge the same averaged loss
            status, error = "diverged", str(err)
        summary = rank_0_result(world, dict)  # rank 0's, once its run is recorded
    except Exception as err:
        if main_failed(world):  # the same failure: rank 0 recorded it and says it
            raise StoppedWithMain() from None
        err.rank_own = True  # the CLI says it at once: rank 0 was waited for
        _explain(err, config, trainer.epoch + 1)  # a user's model in one line
        raise
    return RunResult(run_id, status, config, trainer.history, summary, workspace / run_id, error,
                     info)  # fmt: skip


def _start_line(run_id: str, config: RunConfig, info: dict[str, Any], done: int) -> str:
    """What a run trains and how, before its first epoch line: the device and precision
    (``auto`` picks them per machine), the layout, the images."""
    epochs = f"{config.epochs} epoch" + ("s" if config.epochs != 1 else "")
    start = f"resumes after epoch {done} of {config.epochs}" if done else epochs
    val = f"{info['val_images']:,} val, " if info["val_images"] else ""
    images = f"{info['train_images']:,} training images ({val}{info['test_images']:,} test)"
    threads = f"{info['threads']} thread" + "s" * (info["threads"] != 1)
    device = info["device"] + (f", {threads}" if info["device"] == "cpu" else "")
    if info["ranks"] > 1:
        device = f"{info['ranks']} ranks (torchrun), each on {device}"
    precision = explain_precision(config.precision, info["precision"], torch.device(info["device"]))
    layout = "channels_last" if config.channels_last else "NCHW"
    return (
        f"run {run_id}: {model_label(config.model)} ({info['parameters']:,} parameters), {start} "
        f"on {images}; {device}, {precision}, {layout}"
    )


def _fit_and_record(
    trainer: Trainer,
    config: RunConfig,
    store: ResultsStore,
    run_id: str,
    run_dir: Path,
    info: dict[str, Any],
) -> RunResult:
    """Fit, recording every epoch; the run ends completed, diverged or failed, never running."""
    status, error = "completed", None
    try:
        keep_model_file(config.model, run_dir)
        callbacks, early = _bookkeeping(config, store, run_id, run_dir, info)
        trainer.callbacks += callbacks
        trainer.fit(config.epochs)
    except Diverged as err:
        status, error = "diverged", str(err)
    except BaseException as err:  # recorded as failed, never left "running"; then re-raised
        _record_failure(err, trainer, config, store, run_id, info)
        raise
    summary = summarize(trainer, config)
    summary["stopped_epoch"] = early.stopped_at if early else None
    store.finish_run(run_id, status, summary, error=error, info=info)
    rank_0_result(trainer.world, lambda: summary)  # recorded: the other ranks may end now
    return RunResult(run_id, status, config, trainer.history, summary, run_dir, error, info)


def _record_failure(
    err: BaseException,
    trainer: Trainer,
    config: RunConfig,
    store: ResultsStore,
    run_id: str,
    info: dict[str, Any],
) -> None:
    """Record the run as failed, then say how to continue it (or raise MachineFailure)."""
    message = _stop_message(err)
    # torchrun's second stop (it passes Ctrl-C on, then SIGTERM) waits for the record
    with contextlib.suppress(KeyboardInterrupt), signals_held():
        store.finish_run(run_id, "failed", summarize(trainer, config), error=message, info=info)
        say_main_failed(trainer.world)
    # "after epoch 0" read as a numbering from 0: epochs count from 1 everywhere else
    stopped = (f"run {run_id} stopped after epoch {trainer.epoch}" if trainer.epoch
               else f"run {run_id} stopped in its first epoch")  # fmt: skip
    command = resume_command(run_id, config.workspace)
    if lost_other_ranks(err) and not os.environ.get("CIFARLAB_TRACEBACK"):
        raise MachineFailure(
            f"{message}; {stopped}: `{command}` (under torchrun or not) continues it"
        ) from None
    _explain(err, config, trainer.epoch + 1)
    if isinstance(err, KeyboardInterrupt):  # the CLI's last line says how to go on
        err.resume_hint = f"{stopped}; `{command}`"
        # a notebook shows a bare KeyboardInterrupt: its note says how to go on there
        err.add_note(
            f"cifarlab: {stopped}; cifarlab.train(resume={run_id!r}, "
            f"workspace={config.workspace!r}) continues it"
        )


def _bookkeeping(
    config: RunConfig, store: ResultsStore, run_id: str, run_dir: Path, info: dict[str, Any]
) -> tuple[list[Callback], EarlyStopping | None]:
    """The callbacks that record, checkpoint, stop early and show progress, and the early
    stopper among them."""
    # what using the weights elsewhere takes: the classes, the input shape, the normalization
    meta = {"run_id": run_id, "config": record_of(config)}
    meta |= {key: info[key] for key in ("classes", "image_shape", "mean", "std")}
    checkpointer = Checkpointer(run_dir, meta, config.select_by)
    callbacks: list[Callback] = [StoreEpochs(store, run_id), checkpointer]
    early = _early_stopping(config)
    if early:
        callbacks.append(early)
    if config.tensorboard:
        callbacks.append(TensorBoardLogger(run_dir / "tensorboard"))
    if not config.quiet:
        callbacks.append(ProgressBar(config.epochs, label=run_id))
    callbacks.append(WarnWhenBusy())  # after the bar, which ends the epoch's line
    return callbacks, early


def summarize(trainer: Trainer, config: RunConfig) -> dict[str, Any]:
    """Model selection on validation: the test set is reported, never used to pick."""
    history = trainer.history
    summary: dict[str, Any] = {"epochs_done": len(history), "train_seconds": trainer.train_seconds}
    if not history:
        return summary
    last = history[-1]
    best = best_epoch(history, config.select_by)
    summary.update(
        best_epoch=best["epoch"],
        best_val_acc=best.get("val_acc"),
        test_acc=best.get("test_acc"),  # None: a stopped run that --eval-every never scored
        final_val_acc=last.get("val_acc"),
        final_test_acc=last.get("test_acc"),
        final_train_acc=last["train_acc"],
        images_per_sec=_training_images_per_sec(history),
        overfit_epoch=overfit_onset(history, config.patience),
    )
    shares = [cores_taken(m) for m in history if cores_taken(m) is not None]
    if shares:  # cores that other work took from the run: its timings' conditions
        summary["cpu_contention"] = sum(shares) / len(shares)
    return summary


def _training_images_per_sec(history: list[dict[str, Any]]) -> float:
    """Images trained on over the seconds spent training them: the mean of the epochs'
    rates was not a rate (1,322, 278 and 4,900 img/s epochs averaged to 2,167)."""
    seconds = sum(m["epoch_seconds"] for m in history)
    images = sum(m["images_per_sec"] * m["epoch_seconds"] for m in history)
    return images / seconds if seconds > 0 else 0.0


def _stored_result(workspace: Path, run_id: str, config: RunConfig) -> RunResult:
    with ResultsStore(database_path(workspace)) as store:
        record, history = store.run(run_id), store.epochs(run_id)
    summary = summary_of(record)
    return RunResult(run_id, record["status"], config, history, summary, workspace / run_id,
                     record["error"], record["info"])  # fmt: skip


@contextmanager
def _determinism(config: RunConfig) -> Iterator[None]:
    """torch's global determinism switches as the run asks, put back as they were after it."""
    saved = (
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
    # cuDNN times its conv algorithms once per shape and keeps the fastest (not reproducible)
    torch.backends.cudnn.benchmark = not config.deterministic
    torch.use_deterministic_algorithms(config.deterministic)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


def _cuda_devices_of(config: RunConfig) -> list[int]:
    """The GPUs whose generators the run seeds: all where it trains on one (torch.manual_seed
    seeds every GPU), none for a CPU run (forking them would start CUDA on a GPU machine)."""
    try:
        on_gpu = resolve_device(config.device).type == "cuda"
        world = launched_world()
    except CifarlabError:  # a bad --device (or torchrun's variables): the run says so itself
        on_gpu = False
    if on_gpu and world.spread:  # a rank touches its own GPU only; one it lacks: rank_device
        own = world.local_rank < torch.cuda.device_count()  # says so, in a line
        return [world.local_rank] if own else []
    return list(range(torch.cuda.device_count())) if on_gpu else []


def _require_tensorboard() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise CifarlabError(
            "--tensorboard needs the tensorboard package: pip install 'cifarlab[tensorboard]'"
        ) from None


def _require_compiler(device: torch.device) -> None:
    """torch.compile builds code when the first step runs: C++ with $CXX, else g++ (clang++ on
    macOS) on the CPU; Triton's launcher with $CC, else gcc or clang, on a GPU. Without that
    compiler it fails deep in a traceback, the run already recorded."""
    if device.type == "cpu":
        found = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        where, wanted = "the CPU", f"a C++ compiler ({found})"
    else:
        found = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang") or "gcc"
        where, wanted = "a GPU", "a C compiler (gcc or clang, for Triton)"
    if not shutil.which(found):
        raise CifarlabError(
            f"--compile on {where} needs {wanted} and none was found; install one "
            "(e.g. apt-get install g++) or train without --compile"
        )


def _run_info(config, data: CifarData, device, precision: str, model) -> dict[str, Any]:
    return {
        "device": str(device),
        "precision": precision,
        "channels_last": config.channels_last,
        "parameters": count_parameters(model),
        "classes": list(data.classes),
        "image_shape": list(data.image_shape),  # (C, H, W): the report rebuilds the net from it
        "mean": list(data.mean),  # per channel, in [0, 1]: inputs are (x - mean) / std
        "std": list(data.std),
        # which version of a model file this run trained: an edited file is another model
        "model_file_sha256": model_file_digest(config.model),
        "model_code_sha256": model_code_digest(config.model),  # and the helpers it imports
        "data_source": data.source,
        "data_content": data.content_id,  # the same path may hold other data later
        "train_images": len(data.train),
        "val_images": len(data.val) if data.val else 0,
        "test_images": len(data.test),
        # --limit-test's subset is fixed since this key: older runs drew theirs with the seed
        "test_subset": "fixed",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # resuming with CIFARLAB_MATMUL_WGRAD changed would change the rounding: say so here
        "matmul_weight_grad_convs": sum(type(m) is SmallMapConv2d for m in model.modules()),
    }


def record_of(config: RunConfig) -> dict[str, Any]:
    """The settings a run records: its config less the session's fields (workspace, quiet)."""
    return config.model_dump(mode="json", exclude=set(SESSION_FIELDS))


_BATCH_OF_ONE = (
    "a training batch of 1 image, which BatchNorm cannot normalize; "
    "pass --drop-last, or a --batch-size that leaves a larger last batch"
)


def _check_last_batch(trainer: Trainer, config: RunConfig, data: CifarData) -> None:
    """Refuse, before any run is recorded, a last batch of one image that the model's
    BatchNorm cannot normalize (BatchNorm1d, or 2d on a 1x1 map): found by one probe."""
    n, ranks = len(data.train), trainer.world.size
    last = n % config.batch_size
    if config.drop_last or last // ranks != 1:  # spread: each rank takes an equal share
        return
    probe = copy.deepcopy(trainer.model).train()  # its statistics may move: a copy
    image = torch.zeros(1, *data.image_shape, device=next(probe.parameters()).device)
    try:
        with torch.no_grad():
            probe(image)
    except Exception as err:  # noqa: BLE001 - anything else is training's to report
        if _is_batch_of_one(err):
            what = f"the last of {n} training images"
            if ranks > 1:
                what = f"the last {last} of {n} training images, shared by {ranks} ranks,"
            raise CifarlabError(f"{what} make {_BATCH_OF_ONE}") from None


def _early_stopping(config: RunConfig) -> EarlyStopping | None:
    return EarlyStopping(config.early_stop, config.select_by) if config.early_stop else None


def _is_batch_of_one(err: BaseException) -> bool:
    """BatchNorm's refusal of a batch of one image (torch's words)."""
    return isinstance(err, ValueError) and "Expected more than 1 value per channel" in str(err)


def _warn_if_dropping(config: RunConfig, n: int) -> None:
    """A batch size set for CIFAR's 50,000 images (the presets: 512 with --drop-last) can
    leave out much of a small dataset every epoch, and take a handful of steps in all."""
    dropped = n % config.batch_size if config.drop_last else 0
    if dropped > n // 10:
        steps = n // config.batch_size
        warn(
            f"--batch-size {config.batch_size} with --drop-last leaves out {dropped:,} of the "
            f"{n:,} training images every epoch ({dropped / n:.0%}) and takes {steps} "
            f"step{'s' * (steps != 1)} an epoch; pass a smaller --batch-size, or --no-drop-last"
        )


def _explain(err: BaseException, config: RunConfig, epoch: int) -> None:
    """Raise a CifarlabError for a failure the user can fix, recorded already: a BatchNorm
    batch of one image, or an error inside the user's own model (its line, not torch's).
    Anything else is left to propagate: a bug's traceback is what a report needs."""
    if os.environ.get("CIFARLAB_TRACEBACK") or not isinstance(err, Exception):
        return
    if _is_batch_of_one(err):
        raise RecordedFailure(f"epoch {epoch}: {_BATCH_OF_ONE}") from None
    source = model_source(config.model)
    mine = source[0].resolve() if source else user_code_file(config.model)
    if mine is None or isinstance(err, CifarlabError):
        return
    raise RecordedFailure(
        f"epoch {epoch}: model {config.model} raised {type(err).__name__}{user_code_line(err)}: "
        f"{first_line(err, empty='(no message)')} (CIFARLAB_TRACEBACK=1 shows the traceback)"
    ) from None


def _stop_message(err: BaseException) -> str:
    """What a failed run's error column says of what stopped it."""
    if isinstance(err, Terminated):
        return "terminated (SIGTERM)"
    if lost_other_ranks(err):  # gloo's message runs to 300 characters, and names no rank
        return "lost the other ranks of its torchrun launch (one stopped or hung)"
    return "interrupted" if isinstance(err, KeyboardInterrupt) else _one_line(err)


def _one_line(err: BaseException) -> str:
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({code_place(frame)})" if frame else ""
    return f"{type(err).__name__}: {first_line(err, empty='')}{where}"
