"""The speedrun recipe: presets, its parts (lookahead, whitening, TTA) and that it pays off."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import stop_training_at, trained_epochs
from test_training import _rows  # epoch rows without timings

import cifarlab
from cifarlab.cli import main
from cifarlab.config import make_run_config
from cifarlab.data import load_dataset
from cifarlab.train.build import build_trainer
from cifarlab.train.schedule import build_schedule
from cifarlab.train.small_map_conv import SmallMapConv2d


def test_options_after_a_preset_override_it():
    c = make_run_config(preset="speedrun", epochs=5)
    assert (c.model, c.epochs, c.batch_size, c.lr, c.tta) == ("speedrun", 5, 1024, 1.5, 2)
    assert make_run_config(preset="speedrun", batch_size=256).lr == pytest.approx(0.375)
    assert make_run_config(preset="speedrun", batch_size=256, lr=1.0).lr == 1.0
    assert make_run_config(preset="quick-cpu").model == "speedrun-small"
    # the preset's name is not part of a run's identity: its resolved settings are
    assert c.hash() == make_run_config(**c.model_dump(exclude={"preset"})).hash()


def test_triangular_schedule_rises_from_a_fifth_then_falls_to_airbenchs_end():
    f = build_schedule("triangular", epochs=10, steps_per_epoch=10)
    curve = [f(s) for s in range(101)]
    assert curve[0] == pytest.approx(0.2) and curve[23] == 1.0
    assert curve[100] == pytest.approx(0.07)  # airbench's triangle(start=0.2, end=0.07, peak=0.23)
    assert max(range(101), key=curve.__getitem__) == 23


def test_a_shortened_preset_run_completes_its_schedule(tiny_archive, tmp_path):
    result = cifarlab.train(preset="speedrun", epochs=3, batch_size=16, data=str(tiny_archive),
                            workspace=str(tmp_path), quiet=True)  # fmt: skip
    assert result.status == "completed" and len(result.history) == 3
    peak = 1.5 * 16 / 1024  # the lr scales with the batch size
    steps = 7  # 120 training images (no validation split) in full batches of 16 (drop_last)
    f = build_schedule("triangular", epochs=3, steps_per_epoch=steps)
    expected = [peak * sum(f(e * steps + i) for i in range(steps)) / steps for e in range(3)]
    assert [m["lr"] for m in result.history] == pytest.approx(expected)
    assert expected[-1] < 0.35 * peak  # the whole 3-epoch schedule ran, down to its tail
    assert result.summary["best_epoch"] == 3  # no validation split: the last epoch is reported


def test_speedrun_recipe_resumes_exactly(tiny_archive, tmp_path, monkeypatch):
    """Lookahead's slow weights, the frozen stem bias and the schedule survive a resume."""
    options = dict(preset="speedrun", epochs=4, batch_size=16, deterministic=True,
                   data=str(tiny_archive), quiet=True, whiten_bias_epochs=2)  # fmt: skip
    whole = cifarlab.train(workspace=str(tmp_path / "a"), **options)
    with monkeypatch.context() as m:
        stop_training_at(m, epoch=2)
        with pytest.raises(KeyboardInterrupt):
            cifarlab.train(workspace=str(tmp_path / "b"), **options)
    trained = trained_epochs(monkeypatch)
    resumed = cifarlab.train(workspace=str(tmp_path / "b"), resume="auto", **options)
    assert resumed.status == "completed" and trained == [2, 3]
    assert _rows(tmp_path / "b", resumed.run_id) == _rows(tmp_path / "a", whole.run_id)


def test_cpu_bf16_training_takes_the_matmul_weight_gradient(tiny_archive, tmp_path, monkeypatch):
    monkeypatch.delenv("CIFARLAB_MATMUL_WGRAD", raising=False)
    # the switch is made only where bf16 is native (elsewhere bf16 is emulated and slow);
    # the conv itself runs on any CPU, so the test pretends, to run everywhere
    monkeypatch.setattr(sys.modules[build_trainer.__module__], "cpu_supports_bf16", lambda: True)
    data = load_dataset(str(tiny_archive), val_size=0)
    cpu = torch.device("cpu")
    # all six 3x3 convs, in bf16 only; torch.compile traces its own kernels
    for options, switched in (({}, 6), ({"precision": "fp32"}, 0), ({"compile": True}, 0)):
        config = make_run_config(preset="speedrun", data=str(tiny_archive), batch_size=16,
                                 **options)  # fmt: skip
        model = build_trainer(config, data, cpu, options.get("precision", "bf16")).model
        assert sum(type(m) is SmallMapConv2d for m in model.modules()) == switched, options
    # device="cpu": on a GPU machine "auto" picks CUDA, where nothing is switched
    run = cifarlab.train(preset="speedrun", epochs=1, batch_size=16, data=str(tiny_archive),
                         limit_train=64, val_size=0, limit_test=32, precision="bf16",
                         device="cpu", workspace=str(tmp_path), quiet=True)  # fmt: skip
    assert run.status == "completed" and run.info["matmul_weight_grad_convs"] == 6


