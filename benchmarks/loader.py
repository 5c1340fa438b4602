"""Data pipeline benchmark: cifarlab's tensor loader vs a tutorial-style DataLoader. Prints JSON.

    PYTHONPATH=src python benchmarks/loader.py [--data PATH] [--limit 10000] [--repeats 3]

Measures, on one machine in one run (compare ratios, not absolute numbers):
first load of the dataset (cold cache: decode every JPEG) and a cached reload (in the same
process, and in a fresh one, as a user's next run meets it);
TensorLoader alone (crop-flip, batch 64, the 45k training split); and a
``tutorial`` training epoch (batch 64, crop-flip, SGD lr 0.001 momentum 0.9, the
tutorial's settings) through cifarlab's trainer with its defaults, against the
PyTorch tutorial's pipeline and loop: a torch DataLoader over PIL images decoded
per item (num_workers 0 and 2; torchvision's transforms written out), fp32, NCHW.
For the share that is data alone, the faster DataLoader also feeds the same loop
in channels_last, and cifarlab's trainer runs once more on one ready-made batch served
over and over: the ceiling any loader could reach. Each training figure is the best of
``--repeats`` passes taken in turns (neighbours on a shared machine only ever slow a pass
down).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cifarlab.config import make_run_config
from cifarlab.data import TensorLoader, load_dataset
from cifarlab.data import loader as loader_module
from cifarlab.data.augment import build_augment
from cifarlab.data.imagefolder import encoded_images
from cifarlab.models import create_model
from cifarlab.train import cpu_share
from cifarlab.train.build import build_trainer
from cifarlab.train.precision import resolve_device, resolve_precision
from cifarlab.train.trainer import Trainer

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


def tutorial_loop(batches, n_images: int, channels_last: bool = False) -> float:
    """Images/s of the PyTorch tutorial's training loop (fp32, SGD) over ``batches``.

    Timed from the second batch: the first one pays one-time start-up costs.
    """
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model("tutorial").to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    seen, start = 0, time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if i == 1:
            seen, start = 0, time.perf_counter()
        x = x.contiguous(memory_format=memory_format)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if seen >= n_images:
            break
    return seen / (time.perf_counter() - start)


def warm_trainer(data_path: str, n_images: int, **options) -> tuple[Trainer, str]:
    """cifarlab's trainer (``options`` as for ``cifarlab train``) on ``n_images`` training
    images, after one warm-up epoch: oneDNN builds its kernels on first use."""
    config = make_run_config(data=data_path, val_size=0, limit_train=n_images, limit_test=100,
                             **options)  # fmt: skip
    data = load_dataset(config.data, val_size=0, limit_train=n_images, limit_test=100)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device, config.channels_last)
    # as `cifarlab train` runs (runner._determinism): cuDNN times its conv algorithms
    torch.backends.cudnn.benchmark = not config.deterministic
    trainer = build_trainer(config, data, device, precision)
    trainer.train_epoch(0)
    return trainer, precision


def cifarlab_images_per_s(data_path: str, n_images: int, **options) -> dict:
    """Training images/s of one epoch through cifarlab's trainer, after a warm-up epoch."""
    trainer, precision = warm_trainer(data_path, n_images, **options)
    metrics = trainer.train_epoch(1)
    return {"images_per_s": metrics["images_per_sec"], "precision": precision,
            "cores_taken": cores_taken(metrics)}  # fmt: skip


def cores_taken(metrics: dict) -> float | None:
    """Cores of ours that other processes and the hypervisor used during the pass (Linux)."""
    taken = cpu_share.cores_taken(metrics)
    return None if taken is None else round(taken, 2)


def fresh_process_reload_s(data_path: str) -> float:
    """The cached reload as a user's next run meets it: in a new process (imports excluded).
    The in-process reload above also pays for the first load's memory being given back."""
    code = (
        "import sys, time; from cifarlab.data import load_dataset; t = time.perf_counter(); "
        "load_dataset(sys.argv[1], val_size=5000); print(time.perf_counter() - t)"
    )
    child = subprocess.run([sys.executable, "-c", code, data_path], capture_output=True,
                           text=True, check=True)  # fmt: skip
    return round(float(child.stdout.strip().splitlines()[-1]), 3)


def loader_rate(loader: TensorLoader, limit: int) -> float:
    """Images/s of iterating ``loader`` alone, for its first ``limit`` images."""
    start, seen = time.perf_counter(), 0
    for _, y in loader:
        seen += len(y)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


