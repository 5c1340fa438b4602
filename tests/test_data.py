"""Image-folder sources, the cache, stratified splits, augmentation and the loader."""

from __future__ import annotations

import gc
import gzip
import io
import json
import os
import re
import shutil
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, add_tar_member, class_image, pack, pack_tree, write_image_folder
from PIL import Image

from cifarlab.data import TensorLoader, imagefolder, load_dataset
from cifarlab.data import cache as cache_module
from cifarlab.data.arrays import SplitArrays
from cifarlab.data.augment import (
    alternating_flip,
    alternating_flip_mask,
    build_augment,
    cutout,
    pack_pixels,
    random_crop,
    random_flip,
    unpack_pixels,
)
from cifarlab.data.imagefolder import _decode_plain_jpeg, read_image_folder
from cifarlab.errors import CifarlabError


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".zip", ".tar.xz", ".tar.bz2"])
@pytest.mark.parametrize("top", ["dataset", None])
def test_archives_decode_to_the_same_arrays_as_the_folder(tiny_folder, tmp_path, suffix, top):
    from_folder = read_image_folder(tiny_folder)
    from_archive = read_image_folder(pack(tiny_folder, tmp_path / f"d{suffix}", top=top))
    assert from_archive.classes == from_folder.classes == tuple(sorted(CLASSES))
    for split in ("train", "test"):
        a, b = getattr(from_folder, split), getattr(from_archive, split)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert from_folder.train.images.shape == (120, 32, 32, 3)
    assert from_folder.train.images.dtype == np.uint8


def test_second_load_comes_from_the_cache(tiny_archive, monkeypatch):
    first = load_dataset(tiny_archive, val_size=30)
    calls = []
    monkeypatch.setattr("cifarlab.data.dataset.read_image_folder", lambda *a, **k: calls.append(1))
    start = time.perf_counter()
    second = load_dataset(tiny_archive, val_size=30)
    assert calls == [] and time.perf_counter() - start < 1.0
    assert np.array_equal(first.train.images, second.train.images)


def test_a_cached_reload_hands_out_arrays_of_its_own(tiny_archive):
    first = load_dataset(tiny_archive, val_size=30)
    again = load_dataset(tiny_archive, val_size=30)  # images mapped from the cache, then copied
    for split in (again.train, again.val, again.test):
        assert type(split.images) is np.ndarray and split.images.flags.writeable
        split.images[:] = 0  # a notebook may edit its copy...
    third = load_dataset(tiny_archive, val_size=30)  # ...and the cache is untouched
    assert np.array_equal(third.test.images, first.test.images)
    if Path("/proc/self/maps").exists():  # nor does the process keep the entry's files mapped
        del first, third
        gc.collect()
        assert "decoded-" not in Path("/proc/self/maps").read_text()


def test_corrupt_cache_entry_is_rebuilt(tiny_archive):
    load_dataset(tiny_archive, val_size=0)
    for entry in cache_module.cache_root().glob("decoded-*"):
        (entry / "train_images.npy").write_bytes(b"garbage")
    data = load_dataset(tiny_archive, val_size=0)
    assert data.train.images.shape == (120, 32, 32, 3)


def test_validation_split_is_stratified_seeded_and_disjoint(tiny_folder):
    data = load_dataset(tiny_folder, val_size=30, seed=1)
    assert np.bincount(data.val.labels).tolist() == [10, 10, 10]
    assert np.bincount(data.train.labels).tolist() == [30, 30, 30]
    again = load_dataset(tiny_folder, val_size=30, seed=1)
    other = load_dataset(tiny_folder, val_size=30, seed=2)
    assert np.array_equal(data.val.images, again.val.images)
    assert not np.array_equal(data.val.images, other.val.images)
    train_rows = {img.tobytes() for img in data.train.images}
    assert not any(img.tobytes() in train_rows for img in data.val.images)


def test_limits_take_stratified_subsets_after_the_hold_out(tiny_folder):
    data = load_dataset(tiny_folder, val_size=30, limit_train=15, limit_test=9)
    assert np.bincount(data.train.labels).tolist() == [5, 5, 5]
    assert np.bincount(data.test.labels).tolist() == [3, 3, 3]
    assert len(data.val) == 30
    # the test subset is one for every run: it followed the seed and the other limits, so
    # arms of a --val-size or --limit-train study were scored on different test images
    for other in (dict(val_size=0), dict(val_size=30, limit_train=30), dict(val_size=30, seed=5)):
        again = load_dataset(tiny_folder, limit_test=9, **other)
        assert np.array_equal(again.test.images, data.test.images), other


def test_mean_and_std_come_from_the_training_split(tiny_folder):
    data = load_dataset(tiny_folder, val_size=30)
    pixels = data.train.images.reshape(-1, 3).astype(np.float64) / 255
    assert np.allclose(data.mean, pixels.mean(0), atol=1e-6)
    assert np.allclose(data.std, pixels.std(0), atol=1e-6)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_test", "not an image-folder dataset"),
        ("class_mismatch", "different classes"),
        ("not_image", "is not a readable image"),
        ("unsafe", "unsafe archive member"),
        ("truncated", "cannot read the archive"),
    ],
)
def test_bad_sources_get_one_clear_line(tmp_path, breakage, message):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    if breakage == "no_test":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    if breakage == "class_mismatch":
        (root / "test" / "cat").rename(root / "test" / "kitten")
    if breakage == "not_image":
        (root / "train" / "cat" / "notes.txt").write_text("hello")
    archive = pack(root, tmp_path / "d.tar", top="d")
    if breakage == "unsafe":
        add_tar_member(archive, "../evil.png", b"x")
    if breakage == "truncated":
        gz = pack(root, tmp_path / "d.tar.gz")
        gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
        archive = gz
    with pytest.raises(CifarlabError, match=message) as err:
        load_dataset(archive, val_size=0)
    assert "\n" not in str(err.value)


def test_val_size_larger_than_train_is_refused(tiny_folder):
    with pytest.raises(CifarlabError, match="--val-size 500 leaves no training images"):
        load_dataset(tiny_folder, val_size=500)


def test_grayscale_images_are_converted_with_a_warning_on_every_load(tmp_path, capsys):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    gray = root / "train" / "cat" / "0000.png"
    from PIL import Image

    from cifarlab.cli import main

    Image.open(gray).convert("L").save(gray)
    data = read_image_folder(root)
    assert data.train.images.shape[-1] == 3
    assert data.notes == (f"{root}: 1 grayscale/non-RGB image(s) converted to RGB",)
    for load in ("decoded", "cached"):
        assert main(["data", "info", "--data", str(root)]) == 0, load
        err = capsys.readouterr().err
        assert err == f"cifarlab: warning: {data.notes[0]}\n", (load, err)


