"""Image files handed to a trained net (``cifarlab predict``, ``TrainedModel.predict``):
found, decoded and brought to the channels and size the net trained on."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cifarlab.data.imagefolder import is_image_name, is_litter, plain_image, readable
from cifarlab.errors import CifarlabError

PathLike = str | os.PathLike


def image_paths(given: Sequence[PathLike]) -> list[Path]:
    """The files named, and the image files inside the folders named (all levels, sorted;
    other files in a folder are skipped, as the data layer skips sidecars)."""
    if not given:
        raise CifarlabError("no images given; name image files or folders of them")
    paths: list[Path] = []
    for path in map(Path, given):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if _is_image_file(p, path))
            if not found:
                raise CifarlabError(f"{str(path)!r} holds no image files (.png, .jpg, ...)")
            paths += found
        elif path.is_file():  # named on its own: read whatever its name, Pillow decides
            paths.append(path)
        else:
            raise CifarlabError(f"no file or folder {str(path)!r}; check the path")
    return paths


def _is_image_file(path: Path, folder: Path) -> bool:
    """As the data layer reads a folder: no hidden files or folders (.thumbnails/), no
    __MACOSX/, only names Pillow reads."""
    parts = path.relative_to(folder).parts
    return not is_litter(parts) and is_image_name(path.name) and path.is_file()


def read_images(paths: Sequence[Path], shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """uint8 N x H x W x C pixels of ``paths`` at ``shape`` (C, H, W): colour or gray as C
    says, resized (bilinear, as --image-size resizes, stretching other aspect ratios) where
    their size differs; and how many were resized. Each image is shrunk as it is read, so a
    folder of photos never sits in memory at full size."""
    channels, height, width = shape
    out = np.empty((len(paths), height, width, channels), np.uint8)
    resized = 0
    for i, path in enumerate(paths):
        image = _decoded(path, "L" if channels == 1 else "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            resized += 1
        out[i] = np.asarray(image, np.uint8).reshape(height, width, channels)
    return out, resized


def _decoded(path: Path, mode: str) -> Image.Image:
    with readable(str(path), in_dataset=False), Image.open(path) as image:
        return plain_image(image)[0].convert(mode)  # as training read it, then the net's mode