class ReadyBatches:
    """One prepared batch served ``steps`` times: the trainer with no data work at all."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], steps: int) -> None:
        self.batch, self.steps = batch, steps
        self.num_images = steps * len(batch[1])

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.batch for _ in range(self.steps))


def ready_batches_images_per_s(data_path: str, n_images: int, **options) -> float:
    """The same trainer and step on ready-made batches: the ceiling for any loader."""
    trainer, _ = warm_trainer(data_path, n_images, **options)
    batch = next(iter(trainer.train_loader))
    trainer.train_loader = ReadyBatches(batch, len(trainer.train_loader))
    metrics = trainer.train_epoch(1)
    return {"images_per_s": metrics["images_per_sec"], "cores_taken": cores_taken(metrics)}


def chunk_sizes(data, mean_uint8: torch.Tensor, mibs=(4, 8, 32, 64), repeats: int = 3) -> dict:
    """The loader alone (bf16 batches, as under autocast) per chunk size: best of a few."""
    default, best = loader_module.CHUNK_BYTES, {}
    try:
        for _ in range(repeats):
            for mib in mibs:
                loader_module.CHUNK_BYTES = mib << 20
                loader = TensorLoader(data.train, 64, data.mean, data.std, shuffle=True,
                                      augment=build_augment("crop-flip", mean_uint8),
                                      dtype=torch.bfloat16)  # fmt: skip
                rate = loader_rate(loader, len(data.train))
                best[mib] = round(max(best.get(mib, 0), rate))
    finally:
        loader_module.CHUNK_BYTES = default
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFARLAB_DATA") or str(SHARED))
    parser.add_argument("--limit", type=int, default=10_000, help="images per training pass")
    parser.add_argument("--loader-limit", type=int, default=None, help="images, loader alone")
    parser.add_argument("--repeats", type=int, default=3, help="passes per side; the best counts")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    out: dict = {"data": args.data, "torch": torch.__version__, "threads": torch.get_num_threads()}

    cache = tempfile.mkdtemp(prefix="cifarlab-bench-")
    user_cache = os.environ.get("CIFARLAB_CACHE")
    os.environ["CIFARLAB_CACHE"] = cache  # a cold cache, for the first load's figure
    try:
        start = time.perf_counter()
        data = load_dataset(args.data, val_size=5000)
        out["first_load_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        data = load_dataset(args.data, val_size=5000)
        out["cached_reload_s"] = round(time.perf_counter() - start, 3)
        out["cached_reload_fresh_process_s"] = fresh_process_reload_s(args.data)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        # the training children inherit the environment: the user's cache, not a deleted one
        if user_cache is None:
            del os.environ["CIFARLAB_CACHE"]
        else:
            os.environ["CIFARLAB_CACHE"] = user_cache

    mean_uint8 = (torch.tensor(data.mean) * 255).round().to(torch.uint8)
    loader = TensorLoader(data.train, 64, data.mean, data.std, shuffle=True,
                          augment=build_augment("crop-flip", mean_uint8))  # fmt: skip
    limit = args.loader_limit or len(data.train)
    out["tensor_loader_crop_flip_images_per_s"] = round(loader_rate(loader, limit))
    out["tensor_loader_images"] = min(limit, len(data.train))
    # without augmentation: the gather and conversion alone, the floor of any augmenting loader
    plain = TensorLoader(data.train, 64, data.mean, data.std, shuffle=True)
    out["tensor_loader_no_augment_images_per_s"] = round(loader_rate(plain, limit))
    out["tensor_loader_bf16_images_per_s_by_chunk_mib"] = chunk_sizes(data, mean_uint8)

    n = min(args.limit, len(data.train))
    out["train_images_per_pass"] = n
    # the tutorial pipeline over the same JPEG bytes (training split, shuffled)
    entries = encoded_images(Path(args.data))["train"]
    classes = sorted({cls for cls, _ in entries})
    items = sorted(entries.items())
    blobs = [blob for _, blob in items]
    labels = [classes.index(cls) for (cls, _), _ in items]
    dataset = TutorialDataset(blobs, labels, data.mean, data.std)
    # A shared machine's neighbours only ever slow a pass down, so each side is the best of
    # --repeats passes, taken in turns. cifarlab trains in a child process: training tunes
    # the allocator of its process for good (train/allocator.py), which would also speed
    # up every tutorial loop after it.
    rates: dict[str, list[float]] = {"w0": [], "w2": [], "cifarlab": [], "ready": []}
    taken: dict[str, list[float | None]] = {"cifarlab": [], "ready": []}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        for _ in range(args.repeats):
            for workers in (0, 2):
                batches = torch.utils.data.DataLoader(dataset, 64, shuffle=True,
                                                      num_workers=workers)  # fmt: skip
                rates[f"w{workers}"].append(tutorial_loop(batches, n))
            ours = child.submit(cifarlab_images_per_s, args.data, n, model="tutorial").result()
            rates["cifarlab"].append(ours["images_per_s"])
            taken["cifarlab"].append(ours["cores_taken"])
            ready = child.submit(ready_batches_images_per_s, args.data, n, model="tutorial")
            rates["ready"].append(ready.result()["images_per_s"])
            taken["ready"].append(ready.result()["cores_taken"])
    for workers in (0, 2):
        out[f"tutorial_epoch_dataloader_w{workers}_images_per_s"] = round(max(rates[f"w{workers}"]))
    best = max((0, 2), key=lambda w: out[f"tutorial_epoch_dataloader_w{w}_images_per_s"])
    faster = out[f"tutorial_epoch_dataloader_w{best}_images_per_s"]
    batches = torch.utils.data.DataLoader(dataset, 64, shuffle=True, num_workers=best)
    out["tutorial_epoch_dataloader_channels_last_images_per_s"] = round(
        tutorial_loop(batches, n, channels_last=True)
    )
    out["tutorial_epoch_cifarlab_images_per_s"] = round(max(rates["cifarlab"]))
    out["tutorial_epoch_cifarlab_precision"] = ours["precision"]
    out["every_pass_images_per_s"] = {k: [round(r) for r in v] for k, v in rates.items()}
    # the same passes' CPU cores taken by other work: a slow pass next to a high figure here
    # was the neighbours, not the code
    out["every_pass_cores_taken_by_other_work"] = taken
    out["speedup_train_vs_faster_tutorial_pipeline"] = round(
        out["tutorial_epoch_cifarlab_images_per_s"] / faster, 2
    )
    # the most any loader could give: cifarlab's step with no data work, over the same baseline
    out["tutorial_epoch_ready_batches_images_per_s"] = round(max(rates["ready"]))
    out["ceiling_speedup_ready_batches_vs_faster_tutorial_pipeline"] = round(
        out["tutorial_epoch_ready_batches_images_per_s"] / faster, 2
    )
    out["speedup_loader_alone_vs_faster_tutorial_train"] = round(
        out["tensor_loader_crop_flip_images_per_s"] / faster, 2
    )
    out["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    from common import run  # benchmarks/, beside this file

    run(main)
