"""Training: the loop, its callbacks, optimizers, precision and checkpoints."""

from cifarlab.train.trainer import Callback, Diverged, Trainer

__all__ = ["Callback", "Diverged", "Trainer"]
