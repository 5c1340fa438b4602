"""Checkpoints: plain state dicts and primitives, written atomically, loaded safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cifarlab.errors import CifarlabError, first_line
from cifarlab.files import written_atomically
from cifarlab.process import signals_held

CHECKPOINT_FORMAT = "cifarlab-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` via a temp file + rename: never a half-written file.

    Tensors are written as CPU tensors, so a run trained on a GPU loads with a plain
    ``torch.load`` on a machine without one (a resume maps them back to its device).
    """
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **_on_cpu(state)}
    # Ctrl-C inside torch.save breaks its writer: the stop waits for the write and rename
    with signals_held(), written_atomically(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def _on_cpu(value: Any) -> Any:
    """``value`` with every tensor inside its dicts, lists and tuples moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):  # a state_dict's OrderedDict keeps its class and _metadata
        moved = type(value)((k, _on_cpu(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            moved._metadata = value._metadata
        return moved
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(v) for v in value)
    return value


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a cifarlab checkpoint with ``weights_only=True`` (no arbitrary code runs)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CifarlabError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # garbage raises what it happens to trip: IndexError, too
        reason = first_line(err).split(". ")[0][:120]  # torch's advice after it is not ours
        raise CifarlabError(
            f"checkpoint {path} cannot be loaded safely ({reason}): it is truncated, corrupt "
            "or not a cifarlab checkpoint; delete it, or put a good copy in its place"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CifarlabError(f"{path} is not a cifarlab checkpoint")
    return state