def _batch(n=6, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, side, side, 3), generator=g, dtype=torch.uint8)


def test_flip_is_an_exact_mirror_or_identity():
    x = _batch()
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = _batch(n=200)
    out = random_crop(x, torch.Generator().manual_seed(3), pad=2, reflect=False)
    padded = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (2, 2, 2, 2)).permute(0, 2, 3, 1)
    offsets = set()
    for o, p in zip(out, padded):
        windows = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(o, p[dy : dy + 8, dx : dx + 8])
        ]
        assert windows, "crop is not a window of the zero-padded image"
        offsets.update(windows)
    assert len(offsets) == 25  # every shift in [-2, 2] x [-2, 2] occurs
    reflect = random_crop(x, torch.Generator().manual_seed(3), pad=2, reflect=True)
    ref_padded = (
        torch.nn.functional.pad(x.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="reflect")
        .permute(0, 2, 3, 1)
        .to(torch.uint8)
    )
    for o, p in zip(reflect, ref_padded):
        assert any(
            torch.equal(o, p[dy : dy + 8, dx : dx + 8]) for dy in range(5) for dx in range(5)
        )


@pytest.mark.parametrize("reflect", [False, True])
def test_crop_with_flip_mirrors_exactly_the_chosen_images(reflect):
    x = _batch(n=300)
    flip = torch.rand(300, generator=torch.Generator().manual_seed(1)) < 0.5
    out = random_crop(x, torch.Generator().manual_seed(3), pad=2, reflect=reflect, flip=flip)
    nchw = x.permute(0, 3, 1, 2).float()
    mode = "reflect" if reflect else "constant"
    padded = torch.nn.functional.pad(nchw, (2, 2, 2, 2), mode=mode).permute(0, 2, 3, 1)
    offsets = set()
    for o, p, f in zip(out, padded.to(torch.uint8), flip):
        seen = o.flip(1) if f else o  # a mirrored crop is the mirror of a window
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(seen, p[dy : dy + 8, dx : dx + 8])]  # fmt: skip
        assert windows, "not a (mirrored) window of the padded image"
        offsets.update((bool(f), w) for w in windows)
    assert len(offsets) == 50  # every shift occurs, mirrored and not


def test_augmentation_is_deterministic_for_a_seed():
    x = _batch(n=32)
    a = random_crop(
        random_flip(x, torch.Generator().manual_seed(7)), torch.Generator().manual_seed(7)
    )
    b = random_crop(
        random_flip(x, torch.Generator().manual_seed(7)), torch.Generator().manual_seed(7)
    )
    assert torch.equal(a, b)


def test_cutout_paints_one_square_with_the_fill():
    x = torch.full((4, 16, 16, 3), 200, dtype=torch.uint8)
    out = cutout(x, torch.Generator().manual_seed(0), 4, torch.tensor([1, 2, 3], dtype=torch.uint8))
    painted = (out[..., 0] == 1).sum(dim=(1, 2))
    assert ((painted >= 4) & (painted <= 16)).all()  # clipped at borders, never larger


@pytest.mark.parametrize("chunk_bytes", [1, 7000, 1 << 20])  # 1 batch, 2 batches (of 3072 B), all
def test_loader_normalizes_shuffles_per_epoch_and_keeps_the_last_batch(chunk_bytes, monkeypatch):
    monkeypatch.setattr("cifarlab.data.loader.CHUNK_BYTES", chunk_bytes)
    split = SplitArrays(_batch(n=10).numpy(), np.arange(10))
    loader = TensorLoader(split, 4, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, seed=1)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, _ = batches[0]
    assert x.shape == (4, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(10))
    expected = (split.images[labels[0]].astype(np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert torch.equal(labels, torch.cat([y for _, y in loader]))  # same epoch, same order
    loader.set_epoch(1)
    assert not torch.equal(labels, torch.cat([y for _, y in loader]))
    dropping = TensorLoader(split, 4, mean=(0.5,) * 3, std=(0.25,) * 3, drop_last=True)
    assert [len(y) for _, y in dropping] == [4, 4]
    assert (loader.num_images, dropping.num_images) == (10, 8)  # what an epoch's bar counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_loader_normalizes_into_the_asked_dtype_and_layout(dtype, channels_last):
    split = SplitArrays(_batch(n=6).numpy(), np.arange(6))
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])  # float64, as numpy
    loader = TensorLoader(split, 6, mean, std, dtype=dtype, channels_last=channels_last)
    ((x, _),) = list(loader)
    assert x.dtype == dtype and x.shape == (6, 3, 8, 8)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert x.is_contiguous(memory_format=layout)
    pixels = torch.from_numpy(split.images).permute(0, 3, 1, 2).double() / 255
    expected = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # bf16 keeps 8 bits
    assert torch.allclose(x.double(), expected, atol=tolerance)


def test_alternating_flip_flips_complementary_halves_on_consecutive_epochs():
    x = _batch(n=64)
    idx = torch.randperm(64)  # any order: the decision follows the image, not its position
    flipped = []
    for epoch in range(4):
        out = alternating_flip(x, idx, epoch, seed=3)
        is_flip = torch.tensor([torch.equal(o, xi.flip(1)) for o, xi in zip(out, x)])
        assert all(f or torch.equal(o, xi) for f, o, xi in zip(is_flip, out, x))
        flipped.append(is_flip)
    assert torch.equal(flipped[0], ~flipped[1]) and torch.equal(flipped[0], flipped[2])
    assert 20 < flipped[0].sum() < 44  # about half
    assert not torch.equal(flipped[0], alternating_flip(x, idx, 0, seed=4).ne(x).any((1, 2, 3)))


def test_loader_with_alt_flip_shows_each_image_both_ways_over_two_epochs():
    split = SplitArrays(_batch(n=12).numpy(), np.arange(12))
    augment = build_augment("alt-flip", torch.zeros(3, dtype=torch.uint8))
    loader = TensorLoader(split, 5, mean=(0.0,) * 3, std=(1 / 255,) * 3, augment=augment)
    seen = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        seen.append(torch.cat([x for x, _ in loader]).permute(0, 2, 3, 1).round().to(torch.uint8))
    images = torch.from_numpy(split.images)
    for a, b, original in zip(*seen, images):
        assert {a.flip(1).equal(original), b.flip(1).equal(original)} == {True, False}


