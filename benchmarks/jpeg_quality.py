"""How much JPEG compression costs a recipe: re-encode the data at lower qualities, train each.

    PYTHONPATH=src python benchmarks/jpeg_quality.py [--preset quick-cpu] [--qualities 50,30]

Our only CIFAR-10 copy is JPEG q75 (4:2:0 chroma), so its cost against the lossless
original cannot be measured here directly. This measures the slope instead: the
preset's test accuracy on the copy as it is, then on copies re-encoded (train and
test alike) at each lower quality. Prints JSON. One seed per point: differences
under ~0.5 points are noise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from common import at_least_one, check_presets, run  # benchmarks/, beside this file
from loader import SHARED
from PIL import Image

import cifarlab


def reencode(source: Path, quality: int, out_dir: Path) -> Path:
    """A .tar of every image in ``source`` decoded and saved again at ``quality``."""
    target = out_dir / f"cifar10-jpeg-q{quality}.tar"
    with tarfile.open(source) as src, tarfile.open(target, "w") as dst:
        for member in src:
            if not member.isfile() or not member.name.endswith(".jpg"):
                continue
            image = Image.open(io.BytesIO(src.extractfile(member).read())).convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
            info = tarfile.TarInfo(member.name)
            info.size = buffer.tell()
            buffer.seek(0)
            dst.addfile(info, buffer)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=os.environ.get("CIFARLAB_DATA") or str(SHARED),
        help="a .tar/.tar.gz of JPEG image folders (default: the shared copy)",
    )
    parser.add_argument("--preset", default="quick-cpu")
    parser.add_argument("--qualities", default="50,30", help="re-encoding qualities to try")
    parser.add_argument("--epochs", type=at_least_one, help="override the preset's epochs")
    args = parser.parse_args()
    extra = {"epochs": args.epochs} if args.epochs is not None else {}
    check_presets([args.preset], **extra)  # before minutes of re-encoding
    if not Path(args.data).is_file() or not tarfile.is_tarfile(args.data):
        parser.error(f"--data {args.data}: re-encoding reads a .tar or .tar.gz of JPEG image "
                     "folders, as the shared CIFAR-10 copy is")  # fmt: skip
    shared = Path(args.data).resolve() == SHARED.resolve()
    out: dict = {
        "preset": args.preset,
        **extra,
        "data": f"{args.data} (CIFAR-10, JPEG q75 copy)" if shared else args.data,
    }
    with tempfile.TemporaryDirectory(prefix="cifarlab-jpeg-") as tmp:
        os.environ["CIFARLAB_CACHE"] = str(Path(tmp) / "cache")  # leave no decoded copies behind
        sources = {"q75 (as shipped)": Path(args.data)}
        for quality in map(int, args.qualities.split(",")):
            sources[f"q75 re-encoded at q{quality}"] = reencode(Path(args.data), quality, Path(tmp))
        for label, path in sources.items():
            result = cifarlab.train(preset=args.preset, data=str(path), quiet=True,
                                    workspace=str(Path(tmp) / "runs"), **extra)  # fmt: skip
            per_epoch = [round(m["test_acc"], 4) for m in result.history]
            out[label] = {"final_test_acc": round(result.summary["final_test_acc"], 4),
                          "per_epoch": per_epoch}  # fmt: skip
            print(json.dumps({label: out[label]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run(main)
