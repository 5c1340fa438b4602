"""Models: built-ins, declarative specs, Python-file models, summaries, diagrams, CLI."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cifarlab
from cifarlab.cli import main
from cifarlab.errors import CifarlabError
from cifarlab.models import (
    build_spec,
    count_parameters,
    create_model,
    init_whitening,
    list_models,
    load_spec,
)
from cifarlab.models.diagram import draw_diagram
from cifarlab.models.summary import summarize_model

BUILTINS = [e.name for e in list_models()]
BLOG = ["tutorial", "simple", "stacked", "channel", "wobbly"]


def test_all_nets_are_registered():
    assert set(BLOG + ["resnet18", "speedrun"]) <= set(BUILTINS)
    assert all(e.description for e in list_models())


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_maps_images_to_logits(name):
    torch.manual_seed(0)
    assert create_model(name)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    gray = create_model(name, num_classes=7, in_channels=1, image_size=28)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_exact_parameter_counts():
    assert count_parameters(create_model("tutorial")) == 62_006
    # CIFAR ResNet-18, convs without bias:
    #   stem conv 3*64*9 = 1,728 + bn 128                                    =      1,856
    #   stage 64:  2 blocks x (2 x (64*64*9 + 128))                          =    147,968
    #   stage 128: (64*128*9 + 128*128*9 + 2*256) + 1x1 64*128 + 256
    #              + (2 x (128*128*9 + 256))                                 =    525,568
    #   stage 256: (128*256*9 + 256*256*9 + 1,024) + 128*256 + 512
    #              + (2 x (256*256*9 + 512))                                 =  2,099,712
    #   stage 512: (256*512*9 + 512*512*9 + 2,048) + 256*512 + 1,024
    #              + (2 x (512*512*9 + 1,024))                               =  8,393,728
    #   linear 512*10 + 10                                                   =      5,130
    #                                                                  total = 11,173,962
    assert count_parameters(create_model("resnet18")) == 11_173_962


@pytest.mark.parametrize("name", BUILTINS)
def test_macs_agree_with_torch_flop_counter(name):
    model = create_model(name).eval()
    summary = summarize_model(model, (3, 32, 32))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    assert counter.get_total_flops() == 2 * 2 * summary.macs  # batch 2, FLOPs = 2 x MACs
    assert summary.params == count_parameters(model)
    assert summary.flops == 2 * summary.macs and summary.train_flops == 3 * summary.flops


def test_summary_rows_totals_and_memory():
    summary = summarize_model(create_model("tutorial"), batch_size=32)
    kinds = [r.kind for r in summary.rows]
    assert kinds[:3] == ["conv", "relu", "maxpool"] and kinds[-1] == "linear"
    assert summary.rows[0].output_shape == (6, 28, 28)
    assert summary.rows[0].macs == 6 * 28 * 28 * 3 * 25
    assert summary.output_shape == (10,)
    assert sum(r.params for r in summary.rows) == 62_006
    mem = summary.memory
    assert mem["weights"] == mem["grads"] == 62_006 * 4 and mem["optimizer"] == 2 * mem["weights"]
    assert mem["activations"] > 32 * 3 * 32 * 32 * 4
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["params"] == 62_006 and data["layers"][0]["output_shape"] == [6, 28, 28]
    # a notebook cell showed a one-line dump of every LayerRow
    assert repr(summary) == str(summary) == summary.format_table() and "62,006" in repr(summary)
    # the speedrun net costs about 0.7 GFLOP per training image (../shared/DESIGN.md section 5)
    speedrun = summarize_model(create_model("speedrun"))
    assert 0.6e9 < speedrun.train_flops < 0.8e9
    assert [b.kind for b in summarize_model(create_model("resnet18")).blocks].count("res") == 8


@pytest.mark.parametrize("name", BUILTINS)
def test_a_few_adam_steps_lower_the_loss_on_one_batch(name):
    torch.manual_seed(0)
    model = create_model(name)
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    if name == "speedrun":
        init_whitening(model, images)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)

    def loss_with_fixed_dropout() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks before and after: a fair comparison
        return nn.functional.cross_entropy(model(images), labels)

    with torch.no_grad():
        before = loss_with_fixed_dropout().item()
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_with_fixed_dropout().item()
    assert after < before - 0.05, (before, after)


def test_init_whitening_makes_stem_outputs_white():
    torch.manual_seed(0)
    # correlated images: smooth structure (upsampled noise) plus pixel noise, per-channel mixing
    smooth = nn.functional.interpolate(torch.randn(64, 3, 8, 8), size=32, mode="bilinear")
    images = smooth + 0.3 * torch.randn(64, 3, 32, 32)
    images[:, 1] += 0.8 * images[:, 0]
    model = create_model("speedrun")
    init_whitening(model, images)
    with torch.no_grad():
        out = model[0](images)  # before the GELU
    assert out.shape[1] == 24
    flat = out.permute(0, 2, 3, 1).reshape(-1, 24).double()
    half = flat[:, :12]
    assert torch.allclose(flat[:, 12:], -half, atol=1e-4)  # the +/- eigenvector pairs
    assert half.mean(0).abs().max() < 1e-3
    covariance = (half - half.mean(0)).T @ (half - half.mean(0)) / len(half)
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=2e-2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_global_pools_equal_the_adaptive_pools_they_replace(channels_last):
    # They exist because the adaptive pools' CUDA backward is not deterministic.
    from cifarlab.models.layers import GlobalAvgPool2d, GlobalMaxPool2d
    from cifarlab.models.summary import summarize_model

    x = torch.randn(4, 8, 3, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 8, 1, 1)
    for ours, theirs in ((GlobalAvgPool2d(), nn.AdaptiveAvgPool2d(1)),
                         (GlobalMaxPool2d(), nn.AdaptiveMaxPool2d(1))):  # fmt: skip
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = ours(a), theirs(b)
        torch.testing.assert_close(out_a, out_b)
        out_a.backward(grad), out_b.backward(grad)
        torch.testing.assert_close(a.grad, b.grad)
    kinds = [r.kind for r in summarize_model(nn.Sequential(GlobalMaxPool2d()), (8, 3, 5)).rows]
    assert kinds == ["gmp"]


# --- declarative specs ---------------------------------------------------------------


def _spec_error(layers: list[str], **shape) -> str:
    with pytest.raises(CifarlabError) as info:
        build_spec(layers, **shape)
    return str(info.value)


def test_spec_infers_linear_sizes_and_appends_a_classifier():
    model = build_spec(["conv 8 3 stride 2", "relu", "res 16 stride 2", "gap"], num_classes=5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert isinstance(model[-1], nn.Linear) and model[-1].in_features == 16
    assert model[0].bias is not None  # no bn follows: the conv keeps its bias
    model = build_spec({"name": "x", "layers": ["conv 8 5", "bn", "gelu", "linear 32", "linear"]})
    assert model[0].bias is None and model[0].padding == (2, 2)  # "same" padding by default
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_spec_error_names_layer_text_shape_and_why():
    layers = ["conv 64 3", *["maxpool 2"] * 6]
    assert _spec_error(layers) == 'layer 7 "maxpool 2": input is 64x1x1, too small to pool'
    # images smaller than CIFAR's through a net made for 32x32: the fix is a resize
    assert _spec_error(["conv 16 5 pad 0", "maxpool 2", "conv 16 5 pad 0"], image_size=8) == (
        'layer 3 "conv 16 5 pad 0": input is 16x2x2, too small for a 5x5 kernel with pad 0; '
        "the images are 8x8: --image-size 32 resizes them"
    )
    too_deep = ["conv 8 3", *["maxpool 2"] * 6]  # too small even at 32x32: no such hint
    assert "--image-size" not in _spec_error(too_deep, image_size=8)


def test_spec_unknown_kind_and_bad_numbers():
    message = _spec_error(["conv 32 3", "relu", "convv 64 3"])
    assert message.startswith(
        "layer 3 \"convv 64 3\": unknown layer kind 'convv'; known: conv, res, bn, relu"
    )
    cases = {
        "conv 0 3": "layer 1 \"conv 0 3\": output channels must be a positive integer, got '0'",
        "conv 16 x": "layer 1 \"conv 16 x\": kernel size must be an integer, got 'x'",
        "conv 16": 'layer 1 "conv 16": conv needs OUT and K: conv OUT K [stride S] [pad P]',
        "conv 16 3 stride": 'layer 1 "conv 16 3 stride": options come in pairs',
        "conv 16 3 dilation 2": "layer 1 \"conv 16 3 dilation 2\": unknown option 'dilation'",
        "res 16 stride 1 stride 2": 'layer 1 "res 16 stride 1 stride 2": stride is given 2 times; '
        "give it once",
        "dropout 1.5": 'layer 1 "dropout 1.5": dropout probability must be in [0, 1), got 1.5',
        "maxpool": 'layer 1 "maxpool": wrong number of arguments; write maxpool K',
        "bn 3": 'layer 1 "bn 3": bn takes no arguments',
        "conv 8 7 pad 0": 'layer 1 "conv 8 7 pad 0": input is 3x4x4, too small for a 7x7 kernel',
    }
    for text, expected in cases.items():
        message = _spec_error([text], image_size=4 if "7" in text else 32)
        assert message.startswith(expected), (text, message)
        assert "\n" not in message
    assert _spec_error(["flatten", "conv 8 3"]) == (
        'layer 2 "conv 8 3": input is 3072, but conv needs an image (CxHxW); move it earlier'
    )
    assert "only the last linear may omit" in _spec_error(["linear", "relu", "linear"])
    assert "must output the class count 7, not 10" in _spec_error(["linear 10"], num_classes=7)


def test_a_new_option_at_its_default_keeps_every_earlier_runs_identity():
    from cifarlab.config import RunConfig

    class WithNewOption(RunConfig):  # a later version of cifarlab, with one more option
        new_option: bool = False

    settings = {"model": "simple", "optimizer": "adam", "lr": 0.01, "epochs": 3}
    before = RunConfig(**settings).hash()
    assert WithNewOption(**settings).hash() == before
    assert WithNewOption(**settings, new_option=True).hash() != before
    assert RunConfig(**{**settings, "epochs": 4}).hash() != before


@pytest.mark.parametrize("kind", ["toml", "py"])
def test_editing_a_model_file_gives_its_runs_a_new_identity(tmp_path, kind):
    from cifarlab.config import make_run_config

    path = tmp_path / f"net.{kind}"
    path.write_text('layers = ["conv 8 3", "gap", "linear"]\n' if kind == "toml" else "A = 1\n")
    model = str(path) if kind == "toml" else f"{path}:Net"
    before = make_run_config(model=model).hash()
    assert make_run_config(model=model).hash() == before  # same file, same run
    path.write_text(path.read_text() + "# edited\n")
    assert make_run_config(model=model).hash() != before


@pytest.mark.parametrize(
    "model, label",
    [
        ("tutorial", "tutorial"),
        ("nets/my net.toml", "my-net"),
        ("nets/my.py:Net", "my-Net"),
        ("nets/my.py", "my"),
        ("v1.2/net.py:build", "net-build"),
    ],  # fmt: skip
)
def test_run_ids_name_a_model_file_by_its_stem_and_the_name_in_it(model, label):
    from cifarlab.models.registry import model_label

    assert model_label(model) == label


def test_spec_from_toml_file_and_create_model(tmp_path):
    path = tmp_path / "mynet.toml"
    path.write_text(
        'name = "mynet"\ndescription = "a tiny net"\n'
        'layers = ["conv 16 3", "bn", "relu", "maxpool 2", "gap", "linear"]\n'
    )
    spec = load_spec(path)
    assert spec.name == "mynet" and spec.description == "a tiny net"
    model = create_model(str(path), num_classes=3, in_channels=1, image_size=20)
    assert model(torch.randn(2, 1, 20, 20)).shape == (2, 3)
    bad = tmp_path / "bad.toml"
    bad.write_text('layers = ["conv 16 3", "pool 2"]\n')
    with pytest.raises(CifarlabError, match=r"^layer 2 \"pool 2\": unknown layer kind 'pool'"):
        create_model(str(bad))
    with pytest.raises(CifarlabError, match="does not exist"):
        create_model(str(tmp_path / "none.toml"))
    (tmp_path / "broken.toml").write_text("layers = [")
    with pytest.raises(CifarlabError, match="is not valid TOML"):
        create_model(str(tmp_path / "broken.toml"))


# --- Python-file models --------------------------------------------------------------

NET_PY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.body(x))

def make(**kwargs):
    return Net(**{k: v for k, v in kwargs.items() if k != "image_size"})

class FiveClasses(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))

class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("forward is broken")

def not_a_model(num_classes):
    return 42

def needs_more(depth):
    return Net()
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_python_file_model_class_and_factory(tmp_path):
    path = _write(tmp_path, "net.py", NET_PY)
    model = create_model(f"{path}:Net", num_classes=4, in_channels=1, image_size=16)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)
    assert create_model(f"{path}:make", num_classes=6)(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    assert create_model(f"{path}:FiveClasses", num_classes=5) is not None  # fixed shape, fits


def test_a_model_file_imports_helper_modules_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # run from elsewhere, as `python nets/net.py` allows
    (tmp_path / "blocks_beside_net.py").write_text(
        "from torch import nn\n\ndef head(n):\n    return nn.LazyLinear(n)\n"
    )
    net = _write(tmp_path, "net.py", (
        "from torch import nn\nfrom blocks_beside_net import head\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=10, in_channels=3, image_size=32):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Flatten(), head(num_classes))\n\n"
        "    def forward(self, x):\n        return self.body(x)\n"
    ))  # fmt: skip
    assert create_model(f"{net}:Net")(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert str(tmp_path) not in sys.path  # borrowed for the import only


def test_two_model_files_get_their_own_helper_of_one_name(tmp_path):
    net = (
        "from torch import nn\nfrom blocks import WIDTH\n\n"
        "def Net(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, WIDTH, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(WIDTH, num_classes))\n"
    )
    for folder, width in (("a", 4), ("b", 12)):
        (tmp_path / folder).mkdir()
        _write(tmp_path / folder, "blocks.py", f"WIDTH = {width}\n")
        _write(tmp_path / folder, "net.py", net)
    widths = [create_model(f"{tmp_path / f}/net.py:Net")[0].out_channels for f in "ab"]
    assert widths == [4, 12]  # b's net was built with a's blocks: [4, 4]
    _write(tmp_path / "a", "blocks.py", "WIDTH = 16\n")  # edited between two notebook calls
    assert create_model(f"{tmp_path / 'a'}/net.py:Net")[0].out_channels == 16


def test_a_package_in_a_subfolder_of_a_model_file_is_imported_once(tmp_path, monkeypatch):
    site = tmp_path / "proj" / ".venv" / "site"  # a project's own venv, beside its net.py
    (site / "registers_once").mkdir(parents=True)
    imports = tmp_path / "imports.txt"
    (site / "registers_once" / "__init__.py").write_text(
        f"open({str(imports)!r}, 'a').write('x')  # a torch op library may load only once\n"
    )
    monkeypatch.syspath_prepend(str(site))
    net = _write(tmp_path / "proj", "net.py", (
        "import registers_once\nfrom torch import nn\n\n"
        "def Net(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"
    ))  # fmt: skip
    for _ in range(2):  # a run imports its model file twice: checked, then built
        create_model(f"{net}:Net")
    assert imports.read_text() == "x"  # it was imported again: "xx"


def test_python_file_model_errors_are_one_line(tmp_path, capsys):
    p = _write(tmp_path, "net.py", NET_PY)
    raising = _write(tmp_path, "raising.py", "import no_such_module_here\n")
    exiting = _write(tmp_path, "exiting.py", "import sys\nsys.exit(0)\n")  # a script, really
    # argparse's usage and error went to stderr above cifarlab's line: now inside it
    needs = _write(tmp_path, "needs.py", "import argparse\np = argparse.ArgumentParser()\n"
                   "p.add_argument('--data', required=True)\np.parse_args()\n")  # fmt: skip
    # a training script's argparse at module level: sees the file's name only, not cifarlab's
    script = _write(tmp_path, "script.py", NET_PY + "import argparse, sys\n"
                    "argparse.ArgumentParser().parse_args()\nseen_argv = sys.argv\n")  # fmt: skip
    missing = tmp_path / "missing.py"
    folder = tmp_path / "folder.py"
    folder.mkdir()  # was "does not exist"
    batch = "a (2, 3, 32, 32) batch"
    cases = {
        f"{missing}:Net": f"model file '{missing}' does not exist",
        f"{folder}:Net": f"model file '{folder}' is a folder, not a file",
        f"{p}:Nett": f"model file '{p}' has no 'Nett'; it defines Net, FiveClasses, Broken",
        f"{raising}:Net": f"model file '{raising}' raised ModuleNotFoundError on import: No module",
        f"{exiting}:Net": f"model file '{exiting}' exited on import (SystemExit(0)): its "
        "script code runs when cifarlab imports it; move that under `if __name__",
        f"{needs}:Net": f"model file '{needs}' exited on import (needs.py: error: the "
        "following arguments are required: --data): its script code runs",
        f"{p}:FiveClasses": f"model '{p}:FiveClasses' maps {batch} to (2, 5), not (2, 10) logits",
        f"{p}:Broken": f"model '{p}:Broken' raised RuntimeError at net.py:28 on {batch}: "
        "forward is broken",  # its line, as a training error names it
        f"{p}:not_a_model": f"model '{p}:not_a_model' returned int, not an nn.Module",
        f"{p}:needs_more": f"model '{p}:needs_more' raised TypeError when built",
        str(p): f"model file '{p}': name the class or factory as '{p}:Name'",
    }
    for ref, expected in cases.items():
        with pytest.raises(CifarlabError) as info:
            create_model(ref)
        assert str(info.value).startswith(expected), (ref, str(info.value))
        assert "\n" not in str(info.value)
    assert capsys.readouterr().err == ""  # all said in the one line each
    module = sys.modules[type(create_model(f"{script}:Net")).__module__]
    assert module.seen_argv == [str(script)]
    assert sys.argv[0] != str(script)  # given back


def test_what_a_model_file_prints_on_import_is_still_shown(tmp_path, capfd):
    import faulthandler

    # a training script's habits at import: stderr's file descriptor, its own prints
    loud = "import faulthandler, sys\nfaulthandler.enable()\nprint('loading', file=sys.stderr)\n"
    net = _write(tmp_path, "loud.py", NET_PY + loud)
    try:
        create_model(f"{net}:Net")
    finally:
        faulthandler.enable(file=sys.__stderr__)  # as pytest had it, not on capfd's file
    assert capfd.readouterr().err == "loading\n"


def test_a_spec_path_that_is_no_file_is_one_line(tmp_path):
    folder = tmp_path / "net.toml"
    with pytest.raises(CifarlabError, match=f"^model spec file '{folder}' does not exist$"):
        load_spec(folder)
    folder.mkdir()  # it said "does not exist" of a folder too
    with pytest.raises(
        CifarlabError, match=f"^model spec file '{folder}' is a folder, not a file$"
    ):
        load_spec(folder)


def test_a_bad_model_fails_before_any_data_work(tmp_path):
    from cifarlab.runner import run_training

    path = _write(tmp_path, "net.py", NET_PY)
    spec = _write(tmp_path, "typo.toml", 'layers = ["convv 8 3", "gap", "linear"]\n')
    frozen = _write(tmp_path, "frozen.py", (
        "from torch import nn\n\ndef Net():  # the optimizer raised a raw ValueError\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)).requires_grad_(False)\n"
    ))  # fmt: skip
    cases = {f"{path}:NoSuchNet": "has no 'NoSuchNet'",
             f"{path}:needs_more": "raised TypeError when built",
             str(spec): "unknown layer kind 'convv'",
             f"{frozen}:Net": "has no trainable parameters"}  # fmt: skip
    for model, message in cases.items():
        with pytest.raises(CifarlabError, match=message):  # not: the data does not exist
            run_training(model=model, data=str(tmp_path / "no-data-here"))


def test_a_model_file_is_checked_against_the_data_not_defaults(tmp_path, tiny_archive):
    # tiny_archive has 3 classes: a net fixed at 3 outputs fits it (the check used to assume
    # 10 and refused it), one fixed at 5 does not
    from cifarlab.runner import run_training

    path = _write(tmp_path, "net.py", NET_PY)
    fixed_at_3 = NET_PY.replace("Linear(3 * 32 * 32, 5)", "Linear(3 * 32 * 32, 3)")
    three = _write(tmp_path, "three.py", fixed_at_3)
    options = dict(data=str(tiny_archive), workspace=str(tmp_path / "ws"), epochs=1,
                   val_size=6, batch_size=32, quiet=True)  # fmt: skip
    assert run_training(model=f"{three}:FiveClasses", **options).status == "completed"
    with pytest.raises(CifarlabError, match=r"FiveClasses' maps .* not \(2, 3\) logits"):
        run_training(model=f"{path}:FiveClasses", **options)


def test_train_a_python_file_model_end_to_end(tmp_path, tiny_archive, capsys):
    path = _write(tmp_path, "net.py", NET_PY)
    workspace = tmp_path / "ws"
    args = ["train", "--model", f"{path}:Net", "--data", str(tiny_archive), "--epochs", "1",
            "--val-size", "6", "--batch-size", "32", "--workspace", str(workspace),
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    run_dirs = [p.name for p in workspace.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1 and run_dirs[0].startswith("net-Net-")  # a safe folder name


# --- diagrams and CLI ----------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_diagram_is_a_png_of_sane_size(name, tmp_path):
    path = draw_diagram(create_model(name), tmp_path / f"{name}.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert 400 <= image.width <= 4000 and 200 <= image.height <= 4000


def test_cli_summary_table_and_json(capsys):
    assert main(["summary", "tutorial"]) == 0
    out = capsys.readouterr().out
    assert "62,006" in out and "MACs" in out and "training memory at batch 64" in out
    assert main(["summary", "speedrun", "--batch-size", "8", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch_size"] == 8 and data["params"] == 1_972_792 and data["layers"]


def test_cli_diagram_writes_png(tmp_path, capsys):
    out = tmp_path / "resnet.png"
    assert main(["diagram", "resnet18", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a folder gets a file named after the model; no suffix means PNG; the path printed is real
    for given, written in (
        (tmp_path, tmp_path / "tutorial.png"),
        (tmp_path / "t", tmp_path / "t.png"),
    ):
        capsys.readouterr()
        assert main(["diagram", "tutorial", "-o", str(given)]) == 0
        assert capsys.readouterr().out == f"wrote {written}\n" and written.is_file()


def test_an_image_goes_into_new_folders_and_a_path_through_a_file_is_one_line(
    tiny_archive, tmp_path, capsys
):
    new = tmp_path / "new" / "sub" / "d.png"
    assert main(["diagram", "tutorial", "-o", str(new)]) == 0 and new.is_file()
    (tmp_path / "a-file").write_text("not a folder")
    cifarlab.train(data=str(tiny_archive), workspace=str(tmp_path / "ws"), epochs=1,
                   val_size=20, quiet=True)  # fmt: skip
    for command in (["diagram", "tutorial"], ["data", "preview", "--data", str(tiny_archive)],
                    ["report", "--workspace", str(tmp_path / "ws")]):  # fmt: skip
        capsys.readouterr()
        code = main([*command, "-o", str(tmp_path / "a-file" / "x.png")])
        err = capsys.readouterr().err
        # it was "[Errno 2] No such file or directory: '.../.tmp3754-d.png'" for a diagram
        assert code == 2 and err.count("\n") == 1, err
        assert "a part of that path is a file, not a folder; pick another path" in err, err


def test_a_notebook_cell_registering_a_model_can_run_again(tmp_path):
    from cifarlab.models.registry import _REGISTRY

    def cell(width):  # the cell, as a user runs it once, edits it and runs it again
        @cifarlab.register_model("my-net-in-a-cell", "a user's net")
        def net(num_classes=10, in_channels=3, image_size=32):
            return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(width, num_classes))  # fmt: skip

    try:
        cell(4)
        cell(8)  # it raised ValueError: model 'my-net-in-a-cell' is already registered
        assert count_parameters(create_model("my-net-in-a-cell")) == 8 * 27 + 8 + 8 * 10 + 10
    finally:
        _REGISTRY.pop("my-net-in-a-cell", None)
    with pytest.raises(CifarlabError, match="'speedrun' is a built-in model.*another name"):
        cifarlab.register_model("speedrun", "mine")(lambda **kw: nn.Identity())
    with pytest.raises(CifarlabError, match=r"needs a name: write @cifarlab.register_model\('my"):

        @cifarlab.register_model  # without its name, the class became a function, silently
        class Net(nn.Module):
            pass

    with pytest.raises(CifarlabError, match="not a built Linear object; register Linear itself"):
        cifarlab.register_model("built")(nn.Linear(3, 4))  # failed later: "forward() got ..."
    with pytest.raises(CifarlabError, match=r"returns a net, not 42 \(a int\)$"):
        cifarlab.register_model("answer")(42)
    with pytest.raises(CifarlabError, match="give a word"):
        cifarlab.register_model("my-net ")(nn.Linear)


def test_a_notebook_net_s_error_names_its_cell_as_ipython_does(monkeypatch):
    from types import SimpleNamespace

    from cifarlab.models.registry import _REGISTRY

    cell = "/tmp/ipykernel_4242/3475592381.py"  # the file IPython compiled cell 8 under
    source = (
        "\n\nclass Net(nn.Linear):\n    def forward(self, x):\n"
        "        return super().forward(x.flatten(1))\n"
    )  # line 5: 3072 inputs, not 10
    kernel = {"nn": nn, "__name__": "__main__"}
    exec(compile(source, cell, "exec"), kernel)
    shell = SimpleNamespace(compile=SimpleNamespace(_filename_map={cell: 8}))
    monkeypatch.setitem(sys.modules, "IPython", SimpleNamespace(get_ipython=lambda: shell))
    try:
        cifarlab.register_model("cell-net")(lambda num_classes: kernel["Net"](10, num_classes))
        # it named no place: "raised RuntimeError on a (2, 3, 32, 32) batch: mat1 and mat2..."
        with pytest.raises(CifarlabError, match=r"raised RuntimeError at Cell In\[8\], line 5 on"):
            create_model("cell-net")
        monkeypatch.delitem(sys.modules, "IPython")  # outside Jupyter: the file, as Python does
        with pytest.raises(CifarlabError, match=r"raised RuntimeError at 3475592381.py:5 on"):
            create_model("cell-net")
    finally:
        _REGISTRY.pop("cell-net", None)


def test_cli_models_lists_params_macs_and_descriptions(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for text in ("62,006", "11,173,962", "speedrun", "wobbly", "83%", "MACs"):
        assert text in out


def test_cli_bad_models_exit_2_with_one_line(tmp_path, capsys):
    bad_spec = tmp_path / "bad.toml"
    bad_spec.write_text('layers = ["conv 64 3", "maxpool 64", "linear"]\n')
    (tmp_path / "a-file").write_text("not a folder")
    cases = {
        ("summary", "resnet-9000"): "unknown model 'resnet-9000'",
        ("summary", str(bad_spec)): 'layer 2 "maxpool 64": input is 64x32x32, too small to pool',
        ("diagram", str(tmp_path / "x.py") + ":Net"): "does not exist",
        ("diagram", "tutorial", "-o", str(tmp_path / "a-file" / "x.png")): "cannot write",
        ("diagram", "tutorial", "-o", str(tmp_path / "x.foo")): (
            "cannot write diagram to '" + str(tmp_path / "x.foo") + "': Format 'foo' is not "
            "supported (supported formats: "  # matplotlib's list of the suffixes it writes
        ),
        ("summary", "tutorial", "--batch-size", "0"): "--batch-size must be positive",
    }
    if sys.platform.startswith("linux"):  # a folder no one writes in, even root
        cases["diagram", "tutorial", "-o", "/proc/x.png"] = (
            "cannot write diagram to '/proc/x.png': No such file or directory; pick another -o "
            "path"  # it named its own temp file, /proc/.tmpPID-x.png
        )
    for args, expected in cases.items():
        assert main(list(args)) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("cifarlab: error: ") and expected in err, (args, err)
        assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "bad.toml"]  # no leftovers


def test_a_net_too_large_to_build_or_hold_says_which_option_made_it_so(capsys):
    huge = {  # a traceback of C++ frames from torch's 64-bit sizes, or a byte count cut short
        ("--image-size", str(2**32)): ("tutorial is too large to build for 3 x 4294967296 x "
                                       "4294967296 images and 10 classes; give smaller", 2),
        ("--num-classes", "9" * 20): ("and 99999999999999999999 classes; give smaller", 2),
    }  # fmt: skip
    for options, (says, code) in huge.items():
        assert main(["summary", "tutorial", *options]) == code, options
        err = capsys.readouterr().err
        assert err.startswith("cifarlab: error: ") and says in err and err.count("\n") == 1, err
    # `summary --image-size 100000`'s failure (not run: where memory is overcommitted, the
    # allocation may succeed and the machine swap), as torch words it
    from cifarlab.errors import machine_trouble

    torch_says = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                              "can't allocate memory: you tried to allocate 4798848069120 bytes. "
                              "Error code 12 (Cannot allocate memory)")  # fmt: skip
    assert machine_trouble(torch_says, "summary") == (  # it said "allocate 47988480": 48 MB?
        "out of memory (tried to allocate 4.8 TB); try a smaller --image-size or --batch-size"
    )
    for asked, shown in ((999_600_000, "1 GB"), (999_999, "1 MB"), (12, "12 bytes")):
        said = machine_trouble(
            RuntimeError(f"can't allocate memory: you tried to allocate {asked} bytes"), "summary"
        )
        assert f"(tried to allocate {shown})" in said  # not "1e+03 MB"


def test_a_features_and_head_net_is_drawn_as_its_layers_not_two_groups():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 10))

        def forward(self, x):
            return self.head(self.features(x))

    blocks = summarize_model(Net()).blocks  # what diagrams draw
    assert [b.kind for b in blocks] == ["conv", "relu", "maxpool", "flatten", "linear"]
    assert [b.kind for b in summarize_model(create_model("resnet18")).blocks].count("res") == 8


def test_a_missing_relative_model_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for ref in ("nets/none.toml", "nets/none.py:Net"):
        with pytest.raises(CifarlabError, match="relative paths are read from the current folder"):
            create_model(ref)


def test_an_even_conv_kernel_needs_its_padding_spelled_out():
    swapped = r'"conv 3 16": kernel 16 is even.*did you mean conv 16 3'
    with pytest.raises(CifarlabError, match=swapped):
        create_model(["conv 3 16", "relu", "gap", "linear"])  # channels and kernel swapped
    patchify = create_model(["conv 16 2 pad 0 stride 2", "gap", "linear"])  # meant: fine
    assert patchify(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_diagram_names_its_file_after_the_model_and_small_nets_count_mflop(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["diagram", "tutorial"]) == 0 and (tmp_path / "tutorial.png").is_file()
    assert main(["summary", "tutorial"]) == 0
    assert "MACs = 1.30 MFLOP" in capsys.readouterr().out  # not "0.001 GFLOP"


def test_spec_layer_kinds_as_pytorch_spells_them():
    net = create_model(["Conv 16 3", "BN", "ReLU", "GAP", "Linear"])  # a PyTorch user's habit
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net[0].bias is None  # still "a conv followed by bn has no bias"
