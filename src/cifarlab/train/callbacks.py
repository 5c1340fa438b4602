"""Callbacks that hook into the Trainer: progress, checkpoints, results, early stopping,
and a warning when other work slowed the run."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cifarlab.errors import BusyMachineWarning, bar_disabled, warn
from cifarlab.experiments.store import ResultsStore
from cifarlab.files import leftover_temp_files
from cifarlab.train.checkpoint import save_checkpoint
from cifarlab.train.cpu_share import allowed_cpus, cores_taken
from cifarlab.train.selection import is_better
from cifarlab.train.trainer import Callback, Trainer


class ProgressBar(Callback):
    """A bar per epoch (loss, accuracy, images/s, ETA), one per evaluation (scoring 15,000
    images after a short epoch can take longer than the epoch), and one line per epoch."""

    def __init__(self, epochs: int, refresh_seconds: float = 0.25, label: str = "") -> None:
        self.epochs, self.refresh_seconds = epochs, refresh_seconds
        self.label = label  # the run's id: a sweep's lines say which run they are
        self.bar: tqdm | None = None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.epoch = epoch
        self.bar = self._new_bar(trainer.train_loader.num_images, "")
        self.loss_sum = self.correct = self.seen = self.pending = 0
        self.last_refresh = time.perf_counter()

    def _new_bar(self, images: int, what: str) -> tqdm:
        return tqdm(
            total=images,
            desc=f"epoch {self.epoch + 1}/{self.epochs}{what}",
            unit="img",
            unit_scale=True,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=bar_disabled(),
        )

    def _close(self) -> None:
        # what the last refresh left out: a notebook's bar stays in its cell, at 99% without
        self.bar.update(self.pending)
        self.bar.close()

    def on_eval_start(self, trainer: Trainer, split: str, images: int) -> None:
        self._close()  # the epoch's bar, or the evaluation before: one bar at a time
        self.bar = self._new_bar(images, f", scoring {split}")
        self.pending, self.last_refresh = 0, time.perf_counter()

    def on_eval_batch_end(self, trainer: Trainer, n: int) -> None:
        if self.bar is None:  # trainer.evaluate() called before any epoch: no bar to feed
            return
        self.pending += n
        now = time.perf_counter()
        if now - self.last_refresh >= self.refresh_seconds:  # no tensor reads: no GPU sync
            self.bar.update(self.pending)
            self.pending, self.last_refresh = 0, now

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor, correct: torch.Tensor, n: int):
        if self.bar.disable:  # a log file: no bar to feed, so no tensor reads (GPU syncs)
            return
        self.pending += n * trainer.world.size  # a spread run's ranks train alike: all of them
        now = time.perf_counter()
        if now - self.last_refresh < self.refresh_seconds:
            return  # reading the tensors syncs a GPU: do it a few times a second only
        self.loss_sum += loss.item() * n
        self.correct += correct.item()
        self.seen += n
        self.bar.set_postfix(
            loss=f"{self.loss_sum / self.seen:.3f}", acc=f"{self.correct / self.seen:.3f}"
        )
        self.bar.update(self.pending)
        self.pending, self.last_refresh = 0, now

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self._close()
        parts = [f"epoch {epoch + 1}/{self.epochs}", f"loss {metrics['train_loss']:.4f}"]
        parts = [self.label, *parts] if self.label else parts
        parts.append(f"train {metrics['train_acc']:.2%}")
        for prefix in trainer.eval_loaders:
            if f"{prefix}_acc" in metrics:  # not scored this epoch: --eval-every
                parts.append(f"{prefix} {metrics[f'{prefix}_acc']:.2%}")
        parts.append(f"lr {metrics['lr']:.3g}")
        parts.append(f"{metrics['images_per_sec']:,.0f} img/s")
        parts.append(f"{metrics['epoch_seconds']:.1f}s")
        scoring = metrics.get("eval_seconds", 0.0)
        if scoring >= 0.5:  # scoring with TTA can outlast the epoch: a log says where time went
            parts[-1] += f" + {scoring:.1f}s scoring"
        taken = cores_taken(metrics) or 0.0
        if taken >= 0.1:  # the epoch shared its CPUs: say so beside its speed
            parts.append(f"{taken:.1f} cores taken by other work")
        tqdm.write("  ".join(parts), file=sys.stderr)


class WarnWhenBusy(Callback):
    """Warns once per run when other processes or the hypervisor took at least ``share`` of
    the CPUs during a training epoch: its images/s then say more about the neighbours."""

    def __init__(self, share: float = 0.25, min_seconds: float = 5.0) -> None:
        self.share = share
        self.min_seconds = min_seconds  # a shorter epoch has too few clock ticks to judge
        self.warned = False

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        taken, cpus = cores_taken(metrics), allowed_cpus()
        if self.warned or taken is None or trainer.device.type != "cpu":
            return
        if metrics["epoch_seconds"] < self.min_seconds or taken < self.share * cpus:
            return
        self.warned = True
        others, steal = metrics["others_cpu"], metrics["steal_cpu"]
        warn(
            f"other work took {taken:.1f} of the {cpus} CPU cores during epoch "
            f"{epoch + 1} ({others:.1f} other processes, {steal:.1f} the hypervisor), so "
            "training ran slower than it can; close other programs for full speed and "
            "compare timings of quiet runs only",
            BusyMachineWarning,
        )


class Checkpointer(Callback):
    """Writes ``last.pt`` after every epoch and ``best.pt`` when validation improves."""

    def __init__(self, run_dir: Path, meta: dict[str, Any], select_by: str = "val_acc") -> None:
        self.run_dir, self.meta, self.select_by = run_dir, meta, select_by
        self.best: float | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        for metrics in trainer.history:  # a resumed run: only a better epoch replaces best.pt
            self._improves(metrics)
        # a checkpoint write cut short by `kill -9` left its temp file; this process owns
        # the run now (runner: no two processes train one run), so none is in progress
        for leftover in leftover_temp_files(self.run_dir, "*.pt"):
            leftover.unlink(missing_ok=True)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        state = {**self.meta, **trainer.state_dict()}
        if self._improves(metrics):
            save_checkpoint(self.run_dir / "best.pt", state)
        save_checkpoint(self.run_dir / "last.pt", state)

    def _improves(self, metrics: dict[str, Any]) -> bool:
        score = metrics.get(self.select_by)
        if score is None or not is_better(self.select_by, score, self.best):
            return False
        self.best = score
        return True


class StoreEpochs(Callback):
    """Appends one row per finished epoch to the results database."""

    def __init__(self, store: ResultsStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self.store.add_epoch(self.run_id, epoch + 1, metrics)


class EarlyStopping(Callback):
    """Stops training when the validation metric has not improved for ``patience`` epochs."""

    def __init__(self, patience: int, select_by: str = "val_acc") -> None:
        self.patience, self.select_by = patience, select_by
        self.best: float | None = None
        self.stale = 0
        self.stopped_at: int | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        for metrics in trainer.history:  # a resumed run replays what it had seen ...
            self._observe(metrics)
        if trainer.history and self.stale >= self.patience:  # ... and stops where it stopped
            trainer.should_stop = True
            self.stopped_at = len(trainer.history)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self._observe(metrics)
        if self.stale >= self.patience:
            trainer.should_stop = True
            self.stopped_at = epoch + 1

    def _observe(self, metrics: dict[str, Any]) -> None:
        if metrics.get(self.select_by) is None:  # not scored this epoch: --eval-every
            return
        if is_better(self.select_by, metrics[self.select_by], self.best):
            self.best, self.stale = metrics[self.select_by], 0
        else:
            self.stale += 1


class TensorBoardLogger(Callback):
    """Writes every epoch metric as a scalar (needs the ``tensorboard`` package)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, epoch + 1)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.writer.close()