def test_tta_averages_the_mirrored_and_shifted_views_airbench_uses():
    from cifarlab.train.tta import tta_logits

    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 5))  # sees places
    mirrored = 0.5 * (model(x) + model(x.flip(-1)))
    # a 1-pixel diagonal shift each way, the edge row and column reflected in: indices by hand
    down_right = x[:, :, [1, 0, 1, 2, 3, 4]][..., [1, 0, 1, 2, 3, 4]]
    up_left = x[:, :, [1, 2, 3, 4, 5, 4]][..., [1, 2, 3, 4, 5, 4]]
    shifted = [0.5 * (model(v) + model(v.flip(-1))) for v in (down_right, up_left)]
    with torch.no_grad():
        assert torch.equal(tta_logits(model, x, 0), model(x))
        assert torch.allclose(tta_logits(model, x, 1), mirrored, atol=1e-6)
        expected = 0.5 * mirrored + 0.25 * (shifted[0] + shifted[1])
        assert torch.allclose(tta_logits(model, x, 2), expected, atol=1e-6)
        # each level changes what this net says: a no-op TTA fails the lines above
        assert not torch.allclose(mirrored, model(x)) and not torch.allclose(expected, mirrored)


@pytest.mark.real_data
def test_tta_never_lowers_accuracy_by_more_than_noise(real_data):
    config = make_run_config(model="tutorial", optimizer="adam", epochs=2, data=str(real_data),
                             limit_train=5000, val_size=0, limit_test=2000)  # fmt: skip
    data = load_dataset(config.data, val_size=0, limit_train=5000, limit_test=2000)
    torch.manual_seed(0)
    trainer = build_trainer(config, data, torch.device("cpu"), "fp32")
    trainer.fit(2)
    test = trainer.eval_loaders["test"]
    plain, flip, full = (trainer.evaluate(test, tta=level)[1] for level in (0, 1, 2))
    assert plain > 0.3
    noise = 0.01  # 2,000 test images: one point is ~2 standard errors of a difference
    assert flip >= plain - noise and full >= plain - noise, (plain, flip, full)


@pytest.mark.real_data
def test_the_speedrun_recipe_beats_the_tutorial_net_given_the_same_wall_time(real_data, tmp_path):
    """The recipe in its CPU form (`quick-cpu`: the speedrun preset on the half-width net):
    the full-width net took 6 of the suite's 14 minutes on an AVX2 CPU, for the same verdict,
    by a like margin, in a third of the time (`pytest -s` prints the scores)."""
    common = dict(data=str(real_data), limit_train=5000, limit_test=2000, quiet=True)
    speedrun = cifarlab.train(preset="quick-cpu", batch_size=128, epochs=6,
                              workspace=str(tmp_path / "s"), **common)  # fmt: skip
    budget = speedrun.summary["train_seconds"]
    probe = cifarlab.train(model="tutorial", optimizer="adam", epochs=1, val_size=0,
                           workspace=str(tmp_path / "p"), **common)  # fmt: skip
    epochs = max(1, round(budget / probe.summary["train_seconds"]))
    tutorial = cifarlab.train(model="tutorial", optimizer="adam", epochs=epochs, val_size=0,
                              workspace=str(tmp_path / "t"), **common)  # fmt: skip
    s, t = speedrun.summary["final_test_acc"], tutorial.summary["final_test_acc"]
    print(f"speedrun {s:.3f} in {budget:.0f}s vs tutorial {t:.3f} ({epochs} epochs)")
    assert s > t + 0.03, f"speedrun {s:.3f} in {budget:.0f}s vs tutorial {t:.3f} ({epochs} epochs)"


def test_cli_preset_and_bad_preset(tiny_archive, tmp_path, capsys):
    ws = str(tmp_path / "ws")
    assert main(["train", "--preset", "turbo", "--data", str(tiny_archive), "--workspace", ws]) == 2
    assert "unknown preset 'turbo'" in capsys.readouterr().err
    code = main(["train", "--preset", "quick-cpu", "--epochs", "1", "--batch-size", "32",
                 "--data", str(tiny_archive), "--workspace", ws, "--quiet"])  # fmt: skip
    assert code == 0
    (run,) = cifarlab.results(ws)
    assert run["model"] == "speedrun-small" and run["lr"] == pytest.approx(0.75 * 32 / 512)
