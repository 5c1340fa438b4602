"""A finished run's net, ready to classify images: ``cifarlab.load_trained(run_id)``.

The checkpoint holds the weights and what using them takes (classes, image shape, the
normalization); this puts them together as the run scored its test split, with its
test-time augmentation, so ``predict`` needs only images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cifarlab.data.image_files import fit_image, image_paths, read_images
from cifarlab.data.imagefolder import readable
from cifarlab.errors import CifarlabError, as_path
from cifarlab.experiments.store import WORKSPACE
from cifarlab.model_files import model_of_run
from cifarlab.models import create_model
from cifarlab.models.spec import image_size_of
from cifarlab.results import open_store
from cifarlab.train.build import EVAL_BATCH_SIZE
from cifarlab.train.checkpoint import load_checkpoint
from cifarlab.train.tta import tta_logits


@dataclass
class TrainedModel:
    """A run's net in eval mode, with the weights it reported (averaged, where it used --ema)."""

    run_id: str
    model: nn.Module
    classes: list[str]
    image_shape: tuple[int, int, int]  # (C, H, W) of the images it trained on
    mean: torch.Tensor  # per channel, in [0, 1]
    std: torch.Tensor
    tta: int  # as the run scored this epoch: its --tta at the final epoch (mirrored views)

    def logits(self, images: Any) -> torch.Tensor:
        """Logits (N x classes) for ``images``: image files (a path, or a list of paths and
        folders: ``read``), PIL images (one or a list; any size and mode), floats in [0, 1]
        N x C x H x W, or uint8 pixels, N x H x W x C as ``load_dataset`` gives them (one
        image without the N)."""
        if isinstance(images, list | tuple) and not images:  # an empty glob in a notebook
            raise CifarlabError("no images given (an empty list); pass image files or pixels")
        if _are_paths(images):
            images = self.read(images)[0]
        elif _are_pil_images(images):  # opened by the caller: any size or mode, as files are
            images = self._fitted(images if isinstance(images, list | tuple) else [images])
        device = next(self.model.parameters()).device  # trained.model.cuda(): there too
        x = self._pixels(images)
        mean, std = self.mean[:, None, None].to(device), self.std[:, None, None].to(device)
        with torch.no_grad():  # a part at a time to the device: 50,000 images fit a small GPU
            parts = (_floats(part.to(device)) for part in x.split(EVAL_BATCH_SIZE))
            return torch.cat([tta_logits(self.model, (p - mean) / std, self.tta) for p in parts])

    def predict(self, images: Any) -> list[str]:
        """The class name for each image (see ``logits`` for what images it takes)."""
        return [self.classes[i] for i in self.logits(images).argmax(1).tolist()]

    def probabilities(self, images: Any) -> torch.Tensor:
        """N x classes: how sure the net is of each class (softmax of ``logits``)."""
        return self.logits(images).float().softmax(1)

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Write this net to an ONNX file that scores as ``logits`` does (see
        ``cifarlab.export.export_onnx``); needs the onnx extra."""
        from cifarlab.export import export_onnx

        return export_onnx(self, path)

    def read(
        self, paths: str | os.PathLike | list[str | os.PathLike]
    ) -> tuple[np.ndarray, list[Path]]:
        """The image files of ``paths`` (a file or folder, or a list of them; the images in
        folders) as uint8 pixels with this net's channels and size (resized where they
        differ), and their paths."""
        files = image_paths([paths] if isinstance(paths, str | os.PathLike) else paths)
        return read_images(files, self.image_shape)[0], files

    def _fitted(self, images: list[Image.Image]) -> np.ndarray:
        """PIL images at this net's channels and size, read as image files are."""
        fitted = []
        for i, image in enumerate(images):
            name = getattr(image, "filename", "") or f"image {i}"
            with readable(name, in_dataset=False):  # a truncated file loads only now
                fitted.append(fit_image(image, self.image_shape)[0])
        return np.stack(fitted)

    def _pixels(self, images: Any) -> torch.Tensor:
        """N x C x H x W, in the type given: integer pixels (see ``_integer_layout``), or
        floats in [0, 1] as torch takes them (N x C x H x W, or C x H x W)."""
        x = images if torch.is_tensor(images) else torch.as_tensor(_as_array(images))
        given = tuple(x.shape)
        x = x.float() if x.dtype == torch.bool else x  # a mask: 0 and 1 as floats
        c, h, w = self.image_shape
        if x.dtype.is_floating_point:
            x = x[None] if x.dim() == 3 else x
            if x.dim() == 4 and x.shape[1] != c and x.shape[-1] == c:  # N x H x W x C floats
                x = x.permute(0, 3, 1, 2)
            _check_float_range(x)
        else:
            x = _eight_bit(_integer_layout(x)).permute(0, 3, 1, 2)
            if x.shape[1] == 1 and c == 3:  # gray among colour: as training converts them
                x = x.expand(-1, 3, -1, -1)
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise CifarlabError(f"images of shape {given}: run {self.run_id} "
                                f"classifies {c} x {h} x {w} images; {self._fix(x)}")  # fmt: skip
        return x

    def _fix(self, x: torch.Tensor) -> str:
        c, h, w = self.image_shape
        files = "or pass the image files: predict(paths) converts and resizes them"
        if x.dim() == 4 and x.shape[1] != c:
            mode = {1: "L", 3: "RGB"}.get(c, f"{c} channels")
            return (
                f"they have {x.shape[1]} channels: convert them (PIL: .convert({mode!r})), {files}"
            )
        return f"resize them to {h}x{w} (bilinear, as training resized), {files}"


