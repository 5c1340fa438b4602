"""Model selection and overfitting, read off the validation curve (never the test curve)."""

from __future__ import annotations

from typing import Any


def is_better(select_by: str, new: float, best: float | None) -> bool:
    """Higher accuracy or lower loss wins; ties keep the earlier epoch."""
    if best is None:
        return True
    return new < best if select_by.endswith("loss") else new > best


def best_epoch(history: list[dict[str, Any]], select_by: str = "val_acc") -> dict[str, Any]:
    """The epoch with the best validation metric; the last epoch when there is no validation."""
    best = None
    for metrics in history:
        if metrics.get(select_by) is None:
            return history[-1]
        if best is None or is_better(select_by, metrics[select_by], best[select_by]):
            best = metrics
    return best


def overfit_onset(history: list[dict[str, Any]], patience: int) -> int | None:
    """The epoch where validation loss bottomed out before overfitting set in.

    Overfitting: for ``patience`` epochs after that minimum the validation loss
    rose every epoch while the training loss kept falling. None if never.
    """
    val = [m.get("val_loss") for m in history]
    train = [m["train_loss"] for m in history]
    if None in val:
        return None
    for low in range(len(history) - patience):
        after = range(low + 1, low + 1 + patience)
        rising = all(val[i] > val[i - 1] for i in after)
        learning = all(train[i] < train[i - 1] for i in after)
        if rising and learning and val[low] == min(val[: low + 1]):
            return history[low]["epoch"]
    return None
