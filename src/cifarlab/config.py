"""RunConfig: every setting of one training run, validated, frozen and hashable."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cifarlab.errors import CifarlabError, suggest
from cifarlab.experiments.store import WORKSPACE
from cifarlab.model_files import model_file_digest, model_source
from cifarlab.train_presets import TRAIN_PRESETS, expand_preset

OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = (
    "constant",
    "step",
    "multistep",
    "cosine",
    "onecycle",
    "warmup-linear",
    "warmup-cosine",
    "triangular",
)
SELECT_BY = ("val_acc", "val_loss")
# crop: reflect-padded random crop; translate: the same with zero fill; alt-flip: airbench's
# alternating flip (each image flipped on every other epoch); cutout: one square per image.
AUGMENTATIONS = ("none", "flip", "crop-flip", "crop-flip-cutout", "alt-flip", "crop-alt-flip",
                 "translate-flip", "translate-alt-flip", "translate-alt-flip-cutout")  # fmt: skip
LABELS = ("fine", "coarse")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_SEED = 2**32 - 1
STORED = {"stored": True}  # validation context of a run's record: checks added since it ran pass

# How a command runs, not what a run is: never recorded with a run, nor keys of experiments.
SESSION_FIELDS = frozenset({"workspace", "quiet", "resume"})
# Fields that do not change what a run computes: they are left out of its hash.
NOT_HASHED = SESSION_FIELDS | {"device", "tensorboard", "preset"}


class RunConfig(BaseModel):
    """One training run. Field names are the CLI's option names with underscores."""

    # allow_inf_nan: --lr inf passed gt=0 and trained to a certain divergence
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    preset: str | None = None
    model: str = "tutorial"
    data: str | None = Field(None, validate_default=True)  # None: $CIFARLAB_DATA, see below
    optimizer: str = "sgd"
    lr: float = Field(0.001, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    decay_norm_bias: bool = True
    schedule: str = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, gt=0)
    milestones: tuple[int, ...] = ()
    gamma: float = Field(0.1, gt=0)
    max_lr: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    ema: float | None = Field(None, gt=0, lt=1)
    norm_lr_scale: float = Field(1.0, gt=0)
    whiten: bool = False
    whiten_bias_epochs: int | None = Field(None, ge=0)
    lookahead: bool = False
    tta: int = Field(0, ge=0, le=2)
    batch_size: int = Field(64, gt=0)
    drop_last: bool = False
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
    compile: bool = False
    deterministic: bool = False
    select_by: str = "val_acc"
    early_stop: int | None = Field(None, gt=0)
    eval_every: int = Field(1, gt=0)
    patience: int = Field(3, gt=0)
    device: str = "auto"
    workspace: str = WORKSPACE
    resume: str | None = None
    quiet: bool = False
    tensorboard: bool = False

    @field_validator("data", "workspace", mode="before")
    @classmethod
    def _paths_as_text(cls, v: Any) -> Any:
        """A ``pathlib.Path`` from Python is as good as the string a CLI flag gives."""
        return os.fspath(v) if isinstance(v, os.PathLike) else v

    @field_validator("data")
    @classmethod
    def _data_path_absolute(cls, v: str | None) -> str | None:
        """An existing path is kept absolute: ``tiny``, ``./tiny`` and ``/home/me/tiny`` are
        one dataset, and a run resumed from another folder still finds it. No data given
        means ``$CIFARLAB_DATA`` where it is set, recorded as if given: runs on two datasets
        were one run, and a report scored a run on whatever the variable held then."""
        if v is None:
            v = os.environ.get("CIFARLAB_DATA") or None  # else None: the cifar10 download
        if v is not None and Path(v).expanduser().exists():
            return os.path.abspath(Path(v).expanduser())
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_is_a_reference(cls, v: Any) -> Any:
        """A path names its file; a built net or a spec object cannot be recorded or rerun."""
        if isinstance(v, os.PathLike):  # a pathlib.Path from Python, as good as a CLI string
            return os.fspath(v)
        if not isinstance(v, str):
            raise ValueError(
                f"a model name, spec.toml or file.py:Class, not a {type(v).__name__} object "
                "(cifarlab.register_model names your class)"
            )
        return v

    @field_validator("model")
    @classmethod
    def _model_file_absolute(cls, v: str) -> str:
        """A model file is kept absolute, as data is: one file is one model, and the run's
        checkpoint rebuilds it from any folder (README: "To classify images")."""
        source = model_source(v)
        if source is None or not source[0].expanduser().is_file():
            return v
        path = os.path.abspath(source[0].expanduser())
        return f"{path}:{source[1]}" if source[1] else path

    @field_validator("*", mode="before")
    @classmethod
    def _no_switch_for_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        """``ema=True`` is not a decay: pydantic reads True as 1 ("must be less than 1 (got
        True)") and ``epochs=True`` as one epoch."""
        annotation = cls.model_fields[info.field_name].annotation
        kinds = get_args(annotation) or (annotation,)
        if isinstance(v, bool) and bool not in kinds and {int, float} & set(kinds):
            raise ValueError("must be a number")
        return v

    @field_validator("resume", mode="before")
    @classmethod
    def _resume_true_is_auto(cls, v: Any) -> Any:
        """``resume=True`` from Python means what a bare ``--resume`` means."""
        if v is True:
            return "auto"
        return None if v is False else v

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        return _one_of("optimizer", v.lower(), OPTIMIZERS)

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            try:
                return expand_preset(data)
            except ValueError as err:
                raise ValueError(f"preset: {err}") from None
        return data

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        return _one_of("schedule", v.lower(), SCHEDULES)

    @field_validator("select_by")
    @classmethod
    def _known_select_by(cls, v: str) -> str:
        return _one_of("select_by", v.lower(), SELECT_BY)

    @field_validator("milestones", mode="before")
    @classmethod
    def _parse_milestones(cls, v: Any) -> Any:
        if isinstance(v, str):  # "30,60" from the command line
            try:
                return tuple(int(x) for x in v.split(",") if x.strip())
            except ValueError:
                raise ValueError("must be comma-separated epochs like 30,60") from None
        return v

    @field_validator("milestones")
    @classmethod
    def _sorted_milestones(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        """In order: 60,30 decays where 30,60 does, and is the same run (one hash)."""
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> RunConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: needs --optimizer sgd with --momentum > 0")
        if self.schedule == "onecycle" and self.max_lr is None:
            raise ValueError("schedule: onecycle needs --max-lr (its peak learning rate)")
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule: multistep needs --milestones, e.g. 30,60")
        if self._uses_warmup and self.warmup_epochs >= self.epochs:
            raise ValueError("warmup_epochs: must be less than --epochs")
        if self.schedule == "multistep" and min(self.milestones) < 1:
            given = ",".join(map(str, self.milestones))  # as typed: "0,3", not "(0, 3)"
            raise ValueError(f"milestones: must be epochs from 1 on (got {given})")
        if self.early_stop and self.val_size == 0:
            raise ValueError("early_stop: needs a validation split (--val-size > 0)")
        stored = bool(info.context and info.context.get("stored"))  # a run's record, as it ran
        if self.early_stop and self.tta and not stored:  # TTA scores the last epoch: unknown
            raise ValueError(
                "tta: augments the test scoring of the last of --epochs, which --early-stop may "
                "never reach; use one or the other (--tta 0 turns it off, as presets set it)"
            )
        return self

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

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, v: int, info: ValidationInfo) -> int:
        # bigger seeds overflowed torch's generators and SQLite's integers, with a traceback;
        # a run recorded before the limit still resumes and is still found
        if v > MAX_SEED and not (info.context and info.context.get("stored")):
            raise ValueError(f"must be {MAX_SEED} or less, numpy's seed range")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v == "mps":
            raise ValueError("Apple GPUs (mps) are not supported yet; use --device cpu")
        if v not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", v):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N (got {v!r})")
        return v

    @property
    def _uses_warmup(self) -> bool:
        return self.schedule.startswith("warmup") or self.schedule == "triangular"

    def unused_options(self) -> list[str]:
        """Options given that this run's other settings make ignore, one note each."""
        notes = []
        if self.max_lr is not None and self.schedule != "onecycle":
            notes.append(f"--max-lr is onecycle's peak; --schedule {self.schedule} ignores it")
        if self.milestones and self.schedule != "multistep":
            notes.append(f"--milestones are multistep's; --schedule {self.schedule} ignores them")
        # given and not at the default: a resumed run's stored config gives every field
        fields = type(self).model_fields
        given = {k for k in self.model_fields_set if getattr(self, k) != fields[k].default}
        if self.schedule.startswith("warmup") and not self.warmup_epochs:
            notes.append(f"--schedule {self.schedule} has no warm-up with --warmup-epochs 0 "
                         "(the default): give --warmup-epochs, e.g. 1")  # fmt: skip
        if self.warmup_epochs and not self._uses_warmup:
            notes.append(f"--warmup-epochs shapes the warmup-* and triangular schedules; "
                         f"--schedule {self.schedule} ignores it")  # fmt: skip
        for name in ("gamma", "step_size"):
            if name in given and self.schedule not in ("step", "multistep"):
                notes.append(f"--{name.replace('_', '-')} is step's and multistep's; "
                             f"--schedule {self.schedule} ignores it")  # fmt: skip
        if "momentum" in given and self.optimizer not in ("sgd", "rmsprop"):
            notes.append(f"--momentum is sgd's and rmsprop's; --optimizer {self.optimizer} "
                         "ignores it (adam's betas play its part)")  # fmt: skip
        if "lr" in given and self.schedule == "onecycle":
            notes.append("--schedule onecycle runs from --max-lr/25 up to --max-lr and down; "
                         "it ignores --lr")  # fmt: skip
        from_preset = TRAIN_PRESETS.get(self.preset or "", {}).get("whiten_bias_epochs")
        if self.whiten_bias_epochs not in (None, from_preset) and not self.whiten:
            notes.append("--whiten-bias-epochs freezes the whitening stem's bias; without "
                         "--whiten it is ignored")  # fmt: skip
        if self.select_by != "val_acc" and self.val_size == 0:
            notes.append(f"--select-by {self.select_by} needs a validation split; with "
                         "--val-size 0 the last epoch is reported")  # fmt: skip
        return notes

    def hash(self) -> str:
        """A short hex digest of the settings that change results; it names the run."""
        # Settings left at their defaults are left out, so adding a new option with a
        # default later keeps every earlier run's identity (and its sweep's skips). Like
        # any change of code, changing a default's value is not seen here.
        defaults = {name: f.default for name, f in type(self).model_fields.items()}
        fields = {
            k: v for k, v in self.model_dump().items() if k not in NOT_HASHED and v != defaults[k]
        }
        digest = model_file_digest(self.model)
        if digest is not None:  # an edited model file is a new run
            fields["model_file_sha256"] = digest
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def short_name(self) -> str:
        """A readable label such as ``tutorial-sgd-lr0.001-bs64``."""
        return f"{self.model}-{self.optimizer}-lr{self.lr:g}-bs{self.batch_size}"