def _as_array(images: Any) -> np.ndarray:
    """Pixels given as arrays or lists of them, as a writable numpy array of numbers."""
    try:
        array = np.asarray(images)
    except ValueError:  # a list of arrays that differ in shape
        raise CifarlabError(
            "images of different shapes: pass arrays of one shape, or the image files "
            "(predict(paths) converts and resizes them)"
        ) from None
    if array.dtype.kind not in "biuf":  # None, bytes, a generator, strings
        raise CifarlabError(
            f"cannot read images from a {type(images).__name__}: pass image files (a path or a "
            "list of paths), PIL images, or arrays of pixels"
        )
    return array if array.flags.writeable else array.copy()  # np.asarray(PIL image): read-only


def _check_float_range(x: torch.Tensor) -> None:
    """Float pixels must be in [0, 1]: anything else gave wrong classes without a word."""
    if not x.numel():
        return
    if not torch.isfinite(x).all():  # NaN: every image the first class
        raise CifarlabError("images hold NaN or infinite values; pass pixels in [0, 1]")
    if x.max() > 1:  # every image read as one class: say it
        raise CifarlabError(
            f"images as floats must be in [0, 1] (these reach {x.max().item():g}); divide "
            "pixels by 255, or pass them as uint8"
        )
    if x.min() < 0:  # normalized already, as the PyTorch tutorial does
        raise CifarlabError(
            f"images as floats must be in [0, 1] (these go down to {x.min().item():g}): pass "
            "them before normalizing; the run normalizes them with its own mean and std"
        )


def _integer_layout(x: torch.Tensor) -> torch.Tensor:
    """Integer pixels as N x H x W x C, from the layouts images come in: as loaded (H x W x C,
    N x H x W x C; H x W and N x H x W when gray) or as torchvision reads them (C x H x W,
    N x C x H x W). An array both readings fit is refused, not guessed: 3 x 64 x 64 is one
    colour image or three gray ones (a guess gave one answer for three images)."""
    if x.dim() == 2:
        return x[None, ..., None]
    if x.dim() == 3:
        if x.shape[-1] <= 4:  # a channel axis last: one H x W x C image
            return x[None]
        if x.shape[0] in (3, 4):
            raise CifarlabError(
                f"pixels of shape {tuple(x.shape)} are one {x.shape[0]}-channel image or "
                f"{x.shape[0]} gray ones; pass one image as H x W x C, or gray ones as "
                "N x H x W x 1"
            )
        return x[..., None]  # N gray images (1 x H x W: one, either way)
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1) if x.shape[-1] > 4 and x.shape[1] <= 4 else x
    raise CifarlabError(
        f"pixels of {x.dim()} dimensions {tuple(x.shape)}: give N x H x W x C (or one image)"
    )


def _eight_bit(x: torch.Tensor) -> torch.Tensor:
    """0-255 pixels: 16-bit ones (uint16, or an image whose values pass 255) shifted down
    to 8 bits as training read 16-bit images, each image on its own."""
    if x.dtype == torch.uint8:
        return x
    wide = x.dtype == torch.uint16
    x = x.to(torch.int64)
    if x.numel():
        sixteen = torch.ones(len(x), dtype=torch.bool) if wide else x.flatten(1).amax(1) > 255
        x = torch.where(sixteen[:, None, None, None], x.clamp(0, 65535) >> 8, x)
    return x.clamp(0, 255)


def _floats(x: torch.Tensor) -> torch.Tensor:
    if not x.dtype.is_floating_point and x.dtype != torch.bool:  # 0-255 (int64 too)
        return x.float() / 255
    return x.float()


def _are_pil_images(images: Any) -> bool:
    if isinstance(images, list | tuple):
        return all(isinstance(i, Image.Image) for i in images)
    return isinstance(images, Image.Image)


