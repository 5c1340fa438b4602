"""Test-set predictions of one finished run, from its best checkpoint, for the report's charts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab.data import CifarData, TensorLoader, load_dataset
from cifarlab.errors import CifarlabError
from cifarlab.train.build import EVAL_BATCH_SIZE
from cifarlab.train.checkpoint import load_checkpoint
from cifarlab.train.precision import autocast, compute_dtype
from cifarlab.train.tta import tta_logits
from cifarlab.trained import reported_checkpoint, run_net, scored_tta


@dataclass
class Predictions:
    run_id: str
    classes: list[str]
    labels: np.ndarray  # true class per test image
    preds: np.ndarray  # predicted class
    confidence: np.ndarray  # softmax probability of the predicted class
    images: np.ndarray  # uint8 NHWC, for showing the mistakes


def predict_run(run: dict[str, Any], workspace: Path) -> Predictions:
    """The run's predictions on its test split, from the checkpoint the run reports.

    The checkpoint holds what the run predicted at that epoch; a checkpoint from
    before it did is rescored. The split is carved with the run's own arguments,
    for its images and labels (and, to rescore, its normalization). Raises
    CifarlabError with the reason when the checkpoint or the data is gone.
    """
    config = run["config"]
    # without a validation split nothing is selected: the run reports its last epoch
    if config.get("limit_test") and not (run.get("info") or {}).get("test_subset"):
        raise CifarlabError(
            f"run {run['id']} was scored on a --limit-test subset that an older cifarlab drew "
            "(with the seed); train it again to chart its predictions"
        )
    path = reported_checkpoint(run, workspace)
    data = load_dataset(
        run.get("data_path") or config.get("data"),  # not its version label (data@3f9a1c)
        val_size=config["val_size"],
        limit_train=config.get("limit_train"),
        limit_test=config.get("limit_test"),
        seed=config["seed"],
        image_size=config.get("image_size"),
        labels=config.get("labels", "fine"),
        quiet=True,
    )
    trained_on = (run.get("info") or {}).get("data_content")
    if trained_on and trained_on != data.content_id:  # its images would show beside others'
        raise CifarlabError(
            f"the data at {data.source} has changed since run {run['id']} trained on it; "
            "sweep again to retrain it on the data as it is now"
        )
    state = load_checkpoint(path)  # weights_only; a damaged file is one CifarlabError
    stored = state.get("test_predictions")
    if stored is not None and len(stored["preds"]) == len(data.test.labels):
        # what the run itself predicted at that epoch: the recorded accuracy, to the image
        preds, confidence = stored["preds"], stored["confidence"]
    else:  # a run from before checkpoints kept predictions
        preds, confidence = _rescore(run, workspace, state, data)
    return Predictions(
        run["id"],
        list(data.classes),
        data.test.labels.astype(np.int64),
        preds.numpy().astype(np.int64),
        confidence.float().numpy(),
        data.test.images,
    )


def _rescore(
    run: dict[str, Any], workspace: Path, state: dict[str, Any], data: CifarData
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify the test split with the checkpoint's weights, as the trainer scored it."""
    config = run["config"]
    model = run_net(run, workspace, state, num_classes=len(data.classes),
                    to="see its diagram and predictions", **data.model_shape)  # fmt: skip
    # score as the trainer did, so the charts' accuracy is the recorded one to the image: in
    # the run's precision and memory layout, at its evaluation batch size (bf16 rounding
    # moves a few borderline images), with TTA only where it used it: at the final epoch
    precision = (run.get("info") or {}).get("precision", "fp32")
    channels_last = config.get("channels_last", True)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).eval()
    tta = scored_tta(config, state)
    loader = TensorLoader(data.test, EVAL_BATCH_SIZE, data.mean, data.std,
                          channels_last=channels_last, dtype=compute_dtype(precision))  # fmt: skip
    probs = []
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        for x, _ in loader:
            probs.append(torch.softmax(tta_logits(model, x, tta).float(), dim=1))
    confidence, preds = torch.cat(probs).max(dim=1)
    return preds, confidence
