"""Image files handed to a trained net (``cifarlab predict``, ``TrainedModel.predict``):
found, decoded and brought to the channels and size the net trained on."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cifarlab.data.imagefolder import (
    bomb_warnings_as_ours,
    is_image_name,
    is_litter,
    plain_image,
    readable,
    say_if_huge,
)
from cifarlab.errors import CifarlabError, warn

PathLike = str | os.PathLike
# files beside images that are not images: skipped without a word
SIDECARS = {".txt", ".json", ".csv", ".xml", ".md", ".pdf", ".yaml", ".yml", ".ini", ".log"}


def image_paths(given: Sequence[PathLike]) -> list[Path]:
    """The files named, and the image files inside the folders named (all levels, sorted;
    other files in a folder are skipped, as the data layer skips sidecars)."""
    if not given:
        raise CifarlabError("no images given; name image files or folders of them")
    paths: list[Path] = []
    for path in map(Path, given):
        if path.is_dir():
            paths += _folder_images(path)
        elif path.is_file():  # named on its own: read whatever its name, Pillow decides
            paths.append(path)
        else:
            raise CifarlabError(f"no file or folder {str(path)!r}; check the path")
    return paths


def _folder_images(folder: Path) -> list[Path]:
    """The image files in ``folder``, all levels, sorted; what else it holds said (a warning),
    but for sidecars and the litter the data layer also skips (.thumbnails/, __MACOSX/)."""
    files = [p for p in folder.rglob("*") if not is_litter(p.relative_to(folder).parts)]
    files = [p for p in files if p.is_file()]
    found = sorted(p for p in files if is_image_name(p.name))
    skipped = [p for p in files if not is_image_name(p.name) and p.suffix.lower() not in SIDECARS]
    if not found:
        raise CifarlabError(f"{str(folder)!r} holds no image files (.png, .jpg, ...)"
                            + (f"; {_skipped(skipped)}" if skipped else ""))  # fmt: skip
    if skipped:
        warn(f"in {str(folder)!r}, {_skipped(skipped)}")
    return found


def _skipped(files: list[Path]) -> str:
    """What a folder's files whose names are not images Pillow reads (.heic, no extension)
    were: said, or a folder of phone photos looks wholly classified."""
    kinds = Counter(p.suffix.lower() or "no extension" for p in files)
    listed = ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common(4))
    return (f"{len(files)} file(s) skipped, their names not those of images Pillow reads "
            f"({listed}); name one on its own to try it")  # fmt: skip


def read_images(paths: Sequence[Path], shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """uint8 N x H x W x C pixels of ``paths`` at ``shape`` (C, H, W): colour or gray as C
    says, resized (bilinear, as --image-size resizes, stretching other aspect ratios) where
    their size differs; and how many were resized. Each image is shrunk as it is read, so a
    folder of photos never sits in memory at full size."""
    channels, height, width = shape
    out = np.empty((len(paths), height, width, channels), np.uint8)
    resized = 0
    with bomb_warnings_as_ours():
        for i, path in enumerate(paths):
            if path.stat().st_size == 0:  # a copy or download that failed: "no image", said Pillow
                raise CifarlabError(
                    f"{str(path)!r} is empty (0 bytes); copy it again or leave it out"
                )
            with readable(str(path), in_dataset=False), Image.open(path) as image:
                say_if_huge(image, str(path))
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
