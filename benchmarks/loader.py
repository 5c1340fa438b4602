"""Data pipeline benchmark: cifarlab's tensor loader vs a tutorial-style DataLoader. Prints JSON.

    PYTHONPATH=src python benchmarks/loader.py [--data PATH] [--limit 10000]

Measures, on one machine in one run (compare ratios, not absolute numbers):
first load of the dataset (cold cache: decode every JPEG) and a cached reload;
TensorLoader alone (crop-flip, batch 64, the 45k training split); and a
``tutorial`` training pass (batch 64, crop-flip, fp32 channels_last, Adam) fed by
the TensorLoader vs by a torch DataLoader over PIL images decoded per item
(num_workers 0 and 2), the pipeline of the PyTorch tutorial without torchvision.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cifarlab.data import TensorLoader, load_dataset
from cifarlab.data.augment import build_augment
from cifarlab.data.imagefolder import _iter_files, _parse_layout
from cifarlab.models import create_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


class TutorialDataset(torch.utils.data.Dataset):
    """Decode one JPEG per item, then pad-4 random crop, random flip, to tensor, normalize."""

    def __init__(self, blobs: list[bytes], labels: list[int], mean, std) -> None:
        self.blobs, self.labels = blobs, labels
        self.mean = np.array(mean, np.float32)[:, None, None]
        self.std = np.array(std, np.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int):
        image = Image.open(io.BytesIO(self.blobs[i])).convert("RGB")
        padded = Image.new("RGB", (image.width + 8, image.height + 8))
        padded.paste(image, (4, 4))
        x, y = np.random.randint(0, 9, size=2)
        image = padded.crop((x, y, x + image.width, y + image.height))
        if np.random.rand() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, np.float32).transpose(2, 0, 1) / 255  # ToTensor
        return torch.from_numpy((array - self.mean) / self.std), self.labels[i]


def train_pass(batches, n_images: int) -> float:
    """Images/s of one pass of the tutorial net (Adam, fp32, channels_last) over ``batches``."""
    torch.manual_seed(0)
    model = create_model("tutorial").to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, start = 0, time.perf_counter()
    for x, y in batches:
        x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if seen >= n_images:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--limit", type=int, default=10_000, help="images per training pass")
    parser.add_argument("--loader-limit", type=int, default=None, help="images, loader alone")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    out: dict = {"data": args.data, "torch": torch.__version__, "threads": torch.get_num_threads()}

    cache = tempfile.mkdtemp(prefix="cifarlab-bench-")
    os.environ["CIFARLAB_CACHE"] = cache
    try:
        start = time.perf_counter()
        data = load_dataset(args.data, val_size=5000)
        out["first_load_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        data = load_dataset(args.data, val_size=5000)
        out["cached_reload_s"] = round(time.perf_counter() - start, 3)
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    mean_uint8 = (torch.tensor(data.mean) * 255).round().to(torch.uint8)
    loader = TensorLoader(data.train, 64, data.mean, data.std, shuffle=True,
                          augment=build_augment("crop-flip", mean_uint8))  # fmt: skip
    limit = args.loader_limit or len(data.train)
    start, seen = time.perf_counter(), 0
    for _, y in loader:
        seen += len(y)
        if seen >= limit:
            break
    out["tensor_loader_crop_flip_images_per_s"] = round(seen / (time.perf_counter() - start))
    out["tensor_loader_images"] = seen

    n = min(args.limit, len(data.train))
    out["train_images_per_pass"] = n
    out["tutorial_epoch_tensor_loader_images_per_s"] = round(train_pass(loader, n))

    # the tutorial pipeline over the same JPEG bytes (training split, shuffled)
    entries = _parse_layout(_iter_files(Path(args.data)), Path(args.data))["train"]
    classes = sorted({cls for cls, _ in entries})
    items = sorted(entries.items())
    blobs = [blob for _, blob in items]
    labels = [classes.index(cls) for (cls, _), _ in items]
    dataset = TutorialDataset(blobs, labels, data.mean, data.std)
    for workers in (0, 2):
        batches = torch.utils.data.DataLoader(dataset, 64, shuffle=True, num_workers=workers)
        out[f"tutorial_epoch_dataloader_w{workers}_images_per_s"] = round(train_pass(batches, n))
    faster = max(out["tutorial_epoch_dataloader_w0_images_per_s"],
                 out["tutorial_epoch_dataloader_w2_images_per_s"])  # fmt: skip
    out["speedup_train_vs_faster_tutorial_pipeline"] = round(
        out["tutorial_epoch_tensor_loader_images_per_s"] / faster, 2
    )
    out["speedup_loader_alone_vs_faster_tutorial_train"] = round(
        out["tensor_loader_crop_flip_images_per_s"] / faster, 2
    )
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
