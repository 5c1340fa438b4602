"""A trained run's net as an ONNX file (``cifarlab export``), to classify images where
neither cifarlab nor torch is installed (onnxruntime, a browser, a phone).

The file scores as the run scored: its normalization and its test-time augmentation are
in the graph, so it takes plain pixels in [0, 1] and its logits equal ``trained.logits``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cifarlab.errors import CifarlabError, as_path
from cifarlab.experiments.store import DATABASE
from cifarlab.files import make_folder, written_atomically
from cifarlab.train.tta import tta_logits

if TYPE_CHECKING:
    from cifarlab.trained import TrainedModel

EXTRA_HINT = "pip install 'cifarlab[onnx]' (onnx and onnxscript; onnxruntime runs the file)"


class _Scoring(nn.Module):
    """Pixels in [0, 1] -> the run's logits: normalization, net and TTA in one graph."""

    def __init__(self, trained: TrainedModel) -> None:
        super().__init__()
        self.net, self.tta = trained.model, trained.tta
        device = next(trained.model.parameters()).device  # trained.model.cuda(): there too
        self.register_buffer("mean", trained.mean[:, None, None].float().to(device))
        self.register_buffer("std", trained.std[:, None, None].float().to(device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return tta_logits(self.net, (images - self.mean) / self.std, self.tta)


KEPT_SUFFIXES = (".pt", ".pth", ".db")  # what an export must not write over


def export_onnx(trained: TrainedModel, path: str | os.PathLike) -> Path:
    """Write ``trained``'s net to ``path``: input ``images`` (N x C x H x W float32 in
    [0, 1], any N), output ``logits`` (N x classes); the class names, image shape and run
    in the file's metadata (``classes`` as JSON)."""
    try:
        import onnx  # noqa: F401  (and onnxscript: torch.onnx's exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError:
        raise CifarlabError(f"exporting to ONNX needs the onnx extra: {EXTRA_HINT}") from None
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 5):  # dynamo=True
        raise CifarlabError(f"exporting to ONNX needs torch 2.5 or newer (this is "
                            f"{torch.__version__}); pip install -U torch")  # fmt: skip
    path = as_path(path, "path")
    if path.is_file() and (path.suffix in KEPT_SUFFIXES or path.name.startswith(DATABASE)):
        raise CifarlabError(  # `-o ws/run/best.pt` by tab completion: the run was lost
            f"{str(path)!r} is a checkpoint or results database, which the export would replace; "
            "pick another path (e.g. net.onnx)"
        )
    model = _Scoring(trained).eval()
    c, h, w = trained.image_shape
    example = torch.rand(2, c, h, w, device=next(model.parameters()).device)
    with _exporter_quiet():
        try:
            program = torch.onnx.export(
                model, (example,), input_names=["images"], output_names=["logits"],
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, dynamo=True,
            )  # fmt: skip
        except Exception as err:  # an op of a user's net that ONNX has no counterpart for
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CifarlabError(
                f"torch.onnx could not export run {trained.run_id}'s net: {why} "
                "(CIFARLAB_TRACEBACK=1 shows the exporter's whole message)"
            ) from err
    proto = program.model_proto
    meta = {"classes": json.dumps(trained.classes), "image_shape": json.dumps([c, h, w]),
            "run_id": trained.run_id, "input": "N x C x H x W float32 pixels in [0, 1]",
            "tta": str(trained.tta)}  # fmt: skip
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    make_folder(path.parent)  # -o deploy/new/net.onnx: made, or one line saying why not
    try:
        with written_atomically(path) as tmp:  # protobuf whatever the suffix (onnx.save: by it)
            tmp.write_bytes(proto.SerializeToString())
    except OSError as err:  # it named its temp file, and gave no way out
        raise CifarlabError(
            f"cannot write {str(path)!r}: {err.strerror or err}; pick another path"
        ) from None
    return path


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """torch.onnx prints its steps and logs a warning for each torchvision op it cannot
    find; the command's own line says what happened."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
