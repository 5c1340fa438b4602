"""The training loop. It only trains and evaluates; everything else is a callback."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.data.loader import TensorLoader
from cifarlab.train.precision import autocast


class Diverged(Exception):
    """The loss became non-finite or exploded; the run cannot recover."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"loss diverged to {loss:.4g} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.loss = epoch, step, loss


class Callback:
    """Hooks into the loop; override what you need. ``trainer`` gives access to all state."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor, correct: torch.Tensor, n: int): ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Trains ``model`` on ``train_loader`` and evaluates on each of ``eval_loaders``.

    ``eval_loaders`` maps a prefix (``val``, ``test``) to a loader; each epoch's
    metrics hold ``{prefix}_loss`` and ``{prefix}_acc`` for each of them.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: TensorLoader,
        eval_loaders: dict[str, TensorLoader],
        *,
        device: torch.device,
        precision: str = "fp32",
        callbacks: list[Callback] | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.train_loader, self.eval_loaders = train_loader, eval_loaders
        self.device, self.precision = device, precision
        self.callbacks = callbacks or []
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0
        self.first_loss: float | None = None
        self.train_seconds = 0.0  # training + evaluation wall time, one-time setup excluded

    def fit(self, epochs: int) -> list[dict[str, Any]]:
        self._emit("on_fit_start")
        for epoch in range(self.epoch, epochs):
            self.epoch = epoch
            self._emit("on_epoch_start", epoch)
            metrics = self.train_epoch(epoch)
            start = time.perf_counter()
            for prefix, loader in self.eval_loaders.items():
                loss, acc = self.evaluate(loader)
                metrics[f"{prefix}_loss"], metrics[f"{prefix}_acc"] = loss, acc
            metrics["eval_seconds"] = time.perf_counter() - start
            self.train_seconds += metrics["epoch_seconds"] + metrics["eval_seconds"]
            self.history.append(metrics)
            self.epoch = epoch + 1
            self._emit("on_epoch_end", epoch, metrics)
        self._emit("on_fit_end")
        return self.history

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        for x, y in self.train_loader:
            with autocast(self.precision, self.device):
                logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y)  # loss in fp32 even under autocast
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self._check_divergence(loss)
            batch_correct = (logits.argmax(1) == y).sum()
            loss_sum += loss.detach() * len(y)
            correct += batch_correct
            seen += len(y)
            self._emit("on_batch_end", loss.detach(), batch_correct, len(y))
        seconds = time.perf_counter() - start
        return {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "lr": lr,
            "epoch_seconds": seconds,
            "images_per_sec": seen / seconds,
        }

    @torch.no_grad()
    def evaluate(self, loader: TensorLoader) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the model on ``loader``."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for x, y in loader:
            with autocast(self.precision, self.device):
                logits = self.model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = loader.num_images
        return loss_sum.item() / n, correct.item() / n

    def _check_divergence(self, loss: torch.Tensor) -> None:
        # On a GPU every .item() is a sync, so look every 16 steps there; on CPU it is free.
        if self.device.type == "cuda" and self.step % 16:
            return
        value = loss.item()
        if self.first_loss is None:
            self.first_loss = value
        if not math.isfinite(value) or value > 10 * max(self.first_loss, 1e-3):
            raise Diverged(self.epoch + 1, self.step, value)

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)
