"""Shared fixtures: tiny generated image-folder datasets and the real CIFAR-10 copy."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_COPY = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES = ("cat", "dog", "frog")
# Read before the autouse fixture below clears it for each test.
REAL_DATA = Path(os.environ.get("CIFARLAB_DATA") or SHARED_COPY)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test decodes into a cache of this session, never the user's ~/.cache."""
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C (SIGINT) raising KeyboardInterrupt, as in a terminal: a job started in the
    background of a shell without job control (a CI runner, `cmd &`) inherits it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def sigint_as_in_a_terminal() -> None:
    """For ``Popen(preexec_fn=...)``: the child gets Ctrl-C back if this process ignores it
    (see ``ctrl_c_raises``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A learnable image: a class-specific colour and stripe direction, plus noise."""
    base = np.zeros((size, size, 3), dtype=np.float64)
    base[..., label % 3] = 160
    stripes = np.arange(size) % 8 < 4
    if label % 2:
        base[stripes, :, :] += 60
    else:
        base[:, stripes, :] += 60
    noisy = base + rng.normal(0, 30, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_image_folder(
    root: Path,
    n_train: int = 20,
    n_test: int = 10,
    classes: tuple[str, ...] = CLASSES,
    fmt: str = "png",
    seed: int = 0,
) -> Path:
    """Write root/{train,test}/<class>/NNNN.<fmt> and return root."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(label, rng)).save(folder / f"{i:04d}.{fmt}")
    return root


def pack(folder: Path, archive: Path, top: str | None = "dataset") -> Path:
    """Pack an image folder into a .tar.gz/.tar/.zip, optionally under one top folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = [
        (
            p,
            f"{top}/{p.relative_to(folder).as_posix()}"
            if top
            else p.relative_to(folder).as_posix(),
        )
        for p in files
    ]
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as z:
            for path, name in names:
                z.write(path, name)
    else:
        compressed = {".gz": "w:gz", ".tgz": "w:gz", ".xz": "w:xz", ".bz2": "w:bz2"}
        mode = compressed.get(archive.suffix, "w")
        with tarfile.open(archive, mode) as t:
            for path, name in names:
                t.add(path, name)
    return archive


def add_tar_member(archive: Path, name: str, data: bytes) -> None:
    """Append a raw member to an uncompressed tar."""
    with tarfile.open(archive, "a") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("tiny") / "data", n_train=40, n_test=20)


@pytest.fixture(scope="session")
def tiny_archive(tiny_folder, tmp_path_factory) -> Path:
    return pack(tiny_folder, tmp_path_factory.mktemp("tiny-archive") / "tiny.tar.gz")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real CIFAR-10 copy: skip where absent, fail where CI requires it."""
    path = REAL_DATA
    if not path.exists():
        reason = f"real CIFAR-10 copy not found at {path} (set CIFARLAB_DATA)"
        if os.environ.get("CIFARLAB_REQUIRE_DATA") == "1":
            pytest.fail(f"CIFARLAB_REQUIRE_DATA=1 but {reason}")
        pytest.skip(reason)
    return path


def cifar_python_arrays(
    n_train: int = 10, n_test: int = 5, n_classes: int = 3, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Class-ordered train/test images (N, 32, 32, 3) and labels for CIFAR python batches."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.repeat(np.arange(n_classes), n)
        out[split] = (np.stack([class_image(int(y), rng) for y in labels]), labels)
    return out


def write_cifar_python(
    root: Path, variant: str = "cifar10", n_train: int = 10, n_test: int = 5, seed: int = 0
) -> Path:
    """Write the official python layout (pickled dicts, protocol 2 like the originals)."""
    import pickle

    arrays = cifar_python_arrays(n_train, n_test, 3 if variant == "cifar10" else 4, seed)
    folder = root / ("cifar-10-batches-py" if variant == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, obj: dict) -> None:
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))

    def rows(images: np.ndarray) -> np.ndarray:  # NHWC -> (N, 3072) channel-major rows
        return images.transpose(0, 3, 1, 2).reshape(len(images), -1)

    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    if variant == "cifar10":
        dump("batches.meta", {b"label_names": [b"cat", b"dog", b"frog"], b"num_vis": 3072})
        for i, idx in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
            batch = {b"data": rows(train_x[idx]), b"labels": train_y[idx].tolist()}
            dump(f"data_batch_{i}", {b"batch_label": b"training batch", **batch})
        dump("test_batch", {b"data": rows(test_x), b"labels": test_y.tolist()})
    else:
        fine = [b"apple", b"bee", b"cat", b"dog"]
        dump("meta", {b"fine_label_names": fine, b"coarse_label_names": [b"plant", b"animal"]})
        for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            coarse = [0 if v == 0 else 1 for v in y]
            dump(name, {b"data": rows(x), b"fine_labels": y.tolist(), b"coarse_labels": coarse})
    return folder


def pack_tree(folder: Path, archive: Path) -> Path:
    """A .tar.gz holding ``folder`` under its own name, like the official archives."""
    with tarfile.open(archive, "w:gz") as t:
        t.add(folder, folder.name)
    return archive


def stop_training_at(monkeypatch, epoch: int, error: BaseException | type = KeyboardInterrupt):
    """Training raises ``error`` as epoch ``epoch`` (from 0) starts: a run stopped there, with
    the epochs before it checkpointed (Ctrl-C by default)."""
    from cifarlab.train.trainer import Trainer

    original = Trainer.train_epoch

    def train_epoch(self, at):
        if at == epoch:
            raise error
        return original(self, at)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


def trained_epochs(monkeypatch) -> list[int]:
    """The epochs (from 0) this process trains from now on, in order: a resume that retrained
    from scratch would end with the same seeded weights, so its tests look here too."""
    from cifarlab.train.trainer import Trainer

    original, seen = Trainer.train_epoch, []

    def train_epoch(self, at):
        seen.append(at)
        return original(self, at)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    return seen