@pytest.mark.parametrize(
    "preset, pad, cut, changed",
    [("none", 4, None, False), ("crop-flip", 0, None, True), ("translate-flip", 2, None, True),
     ("flip", 4, 6, True), ("crop-flip-cutout", 4, None, True)],
)  # fmt: skip
def test_presets_and_options_build(preset, pad, cut, changed):
    augment = build_augment(preset, torch.zeros(3, dtype=torch.uint8), pad, cut)
    assert (augment is not None) == changed
    if augment is not None:
        x = _batch(n=8, side=16)
        packed = augment(pack_pixels(x), torch.arange(8), torch.Generator().manual_seed(0), 0)
        out = unpack_pixels(packed, 3)
        assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x)


def _reference_augment(images, idx, seed, preset, pad, cut, epoch, alt_seed, mean):
    """Per image, the obvious way: pad, cut a window, mirror, paint the square. The draws
    come in the order the presets take them: flip, crop offsets, cutout centres."""
    g, (b, h, w, _) = torch.Generator().manual_seed(seed), (len(idx), *images.shape[1:])
    if "alt-flip" in preset:
        flip = alternating_flip_mask(idx, epoch, alt_seed)
    else:
        flip = torch.rand(b, generator=g) < 0.5
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    cy = torch.randint(0, h, (b, 1, 1), generator=g).flatten()
    cx = torch.randint(0, w, (b, 1, 1), generator=g).flatten()
    mode = "reflect" if "crop" in preset else "constant"
    out = []
    for i, j in enumerate(idx.tolist()):
        chw = images[j].permute(2, 0, 1)[None].float()
        padded = torch.nn.functional.pad(chw, (pad,) * 4, mode=mode)[0].permute(1, 2, 0)
        window = padded[dy[i] : dy[i] + h, dx[i] : dx[i] + w].to(torch.uint8)
        window = window.flip(1) if flip[i] else window
        top, left = cy[i] - cut // 2, cx[i] - cut // 2
        window[max(top, 0) : max(top + cut, 0), max(left, 0) : max(left + cut, 0)] = mean
        out.append(window)
    return torch.stack(out)


@pytest.mark.parametrize(
    "preset, channels, h, w",
    [("crop-flip-cutout", 3, 8, 8), ("translate-alt-flip-cutout", 2, 6, 9),
     ("crop-alt-flip-cutout", 1, 9, 5), ("translate-flip-cutout", 5, 7, 7)],
)  # fmt: skip
def test_preset_equals_a_per_image_reference(preset, channels, h, w):
    # The loader gathers packed pixels straight from the split, crop, flip and cutout
    # folded into index maps; the result must be what the per-image recipe gives.
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, h, w, channels), generator=g, dtype=torch.uint8)
    idx = torch.randperm(40, generator=g)[:25]
    mean = torch.arange(1, channels + 1, dtype=torch.uint8) * 7
    augment = build_augment(preset, mean, crop_pad=2, cutout_size=3, seed=5)
    for epoch in (0, 1):
        packed = augment(pack_pixels(images), idx, torch.Generator().manual_seed(9), epoch)
        expected = _reference_augment(images, idx, 9, preset, 2, 3, epoch, 5, mean)
        assert torch.equal(unpack_pixels(packed, channels), expected)


def test_reflect_crop_refuses_a_pad_as_large_as_the_image():
    x = _batch(n=2, side=4)
    with pytest.raises(ValueError, match="reflect padding of 4 needs images larger than 4x4"):
        random_crop(x, torch.Generator(), pad=4)


def test_cutout_preset_paints_the_mean_pixel():
    mean = torch.tensor([10, 20, 30], dtype=torch.uint8)
    augment = build_augment("crop-flip-cutout", mean, crop_pad=0, cutout_size=4)
    x = torch.full((6, 16, 16, 3), 200, dtype=torch.uint8)
    out = unpack_pixels(augment(pack_pixels(x), torch.arange(6), torch.Generator(), 0), 3)
    painted = (out == mean).all(-1)
    assert ((out == 200).all(-1) | painted).all()  # every pixel is the image's or the mean's
    assert ((painted.sum((1, 2)) >= 4) & (painted.sum((1, 2)) <= 16)).all()


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
def test_packed_pixels_round_trip(channels):
    x = torch.randint(0, 256, (3, 5, 7, channels), dtype=torch.uint8)
    packed = pack_pixels(x)
    assert packed.shape == (3, 5, 7)
    assert torch.equal(unpack_pixels(packed, channels), x)


