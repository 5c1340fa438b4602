"""Using a trained run: `cifarlab predict` (image files), `cifarlab export` (ONNX)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab
from cifarlab.cli import main
from cifarlab.errors import CifarlabError


@pytest.fixture(scope="module")
def trained_run(tiny_archive, tmp_path_factory) -> tuple[Path, str]:
    workspace = tmp_path_factory.mktemp("predict") / "ws"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(workspace), val_size=0,
                            batch_size=16, epochs=4, optimizer="adam", lr=0.003, tta=1,
                            precision="fp32", quiet=True)  # fmt: skip
    return workspace, result.run_id


def _predict(capsys, workspace: Path, run_id: str, *args: str) -> tuple[int, str, str]:
    code = main(["predict", run_id, *args, "--workspace", str(workspace)])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_classifies_files_as_the_net_classifies_their_pixels(
    trained_run, tiny_folder, capsys
):
    workspace, run_id = trained_run
    code, out, err = _predict(capsys, workspace, run_id, str(tiny_folder / "test"),
                              "--format", "json", "--top", "2")  # fmt: skip
    assert code == 0 and err == ""  # 32x32 files: nothing resized, nothing to say
    rows = json.loads(out)
    files = sorted((tiny_folder / "test").rglob("*.png"))
    assert [Path(r["file"]) for r in rows] == files  # every image of the folder, all levels
    trained = cifarlab.load_trained(run_id, workspace)
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])
    assert [r["class"] for r in rows] == trained.predict(pixels)  # the same pixels, the same net
    probs = trained.probabilities(pixels)
    for row, p in zip(rows, probs):
        assert row["probability"] == pytest.approx(p.max().item(), abs=1e-6)
        assert [t["class"] for t in row["top"]][0] == row["class"] and len(row["top"]) == 2
        assert row["top"][0]["probability"] >= row["top"][1]["probability"]
    truth = [f.parent.name for f in files]
    accuracy = np.mean([r["class"] == t for r, t in zip(rows, truth)])
    assert accuracy > 0.8  # it learned the tiny classes (chance: 1/3)


def test_predict_brings_other_images_to_the_nets_size_and_channels(trained_run, tmp_path, capsys):
    workspace, run_id = trained_run
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))  # 64 wide, 48 high
    big.save(tmp_path / "big.png")
    gray = Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    gray.save(tmp_path / "gray.jpg")
    code, out, err = _predict(capsys, workspace, run_id, str(tmp_path / "big.png"),
                              str(tmp_path / "gray.jpg"), "--format", "csv")  # fmt: skip
    assert code == 0
    assert f"note: 1 of 2 images resized to 32x32, the size run {run_id} trained on" in err
    lines = out.splitlines()
    assert lines[0] == "file,class1,p1" and len(lines) == 3
    trained = cifarlab.load_trained(run_id, workspace)
    expected = [
        np.asarray(big.resize((32, 32), Image.Resampling.BILINEAR)),
        np.asarray(Image.open(tmp_path / "gray.jpg").convert("RGB")),
    ]
    assert [line.split(",")[1] for line in lines[1:]] == trained.predict(np.stack(expected))
    # from Python, paths work where pixels do: one path, or a list of them; and PIL images
    assert trained.predict(str(tmp_path / "big.png")) == trained.predict(expected[0])
    opened = [big, Image.open(tmp_path / "gray.jpg")]  # any size and mode, as files are
    assert torch.equal(trained.logits(opened), trained.logits(np.stack(expected)))
    assert np.array_equal(trained.read(tmp_path / "big.png")[0], expected[0][None])  # one path
    both = trained.probabilities([tmp_path / "big.png", tmp_path / "gray.jpg"])
    assert both.shape == (2, 3) and torch.allclose(both.sum(1), torch.ones(2))


def test_a_folder_to_predict_is_read_as_the_data_layer_reads_one(trained_run, tmp_path, capsys):
    workspace, run_id = trained_run
    image = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    image.save(tmp_path / "cat.png")
    (tmp_path / ".thumbnails").mkdir()
    image.save(tmp_path / ".thumbnails" / "cat.png")  # a viewer's cache, not the user's image
    (tmp_path / "notes.pdf").write_text("a report")  # Pillow writes PDFs, it cannot read them
    (tmp_path / "labels.txt").write_text("cat")
    code, out, err = _predict(capsys, workspace, run_id, str(tmp_path), "--format", "csv")
    assert code == 0 and err == ""  # sidecars go without a word
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == [str(tmp_path / "cat.png")]
    # a phone's photos (.heic) and a file without an extension: left out, and said so
    for name in ("IMG_0001.heic", "IMG_0002.HEIC", "scan"):
        image.save(tmp_path / name, format="PNG")
    code, out, err = _predict(capsys, workspace, run_id, str(tmp_path), "--format", "csv")
    assert code == 0 and len(out.splitlines()) == 2
    assert err == (f"cifarlab: warning: in {str(tmp_path)!r}, 3 file(s) skipped, their names not "
                   "those of images Pillow reads (.heic: 2, no extension: 1); name one on its own "
                   "to try it\n")  # fmt: skip
    (tmp_path / "cat.png").unlink()  # only those left: none to classify, and why
    code, out, err = _predict(capsys, workspace, run_id, str(tmp_path))
    assert code == 2 and err == (f"cifarlab: error: {str(tmp_path)!r} holds no image files (.png, "
                                 ".jpg, ...); 3 file(s) skipped, their names not those of images "
                                 "Pillow reads (.heic: 2, no extension: 1); name one on its own "
                                 "to try it\n")  # fmt: skip


def test_predict_table_lists_the_runners_up(trained_run, tiny_folder, capsys):
    workspace, run_id = trained_run
    one = sorted((tiny_folder / "test" / "dog").glob("*.png"))[0]
    code, out, _ = _predict(capsys, workspace, run_id, str(one), "--top", "5")
    assert code == 0
    header, rule, row = out.splitlines()
    assert header.split() == ["file", "class", "probability", "next"]
    assert row.startswith(str(one)) and row.count("%") == 3  # 5 asked, the net knows 3 classes


def test_a_warning_pillow_gives_for_every_image_is_shown_once(trained_run, tmp_path):
    import warnings

    workspace, run_id = trained_run
    palette = Image.new("P", (32, 32))
    palette.putpalette(list(range(256)) * 3)
    for i in range(3):  # transparency as bytes: Pillow warns as it converts each to RGB
        palette.save(tmp_path / f"{i}.png", transparency=bytes([0, 255, 128]))
    trained = cifarlab.load_trained(run_id, workspace)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")  # once per place, as Python shows warnings
        assert len(trained.predict(tmp_path)) == 3
    assert sum("Transparency expressed in bytes" in str(w.message) for w in said) == 1


def test_a_damaged_pil_image_is_one_line(trained_run, tmp_path):
    workspace, run_id = trained_run
    lazy = Image.open(_truncated_png(tmp_path / "cut.png"))  # Pillow reads the pixels later
    with pytest.raises(CifarlabError, match=r"cut.png is not a readable image \(image file is "):
        cifarlab.load_trained(run_id, workspace).predict([lazy])


def test_a_newline_in_a_file_name_keeps_its_row_whole(trained_run, tmp_path, capsys):
    workspace, run_id = trained_run
    Image.new("RGB", (32, 32)).save(tmp_path / "new\nline.png")
    code, out, _ = _predict(capsys, workspace, run_id, str(tmp_path / "new\nline.png"))
    assert code == 0 and len(out.splitlines()) == 3  # it split the row in two
    assert out.splitlines()[2].startswith(str(tmp_path / "new\\nline.png"))


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _truncated_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:100])
    return path


def test_a_very_large_image_is_one_warning_line(trained_run, tiny_folder, capsys, monkeypatch):
    workspace, run_id = trained_run
    one = sorted((tiny_folder / "test" / "dog").glob("*.png"))[0]  # 1,024 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # past it: warned; twice that: refused
    code, out, err = _predict(capsys, workspace, run_id, str(one))
    assert code == 0 and len(out.splitlines()) == 3
    assert err == (f"cifarlab: warning: {one} has more pixels than Pillow decodes without a "
                   "warning (its guard against decompression bombs); it was read, but shrink it "
                   "to be safe\n")  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nope.png", "no file or folder '.*nope.png'; check the path"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "'.*empty' holds no image files"),
        (
            lambda d: _written(d / "notes.png", "not an image"),
            "notes.png is not a readable image \\(no image format Pillow reads\\); give an image "
            "file \\(PNG, JPEG, WebP, ...\\)",
        ),
        (lambda d: _written(d / "failed.jpg", ""), "failed.jpg' is empty \\(0 bytes\\); copy it"),
        (  # the first 100 bytes of a PNG: it said "(OSError)"
            lambda d: _truncated_png(d / "cut.png"),
            "cut.png is not a readable image \\(image file is truncated",
        ),
    ],
)
def test_predict_refuses_what_it_cannot_read_in_one_line(
    trained_run, tmp_path, capsys, make, message
):
    workspace, run_id = trained_run
    code, out, err = _predict(capsys, workspace, run_id, str(make(tmp_path)))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert re.search(f"cifarlab: error: .*{message}", err)


def test_predict_names_a_bad_run_or_top(trained_run, tiny_folder, capsys):
    workspace, run_id = trained_run
    code, _, err = _predict(capsys, workspace, "tutorial-nope", str(tiny_folder / "test"))
    assert code == 2 and "no run 'tutorial-nope'" in err
    code, _, err = _predict(capsys, workspace, run_id, str(tiny_folder / "test"), "--top", "0")
    assert code == 2 and "--top must be 1 or more" in err
    with pytest.raises(CifarlabError, match="no file or folder"):
        cifarlab.load_trained(run_id, workspace).predict("missing.png")


# -- ONNX export -----------------------------------------------------------------------


def test_the_exported_file_scores_as_the_run_scores(trained_run, tmp_path, capsys):
    import onnx
    import onnxruntime

    workspace, run_id = trained_run
    path = tmp_path / "out" / "net.onnx"
    assert main(["export", run_id, "-o", str(path), "--workspace", str(workspace)]) == 0
    out, err = capsys.readouterr()
    assert out == f"wrote {path}\n"  # the exporter's own chatter is not the user's business
    assert err.splitlines() == [f"exporting {run_id}'s net (torch.onnx takes some seconds)..."]
    trained = cifarlab.load_trained(run_id, workspace)
    assert trained.tta == 1  # last.pt, of the final epoch: the mirrored view is in the graph too
    session = onnxruntime.InferenceSession(str(path))
    images = torch.rand(5, 3, 32, 32)  # another batch size than the export's example
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    assert np.allclose(logits, trained.logits(images).numpy(), atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["classes"]) == trained.classes and meta["run_id"] == run_id
    assert json.loads(meta["image_shape"]) == [3, 32, 32]
    # -o a folder/ puts RUN_ID.onnx in it, for a run named by its folder too
    deploy = tmp_path / "deploy"
    assert main(["export", str(workspace / run_id), "-o", f"{deploy}/"]) == 0
    assert onnx.load(str(deploy / f"{run_id}.onnx")).metadata_props  # protobuf, loadable


def test_export_without_the_extra_says_what_to_install(trained_run, tmp_path, capsys, monkeypatch):
    import sys

    workspace, run_id = trained_run
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert main(["export", run_id, "-o", str(tmp_path / "n.onnx"),
                 "--workspace", str(workspace)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "exporting to ONNX needs the onnx extra: pip install 'cifarlab[onnx]'" in err
    assert not (tmp_path / "n.onnx").exists()


def test_pixel_arrays_are_read_as_images_load_never_silently_otherwise(trained_run, tiny_folder):
    workspace, run_id = trained_run
    trained = cifarlab.load_trained(run_id, workspace)
    files = sorted((tiny_folder / "test").rglob("*.png"))[:3]
    rgb = np.stack([np.asarray(Image.open(f)) for f in files])  # N x H x W x 3 uint8
    gray = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])  # N x H x W
    # gray images are read as colour, as training converts them; but 3 x H x W is one colour
    # image (C x H x W, as torchvision reads one) or three gray ones: refused, not guessed
    assert trained.predict(gray[:2]) == trained.predict(np.repeat(gray[:2, ..., None], 3, axis=3))
    assert len(trained.predict(gray[:2])) == 2 and len(trained.predict(gray[0])) == 1
    with pytest.raises(CifarlabError, match=r"pixels of shape \(3, 32, 32\) are one 3-channel "
                       r"image or 3 gray ones; pass one image as H x W x C, or gray ones as "
                       r"N x H x W x 1"):  # fmt: skip
        trained.predict(gray)
    assert trained.predict(gray[..., None]) == trained.predict(np.repeat(gray[..., None], 3, 3))
    # torchvision's batch layout, N x C x H x W uint8 (one C x H x W image is the case above)
    chw = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    assert torch.equal(trained.logits(chw), trained.logits(rgb))
    # 16-bit pixels scale to 8 bits as training read 16-bit images, not / 255: uint16 always,
    # other integers image by image (an 8-bit image beside a 16-bit one stays as it is)
    assert torch.equal(trained.logits(rgb.astype(np.uint16) * 257), trained.logits(rgb))
    mixed = np.stack([rgb[0].astype(np.int64) * 257, rgb[1].astype(np.int64)])
    assert torch.equal(trained.logits(mixed), trained.logits(rgb[:2]))
    mask = torch.ones(1, 3, 32, 32, dtype=torch.bool)  # a mask: white, not 1/255
    assert torch.equal(trained.logits(mask), trained.logits(np.full((1, 32, 32, 3), 255, np.uint8)))
    with pytest.raises(CifarlabError, match=r"they have 4 channels: convert them \(PIL: "
                       r"\.convert\('RGB'\)\), or pass the image files"):  # fmt: skip
        trained.predict(np.concatenate([rgb, rgb[..., :1]], axis=3))  # RGBA


def test_a_run_is_found_by_its_folder_too(trained_run, tiny_folder, capsys):
    workspace, run_id = trained_run
    by_folder = cifarlab.load_trained(str(workspace / run_id))  # no workspace= needed
    assert by_folder.run_id == run_id
    one = str(sorted((tiny_folder / "test").rglob("*.png"))[0])
    assert main(["predict", str(workspace / run_id), one]) == 0
    assert one in capsys.readouterr().out


def test_export_names_what_stopped_it_in_one_line(trained_run, tmp_path, capsys, monkeypatch):
    workspace, run_id = trained_run
    trained = cifarlab.load_trained(run_id, workspace)
    with pytest.raises(cifarlab.CifarlabError, match="path must be a path .* not 5"):
        trained.export_onnx(5)
    (tmp_path / "file").write_text("")
    with pytest.raises(cifarlab.CifarlabError, match="a part of that path is a file, not a"):
        trained.export_onnx(tmp_path / "file" / "n.onnx")
    with pytest.raises(
        cifarlab.CifarlabError, match="cannot write '.*n.onnx': Is a directory; pick another path"
    ):
        (tmp_path / "n.onnx").mkdir()  # os.replace onto a folder: the write's own OSError
        trained.export_onnx(tmp_path / "n.onnx")
    (tmp_path / "n.onnx").rmdir()
    assert trained.export_onnx(tmp_path / "new" / "deeper" / "n.onnx").is_file()  # made
    for kept in (workspace / run_id / "last.pt", workspace / "runs.db"):  # tab completion's slip
        before = kept.read_bytes()
        said = f"'{re.escape(str(kept))}' is a checkpoint or results database, which the export"
        with pytest.raises(cifarlab.CifarlabError, match=said):
            trained.export_onnx(kept)
        assert kept.read_bytes() == before
    out = ["export", run_id, "-o", str(tmp_path / "n.onnx"), "--workspace", str(workspace)]

    def unsupported(*args, **kwargs):
        raise RuntimeError("Failed to export: aten::weird_op has no ONNX counterpart\nmore")

    monkeypatch.setattr("torch.onnx.export", unsupported)  # a user's net with an odd op
    assert main(out) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"cifarlab: error: torch.onnx could not export run {run_id}'s net: Failed "
                       "to export: aten::weird_op has no ONNX counterpart (CIFARLAB_TRACEBACK=1 "
                       "shows the exporter's whole message)")  # fmt: skip
    monkeypatch.setattr("torch.__version__", "2.4.1")
    assert main(out) == 2
    assert "exporting to ONNX needs torch 2.5 or newer (this is 2.4.1)" in capsys.readouterr().err
    assert not (tmp_path / "n.onnx").exists()


def test_a_checkpoint_that_does_not_fit_its_net_is_one_line(trained_run, tmp_path, capsys):
    workspace, run_id = trained_run
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)  # the module's run stays whole for the other tests
    last = copy / run_id / "last.pt"  # val_size 0: the checkpoint it reports
    state = torch.load(last, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = torch.zeros(1)  # another net's weights, by a hand edit
    state["model"]["extra.weight"] = torch.zeros(1)
    torch.save(state, last)
    Image.new("RGB", (32, 32)).save(tmp_path / "cat.png")
    code, _, err = _predict(capsys, copy, run_id, str(tmp_path / "cat.png"))
    assert code == 2 and err.count("\n") == 1, err
    said = 'Unexpected key(s) in state_dict: "extra.weight", and 1 more problem'
    assert err == f"cifarlab: error: checkpoint of run {run_id} does not fit its model ({said})\n"


@pytest.mark.parametrize(
    "edit", [{"classes": 5}, {"image_shape": [3]}, {"mean": "x"}, {"std": [1.0]}]
)
def test_a_checkpoint_with_damaged_metadata_is_one_line(trained_run, tmp_path, capsys, edit):
    workspace, run_id = trained_run
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)
    last = copy / run_id / "last.pt"
    torch.save({**torch.load(last, weights_only=True), **edit}, last)  # by hand: a TypeError
    Image.new("RGB", (32, 32)).save(tmp_path / "cat.png")
    for command in (["predict", run_id, str(tmp_path / "cat.png")],
                    ["export", run_id, "-o", str(tmp_path / "n.onnx")]):  # fmt: skip
        assert main([*command, "--workspace", str(copy)]) == 2
        assert capsys.readouterr().err == (
            f"cifarlab: error: checkpoint {last} is damaged: its classes, image shape or pixel "
            "statistics are not what cifarlab wrote; put a good copy in its place\n"
        )
