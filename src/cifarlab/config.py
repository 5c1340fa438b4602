"""RunConfig: every setting of one training run, validated, frozen and hashable."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cifarlab.errors import CifarlabError

OPTIMIZERS = ("sgd", "adam")
# crop: reflect-padded random crop; translate: the same with zero fill; alt-flip: airbench's
# alternating flip (each image flipped on every other epoch); cutout: one square per image.
AUGMENTATIONS = ("none", "flip", "crop-flip", "crop-flip-cutout", "alt-flip", "crop-alt-flip",
                 "translate-flip", "translate-alt-flip", "translate-alt-flip-cutout")  # fmt: skip
LABELS = ("fine", "coarse")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Fields that do not change what a run computes: they are left out of its hash.
_NOT_HASHED = {"workspace", "quiet", "device"}


class RunConfig(BaseModel):
    """One training run. Field names are the CLI's option names with underscores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "tutorial"
    data: str | None = None
    optimizer: str = "sgd"
    lr: float = Field(0.001, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, gt=0)
    epochs: int = Field(10, gt=0)
    val_size: int = Field(5000, ge=0)
    limit_train: int | None = Field(None, gt=0)
    limit_test: int | None = Field(None, gt=0)
    augment: str = "crop-flip"
    crop_pad: int = Field(4, ge=0)
    cutout: int | None = Field(None, gt=0)
    labels: str = "fine"
    image_size: int | None = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    precision: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    workspace: str = "cifarlab-runs"
    quiet: bool = False

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        return _one_of("optimizer", v.lower(), OPTIMIZERS)

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, v: str) -> str:
        return _one_of("augment", v.lower(), AUGMENTATIONS)

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, v: str) -> str:
        return _one_of("labels", v.lower(), LABELS)

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, v: str) -> str:
        return _one_of("precision", v.lower(), PRECISIONS)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v != "auto" and v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N (got {v!r})")
        return v

    def hash(self) -> str:
        """A short hex digest of the settings that change results; it names the run."""
        fields = {k: v for k, v in self.model_dump().items() if k not in _NOT_HASHED}
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def short_name(self) -> str:
        """A readable label such as ``tutorial-sgd-lr0.001-bs64``."""
        return f"{self.model}-{self.optimizer}-lr{self.lr:g}-bs{self.batch_size}"


def _one_of(field: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {field} {value!r}; choose one of {', '.join(choices)}")
    return value


def make_run_config(**options: Any) -> RunConfig:
    """Build a RunConfig, turning validation errors into one CifarlabError line.

    The message names the option as the CLI spells it (``--batch-size``), so the
    same text serves the command line and the Python API.
    """
    try:
        return RunConfig(**options)
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
        raise CifarlabError("; ".join(problems)) from None


def _describe(error: dict[str, Any]) -> str:
    name = ".".join(str(p) for p in error["loc"]) or "config"
    flag = "--" + name.replace("_", "-")
    if error["type"] == "extra_forbidden":
        return f"unknown option {flag}; see `cifarlab train --help` for the options"
    message = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    return f"invalid {flag}: {message} (got {got!r})"


Precision = Literal["fp32", "bf16", "fp16"]
