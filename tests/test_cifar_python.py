"""The official CIFAR-10/100 python format: folder and archive, fine/coarse, bad pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import cifar_python_arrays, pack, pack_tree, write_cifar_python

from cifarlab.data import load_dataset
from cifarlab.data.cifar_python import is_cifar_python, read_cifar_python
from cifarlab.data.imagefolder import read_image_folder
from cifarlab.errors import CifarlabError


def test_folder_archive_and_image_folder_decode_to_identical_arrays(tmp_path):
    from PIL import Image

    folder = write_cifar_python(tmp_path / "py")
    archive = pack_tree(folder, tmp_path / "cifar-10-python.tar.gz")
    images = tmp_path / "png"  # the same pixels as an image folder (PNG is lossless)
    for split, (x, y) in cifar_python_arrays().items():
        for i, (image, label) in enumerate(zip(x, y)):
            cls = ("cat", "dog", "frog")[label]
            (images / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(images / split / cls / f"{i:04d}.png")
    sources = [read_cifar_python(folder), read_cifar_python(tmp_path / "py"),
               read_cifar_python(archive), read_image_folder(images),
               read_image_folder(pack(images, tmp_path / "png.zip"))]  # fmt: skip
    expected = cifar_python_arrays()
    for decoded in sources:
        assert decoded.classes == ("cat", "dog", "frog")
        for split in ("train", "test"):
            got = getattr(decoded, split)
            assert np.array_equal(got.images, expected[split][0])
            assert np.array_equal(got.labels, expected[split][1])
    assert is_cifar_python(archive) and is_cifar_python(folder)
    assert not is_cifar_python(images) and not is_cifar_python(tmp_path / "png.zip")


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = write_cifar_python(tmp_path, "cifar100")
    archive = pack_tree(folder, tmp_path / "cifar-100-python.tar.gz")
    fine = load_dataset(archive, val_size=0)
    coarse = load_dataset(archive, val_size=0, labels="coarse")
    assert fine.classes == ("apple", "bee", "cat", "dog")
    assert coarse.classes == ("plant", "animal")
    assert np.bincount(coarse.train.labels).tolist() == [10, 30]
    assert np.array_equal(fine.train.images, coarse.train.images)
    with pytest.raises(CifarlabError, match="labels must be .fine. or .coarse., not .medium."):
        load_dataset(archive, val_size=0, labels="medium")


def test_coarse_labels_on_a_source_without_them_warn(tmp_path, tiny_folder):
    from cifarlab.errors import CifarlabWarning

    cifar10 = write_cifar_python(tmp_path, "cifar10")
    for source, says in ((cifar10, "is CIFAR-10"), (tiny_folder, "the folders are the classes")):
        for load, size in (("decoded", None), ("cached", None), ("resized", 16)):
            with pytest.warns(
                CifarlabWarning, match=f"--labels coarse is for CIFAR-100; .*{says}"
            ) as seen:
                data = load_dataset(source, val_size=0, labels="coarse", image_size=size)
            assert len(data.classes) == 3, load  # the source's own classes
            # it points at the caller's line, not into cifarlab, as a notebook shows it
            assert {w.filename for w in seen} == {__file__}, load


def test_load_dataset_reads_the_archive_and_caches_it(tmp_path, monkeypatch):
    archive = pack_tree(write_cifar_python(tmp_path), tmp_path / "cifar-10-python.tar.gz")
    first = load_dataset(archive, val_size=6, seed=0)
    assert first.image_shape == (3, 32, 32) and len(first.train) == 24
    monkeypatch.setattr("cifarlab.data.dataset.read_cifar_python", lambda *a: 1 / 0)
    again = load_dataset(archive, val_size=6, seed=0)
    assert np.array_equal(first.train.images, again.train.images)
    assert first.mean == again.mean


def _rewrite(folder, name, change):
    batch = pickle.loads((folder / name).read_bytes(), encoding="bytes")
    (folder / name).write_bytes(pickle.dumps(change(batch), protocol=2))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing key", "data_batch_2 has no key 'data'"),
        ("bad shape", "data_batch_1 data is uint8 (2, 100), expected uint8 (N, 3072)"),
        ("label count", "test_batch has labels of shape (4,) for 15 images"),
        ("label range", "test_batch has labels 0..3, but its meta file names 3 classes (0..2)"),
        ("float labels", "data_batch_1 labels are float64, expected integers"),
        ("empty class", "no training image is labelled 'newt'; fix the meta file's label names"),
        ("missing batch", "missing data_batch_5 beside batches.meta"),
        ("evil pickle", "refusing to load global posix.system"),
        ("not a pickle", "test_batch is not a readable CIFAR pickle"),
        ("truncated", "cannot read the archive"),
    ],
)
def test_bad_batches_get_one_clear_line(tmp_path, breakage, message):
    folder = write_cifar_python(tmp_path)
    if breakage == "missing key":
        _rewrite(folder, "data_batch_2", lambda b: {b"labels": b[b"labels"]})
    if breakage == "bad shape":
        _rewrite(folder, "data_batch_1", lambda b: {**b, b"data": np.zeros((2, 100), np.uint8)})
    if breakage == "label count":
        _rewrite(folder, "test_batch", lambda b: {**b, b"labels": [0, 1, 2, 0]})
    if breakage == "label range":
        _rewrite(folder, "test_batch", lambda b: {**b, b"labels": [3] + b[b"labels"][1:]})
    if breakage == "float labels":  # 1.5 must not quietly train as class 1
        _rewrite(
            folder, "data_batch_1", lambda b: {**b, b"labels": [y + 0.5 for y in b[b"labels"]]}
        )
    if breakage == "empty class":  # a fourth name no label uses: a dead output, refused
        _rewrite(folder, "batches.meta", lambda m: {b"label_names": m[b"label_names"] + [b"newt"]})
    if breakage == "missing batch":
        (folder / "data_batch_5").unlink()
    if breakage == "evil pickle":
        (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    if breakage == "not a pickle":
        (folder / "test_batch").write_bytes(b"hello")
    source = folder
    if breakage == "truncated":
        source = pack_tree(folder, tmp_path / "cifar-10-python.tar.gz")
        source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(CifarlabError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_dataset(source, val_size=0)
    assert "\n" not in str(err.value)


def test_a_corrupt_gzip_is_refused_even_where_every_member_reads(tmp_path):
    # Stored (level 0) deflate blocks hold the bytes as they are, so a flipped byte
    # decompresses without complaint: only gzip's CRC at the stream's end catches it. Here
    # it is in the tar's end padding, which nothing else reads; in a pixel it was a wrong
    # image, trained on and cached.
    import gzip
    import tarfile

    folder = write_cifar_python(tmp_path)
    tar = tmp_path / "plain.tar"
    with tarfile.open(tar, "w") as t:
        t.add(folder, folder.name)
    raw = bytearray(gzip.compress(tar.read_bytes(), compresslevel=0))
    raw[-8 - 100] ^= 0x10  # 100 bytes before gzip's 8-byte trailer
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(bytes(raw))
    with pytest.raises(CifarlabError, match="cannot read the archive .*CRC check failed"):
        load_dataset(archive, val_size=0)


def test_only_the_files_beside_the_meta_file_count(tmp_path):
    folder = write_cifar_python(tmp_path / "a")
    expected = read_cifar_python(folder)
    stray = write_cifar_python(tmp_path / "b", seed=1)  # other pixels, one level deeper
    stray_copy = folder / "backup"
    stray_copy.mkdir()
    (stray_copy / "data_batch_1").write_bytes((stray / "data_batch_1").read_bytes())
    archive = pack_tree(folder, tmp_path / "cifar-10-python.tar.gz")  # backup/ comes after
    got = read_cifar_python(archive)
    assert np.array_equal(got.train.images, expected.train.images)
    # two datasets in one archive: which one was meant cannot be guessed
    (stray_copy / "batches.meta").write_bytes((stray / "batches.meta").read_bytes())
    archive = pack_tree(folder, tmp_path / "two.tar.gz")
    with pytest.raises(CifarlabError, match="holds 2 CIFAR datasets .*pack one dataset"):
        read_cifar_python(archive)


def test_python3_keys_and_latin1_names_load(tmp_path):
    folder = write_cifar_python(tmp_path)
    names = ["chat", b"ch\xe8vre", "grenouille"]  # str keys and names, one latin-1 name
    _rewrite(folder, "batches.meta", lambda m: {"label_names": names})
    _rewrite(folder, "test_batch", lambda b: {k.decode(): v for k, v in b.items()})
    data = read_cifar_python(folder)
    assert data.classes == ("chat", "chèvre", "grenouille") and len(data.test.labels) == 15