def _are_paths(images: Any) -> bool:
    if isinstance(images, list | tuple):
        return bool(images) and all(isinstance(i, str | os.PathLike) for i in images)
    return isinstance(images, str | os.PathLike)


def load_trained(run_id: str, workspace: str | os.PathLike = WORKSPACE) -> TrainedModel:
    """The net run ``run_id`` trained (or the run in folder ``run_id``: "ws/tutorial-1a2b3c4d"),
    from the checkpoint it reports: ``best.pt``, picked by validation, or ``last.pt`` for a
    run without a validation split."""
    if not isinstance(run_id, str | os.PathLike):
        raise CifarlabError(f"run_id must be a run's id (a str), not {run_id!r}")
    run_id = os.fspath(run_id)
    if len(Path(run_id).parts) > 1 and Path(run_id).is_dir():  # "ws/tutorial-1a2b3c4d"
        workspace, run_id = Path(run_id).parent, Path(run_id).name
    workspace = as_path(workspace, "workspace")
    with open_store(workspace) as store:
        run = store.run(run_id)
    if run is None:
        raise CifarlabError(
            f"no run {run_id!r} in {str(workspace)!r}; `cifarlab results` (cifarlab.results() "
            "in Python) lists the runs there"
        )
    path = reported_checkpoint(run, workspace)
    state = load_checkpoint(path)  # weights_only
    _check_what_it_trained_on(state, path)
    c, h, w = state["image_shape"]
    model = run_net(run, workspace, state, num_classes=len(state["classes"]), in_channels=c,
                    image_size=image_size_of(h, w), to="load it")  # fmt: skip
    mean, std = torch.tensor(state["mean"]), torch.tensor(state["std"])
    return TrainedModel(run_id, model.eval(), list(state["classes"]), (c, h, w), mean, std,
                        scored_tta(run["config"], state))  # fmt: skip


def _check_what_it_trained_on(state: dict[str, Any], path: Path) -> None:
    """The classes, image shape and pixel statistics a net is rebuilt and fed with: a
    hand-edited file failed deep inside torch with a traceback."""
    classes, shape = state.get("classes"), state.get("image_shape")
    number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    fine = (
        isinstance(classes, list | tuple) and len(classes) > 0
        and all(isinstance(c, str) for c in classes)
        and isinstance(shape, list | tuple) and len(shape) == 3
        and all(isinstance(v, int) and v > 0 for v in shape)
        and all(isinstance(state.get(k), list | tuple) and len(state[k]) == shape[0]
                and all(number(v) for v in state[k]) for k in ("mean", "std"))
    )  # fmt: skip
    if not fine:
        raise CifarlabError(
            f"checkpoint {path} is damaged: its classes, image shape or pixel statistics are "
            "not what cifarlab wrote; put a good copy in its place"
        )


def reported_checkpoint(run: dict[str, Any], workspace: Path) -> Path:
    """The checkpoint of the epoch a run reports: ``best.pt``, picked by validation, or
    ``last.pt`` where nothing was selected (no validation split)."""
    name = "best.pt" if run["config"].get("val_size") else "last.pt"
    path = workspace / run["id"] / name
    if not path.is_file():
        raise CifarlabError(f"run {run['id']} has no {name} checkpoint (status: {run['status']})")
    return path


def run_net(
    run: dict[str, Any], workspace: Path, state: dict[str, Any], to: str, **shape: Any
) -> nn.Module:
    """The run's net, built from the code it trained (``model_of_run``), with the weights of
    ``state``: the averaged ones where it used --ema, as it scored (and picked best.pt by)."""
    model = create_model(model_of_run(run, workspace, to), **shape)
    try:
        model.load_state_dict(state["ema"] if state.get("ema") else state["model"])
    except (RuntimeError, KeyError) as err:
        # torch: "Error(s) in loading state_dict for Net:\n\tsize mismatch for ..." per key
        lines = [line.strip().rstrip(".") for line in str(err).splitlines() if line.strip()]
        said = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
        said = said if len(said) <= 200 else said[:200] + "..."  # "Missing key(s)" lists all
        n = len(lines) - 2  # torch: a line for the missing keys, the unexpected ones, each size
        more = f", and {n} more problem{'s' * (n > 1)}" if n > 0 else ""
        raise CifarlabError(
            f"checkpoint of run {run['id']} does not fit its model ({said}{more})"
        ) from None
    return model


def scored_tta(config: dict[str, Any], state: dict[str, Any]) -> int:
    """The test-time augmentation the run scored ``state``'s epoch with: its --tta at the
    final epoch, none before (a best.pt from an earlier epoch was scored plain)."""
    return (config.get("tta") or 0) if state["epoch"] == config["epochs"] else 0
