"""Image files handed to a trained net (``cifarlab predict``, ``TrainedModel.predict``):
found, decoded and brought to the channels and size the net trained on."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cifarlab.data.imagefolder import is_image_name, is_litter, plain_image, readable
from cifarlab.errors import CifarlabError, warn

PathLike = str | os.PathLike


def image_paths(given: Sequence[PathLike]) -> list[Path]:
    """The files named, and the image files inside the folders named (all levels, sorted;
    other files in a folder are skipped, as the data layer skips sidecars)."""
    if not given:
        raise CifarlabError("no images given; name image files or folders of them")
    paths: list[Path] = []
    for path in map(Path, given):
        if path.is_dir():
            files = [p for p in path.rglob("*") if not is_litter(p.relative_to(path).parts)]
            found = sorted(p for p in files if is_image_name(p.name) and p.is_file())
            if not found:
                raise CifarlabError(f"{str(path)!r} holds no image files (.png, .jpg, ...)")
            skipped = [p for p in files if not is_image_name(p.name) and p.is_file()]
            _say_skipped(path, [p for p in skipped if p.suffix.lower() not in SIDECARS])
            paths += found
        elif path.is_file():  # named on its own: read whatever its name, Pillow decides
            paths.append(path)
        else:
            raise CifarlabError(f"no file or folder {str(path)!r}; check the path")
    return paths


# files beside images that are not images: skipped without a word
SIDECARS = {".txt", ".json", ".csv", ".xml", ".md", ".pdf", ".yaml", ".yml", ".ini", ".log"}


def _say_skipped(folder: Path, skipped: list[Path]) -> None:
    """A folder's files whose names are not images Pillow reads (.heic, no extension, notes)
    are left out: say so, or a folder of phone photos looks wholly classified."""
    if skipped:
        kinds = Counter(p.suffix.lower() or "no extension" for p in skipped)
        listed = ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common(4))
        warn(f"{len(skipped)} file(s) in {str(folder)!r} skipped, their names not those of images "
             f"Pillow reads ({listed}); name one on its own to try it")  # fmt: skip


def read_images(paths: Sequence[Path], shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """uint8 N x H x W x C pixels of ``paths`` at ``shape`` (C, H, W): colour or gray as C
    says, resized (bilinear, as --image-size resizes, stretching other aspect ratios) where
    their size differs; and how many were resized. Each image is shrunk as it is read, so a
    folder of photos never sits in memory at full size."""
    channels, height, width = shape
    out = np.empty((len(paths), height, width, channels), np.uint8)
    resized = 0
    for i, path in enumerate(paths):
        if path.stat().st_size == 0:  # a copy or download that failed: Pillow says "no image"
            raise CifarlabError(f"{str(path)!r} is empty (0 bytes); copy it again or leave it out")
        with readable(str(path), in_dataset=False), Image.open(path) as image:
            out[i], changed = fit_image(image, shape)
        resized += changed
    return out, resized


def fit_image(image: Image.Image, shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """H x W x C uint8 pixels of a PIL image at ``shape`` (C, H, W), as training read it,
    then in the net's colour mode and size; and whether it was resized."""
    channels, height, width = shape
    image = plain_image(image)[0].convert("L" if channels == 1 else "RGB")
    resized = image.size != (width, height)
    if resized:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8).reshape(height, width, channels), resized
