"""One training run end to end: check everything, record the run, train, record results.

Every check that can fail on user input (options, model name, device, data,
workspace) runs before the run is recorded, so bad input never leaves a row.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cifarlab.config import RunConfig, make_run_config
from cifarlab.data import TensorLoader, load_dataset
from cifarlab.data.augment import build_augment
from cifarlab.errors import CifarlabError
from cifarlab.experiments.store import ResultsStore
from cifarlab.models import count_parameters, create_model
from cifarlab.train.callbacks import Checkpointer, ProgressBar, StoreEpochs
from cifarlab.train.optim import build_optimizer
from cifarlab.train.precision import resolve_device, resolve_precision
from cifarlab.train.trainer import Diverged, Trainer

EVAL_BATCH_SIZE = 1024  # evaluation needs no gradients, so big batches are cheap and fast


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

    def to_dataframe(self):
        """The per-epoch history as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.history)


def run_training(config: RunConfig | None = None, **options: Any) -> RunResult:
    """Train one model as ``config`` (or keyword options) says and record it in the workspace."""
    config = config or make_run_config(**options)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device, config.channels_last)
    create_model(config.model)  # an unknown name fails here, before any data work
    workspace = prepare_workspace(config.workspace)
    data = load_dataset(
        config.data,
        val_size=config.val_size,
        limit_train=config.limit_train,
        limit_test=config.limit_test,
        seed=config.seed,
        image_size=config.image_size,
        labels=config.labels,
        quiet=config.quiet,
    )
    torch.manual_seed(config.seed)
    channels, side, _ = data.image_shape
    model = create_model(
        config.model, num_classes=len(data.classes), in_channels=channels, image_size=side
    )
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = build_optimizer(
        config.optimizer,
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    loaders = _make_loaders(config, data, device)
    info = {
        "device": str(device),
        "precision": precision,
        "parameters": count_parameters(model),
        "classes": list(data.classes),
        "data_source": data.source,
        "train_images": len(data.train),
        "val_images": len(data.val) if data.val else 0,
        "test_images": len(data.test),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }

    store = ResultsStore(workspace / "runs.db")
    run_id = store.new_run_id(f"{config.model}-{config.hash()[:8]}")
    run_dir = workspace / run_id
    record = config.model_dump(exclude={"workspace", "quiet"})
    store.create_run(run_id, config.short_name(), record, config.hash())
    callbacks = [
        StoreEpochs(store, run_id),
        Checkpointer(run_dir, {"run_id": run_id, "config": record}),
    ]
    if not config.quiet:
        callbacks.append(ProgressBar(config.epochs))
    trainer = Trainer(
        model, optimizer, loaders["train"], {k: v for k, v in loaders.items() if k != "train"},
        device=device, precision=precision, callbacks=callbacks,
    )  # fmt: skip
    status, error = "completed", None
    try:
        trainer.fit(config.epochs)
    except Diverged as err:
        status, error = "diverged", str(err)
    except BaseException as err:  # recorded as failed, never left "running"; then re-raised
        message = "interrupted" if isinstance(err, KeyboardInterrupt) else _one_line(err)
        store.finish_run(run_id, "failed", summarize(trainer), error=message, info=info)
        store.close()
        raise
    summary = summarize(trainer)
    store.finish_run(run_id, status, summary, error=error, info=info)
    store.close()
    return RunResult(run_id, status, config, trainer.history, summary, run_dir, error, info)


def summarize(trainer: Trainer) -> dict[str, Any]:
    """Model selection on validation accuracy: the test set is reported, never used to pick."""
    history = trainer.history
    summary: dict[str, Any] = {"epochs_done": len(history), "train_seconds": trainer.train_seconds}
    if not history:
        return summary
    last = history[-1]
    has_val = "val_acc" in last
    best = max(history, key=lambda m: m["val_acc"]) if has_val else last
    summary.update(
        best_epoch=best["epoch"],
        best_val_acc=best.get("val_acc"),
        test_acc=best["test_acc"],
        final_val_acc=last.get("val_acc"),
        final_test_acc=last["test_acc"],
        final_train_acc=last["train_acc"],
        images_per_sec=sum(m["images_per_sec"] for m in history) / len(history),
    )
    return summary


def prepare_workspace(path: str | os.PathLike) -> Path:
    """Create the workspace folder and prove it is writable, or say how to fix it."""
    workspace = Path(path).expanduser()
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        probe = workspace / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CifarlabError(
            f"workspace {str(workspace)!r} is not writable ({err.strerror or err}); "
            "pass --workspace DIR with a folder you can write to"
        ) from None
    return workspace


def _make_loaders(config: RunConfig, data, device: torch.device) -> dict[str, TensorLoader]:
    mean_uint8 = (torch.tensor(data.mean) * 255).round().to(torch.uint8)
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=config.channels_last)
    loaders = {
        "train": TensorLoader(
            data.train, config.batch_size, shuffle=True, seed=config.seed,
            augment=build_augment(
                config.augment, mean_uint8, config.crop_pad, config.cutout, config.seed
            ),
            **common,
        ),
    }  # fmt: skip
    if data.val is not None:
        loaders["val"] = TensorLoader(data.val, EVAL_BATCH_SIZE, **common)
    loaders["test"] = TensorLoader(data.test, EVAL_BATCH_SIZE, **common)
    return loaders


def _one_line(err: BaseException) -> str:
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}{where}"