def test_all_grayscale_keeps_one_channel(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    for f in root.rglob("*.png"):
        Image.open(f).convert("L").save(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # channels follow the data: nothing to warn about
        data = load_dataset(root, val_size=0)
    assert data.image_shape == (1, 32, 32) and len(data.mean) == 1


def test_image_size_resizes_every_image(tiny_folder):
    data = load_dataset(tiny_folder, val_size=0, image_size=16)
    assert data.image_shape == (3, 16, 16) and data.test.images.shape[1:] == (16, 16, 3)
    with pytest.raises(
        CifarlabError, match="--image-size must be a whole number of at least 1, not 0"
    ):
        load_dataset(tiny_folder, image_size=0)


@pytest.mark.parametrize("archived", [False, True])
def test_an_empty_class_folder_is_refused(tmp_path, archived):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train" / "emu").mkdir()
    source = pack_tree(root, tmp_path / "d.tar.gz") if archived else root
    with pytest.raises(CifarlabError, match="class folder train/emu is empty") as err:
        load_dataset(source, val_size=0)
    assert "\n" not in str(err.value)


def test_a_truncated_cache_array_is_rebuilt_not_trusted(tiny_archive):
    first = load_dataset(tiny_archive, val_size=0)
    for entry in cache_module.cache_root().glob("decoded-*"):
        for name in ("train_images.npy", "test_labels.npy"):
            blob = (entry / name).read_bytes()
            (entry / name).write_bytes(blob[: len(blob) - 100])
        flipped = bytearray((entry / "train_sums.npy").read_bytes())  # same size, new content
        flipped[-1] ^= 1
        (entry / "train_sums.npy").write_bytes(bytes(flipped))
    again = load_dataset(tiny_archive, val_size=0)
    assert np.array_equal(first.train.images, again.train.images) and first.mean == again.mean


def test_split_stats_from_cached_sums_match_a_pass_over_pixels(tiny_folder):
    data = load_dataset(tiny_folder, val_size=30, limit_train=45, seed=5)
    pixels = data.train.images.reshape(-1, 3).astype(np.float64) / 255  # the plain way
    assert np.allclose(data.mean, pixels.mean(0), atol=1e-9)
    assert np.allclose(data.std, pixels.std(0), atol=1e-9)


@pytest.mark.parametrize("channels", [1, 3])
def test_per_image_pixel_sums_are_exact_across_chunks(channels):
    # 2,500 images span three of pixel_stats' chunks; 255s check the squares don't overflow
    images = np.random.default_rng(0).integers(0, 256, (2500, 7, 5, channels), dtype=np.uint8)
    images[-1] = 255
    sums, squares = cache_module.pixel_stats(images)
    flat = images.reshape(len(images), -1, channels).astype(np.int64)
    assert np.array_equal(sums, flat.sum(1)) and np.array_equal(squares, (flat**2).sum(1))


def test_a_stop_while_a_preview_is_saved_keeps_the_old_image(tiny_folder, tmp_path,
                                                            monkeypatch):  # fmt: skip
    from matplotlib.figure import Figure

    from cifarlab.cli import main

    out = tmp_path / "grid.png"
    assert main(["data", "preview", "--data", str(tiny_folder), "-o", str(out)]) == 0
    before = out.read_bytes()

    def stopped_midway(fig, path, **kwargs):
        Path(path).write_bytes(before[:100])  # what a savefig cut short leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped_midway)
    assert main(["data", "preview", "--data", str(tiny_folder), "-o", str(out)]) == 130
    # savefig wrote onto grid.png itself: a stop left it truncated (or empty)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_data_info_and_preview_commands(tiny_folder, tmp_path, capsys):
    import json

    from cifarlab.cli import main

    assert main(["data", "info", "--data", str(tiny_folder), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_shape"] == [3, 32, 32] and info["classes"] == sorted(CLASSES)
    assert info["splits"]["train"]["per_class"] == {"cat": 40, "dog": 40, "frog": 40}
    assert len(info["splits"]["test"]["mean"]) == 3 and "decoded-" in info["cache"]
    assert main(["data", "info", "--data", str(tiny_folder)]) == 0
    assert "frog" in capsys.readouterr().out
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "--data", str(tiny_folder), "-o", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 8 * 32  # upscaled, not 32 px per image
    widths = []
    for n in (20, 60):  # the test split holds 20 a class: 60 left 40 blank columns
        args = ["--split", "test", "--per-class", str(n), "-o", str(tmp_path / f"{n}.png")]
        assert main(["data", "preview", "--data", str(tiny_folder), *args]) == 0
        widths.append(Image.open(tmp_path / f"{n}.png").size[0])
    assert widths[0] == widths[1], widths
    capsys.readouterr()
    assert main(["data", "preview", "--data", str(tiny_folder), "-o", str(tmp_path / "g.txt")]) == 2
    err = capsys.readouterr().err
    assert "unknown image type '.txt'; use .png" in err and err.count("\n") == 1, err
    assert main(["data", "info", "--data", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _jpeg(mode: str, size: tuple[int, int], **save) -> bytes:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) + ((len(mode),) if len(mode) > 1 else ())
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    out = io.BytesIO()
    image.save(out, "JPEG", **save)
    return out.getvalue()


def _encoded(fmt: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    "mode, size, save",
    [("RGB", (32, 32), {"quality": 75}),  # as the shared CIFAR-10 copy
     ("RGB", (33, 17), {"quality": 95, "subsampling": 0}),
     ("RGB", (40, 24), {"progressive": True}),
     ("L", (32, 32), {})],
)  # fmt: skip
def test_direct_jpeg_decoding_gives_image_opens_pixels(mode, size, save):
    blob = _jpeg(mode, size, **save)
    fast = _decode_plain_jpeg(blob)
    assert fast is not None  # the fast path was taken
    assert np.array_equal(fast, np.asarray(Image.open(io.BytesIO(blob))))


def test_unusual_or_damaged_jpegs_take_the_image_open_path():
    cmyk = _jpeg("CMYK", (16, 16))  # Adobe marker, four channels
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    whole = _jpeg("RGB", (32, 32))
    for blob in (cmyk, png.getvalue(), whole[:300], whole[:-50], b"\xff\xd8", b""):
        assert _decode_plain_jpeg(blob) is None


def test_a_jpeg_claiming_a_huge_size_is_left_to_image_opens_bomb_check(monkeypatch):
    blob = _jpeg("RGB", (32, 32))
    assert _decode_plain_jpeg(blob) is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32 - 1)
    assert _decode_plain_jpeg(blob) is None


# -- a user's own folders: what torchvision's ImageFolder users expect ----------------------------


def test_images_in_subfolders_and_linked_class_folders_belong_to_their_class(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=4, n_test=2)
    nested = root / "train" / CLASSES[0] / "extra"
    nested.mkdir()
    for f in sorted((root / "train" / CLASSES[0]).glob("*.png"))[:2]:
        f.rename(nested / f.name)  # moved, not lost
    linked = tmp_path / "linked"
    for split in ("train", "test"):
        (linked / split).mkdir(parents=True)
        for cls in CLASSES:
            (linked / split / cls).symlink_to(root / split / cls, target_is_directory=True)
    for source in (root, linked):
        data = load_dataset(source, val_size=0)
        assert np.bincount(data.train.labels).tolist() == [4] * len(CLASSES), source


def test_files_and_folders_left_out_are_named_in_a_warning(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train" / "labels.csv").write_text("a,b\n")
    write_image_folder(tmp_path / "v", n_train=2, n_test=0)
    (tmp_path / "v" / "train").rename(root / "val")
    (root / "train" / CLASSES[0] / "Thumbs.db").write_bytes(b"\0" * 10)  # Windows' litter
    for load in range(2):  # the cached load says it again
        with pytest.warns(UserWarning) as seen:
            load_dataset(root, val_size=0)
        said = " | ".join(str(w.message) for w in seen)
        assert "1 file(s) outside train/<class>/ and test/<class>/ were not used" in said
        assert "train/labels.csv" in said and "the val/ folder was not used" in said
        assert "Thumbs" not in said, load


def test_split_folders_in_capitals_and_windows_zip_paths_load(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    zipped = tmp_path / "d.zip"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("Train\\", b"")  # a folder entry, as some Windows tools write them
        for f in sorted(root.rglob("*.png")):
            parts = f.relative_to(root).parts
            z.write(f, "\\".join((parts[0].capitalize(), *parts[1:])))  # Train\cat\0000.png
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out, nothing to say
        data = load_dataset(zipped, val_size=0)
    assert len(data.train) == 3 * len(CLASSES) and len(data.test) == 2 * len(CLASSES)


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(tmp_path):
    root = tmp_path / "d"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, cls in enumerate(("dark", "light")):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                high = 20_000 if label == 0 else 65_535
                pixels = rng.integers(0, high, (32, 32)).astype(np.uint16)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
                assert Image.open(root / split / cls / f"{i}.png").mode.startswith("I")
    data = load_dataset(root, val_size=0)
    dark = data.train.images[data.train.labels == 0]
    assert data.image_shape == (1, 32, 32)
    assert 30 < dark.mean() < 48 and dark.max() <= 20_000 >> 8  # 0-20,000 of 65,535: dark
    assert 110 < data.train.images[data.train.labels == 1].mean() < 145


def test_non_square_images_train(tmp_path):
    import cifarlab

    root = tmp_path / "wide"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for label, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                wide = np.concatenate([class_image(label, rng)] * 2, axis=1)[:24]  # 24x64
                Image.fromarray(wide).save(root / split / cls / f"{i}.png")
    for model in ("tutorial", "speedrun-small"):
        result = cifarlab.train(
            data=root, model=model, epochs=1, val_size=0, quiet=True, workspace=tmp_path / "ws"
        )  # fmt: skip: a Path, as from Python
        assert result.status == "completed" and result.info["image_shape"] == [3, 24, 64]


def test_load_dataset_unpacks_into_its_splits_and_classes(tiny_folder):
    train, val, test, classes = load_dataset(tiny_folder, val_size=30)
    assert (len(train), len(val), len(test)) == (90, 30, 60) and classes == tuple(CLASSES)


def test_a_changed_folder_replaces_its_stale_cache_entry_and_litter_changes_nothing(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    load_dataset(root, val_size=0)
    entries = sorted(cache_module.cache_root().glob("decoded-*"))
    (root / "train" / ".DS_Store").write_bytes(b"x")  # Finder's, not data: no new entry
    load_dataset(root, val_size=0)
    assert sorted(cache_module.cache_root().glob("decoded-*")) == entries
    (root / "train" / CLASSES[0] / "0000.png").unlink()
    assert len(load_dataset(root, val_size=0).train) == 3 * len(CLASSES) - 1
    now = sorted(cache_module.cache_root().glob("decoded-*"))
    assert len(now) == len(entries) and now != entries  # replaced, not added


def test_a_cache_entry_with_a_damaged_meta_file_is_rebuilt(tiny_folder):
    first = load_dataset(tiny_folder, val_size=0)
    for entry in cache_module.cache_root().glob("decoded-*"):
        (entry / "meta.json").write_text("null")
    assert np.array_equal(load_dataset(tiny_folder, val_size=0).train.images, first.train.images)


def test_a_cache_entry_with_edited_class_names_is_rebuilt(tiny_folder):
    from cifarlab.data.dataset import decode_source

    first = load_dataset(tiny_folder, val_size=0)
    meta_file = decode_source(tiny_folder).cache_entry / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["classes"][0] = "renamed"  # still valid JSON, arrays untouched
    meta_file.write_text(json.dumps(meta))
    assert load_dataset(tiny_folder, val_size=0).classes == first.classes


def test_a_large_archive_read_as_a_stream_checks_its_gzip_crc(tmp_path, monkeypatch):
    # Archives too big to decompress in memory are streamed through tarfile, which stops at
    # the last member; a flipped byte that gzip alone would catch must not load.
    import gzip

    from cifarlab.data import imagefolder

    root = write_image_folder(tmp_path / "d", n_train=2, n_test=1)
    plain = pack(root, tmp_path / "d.tar")
    raw = bytearray(gzip.compress(plain.read_bytes(), compresslevel=0))  # stored blocks
    raw[-8 - 100] ^= 0x10  # in the tar's end padding, which nothing but the CRC covers
    archive = tmp_path / "d.tar.gz"
    archive.write_bytes(bytes(raw))
    monkeypatch.setattr(imagefolder, "_IN_MEMORY_LIMIT", 0)
    with pytest.raises(CifarlabError, match="cannot read the archive .*CRC check failed"):
        load_dataset(archive, val_size=0)


def test_images_of_several_sizes_become_32x32_with_a_warning(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    big = root / "train" / CLASSES[0] / "0000.png"
    original = np.asarray(Image.open(big))
    Image.fromarray(original).resize((48, 48), Image.Resampling.NEAREST).save(big)
    with pytest.warns(UserWarning, match=r"2 sizes \(HxW 32x32, 48x48\); all were resized to 32"):
        data = load_dataset(root, val_size=0)
    assert data.image_shape == (3, 32, 32)
    expected = Image.open(big).resize((32, 32), Image.Resampling.BILINEAR)  # as --image-size
    assert np.array_equal(data.train.images[0], np.asarray(expected))
    kept = np.asarray(Image.open(root / "train" / CLASSES[0] / "0001.png"))
    assert np.array_equal(data.train.images[1], kept)  # 32x32 images stay as they are


def test_images_of_several_sizes_are_resized_as_they_are_decoded(tmp_path, monkeypatch):
    # Held at full size until all were decoded, 52 photos took 869 MB; their headers now
    # tell the sizes first, so no full-size image outlives its own decoding.
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    big = root / "test" / CLASSES[1] / "0000.png"
    Image.open(big).resize((64, 48)).save(big)
    combined = []
    original = imagefolder._combine
    monkeypatch.setattr(
        imagefolder, "_combine", lambda b, *a: combined.extend(b) or original(b, *a)
    )
    with pytest.warns(UserWarning, match=r"2 sizes \(HxW 32x32, 48x64\); all were resized to 32"):
        data = load_dataset(root, val_size=0)
    assert {block.shape[1:3] for block in combined} == {(32, 32)}
    expected = Image.open(big).resize((32, 32), Image.Resampling.BILINEAR)
    assert np.array_equal(data.test.images[2], np.asarray(expected))  # 2 per class: class 1's first


@pytest.mark.parametrize(
    "blob, size",
    [(_jpeg("RGB", (33, 17), quality=95), (17, 33)),
     (_jpeg("L", (40, 24), progressive=True), (24, 40)),
     (_jpeg("CMYK", (20, 10)), (10, 20)),  # Adobe's marker: not decoded directly, but sized
     (_encoded("PNG", (7, 5)), (5, 7)),
     (_encoded("BMP", (9, 4)), (4, 9)),
     (_encoded("GIF", (3, 8)), (8, 3)),
     (b"\xff\xd8\xff\xe0garbage", None),
     (b"not an image", None)],
    ids=["jpeg", "progressive-gray-jpeg", "cmyk-jpeg", "png", "bmp", "gif", "bad-jpeg", "text"],
)  # fmt: skip
def test_image_sizes_are_read_from_headers(blob, size):
    assert imagefolder._header_size(blob) == size


def test_a_loaded_dataset_shows_as_one_line_in_a_notebook(tiny_folder):
    data = load_dataset(tiny_folder, val_size=6)
    shown = repr(data)  # it was the dataclass's repr: every pixel, 918 lines for CIFAR-10
    assert "\n" not in shown and len(shown) < 300, shown
    assert "114 train, 6 val, 60 test images of (3, 32, 32); 3 classes: cat, dog, frog" in shown
    assert repr(data.train) == "SplitArrays(images=uint8[114, 32, 32, 3], labels=114)"


def test_images_too_big_for_memory_are_refused_before_decoding(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)  # 15 images, 46 kB decoded
    monkeypatch.setattr(imagefolder, "_free_memory", lambda: 50_000)
    decoded = []
    monkeypatch.setattr(imagefolder, "_decode_chunk", lambda *a: decoded.append(a))
    with pytest.raises(
        CifarlabError, match=r"15 images at 32x32 need 0.0 GiB decoded .*--image-size"
    ):
        load_dataset(root, val_size=0)
    assert not decoded
    monkeypatch.undo()
    monkeypatch.setattr(imagefolder, "_free_memory", lambda: 50_000)
    assert load_dataset(root, val_size=0, image_size=8).image_shape == (3, 8, 8)
    with pytest.raises(
        CifarlabError, match=r"at 30x30 need .*; pass a --image-size smaller than 30"
    ):
        load_dataset(root, val_size=0, image_size=30)  # it said "pass --image-size 32"


def test_an_image_over_pillows_bomb_limit_is_named(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32x32 is over twice that: refused
    with pytest.raises(CifarlabError, match=r"0000.png has more pixels than Pillow decodes"):
        load_dataset(root, val_size=0)


def test_damage_in_the_middle_of_a_large_cached_array_is_caught(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=700, n_test=1, classes=("a", "b"))
    first = load_dataset(root, val_size=0)  # 1,400 images: a 4.3 MB image array
    key = cache_module.source_fingerprint(root, image_size=None)  # as load_dataset keys it
    array = cache_module.cache_root() / f"decoded-{key}" / "train_images.npy"
    assert array.stat().st_size > 4 << 20
    with array.open("r+b") as f:
        f.seek(array.stat().st_size // 2)
        f.write(b"\0" * 8)
    assert np.array_equal(load_dataset(root, val_size=0).train.images, first.train.images)


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_python_batches_in_a_zip_get_a_message_that_says_so(tmp_path, variant):
    from conftest import write_cifar_python

    folder = write_cifar_python(tmp_path, variant)
    zipped = pack(folder, tmp_path / "batches.zip", top=folder.name)
    with pytest.raises(CifarlabError, match="holds CIFAR python batches.*extract the zip") as err:
        load_dataset(zipped, val_size=0)
    assert "\n" not in str(err.value)


def test_a_tar_with_a_dot_root_entry_loads(tmp_path):
    import shutil

    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    archive = shutil.make_archive(str(tmp_path / "ds"), "gztar", root_dir=root)  # "./" first
    assert len(load_dataset(archive, val_size=0).train) == 3 * len(CLASSES)


def test_two_links_to_one_folder_both_count_and_a_link_loop_ends(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train" / "kitty").symlink_to(root / "train" / CLASSES[0], target_is_directory=True)
    (root / "test" / "kitty").symlink_to(root / "test" / CLASSES[0], target_is_directory=True)
    (root / "train" / CLASSES[1] / "loop").symlink_to("..", target_is_directory=True)
    data = load_dataset(root, val_size=0)
    assert "kitty" in data.classes and len(data.train) == 3 * (len(CLASSES) + 1)


def test_sidecar_files_in_class_subfolders_are_skipped_with_a_note(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train" / CLASSES[0] / "annotations").mkdir()
    (root / "train" / CLASSES[0] / "annotations" / "boxes.json").write_text("{}")
    with pytest.warns(UserWarning, match="1 file.*not used.*annotations/boxes.json"):
        assert len(load_dataset(root, val_size=0).train) == 3 * len(CLASSES)
    (root / "train" / CLASSES[0] / "notes.txt").write_text("hi")  # in the class folder itself
    with pytest.raises(CifarlabError, match="notes.txt is not a readable image"):
        load_dataset(root, val_size=0)


def test_a_new_empty_class_folder_is_refused_after_a_cached_load(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    load_dataset(root, val_size=0)
    (root / "train" / "emu").mkdir()
    with pytest.raises(CifarlabError, match="class folder train/emu is empty"):
        load_dataset(root, val_size=0)


def test_cifar_batches_nested_in_a_folder_are_pointed_at(tmp_path):
    from conftest import write_cifar_python

    folder = write_cifar_python(tmp_path / "wrap" / "x")
    with pytest.raises(CifarlabError, match=f"pass the folder holding them: --data {folder}"):
        load_dataset(tmp_path / "wrap", val_size=0)


def test_an_unreadable_file_is_one_line_naming_it(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train" / CLASSES[0] / "gone.png").symlink_to(tmp_path / "nowhere.png")  # dangling
    with pytest.raises(CifarlabError, match=r"cannot read train/\w+/gone.png .*fix or remove it"):
        load_dataset(root, val_size=0)


def test_files_outside_the_splits_are_never_read(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "SingletonCookie").symlink_to(tmp_path / "nowhere")  # a browser's lock, dangling
    (root / "notes").mkdir()
    (root / "notes" / "secret.txt").write_text("x")
    (root / "notes" / "secret.txt").chmod(0)  # unreadable (to all but root)
    # the dangling link stopped the load ("cannot read SingletonCookie ... fix or remove it")
    with pytest.warns(UserWarning, match="2 file.*not used"):
        data = load_dataset(root, val_size=0)
    assert len(data.train.labels) == 3 * len(CLASSES)


@pytest.mark.parametrize(
    "options, says",
    [
        ({"val_size": "100"}, "val_size must be a whole number of at least 0, not '100'"),
        ({"val_size": -1}, "val_size must be a whole number of at least 0, not -1"),
        ({"limit_train": 0}, "limit_train must be a whole number of at least 1, not 0"),
        ({"labels": "x"}, "labels must be 'fine' or 'coarse', not 'x'"),  # a folder warned
    ],
)
def test_load_dataset_checks_its_counts_as_train_does(tiny_folder, options, says):
    with pytest.raises(CifarlabError, match=says):
        load_dataset(str(tiny_folder), **options)


def test_limits_that_cannot_be_met_or_leave_classes_out_are_said(tiny_folder):
    with pytest.warns(UserWarning, match="--limit-train 1000 is more than the 90 training"):
        data = load_dataset(tiny_folder, val_size=30, limit_train=1000)
    assert len(data.train) == 90
    with pytest.warns(UserWarning, match="2 of 3 classes have no training image in this run"):
        load_dataset(tiny_folder, val_size=0, limit_train=1)
    with pytest.warns(UserWarning, match="--limit-test 100 is more than the 60 test images"):
        load_dataset(tiny_folder, val_size=0, limit_test=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(tiny_folder, val_size=0, limit_train=3)  # one of each: nothing to say


@pytest.mark.parametrize("archived", [False, True])
def test_two_datasets_in_one_folder_are_refused_not_pooled(tmp_path, archived):
    root = tmp_path / "two"
    write_image_folder(root / "v1", n_train=3, n_test=2)
    write_image_folder(root / "v2", n_train=3, n_test=2, seed=1)  # same file names
    source = pack(root, tmp_path / "two.tar.gz", top=None) if archived else root
    # pooled, v2's images replaced v1's of the same names: 3 a class, not 6, no word said
    with pytest.raises(CifarlabError, match=r"holds 2 datasets' .*\(v1/, v2/\); point --data"):
        load_dataset(source, val_size=0)


def _plain_tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as t:
        for f in sorted(folder.rglob("*")):
            t.add(f, f.relative_to(folder).as_posix(), recursive=False)
    return archive


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_tar_cut_between_members_is_refused_as_truncated(tmp_path, gzipped):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    whole = _plain_tar(root, tmp_path / "whole.tar")
    with tarfile.open(whole) as t:
        cut_at = t.getmembers()[-4].offset  # a clean cut: whole members, then nothing
    cut = whole.read_bytes()[:cut_at]
    archive = tmp_path / ("cut.tar.gz" if gzipped else "cut.tar")
    archive.write_bytes(gzip.compress(cut) if gzipped else cut)
    # it loaded with the last images missing, silently
    with pytest.raises(CifarlabError, match="cannot read the archive .*may be truncated"):
        load_dataset(archive, val_size=0)


def test_hard_and_symbolic_links_in_a_tar_load_as_in_the_folder(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    first, second = (root / "train" / CLASSES[0] / f"000{i}.png" for i in (0, 1))
    first.unlink()
    os.link(root / "train" / CLASSES[1] / "0000.png", first)  # a hard link: tar's 2nd name
    second.unlink()
    second.symlink_to(Path("..") / CLASSES[1] / "0001.png")
    in_folder = load_dataset(root, val_size=0)
    archive = _plain_tar(root, tmp_path / "d.tar")  # tarfile stores links as link members
    in_archive = load_dataset(archive, val_size=0)  # they were dropped: 2 images fewer
    assert np.array_equal(in_archive.train.images, in_folder.train.images)
    assert np.array_equal(in_archive.train.labels, in_folder.train.labels)


def test_split_folders_in_capitals_load_from_a_folder(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train").rename(root / "Train")
    (root / "test").rename(root / "TEST")
    # "train/cat/0000.png is not a readable image": the walk left capitalised splits unread
    data = load_dataset(root, val_size=0)
    assert len(data.train) == 3 * len(CLASSES) and len(data.test) == 2 * len(CLASSES)


def test_a_file_named_meta_does_not_make_an_image_folder_cifar100(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "meta").write_text('{"source": "camera"}')
    with pytest.warns(UserWarning, match="1 file.*not used"):
        data = load_dataset(root, val_size=0)  # "meta is not a readable CIFAR pickle"
    assert data.classes == CLASSES


def test_a_named_pipe_among_the_images_is_refused_not_waited_on(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    os.mkfifo(root / "train" / CLASSES[0] / "pipe.png")  # reading it waited forever
    with pytest.raises(CifarlabError, match=r"train/\w+/pipe.png is not a regular file"):
        load_dataset(root, val_size=0)


@pytest.mark.parametrize(
    "options, says",
    [
        ({"image_size": "16"}, "--image-size must be a whole number of at least 1, not '16'"),
        ({"image_size": True}, "--image-size must be a whole number of at least 1, not True"),
        ({"image_size": 16.5}, "--image-size must be a whole number of at least 1, not 16.5"),
        ({"seed": -1}, "seed must be a whole number of at least 0, not -1"),
    ],
)
def test_load_dataset_checks_image_size_and_seed(tiny_folder, options, says):
    with pytest.raises(CifarlabError, match=re.escape(says)):  # True gave 1x1 images
        load_dataset(tiny_folder, val_size=0, **options)


def test_a_hold_out_of_most_or_all_of_a_small_dataset_says_what_fits(tiny_folder):
    with pytest.raises(CifarlabError, match=r"--val-size 12, a tenth, is usual; 0: no valid"):
        load_dataset(tiny_folder)  # the default 5,000 of 120 training images
    with pytest.warns(UserWarning, match="holds out 83% of the 120 training images, leaving 20"):
        load_dataset(tiny_folder, val_size=100)


def test_data_info_says_when_the_cache_could_not_be_written(tiny_folder, tmp_path, monkeypatch,
                                                           capsys):  # fmt: skip
    from cifarlab.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CIFARLAB_CACHE", str(blocker))
    assert main(["data", "info", "--data", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    # it named a cache entry under a file, which nothing had written
    assert f"cache: none written ({blocker} is not a writable folder; set CIFARLAB_CACHE)" in out


def test_class_names_the_font_lacks_are_one_warning_line_not_one_per_character(tmp_path):
    from cifarlab.data.inspect import preview_grid

    root = write_image_folder(tmp_path / "d", n_train=2, n_test=1)
    (root / "train" / CLASSES[0]).rename(root / "train" / "\U000f0001\U000f0002")  # no font
    (root / "test" / CLASSES[0]).rename(root / "test" / "\U000f0001\U000f0002")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preview_grid(root, tmp_path / "grid.png", per_class=2)
    said = [str(w.message) for w in caught]
    # matplotlib's "Glyph 983041 ... missing from font(s) DejaVu Sans", with its source line
    assert not [s for s in said if "missing from font" in s], said
    assert [s for s in said if "2 character(s) of its labels are not in the plotting font" in s]


def test_the_content_id_follows_images_labels_and_classes_not_stray_files(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    first = load_dataset(root, val_size=0).content_id
    (root / "README.txt").write_text("notes")  # a new warning, the same data
    with pytest.warns(UserWarning, match="not used"):
        assert load_dataset(root, val_size=0).content_id == first
    write_image_folder(root, n_train=3, n_test=2, seed=5)  # other images, same file names
    with pytest.warns(UserWarning, match="not used"):
        assert load_dataset(root, val_size=0).content_id != first


# -- archives and folders as other tools make them ------------------------------------


def _patch_zip(archive: Path, flags: int = 0, clear: int = 0, method: int | None = None) -> None:
    """Set or clear general-purpose flag bits (or the compression method) of every member,
    in its local header and its central directory entry, as other zip tools write them."""
    import struct
    import zipfile

    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        offsets = [(i.header_offset, 6) for i in z.infolist()]  # local header: flags at +6
        start = z.start_dir
    for _ in range(len(offsets)):  # central directory entries, in order: flags at +8
        offsets.append((start, 8))
        n, m, k = struct.unpack_from("<HHH", raw, start + 28)
        start += 46 + n + m + k
    for at, flag_at in offsets:
        (value,) = struct.unpack_from("<H", raw, at + flag_at)
        struct.pack_into("<H", raw, at + flag_at, (value | flags) & ~clear)
        if method is not None:
            struct.pack_into("<H", raw, at + flag_at + 2, method)
    archive.write_bytes(bytes(raw))


def test_a_zip_of_utf8_names_without_the_utf8_flag_keeps_its_class_names(tmp_path):
    # Info-ZIP's `zip` (Linux, macOS) writes UTF-8 names and leaves the flag unset
    classes = ("chat_é", "naïve", "狗")
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2, classes=classes)
    archive = pack(root, tmp_path / "d.zip", top=None)
    _patch_zip(archive, clear=0x800)
    assert read_image_folder(archive).classes == read_image_folder(root).classes == classes


@pytest.mark.parametrize(
    "patch, message",
    [
        (dict(flags=0x1), "/0000.png' is encrypted; unzip it with its password"),
        (dict(method=9), "zip it again with ordinary deflate"),  # Deflate64: Windows Explorer
    ],
)
def test_zip_members_zipfile_cannot_read_get_one_line(tmp_path, capsys, patch, message):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    archive = pack(root, tmp_path / "d.zip", top=None)
    _patch_zip(archive, **patch)
    from cifarlab.cli import main

    assert main(["data", "info", "--data", str(archive)]) == 2  # a traceback, exit 1
    assert message in capsys.readouterr().err


def test_a_symbolic_link_in_a_zip_is_named_not_read_as_an_image(tmp_path):
    import stat
    import zipfile

    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    archive = pack(root, tmp_path / "d.zip", top=None)
    link = zipfile.ZipInfo("train/cat/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16  # as `zip -y` stores it
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr(link, "../dog/0000.png")  # its target's path, not the image
    with pytest.raises(CifarlabError, match="'train/cat/link.png' is a symbolic link; zip wi"):
        read_image_folder(archive)


def test_class_names_in_either_unicode_form_are_one_class(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2, classes=("café", "dog"))
    # macOS (HFS+) hands out decomposed names: "cafe" + a combining accent
    (root / "test" / "café").rename(root / "test" / "cafe\u0301")
    assert read_image_folder(root).classes == ("café", "dog")


def test_train_and_val_without_test_says_to_rename_val(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "test").rename(root / "val")  # as Imagenette ships
    with pytest.raises(CifarlabError, match="has val/ but no test/; rename val/ to test/"):
        read_image_folder(root)


def test_a_workspace_inside_the_data_folder_does_not_change_its_cache_key(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    key = cache_module.source_fingerprint(root)
    (root / "cifarlab-runs" / "tutorial-1a2b").mkdir(parents=True)  # `cd data && train --data .`
    (root / "cifarlab-runs" / "runs.db").write_bytes(b"x")
    assert cache_module.source_fingerprint(root) == key  # every run decoded the data again
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor is it named as files left out of the data
        load_dataset(root, val_size=0)
    (root / "train" / "cat" / "0000.png").write_bytes(b"edited")
    assert cache_module.source_fingerprint(root) != key


def test_a_folder_holding_cifar10_and_cifar100_is_refused(tmp_path):
    from conftest import write_cifar_python

    write_cifar_python(tmp_path / "both", "cifar10")
    write_cifar_python(tmp_path / "both", "cifar100")
    with pytest.raises(CifarlabError, match=r"holds 2 CIFAR datasets \(cifar-10-batches-py/, "):
        load_dataset(tmp_path / "both", val_size=0)  # it read CIFAR-10 and said nothing


def test_a_file_name_with_a_carriage_return_stays_on_one_error_line(tmp_path, capsys):
    from cifarlab.cli import main

    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train" / "cat" / "Icon\r").write_bytes(b"")  # Finder's custom-icon file: litter
    assert main(["data", "info", "--data", str(root)]) == 0
    (root / "train" / "cat" / "bad\rname.png").write_bytes(b"not an image")
    capsys.readouterr()
    assert main(["data", "info", "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad\\rname.png" in err, err


@pytest.mark.parametrize("suffix", [".tar.xz", ".tar.bz2"])
def test_xz_and_bz2_tars_are_data_sources(tiny_folder, tmp_path, suffix):
    data = load_dataset(pack(tiny_folder, tmp_path / f"d{suffix}"), val_size=0)  # refused
    assert len(data.train) == 120 and data.classes == tuple(sorted(CLASSES))


def test_layouts_that_read_wrong_are_named_with_the_fix(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    both = tmp_path / "both"
    shutil.copytree(root, both)
    shutil.copytree(root / "train", both / "Train")  # a second copy: files of one name
    with pytest.raises(CifarlabError, match=r"holds both Train/ and train/; merge them"):
        read_image_folder(both)  # 30 images counted, not 60: one replaced the other
    wrapped = tmp_path / "w"
    shutil.copytree(root, wrapped / "test")  # a dataset kept in a folder named test/
    with pytest.raises(CifarlabError, match=r"lie inside a folder named test/, which reads as"):
        read_image_folder(wrapped)
    deep = tmp_path / "deep"
    shutil.copytree(root, deep / "outer" / "inner")
    with pytest.raises(CifarlabError, match=r"they lie deeper, in outer/inner/: point --data"):
        read_image_folder(deep)
    archive = pack(deep, tmp_path / "deep.tar.gz", top=None)
    with pytest.raises(CifarlabError, match=r"point --data at that folder \(extract the arch"):
        read_image_folder(archive)


def test_a_link_to_a_folder_in_a_tar_is_followed_as_on_disk(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "test" / "cat" / "more").symlink_to("../dog")  # dog's images count as cat's too
    (root / "train" / "cat" / "loop").symlink_to("..")  # back up: skipped, as on disk
    archive = tmp_path / "d.tar"
    with tarfile.open(archive, "w") as t:
        t.add(root, arcname="d")  # links stored as links
    on_disk, packed = read_image_folder(root), read_image_folder(archive)
    assert len(packed.test) == len(on_disk.test) == 2 * 3 + 2  # it said "not a readable image"
    for split in ("train", "test"):
        a, b = getattr(on_disk, split), getattr(packed, split)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
