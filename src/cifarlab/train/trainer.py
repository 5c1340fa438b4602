"""The training loop. It only trains and evaluates; everything else is a callback."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.data.loader import TensorLoader
from cifarlab.distributed import (
    ONE_PROCESS,
    World,
    all_sum,
    average_gradients,
    gathered,
    rank_0_weights,
    seed_generators,
    sum_in_place,
)
from cifarlab.process import signals_held
from cifarlab.train.cpu_share import CpuShareMeter
from cifarlab.train.ema import EMA
from cifarlab.train.precision import autocast
from cifarlab.train.schedule import LrFactor
from cifarlab.train.tta import tta_logits


class Diverged(Exception):
    """The loss became non-finite or exploded; the run cannot recover."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(
            f"loss diverged to {loss:.4g} at epoch {epoch}, step {step}; "
            "lower --lr, or add --grad-clip 1.0"
        )
        self.epoch, self.step, self.loss = epoch, step, loss


class Evaluation(NamedTuple):
    loss: float  # mean cross-entropy
    acc: float
    predictions: dict[str, torch.Tensor]  # per image, in order: "preds", "confidence" (CPU)


class Callback:
    """Hooks into the loop; override what you need. ``trainer`` gives access to all state."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor, correct: torch.Tensor, n: int): ...
    def on_eval_start(self, trainer: Trainer, split: str, images: int) -> None: ...
    def on_eval_batch_end(self, trainer: Trainer, n: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Trains ``model`` on ``train_loader`` and evaluates on each of ``eval_loaders``.

    ``eval_loaders`` maps a prefix (``val``, ``test``) to a loader; each epoch's
    metrics hold ``{prefix}_loss`` and ``{prefix}_acc`` for each. Everything a
    resumed run needs is in ``state_dict()``.
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
        lr_factor: LrFactor = lambda step: 1.0,
        label_smoothing: float = 0.0,
        grad_clip: float | None = None,
        ema: EMA | None = None,
        compiled: nn.Module | None = None,
        tta: int = 0,
        eval_every: int = 1,
        callbacks: list[Callback] | None = None,
        world: World = ONE_PROCESS,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.forward = compiled or model  # torch.compile'd or eager; shares weights with model
        self.train_loader, self.eval_loaders = train_loader, eval_loaders
        self.device, self.precision = device, precision
        self.lr_factor, self.label_smoothing, self.grad_clip = lr_factor, label_smoothing, grad_clip
        self.ema = ema
        self.tta = tta  # test-time augmentation level, used at the final evaluation only
        self.eval_every = eval_every  # score val and test every Nth epoch and the last
        # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 doesn't.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.callbacks = callbacks or []
        self.world = world  # the ranks this run is spread over (torchrun); one process: 1
        self.rank_rng: list[dict[str, Any]] = []  # every rank's generators, for a checkpoint
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.first_loss: float | None = None
        self.train_seconds = 0.0  # training + evaluation wall time, one-time setup excluded
        self.should_stop = False  # set by a callback (early stopping) to end after this epoch
        # the last epoch's test predictions, checkpointed with its weights: the report shows
        # what the run predicted, not a rescoring that another device or kernel could change
        self.test_predictions: dict[str, torch.Tensor] | None = None
        # On a GPU every .item() is a sync, so look every 16 steps there (and at each epoch's
        # end); on the CPU it is free.
        self.divergence_check_every = 16 if device.type == "cuda" else 1

    def fit(self, epochs: int) -> list[dict[str, Any]]:
        self._emit("on_fit_start")
        while self.epoch < epochs and not self.should_stop:
            self._emit("on_epoch_start", self.epoch)
            metrics = self.train_epoch(self.epoch)
            self._score(metrics, last=self.epoch == epochs - 1)
            self.train_seconds += metrics["epoch_seconds"] + metrics["eval_seconds"]
            # a stop waits for the epoch's bookkeeping: its row and checkpoint go together
            if self.world.spread:  # a collective: every rank, before rank 0 checkpoints
                self.rank_rng = gathered(self.world, self._rng_states())
            with signals_held():
                self.history.append(metrics)
                self.epoch += 1
                self._emit("on_epoch_end", self.epoch - 1, metrics)
        self._emit("on_fit_end")
        return self.history

    def _score(self, metrics: dict[str, Any], last: bool) -> None:
        """Add each eval split's loss and accuracy to the epoch's ``metrics``: every
        ``eval_every``-th epoch and the last, since scoring is a pass over val and test."""
        start = time.perf_counter()
        scored = self.eval_loaders if last or (self.epoch + 1) % self.eval_every == 0 else {}
        if not scored:  # a checkpoint's predictions must be those of its weights
            self.test_predictions = None
        for prefix, loader in scored.items():
            # TTA (2-6 forwards) on the last test scoring only: validation scores every epoch
            # alike, or selection would favour the last epoch for its augmentation
            tta = self.tta if last and prefix == "test" else 0
            self._emit("on_eval_start", prefix, loader.num_images)
            result = self.evaluate(loader, tta)
            metrics[f"{prefix}_loss"], metrics[f"{prefix}_acc"] = result.loss, result.acc
            if prefix == "test":
                self.test_predictions = result.predictions
        metrics["eval_seconds"] = time.perf_counter() - start
        if "val_acc" in metrics:
            metrics["gap"] = metrics["train_acc"] - metrics["val_acc"]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, lrs = 0, []
        cpu_share = CpuShareMeter()  # what other work took of our CPUs: it explains a slow epoch
        start = time.perf_counter()
        for x, y in self.train_loader:
            x, y = self.world.share(x, y)  # every rank drew this batch: its slice
            if not len(y):  # a last batch of fewer images than ranks
                continue
            lrs.append(self._set_lr())
            logits, loss = self._train_step(x, y)
            batch_correct = (logits.argmax(1) == y).sum()
            loss_sum += loss.detach() * len(y)
            correct += batch_correct
            seen += len(y)
            self._emit("on_batch_end", loss.detach(), batch_correct, len(y))
        # .item() waits for the GPU's queued steps, so the clock is read after them
        totals = all_sum(self.world, loss_sum, correct, torch.tensor(seen, device=self.device))
        loss_sum, correct, seen = (t.item() for t in totals)
        train_loss, train_acc, seen = loss_sum / seen, correct / seen, int(seen)
        seconds = time.perf_counter() - start
        self._check_loss(train_loss)  # the per-step look skips steps on a GPU: not the mean
        return {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            # the epoch's mean, as schedules move per batch; exact where the lr stood still
            # (a running sum gave 0.0010000000000000007 for 0.001)
            "lr": lrs[0] if len(set(lrs)) == 1 else statistics.fmean(lrs) if lrs else 0.0,
            "epoch_seconds": seconds,
            "images_per_sec": seen / seconds,
            **cpu_share.stop(),
        }

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch, at the lr ``_set_lr`` set: its logits and fp32 loss."""
        with autocast(self.precision, self.device):
            logits = self.forward(x)
        # the loss in fp32 even under autocast
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients(self.world, self.model.parameters())
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        self._check_divergence(loss)
        return logits, loss

    @torch.no_grad()
    def evaluate(self, loader: TensorLoader, tta: int = 0) -> Evaluation:
        """Mean cross-entropy, accuracy and per-image predictions on ``loader``.

        With the EMA weights when enabled.
        """
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        rank_0_weights(self.world, model)  # BatchNorm's statistics: those rank 0 checkpoints
        n = loader.num_images
        loss_sum = torch.zeros((), device=self.device)
        pred = torch.zeros(n, dtype=torch.long, device=self.device)
        confidence = torch.zeros(n, device=self.device)
        start = 0
        for batch, (x, y) in enumerate(loader):
            rows = slice(start, start + len(y))
            start += len(y)
            if self.world.takes(batch):  # spread runs: the ranks take turns
                with autocast(self.precision, self.device):
                    logits = tta_logits(model, x, tta).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                confidence[rows], pred[rows] = torch.softmax(logits, dim=1).max(dim=1)
            self._emit("on_eval_batch_end", len(y))
        sum_in_place(self.world, [loss_sum, pred, confidence])  # zeros where another rank scored
        return Evaluation(
            loss=loss_sum.item() / n,
            acc=(pred == loader.labels[:n]).sum().item() / n,
            predictions={"preds": pred.cpu(), "confidence": confidence.cpu()},
        )

    def _set_lr(self) -> float:
        factor = self.lr_factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def _check_divergence(self, loss: torch.Tensor) -> None:
        if self.step != 1 and self.step % self.divergence_check_every:
            return  # the first step always: it sets the reference
        if not self.world.spread:  # the step's hot path: no collective to stage
            self._check_loss(loss.item())
            return
        (total,) = all_sum(self.world, loss)  # all ranks judge alike, or one stops alone
        self._check_loss(total.item() / self.world.size)

    def _check_loss(self, value: float) -> None:
        if self.first_loss is None:
            self.first_loss = value
        if not math.isfinite(value) or value > 10 * max(self.first_loss, 1e-3):
            raise Diverged(self.epoch + 1, self.step, value)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this epoch ended."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "first_loss": self.first_loss,
            "train_seconds": self.train_seconds,
            "history": self.history,
            "test_predictions": self.test_predictions,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng_cpu": torch.get_rng_state(),
            # the training GPU's generator only: a CPU run leaves CUDA alone (reading it starts
            # CUDA), and a run resumes where fewer GPUs are visible than where it trained
            "rng_cuda": [torch.cuda.get_rng_state(self.device)]
            if self.device.type == "cuda"
            else [],
            "rng_ranks": self.rank_rng,  # spread runs: each rank's, for dropout on resume
            "callbacks": {
                type(cb).__name__: cb.state_dict()
                for cb in self.callbacks
                if hasattr(cb, "state_dict")
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.first_loss, self.train_seconds = state["first_loss"], state["train_seconds"]
        self.history = list(state["history"])
        for cb in self.callbacks:
            if type(cb).__name__ in state.get("callbacks", {}):
                cb.load_state_dict(state["callbacks"][type(cb).__name__])
        self._restore_rng(state)

    def _restore_rng(self, state: dict[str, Any]) -> None:
        # a checkpoint loaded onto a GPU brings its RNG states there; torch takes them on the CPU
        ranks = state.get("rng_ranks") or []
        if len(ranks) == self.world.size:  # resumed over as many ranks: each takes its own
            self._set_rng_states(ranks[self.world.rank])
            return
        torch.set_rng_state(state["rng_cpu"].cpu())
        states = state["rng_cuda"]  # before 2026-11-29: one per visible GPU, of any run
        if states and self.device.type == "cuda":
            index = self.device.index or 0
            state = states[index] if index < len(states) else states[0]
            torch.cuda.set_rng_state(state.cpu(), self.device)
        if self.world.rank:  # resumed over another number of ranks: masks unlike rank 0's
            seed_generators(self.step, self.device, self.world.rank)

    def _rng_states(self) -> dict[str, torch.Tensor | None]:
        on_gpu = self.device.type == "cuda"
        return {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if on_gpu else None,
        }

    def _set_rng_states(self, states: dict[str, torch.Tensor | None]) -> None:
        torch.set_rng_state(states["cpu"].cpu())
        if states["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"].cpu(), self.device)

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)