def _one_of(field: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        hint = suggest(value, choices)
        raise ValueError(f"unknown {field} {value!r}; {hint}choose one of {', '.join(choices)}")
    return value


def make_run_config(**options: Any) -> RunConfig:
    """Build a RunConfig, turning validation errors into one CifarlabError line.

    The message names the option as the CLI spells it (``--batch-size``), so the
    same text serves the command line and the Python API.
    """
    return _validated(options, stored=False)


# what a run is (not how a command runs): the keys of experiments, and of --only filters
RUN_SETTINGS = tuple(k for k in RunConfig.model_fields if k not in SESSION_FIELDS)


def stored_run_config(**options: Any) -> RunConfig:
    """A recorded run's settings as a RunConfig: a check added since it ran (``--tta`` with
    ``--early-stop``) does not refuse them, which ``--resume`` could not act on."""
    return _validated(options, stored=True)


def _validated(options: dict[str, Any], stored: bool) -> RunConfig:
    fields = RunConfig.model_fields
    # None where a setting has a value by default means that default, as an option not
    # given does (workspace=None was "must be a valid string")
    options = {k: v for k, v in options.items()
               if v is not None or k not in fields or fields[k].default is None}  # fmt: skip
    try:
        return RunConfig.model_validate(options, context={"stored": stored})
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
        raise CifarlabError("; ".join(problems)) from None


def validation_message(error: dict[str, Any]) -> str:
    """A pydantic error's message as our validators wrote it (without "Value error, "), and
    pydantic's own ("Input should be greater than 0") as ours read ("must be ...")."""
    return error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")


def _describe(error: dict[str, Any]) -> str:
    name = ".".join(str(p) for p in error["loc"]) or "config"
    flag = "--" + name.replace("_", "-")
    if error["type"] == "extra_forbidden":  # from Python (the CLI's parser refuses its own)
        key = name.replace("-", "_")
        hint = f"write it {key}; " if key in RunConfig.model_fields else did_you_mean(name, str)
        return (
            f"unknown argument {name!r}; {hint}the arguments are `cifarlab train --help`'s "
            "options, spelled with underscores"
        )
    message = validation_message(error)
    if not error["loc"]:  # a cross-field check: its message starts with the field's name
        field, _, message = message.partition(": ")
        return f"invalid --{field.replace('_', '-')}: {message}"
    shown = repr(error.get("input"))
    if "\n" in shown or len(shown) > 80:  # a net's or a tensor's repr: one line says enough
        shown = f"a {type(error.get('input')).__name__}"
    said = isinstance(error.get("input"), str) and shown in message  # "unknown optimizer 'x'"
    got = "" if said else f" (got {shown})"
    return f"invalid {flag}: {message}{got}"


# the names other PyTorch tools use for our options
ALIASES = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "max_epochs": "epochs",
    "wd": "weight_decay",
}


def did_you_mean(option: str, show: Callable[[str], str] | None = None) -> str:
    """ "did you mean --batch-size? " for an option close to one of ours (``show=str``: as
    Python spells it, ``batch_size``); else ""."""
    show = show or _as_option
    key = option.lstrip("-").replace("-", "_")
    if key in ALIASES:
        return f"did you mean {show(ALIASES[key])}? "
    return suggest(key, RunConfig.model_fields, cutoff=0.75, show=show)


def _as_option(field: str) -> str:
    return "--" + field.replace("_", "-")
