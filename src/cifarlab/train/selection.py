"""Model selection and overfitting, read off the validation curve (never the test curve)."""

from __future__ import annotations

from typing import Any


def is_better(select_by: str, new: float, best: float | None) -> bool:
    """Higher accuracy or lower loss wins; ties keep the earlier epoch."""
    if best is None:
        return True
    return new < best if select_by.endswith("loss") else new > best


def best_epoch(history: list[dict[str, Any]], select_by: str = "val_acc") -> dict[str, Any]:
    """The scored epoch with the best validation metric; the last epoch when there is no
    validation. Epochs that ``--eval-every`` did not score have no say."""
    best = None
    for metrics in scored(history, select_by):
        if best is None or is_better(select_by, metrics[select_by], best[select_by]):
            best = metrics
    return best or history[-1]


def scored(history: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The epochs that carry ``metric`` (with ``--eval-every``, not all do)."""
    return [m for m in history if m.get(metric) is not None]


def overfit_onset(history: list[dict[str, Any]], patience: int) -> int | None:
    """The epoch where validation loss bottomed out before overfitting set in.

    Overfitting: for ``patience`` scored epochs after that minimum the validation loss
    rose every time while the training loss kept falling. None if never.
    """
    history = scored(history, "val_loss")
    val = [m["val_loss"] for m in history]
    train = [m["train_loss"] for m in history]
    for low in range(len(history) - patience):
        after = range(low + 1, low + 1 + patience)
        rising = all(val[i] > val[i - 1] for i in after)
        learning = all(train[i] < train[i - 1] for i in after)
        if rising and learning and val[low] == min(val[: low + 1]):
            return history[low]["epoch"]
    return None
