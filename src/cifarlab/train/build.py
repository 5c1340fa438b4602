"""A run's parts from its RunConfig: the model, optimizer, schedule, EMA, loaders and
recipe callbacks, wired into a Trainer. The runner adds the bookkeeping callbacks."""

from __future__ import annotations

import numpy as np
import torch

from cifarlab.config import RunConfig
from cifarlab.data import CifarData, TensorLoader
from cifarlab.data.augment import build_augment
from cifarlab.distributed import ONE_PROCESS, World, rank_0_weights
from cifarlab.errors import CifarlabError
from cifarlab.models import create_model, init_whitening
from cifarlab.train.allocator import tune_cpu_allocator
from cifarlab.train.ema import EMA
from cifarlab.train.optim import build_optimizer
from cifarlab.train.precision import compute_dtype, cpu_supports_bf16
from cifarlab.train.recipe import FreezeStemBias, Lookahead
from cifarlab.train.schedule import build_schedule
from cifarlab.train.small_map_conv import use_matmul_weight_grad
from cifarlab.train.trainer import Trainer

EVAL_BATCH_SIZE = 1024  # evaluation needs no gradients, so big batches are cheap and fast


def build_trainer(
    config: RunConfig,
    data: CifarData,
    device: torch.device,
    precision: str,
    world: World = ONE_PROCESS,
) -> Trainer:
    """Model, optimizer, schedule, EMA, loaders and the recipe's callbacks (lookahead, stem
    bias freeze), wired into a Trainer; the run's bookkeeping callbacks come later (runner)."""
    if device.type == "cpu":
        tune_cpu_allocator()  # activations reused, not re-mapped: see train/allocator.py
    model = create_model(config.model, num_classes=len(data.classes), **data.model_shape)
    if config.whiten:
        try:
            init_whitening(model, whitening_sample(data, config.seed))
        except ValueError as err:
            raise CifarlabError(
                f"--whiten: model {config.model!r} has no whitening stem ({err}); "
                "use it with a speedrun net (speedrun, -small, -tiny), or pass --no-whiten"
            ) from None
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    rank_0_weights(world, model)  # spread runs start alike (built alike from the seed anyway)
    if device.type == "cpu" and precision == "bf16" and cpu_supports_bf16() and not config.compile:
        use_matmul_weight_grad(model)  # oneDNN is slow at dW on small maps: small_map_conv.py
    optimizer = build_optimizer(
        config.optimizer,
        model,
        lr=config.max_lr if config.schedule == "onecycle" else config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        decay_norm_bias=config.decay_norm_bias,
        norm_lr_scale=config.norm_lr_scale,
    )
    loaders = make_loaders(config, data, device, precision)
    lr_factor = build_schedule(
        config.schedule,
        epochs=config.epochs,
        steps_per_epoch=len(loaders["train"]),
        warmup_epochs=config.warmup_epochs,
        step_size=config.step_size,
        milestones=config.milestones,
        gamma=config.gamma,
    )
    recipe: list = []
    if config.lookahead:
        recipe.append(Lookahead(total_steps=config.epochs * len(loaders["train"])))
    if config.whiten and config.whiten_bias_epochs is not None:  # the stem it freezes
        recipe.append(FreezeStemBias(config.whiten_bias_epochs))
    return Trainer(
        model,
        optimizer,
        loaders.pop("train"),
        loaders,
        device=device,
        precision=precision,
        lr_factor=lr_factor,
        label_smoothing=config.label_smoothing,
        grad_clip=config.grad_clip,
        ema=EMA(model, config.ema) if config.ema else None,
        compiled=torch.compile(model) if config.compile else None,
        tta=config.tta,
        eval_every=config.eval_every,
        callbacks=recipe,
        world=world,
    )


def whitening_sample(data: CifarData, seed: int, n: int = 5000) -> torch.Tensor:
    """A random (the split is ordered by class) normalized NCHW sample of training images."""
    idx = np.random.default_rng(seed).permutation(len(data.train))[:n]
    x = torch.from_numpy(data.train.images[idx]).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    return (x - mean) / std


def make_loaders(
    config: RunConfig, data: CifarData, device: torch.device, precision: str = "fp32"
) -> dict[str, TensorLoader]:
    """The training loader (shuffled, augmented) and one evaluation loader per split."""
    mean_uint8 = (torch.tensor(data.mean) * 255).round().to(torch.uint8)
    side = min(data.image_shape[1:])
    if "crop" in config.augment and config.crop_pad >= side:  # reflection needs a mirror image
        raise CifarlabError(
            f"--crop-pad {config.crop_pad} must be smaller than the images' {side}-pixel side; "
            "use a smaller --crop-pad (e.g. 4) or a translate-* augment (zero fill)"
        )
    common = dict(
        mean=data.mean,
        std=data.std,
        device=device,
        channels_last=config.channels_last,
        dtype=compute_dtype(precision),  # the model casts its input to this anyway
    )
    if config.drop_last and len(data.train) < config.batch_size:
        raise CifarlabError(
            f"--batch-size {config.batch_size} with --drop-last leaves no training batch "
            f"({len(data.train)} training images); use a smaller --batch-size, more training "
            "images or --no-drop-last"
        )
    augment = build_augment(config.augment, mean_uint8, config.crop_pad, config.cutout, config.seed)
    loaders = {
        "train": TensorLoader(
            data.train,
            config.batch_size,
            shuffle=True,
            drop_last=config.drop_last,
            seed=config.seed,
            augment=augment,
            **common,
        )
    }
    if data.val is not None:
        loaders["val"] = TensorLoader(data.val, EVAL_BATCH_SIZE, **common)
    loaders["test"] = TensorLoader(data.test, EVAL_BATCH_SIZE, **common)
    return loaders
