"""Peak memory and time of loading a folder of big photos in two sizes.

    PYTHONPATH=src .venv/bin/python benchmarks/decode_memory.py [--photos 52]

Builds an image folder of JPEG photos (half 3000x4000, half 2400x3200) in a temporary
folder, then loads it in a fresh process, as `--data` would, and prints JSON: the
process's peak resident memory, the seconds, and what the images came out as. Images of
several sizes become 32x32; the question is whether they pass through memory at full size
on the way (36 MB each at 3000x4000).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((3000, 4000), (2400, 3200))  # (height, width), as two cameras' photos
CLASSES = ("cat", "dog")


def write_photos(root: Path, photos: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(photos):
        split = "test" if i % 8 >= 6 else "train"  # a quarter, both classes
        folder = root / split / CLASSES[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        h, w = SIZES[(i // 2) % 2]
        coarse = rng.integers(0, 256, (h // 50, w // 50, 3), dtype=np.uint8)  # JPEG-friendly
        photo = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
        photo.save(folder / f"{i:04d}.jpg", quality=90)


def load_in_this_process(root: Path) -> dict:
    from cifarlab.data.imagefolder import read_image_folder

    start = time.perf_counter()
    data = read_image_folder(root, quiet=True)
    seconds = time.perf_counter() - start
    peak = max(resource.getrusage(who).ru_maxrss for who in
               (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))  # fmt: skip
    return {"load_seconds": round(seconds, 2), "peak_rss_mb": peak // 1024,
            "train_images": list(data.train.images.shape), "notes": list(data.notes)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=52)
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load_in_this_process(args.load)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        write_photos(root, args.photos)
        files_mb = sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20
        child = subprocess.run([sys.executable, __file__, "--load", str(root)],
                               stdout=subprocess.PIPE, text=True, check=True)  # fmt: skip
    result = {"photos": args.photos, "jpeg_files_mb": round(files_mb, 1)}
    result.update(json.loads(child.stdout))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
