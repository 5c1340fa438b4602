"""The training engine: optimizers, schedules, resume, selection, early stopping, precision."""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import stop_training_at, trained_epochs

import cifarlab
from cifarlab.cli import main
from cifarlab.errors import CifarlabError, CifarlabWarning
from cifarlab.train.callbacks import EarlyStopping
from cifarlab.train.ema import EMA
from cifarlab.train.precision import cpu_supports_bf16
from cifarlab.train.schedule import build_schedule
from cifarlab.train.selection import best_epoch, overfit_onset

# measured, not computed: they differ between any two runs
TIMING = {"epoch_seconds", "eval_seconds", "images_per_sec", "others_cpu", "steal_cpu"}


def _quick(tiny_archive, tmp_path, **options):
    base = dict(
        data=str(tiny_archive), workspace=str(tmp_path / "ws"), val_size=30, batch_size=16,
        epochs=4, optimizer="adam", lr=0.003, quiet=True,
    )  # fmt: skip
    return cifarlab.train(**{**base, **options})


# -- schedules ---------------------------------------------------------------------


def test_every_optimizer_and_schedule_name_the_config_accepts_builds():
    from cifarlab.config import OPTIMIZERS, SCHEDULES
    from cifarlab.train.optim import build_optimizer

    model = torch.nn.Linear(2, 2)
    for name in OPTIMIZERS:
        assert isinstance(build_optimizer(name, model, lr=0.1), torch.optim.Optimizer)
    for name in SCHEDULES:
        factor = build_schedule(name, epochs=2, steps_per_epoch=3, milestones=(1,))
        assert all(0 < factor(step) <= 1 for step in range(6)), name
    with pytest.raises(CifarlabError, match="choose sgd, adam"):
        build_optimizer("lion", model, lr=0.1)


def test_schedules_follow_their_curves():
    spe, epochs = 10, 10
    total = spe * epochs

    def curve(name, **kw):
        f = build_schedule(name, epochs=epochs, steps_per_epoch=spe, **kw)
        return [f(s) for s in range(total)]

    assert set(curve("constant")) == {1.0}
    step = curve("step", step_size=3, gamma=0.5)
    assert step[29] == 1.0 and step[30] == 0.5 and step[60] == 0.25
    multi = curve("multistep", milestones=(2, 5), gamma=0.1)
    assert multi[19] == 1.0 and math.isclose(multi[20], 0.1) and math.isclose(multi[50], 0.01)
    cos = curve("cosine")
    assert cos[0] == 1.0 and math.isclose(cos[50], 0.5) and cos[-1] < 0.001
    assert all(a >= b for a, b in zip(cos, cos[1:]))
    one = curve("onecycle")
    peak = max(range(total), key=one.__getitem__)
    assert peak == 30 and math.isclose(one[0], 1 / 25) and one[-1] < 1e-3
    warm = curve("warmup-linear", warmup_epochs=2)
    assert warm[0] == pytest.approx(1 / 20) and warm[19] == 1.0
    assert warm[20] == pytest.approx(1.0) and warm[-1] == pytest.approx(1 / 80)
    wcos = curve("warmup-cosine", warmup_epochs=2)
    assert wcos[19] == 1.0 and wcos[60] == pytest.approx(0.5) and wcos[-1] < 0.001
    # a warm-up shorter than a step lasts one: it rounded to none, and triangular then
    # peaked at its default 23% instead
    assert curve("warmup-linear", warmup_epochs=0.01)[:2] == [1.0, pytest.approx(1.0)]
    tri = curve("triangular", warmup_epochs=0.01)
    assert max(range(total), key=tri.__getitem__) == 1


def test_trainer_records_each_epochs_mean_learning_rate(tiny_archive, tmp_path):
    result = _quick(tiny_archive, tmp_path, optimizer="sgd", lr=0.01, schedule="step",
                    step_size=2, gamma=0.1)  # fmt: skip
    lrs = [m["lr"] for m in result.history]
    assert result.status == "completed"
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.001])
    # a constant lr exactly: a running sum over 6 steps read 0.0029999999999999996
    assert _quick(tiny_archive, tmp_path, epochs=1).history[0]["lr"] == 0.003
    # a schedule that moves within the epoch: the mean of its steps' lrs
    lrs = [m["lr"] for m in _quick(tiny_archive, tmp_path, lr=0.01, schedule="cosine").history]
    assert 0.01 > lrs[0] > lrs[1] > lrs[2] > lrs[3] > 0


# -- every optimizer learns -------------------------------------------------------

OPTIMIZER_LRS = {"sgd": 0.02, "adam": 0.003, "adamw": 0.003, "adagrad": 0.03, "rmsprop": 0.0003}


def test_a_runs_optimizer_is_the_one_its_settings_name(tiny_archive):
    from cifarlab.config import OPTIMIZERS, make_run_config
    from cifarlab.data import load_dataset
    from cifarlab.train.build import build_trainer

    expected = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}  # fmt: skip
    assert set(expected) == set(OPTIMIZERS)
    data = load_dataset(str(tiny_archive), val_size=0)
    for name, kind in expected.items():
        config = make_run_config(model="tutorial", optimizer=name, lr=0.02, momentum=0.8,
                                 nesterov=name == "sgd", weight_decay=5e-4)  # fmt: skip
        opt = build_trainer(config, data, torch.device("cpu"), "fp32").optimizer
        assert type(opt) is kind, name
        weights = opt.param_groups[0]  # the conv and linear weights: decayed at the run's lr
        assert (weights["lr"], weights["weight_decay"]) == (0.02, 5e-4), name
        if name in ("sgd", "rmsprop"):
            assert weights["momentum"] == 0.8, name
    assert build_trainer(make_run_config(model="tutorial", optimizer="sgd", nesterov=True), data,
                         torch.device("cpu"), "fp32").optimizer.defaults["nesterov"]  # fmt: skip


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_LRS))
def test_every_optimizer_lowers_the_loss(tiny_archive, tmp_path, optimizer):
    result = _quick(tiny_archive, tmp_path, optimizer=optimizer, lr=OPTIMIZER_LRS[optimizer],
                    epochs=3, weight_decay=1e-4, decay_norm_bias=False)  # fmt: skip
    losses = [m["train_loss"] for m in result.history]
    assert losses[-1] < losses[0] * 0.9, losses


@pytest.mark.parametrize(
    "schedule, extra",
    [
        ("constant", {}),
        ("step", {"step_size": 1}),
        ("multistep", {"milestones": (1, 2)}),
        ("cosine", {}),
        ("onecycle", {"max_lr": 0.01}),
        ("warmup-linear", {"warmup_epochs": 1}),
        ("warmup-cosine", {"warmup_epochs": 1}),
    ],
)
def test_every_schedule_lowers_the_loss(tiny_archive, tmp_path, schedule, extra):
    result = _quick(tiny_archive, tmp_path, schedule=schedule, epochs=3, **extra)
    losses = [m["train_loss"] for m in result.history]
    assert losses[-1] < losses[0] * 0.9, losses


# -- resume -----------------------------------------------------------------------


def _interrupt_at_epoch(monkeypatch, stop_at: int):
    stop_training_at(monkeypatch, stop_at)


def _stopped_after_one_epoch(tiny_archive, tmp_path, monkeypatch) -> dict:
    """The record of a 2-epoch run stopped (Ctrl-C) as its second epoch began."""
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=1)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path, epochs=2)
    (stopped,) = cifarlab.results(tmp_path / "ws")
    return stopped


def _rows(workspace, run_id):
    with sqlite3.connect(os.path.join(workspace, "runs.db")) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
        skip = TIMING | {"run_id"}
        return [{k: r[k] for k in r.keys() if k not in skip} for r in rows]  # noqa: SIM118


RESUMABLE = dict(
    optimizer="sgd", lr=0.05, nesterov=True, schedule="cosine", ema=0.9, label_smoothing=0.1,
    grad_clip=5.0, deterministic=True, augment="crop-flip-cutout",
)  # fmt: skip


def test_interrupted_then_resumed_equals_uninterrupted(tiny_archive, tmp_path, monkeypatch):
    whole = _quick(tiny_archive, tmp_path / "a", **RESUMABLE)
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=2)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path / "b", **RESUMABLE)
    (broken,) = cifarlab.results(tmp_path / "b" / "ws")
    assert broken["status"] == "failed" and broken["epochs_done"] == 2
    trained = trained_epochs(monkeypatch)
    code = main(["train", "--resume", broken["id"], "--workspace", str(tmp_path / "b" / "ws"),
                 "--quiet"])  # fmt: skip
    assert code == 0 and trained == [2, 3]  # the last two only: the first two were restored
    (resumed,) = cifarlab.results(tmp_path / "b" / "ws")
    assert resumed["status"] == "completed" and resumed["epochs_done"] == 4
    expected = _rows(tmp_path / "a" / "ws", whole.run_id)
    assert len(expected) == 4
    assert _rows(tmp_path / "b" / "ws", broken["id"]) == expected  # every epoch, bitwise
    a = torch.load(whole.run_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "ws" / broken["id"] / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_whose_checkpoint_is_gone_says_its_recorded_epochs_are_replaced(
    tiny_archive, tmp_path, monkeypatch
):
    stopped = _stopped_after_one_epoch(tiny_archive, tmp_path, monkeypatch)
    shutil.rmtree(tmp_path / "ws" / stopped["id"])  # its folder deleted by hand
    said = (rf"run {stopped['id']} has 1 epoch\(s\) recorded but no checkpoint .* restarts from "
            "epoch 1 and its recorded epochs are replaced")  # fmt: skip
    with pytest.warns(CifarlabWarning, match=said):
        resumed = _quick(tiny_archive, tmp_path, epochs=2, resume=stopped["id"])
    assert resumed.status == "completed" and len(resumed.history) == 2


def test_same_command_with_resume_continues_the_matching_run(tiny_archive, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=1)
        with pytest.raises(KeyboardInterrupt) as stopped:
            _quick(tiny_archive, tmp_path, epochs=2)
    # a notebook shows the interrupt's note: how to go on, in Python
    (note,) = stopped.value.__notes__
    run_id = note.split()[2]
    assert note.endswith(f"cifarlab.train(resume={run_id!r}, workspace={str(tmp_path / 'ws')!r}) "
                         "continues it")  # fmt: skip
    trained = trained_epochs(monkeypatch)
    result = _quick(tiny_archive, tmp_path, epochs=2, resume="auto")
    assert result.status == "completed" and len(result.history) == 2 and trained == [1]
    assert len(cifarlab.results(tmp_path / "ws")) == 1
    again = _quick(tiny_archive, tmp_path, epochs=2, resume=True)  # completed: nothing to do
    assert again.run_id == result.run_id and len(cifarlab.results(tmp_path / "ws")) == 1
    assert again.summary == result.summary  # the stored record gives the whole summary


def test_data_named_by_cifarlab_data_is_part_of_the_run(tiny_archive, tiny_folder, tmp_path,
                                                        monkeypatch):  # fmt: skip
    ws = tmp_path / "ws"
    runs = []
    for data in (tiny_archive, tiny_folder):  # the variable alone names the data, no --data
        monkeypatch.setenv("CIFARLAB_DATA", str(data))
        runs.append(cifarlab.train(workspace=ws, epochs=1, val_size=20, quiet=True, resume=True))
    # one run on each: the second was "already completed" with the first one's accuracy
    assert runs[0].run_id != runs[1].run_id and runs[1].status == "completed"
    recorded = {r["id"]: r["config"]["data"] for r in cifarlab.results(ws)}
    assert recorded == {runs[0].run_id: str(tiny_archive), runs[1].run_id: str(tiny_folder)}


def test_a_runs_images_per_second_is_its_images_over_its_training_time(tiny_archive, tmp_path):
    result = _quick(tiny_archive, tmp_path, epochs=3)
    history = result.history
    images = sum(m["images_per_sec"] * m["epoch_seconds"] for m in history)
    rate = images / sum(m["epoch_seconds"] for m in history)
    # not the mean of the epochs' rates, which a slow first epoch (warm-up) skews
    assert result.summary["images_per_sec"] == pytest.approx(rate, rel=1e-9)


def test_the_progress_bar_shows_the_scoring_after_each_epoch(tiny_archive, tmp_path,
                                                             monkeypatch, capsys):  # fmt: skip
    from cifarlab.train import callbacks

    monkeypatch.setattr(callbacks, "bar_disabled", lambda: False)  # as on a terminal
    _quick(tiny_archive, tmp_path, epochs=2, quiet=False, val_size=16, batch_size=8)
    err = capsys.readouterr().err
    # after the bar reached the epoch's end, scoring val and test ran with nothing shown
    for epoch in (1, 2):
        for split, images in (("val", 16), ("test", 60)):
            assert f"epoch {epoch}/2, scoring {split}:   0%|          | 0.00/{images}.0" in err


def test_every_progress_bar_is_full_when_it_closes(tiny_archive, tmp_path, monkeypatch):
    # Jupyter's bar closed short of its total turns red ("danger") and stays in the cell:
    # the images since the last refresh were never added (a bar at 82% after its scoring)
    from tqdm import tqdm

    from cifarlab.train import callbacks

    closed = []

    class Bar(tqdm):
        def close(self):
            if not self.disable and self.total:
                closed.append((self.desc, self.n, self.total))
            super().close()

    monkeypatch.setattr(callbacks, "bar_disabled", lambda: False)
    monkeypatch.setattr(callbacks, "tqdm", Bar)
    # no refresh after the bar's first: every image is left to the close
    monkeypatch.setattr(callbacks.ProgressBar.__init__, "__defaults__", (3600, ""))
    _quick(tiny_archive, tmp_path, epochs=2, quiet=False, val_size=16, batch_size=8)
    assert len(closed) == 6 and all(n == total for _, n, total in closed), closed


def test_the_epoch_line_says_how_long_scoring_took(tiny_archive, tmp_path, monkeypatch, capsys):
    from cifarlab.train.trainer import Trainer

    evaluate = Trainer.evaluate

    def slow_evaluate(self, loader, tta=0):
        time.sleep(0.3)  # test and validation: 0.6 s of scoring
        return evaluate(self, loader, tta)

    monkeypatch.setattr(Trainer, "evaluate", slow_evaluate)
    _quick(tiny_archive, tmp_path, epochs=1, quiet=False)
    # a 25-second TTA scoring showed as a "1.0s" epoch in a log file
    said = re.search(r"epoch 1/1  .*img/s  \d+\.\ds \+ (\d+\.\d)s scoring(  |\n)",
                     capsys.readouterr().err)  # fmt: skip
    assert said and float(said[1]) >= 0.6


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_is_one_whole_line_with_the_way_on(
    tiny_archive, tmp_path, monkeypatch, capsys, damage
):
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=1)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path, epochs=2)
    (last,) = (tmp_path / "ws").glob("*/last.pt")
    whole = last.read_bytes()
    last.write_bytes(whole[:3000] if damage == "truncated" else bytes(range(256)) * 4)
    args = [
        "train",
        "--data",
        str(tiny_archive),
        "--workspace",
        str(tmp_path / "ws"),
        "--val-size",
        "30",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--quiet",
        "--resume",
    ]  # fmt: skip: as _quick trains
    assert main(args) == 2
    err = capsys.readouterr().err
    # it was cut off mid-sentence ("... there is a high)"), or a traceback (IndexError)
    assert err.count("\n") == 1 and err.startswith("cifarlab: error: checkpoint "), err
    assert "it is truncated, corrupt or not a cifarlab checkpoint; delete it" in err, err
    assert err.rstrip().endswith("the run restarts from epoch 1 (`--resume` again)"), err
    last.unlink()  # the way it names
    assert main(args) == 0


def test_a_run_resumed_with_another_number_of_threads_says_so(tiny_archive, tmp_path,
                                                              monkeypatch):  # fmt: skip
    # a sweep's worker trains with its share of the cores: resumed alone, it silently summed
    # its floats in another order (not bitwise what it would have given)
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=1)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path, epochs=2)
    (stopped,) = cifarlab.results(tmp_path / "ws")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        said = f"run {stopped['id']} trained with {threads} thread.* and resumes with {threads + 1}"
        with pytest.warns(UserWarning, match=said):
            _quick(tiny_archive, tmp_path, epochs=2, resume=stopped["id"])
    finally:
        torch.set_num_threads(threads)


def test_resume_refuses_options_that_change_results(tiny_archive, tmp_path, capsys):
    run = _quick(tiny_archive, tmp_path, epochs=1)
    ws = str(tmp_path / "ws")
    assert main(["train", "--resume", run.run_id, "--workspace", ws, "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the run's 0.003" in capsys.readouterr().err
    # a setting the preset brought is blamed on --preset, which is what the user typed
    assert main(["train", "--resume", run.run_id, "--workspace", ws, "--preset", "quick-cpu"]) == 2
    err = capsys.readouterr().err
    assert "--preset quick-cpu sets --augment crop-alt-flip, which differs from the run's" in err
    with pytest.raises(CifarlabError, match="--deterministic on differs from the run's off;"):
        cifarlab.train(resume=run.run_id, workspace=ws, deterministic=True)  # it said True/False
    assert main(["train", "--resume", "nope", "--workspace", ws]) == 2
    assert "--resume nope: no such run" in capsys.readouterr().err


def test_a_run_resumed_on_another_machine_goes_on_in_the_precision_it_trained_in(
    tiny_archive, tmp_path, monkeypatch
):
    import json

    stopped = _stopped_after_one_epoch(tiny_archive, tmp_path, monkeypatch)

    def trained_in(precision: str) -> None:  # as if auto had chosen it on another machine
        with sqlite3.connect(tmp_path / "ws" / "runs.db") as db:
            (info,) = db.execute("SELECT info FROM runs WHERE id = ?", (stopped["id"],)).fetchone()
            info = json.dumps({**json.loads(info), "precision": precision})
            db.execute("UPDATE runs SET info = ? WHERE id = ?", (info, stopped["id"]))

    trained_in("fp16")
    with pytest.raises(CifarlabError, match=r"trained in fp16 \(--precision auto on a GPU\), "
                       "which this cpu cannot run"):  # fmt: skip
        _quick(tiny_archive, tmp_path, epochs=2, resume=stopped["id"])
    here = "fp32" if not cpu_supports_bf16() else "bf16"  # what auto picks on this CPU
    other = "bf16" if here == "fp32" else "fp32"
    trained_in(other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 emulated here: slow, says a warning
        trained = trained_epochs(monkeypatch)
        resumed = _quick(tiny_archive, tmp_path, epochs=2, resume=stopped["id"])
    # in the precision it trained in (it had switched to this machine's choice half-way)
    assert resumed.status == "completed" and resumed.info["precision"] == other
    assert trained == [1]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("damage", ["malicious", "truncated", "foreign", "wrong_model"])
def test_a_bad_checkpoint_is_refused_and_changes_nothing(tiny_archive, tmp_path, monkeypatch,
                                                         capsys, damage):  # fmt: skip
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=1)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path, epochs=2)
    (run,) = cifarlab.results(tmp_path / "ws")
    last = tmp_path / "ws" / run["id"] / "last.pt"
    if damage == "malicious":
        torch.save({"format": "cifarlab-checkpoint", "x": _Evil()}, last)
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, last)
    else:
        state = torch.load(last, weights_only=True)
        state["model"] = {"layer.weight": torch.zeros(2)}
        torch.save(state, last)
    before = last.read_bytes()
    code = main(["train", "--resume", run["id"], "--workspace", str(tmp_path / "ws"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "checkpoint" in err
    assert last.read_bytes() == before
    (after,) = cifarlab.results(tmp_path / "ws")
    assert after["status"] == "failed" and after["epochs_done"] == 1


def test_same_seed_deterministic_runs_are_identical(tiny_archive, tmp_path):
    a = _quick(tiny_archive, tmp_path / "a", epochs=2, deterministic=True)
    b = _quick(tiny_archive, tmp_path / "b", epochs=2, deterministic=True)
    strip = lambda h: [{k: v for k, v in m.items() if k not in TIMING} for m in h]
    assert strip(a.history) == strip(b.history)


def test_a_run_puts_torchs_determinism_switches_and_random_state_back(
    tiny_archive, tmp_path, monkeypatch
):
    # A notebook's own code after cifarlab.train must not inherit the run's settings: a
    # deterministic run left on would make later ops without such a kernel raise.
    import torch

    from cifarlab.train.trainer import Trainer

    original, during = Trainer.train_epoch, []

    def train_epoch(self, at):  # the switches as the run trains: set as it asked
        during.append(
            (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
        )
        return original(self, at)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    try:
        for mine, run_asks in [(False, True), (True, False)]:
            torch.use_deterministic_algorithms(mine, warn_only=mine)
            torch.backends.cudnn.benchmark = not mine
            torch.manual_seed(123)
            expected = torch.rand(3)
            torch.manual_seed(123)
            _quick(tiny_archive, tmp_path / str(mine), epochs=1, deterministic=run_asks)
            assert during.pop() == (run_asks, not run_asks)
            assert torch.equal(torch.rand(3), expected)  # the run had reseeded it with its own
            assert torch.are_deterministic_algorithms_enabled() is mine
            assert torch.is_deterministic_algorithms_warn_only_enabled() is mine
            assert torch.backends.cudnn.benchmark is (not mine)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False


def test_divergence_between_looks_at_the_loss_is_caught_at_the_epoch_end(
    tiny_archive, tmp_path, monkeypatch
):
    # A GPU reads the loss only every 16 steps (each read is a sync); a run that blows up
    # between reads must still end as diverged, not completed with a NaN loss.
    from cifarlab.train.trainer import Trainer

    init = Trainer.__init__

    def rarely_looking(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.divergence_check_every = 10**9  # only the first step is looked at

    monkeypatch.setattr(Trainer, "__init__", rarely_looking)
    result = _quick(tiny_archive, tmp_path, optimizer="sgd", lr=1e4, epochs=2)
    assert result.status == "diverged" and "diverged" in result.error


def test_compile_without_a_cpp_compiler_is_one_clear_line(tiny_archive, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")  # what torch.compile would call
    with pytest.raises(CifarlabError, match=r"needs a C\+\+ compiler \(no-such-compiler-here\)"):
        _quick(tiny_archive, tmp_path, compile=True, device="cpu")
    assert not (tmp_path / "ws").exists()  # refused before any run: no workspace either


@pytest.fixture
def cxx_required():
    """torch.compile on the CPU needs its C++ compiler: skip where absent, fail in CI."""
    cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    if not shutil.which(cxx):
        reason = f"no C++ compiler ({cxx}) for torch.compile"
        if os.environ.get("CIFARLAB_REQUIRE_CXX") == "1":
            pytest.fail(f"CIFARLAB_REQUIRE_CXX=1 but {reason}")
        pytest.skip(reason)


def test_compiled_training_matches_eager(tiny_archive, tmp_path, cxx_required):
    # --compile must change the speed, not the run: same losses to float tolerance.
    # drop_last keeps one batch shape, so the net compiles once.
    options = dict(
        model="tutorial", optimizer="sgd", lr=0.05, epochs=2, drop_last=True, precision="fp32"
    )
    from torch._dynamo.utils import counters

    eager = _quick(tiny_archive, tmp_path, **options)
    counters.clear()
    compiled = _quick(tiny_archive, tmp_path, compile=True, **options)
    assert compiled.status == "completed" and compiled.run_id != eager.run_id
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile: eager would match too
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-3)
        assert math.isclose(a["test_acc"], b["test_acc"], abs_tol=0.04)


# -- model selection, overfitting, early stopping ----------------------------------


def _history(val_loss, train_loss=None, val_acc=None):
    train_loss = train_loss or [2.0 - 0.1 * i for i in range(len(val_loss))]
    val_acc = val_acc or [0.5] * len(val_loss)
    return [
        {"epoch": i + 1, "val_loss": v, "train_loss": t, "val_acc": a, "test_acc": 0.1 * i}
        for i, (v, t, a) in enumerate(zip(val_loss, train_loss, val_acc))
    ]


def test_best_epoch_uses_validation_never_test():
    history = _history([1.0, 0.8, 0.9], val_acc=[0.5, 0.7, 0.6])
    assert best_epoch(history, "val_acc")["epoch"] == 2  # test_acc is highest at epoch 3
    assert best_epoch(history, "val_loss")["epoch"] == 2


def test_overfit_onset_is_where_validation_loss_bottoms_out():
    assert overfit_onset(_history([1.0, 0.8, 0.7, 0.75, 0.8, 0.9]), patience=3) == 3
    assert overfit_onset(_history([1.0, 0.8, 0.7, 0.75, 0.8]), patience=3) is None
    flat_train = [1.0] * 6
    assert overfit_onset(_history([1.0, 0.8, 0.7, 0.75, 0.8, 0.9], flat_train), 3) is None


class _FakeTrainer:
    should_stop = False
    history: list = []


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    stopper, trainer = EarlyStopping(patience=2, select_by="val_loss"), _FakeTrainer()
    for epoch, metrics in enumerate(_history([1.0, 0.8, 0.85, 0.7, 0.9, 0.95, 0.6])):
        stopper.on_epoch_end(trainer, epoch, metrics)
        if trainer.should_stop:
            break
    assert stopper.stopped_at == 6  # best at epoch 4, then two epochs without improvement


def test_early_stop_run_stops_where_validation_stalls_and_keeps_best(tiny_archive, tmp_path):
    # the synthetic classes are easy: validation accuracy saturates within a few epochs
    result = _quick(tiny_archive, tmp_path, epochs=30, early_stop=2)
    accs = [m["val_acc"] for m in result.history]
    best = result.summary["best_epoch"]
    assert result.status == "completed" and len(accs) < 30
    assert result.summary["stopped_epoch"] == len(accs) == best + 2
    assert max(accs[best:]) <= accs[best - 1]  # nothing after the best epoch beat it
    assert torch.load(result.run_dir / "best.pt", weights_only=True)["epoch"] == best
    (record,) = cifarlab.results(tmp_path / "ws")
    assert record["best_epoch"] == best


def test_eval_every_scores_every_nth_epoch_and_the_last(tiny_archive, tmp_path, monkeypatch):
    from cifarlab.experiments.store import ResultsStore
    from cifarlab.train.checkpoint import load_checkpoint
    from cifarlab.train.trainer import Trainer

    result = _quick(tiny_archive, tmp_path, epochs=5, eval_every=2)
    scored = [m["epoch"] for m in result.history if "val_acc" in m]
    assert scored == [2, 4, 5]  # every second epoch, and the last for the final numbers
    assert all("test_acc" not in m and m["eval_seconds"] < 0.05 for m in result.history[::2][:2])
    best = max((m for m in result.history if "val_acc" in m), key=lambda m: m["val_acc"])
    assert result.summary["test_acc"] == best["test_acc"]  # chosen among the scored epochs
    assert result.summary["final_test_acc"] == result.history[-1]["test_acc"]
    with ResultsStore(tmp_path / "ws" / "runs.db") as store:
        rows = {r["epoch"]: r for r in store.epochs(result.run_id)}
    assert rows[1]["val_acc"] is None and rows[2]["val_acc"] is not None
    # stopped after an unscored epoch: its checkpoint carries no predictions of older weights
    trained = Trainer.train_epoch

    def stopped_in_epoch_3(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return trained(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", stopped_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _quick(tiny_archive, tmp_path / "stopped", epochs=5, eval_every=3)
    (run_dir,) = (tmp_path / "stopped" / "ws").glob("*/last.pt")
    state = load_checkpoint(run_dir)
    assert state["epoch"] == 2 and state["test_predictions"] is None


def test_eval_every_early_stop_and_overfitting_count_scored_epochs(tiny_archive, tmp_path):
    # lr ~0: validation never improves, so the first scored epoch after the best one stops it
    result = _quick(tiny_archive, tmp_path, epochs=9, eval_every=3, early_stop=1, lr=1e-12)
    assert result.status == "completed" and result.summary["stopped_epoch"] == 6
    val_acc = [0.5, None, 0.7, None, 0.6, None, 0.5]
    history = _history([1.0, None, 0.8, None, 0.9, None, 1.0], val_acc=val_acc)
    for m in history:
        if m["val_loss"] is None:
            del m["val_loss"], m["val_acc"], m["test_acc"]
    assert best_epoch(history, "val_acc")["epoch"] == 3
    assert overfit_onset(history, patience=2) == 3  # rising at the two scored epochs after


def test_a_model_registered_from_python_is_built_and_checked_as_a_file_model_is(
    tiny_archive, tmp_path
):
    from torch import nn

    from cifarlab.models.registry import _REGISTRY

    class TutorialStyle(nn.Module):  # the tutorial's Net takes no arguments, or only some
        def __init__(self, num_classes=10):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, num_classes)

        def forward(self, x):
            if self.training and x.shape[0] == 7:  # a bug that only training meets
                raise RuntimeError("a batch of seven")
            return self.fc(x.flatten(1))

    try:
        for unusable in ("", "x.toml", "net.py:Net", "a/b", "TUTORIAL"):  # "" ran as "-467c3c87"
            with pytest.raises(CifarlabError, match="model"):
                cifarlab.register_model(unusable)(TutorialStyle)
        cifarlab.register_model("tutorial-style")(TutorialStyle)  # no description needed
        # it raised TypeError: __init__() got an unexpected keyword argument 'in_channels'
        assert (
            _quick(tiny_archive, tmp_path, model="tutorial-style", epochs=1).status == "completed"
        )
        cifarlab.register_model("seven-logits")(
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(3072, 7))
        )
        with pytest.raises(
            CifarlabError, match=r"'seven-logits' maps a \(2, 3, 32, 32\) batch to \(2, 7\)"
        ):
            _quick(tiny_archive, tmp_path, model="seven-logits")  # it was torch's IndexError
        # a batch of 7: 30 validation images and 16 per batch leave 7 at an epoch's end
        with pytest.raises(CifarlabError, match=r"model tutorial-style raised RuntimeError at "
                           r"test_training.py:\d+: a batch of seven"):  # fmt: skip
            _quick(tiny_archive, tmp_path, model="tutorial-style", limit_train=55, epochs=1)

        class Boom(nn.Module):
            def forward(self, x):
                if self.training:  # past the logits check, which runs in eval mode
                    raise RuntimeError("boom")
                return x

        class Stacked(nn.Sequential):  # forward is nn.Sequential's, in torch's own file
            def __init__(self, num_classes):
                super().__init__(nn.Flatten(), Boom(), nn.Linear(3072, num_classes))

        cifarlab.register_model("my-stacked")(Stacked)
        where = r"raised RuntimeError at test_training.py:\d+: boom"
        with pytest.raises(CifarlabError, match=where):
            _quick(tiny_archive, tmp_path, model="my-stacked", epochs=1)  # was at container.py:253
    finally:
        for name in ("tutorial-style", "seven-logits", "my-stacked"):
            _REGISTRY.pop(name, None)


def test_resuming_a_run_whose_model_file_was_edited_is_refused(tiny_archive, tmp_path, monkeypatch):
    from cifarlab.train.trainer import Trainer

    net = tmp_path / "net.py"
    net.write_text(
        "from torch import nn\n\ndef Net(num_classes):\n    return nn.Sequential(nn.Flatten(),"
        " nn.Linear(3072, 16), nn.ReLU(), nn.Linear(16, num_classes))\n"
    )

    def crash(self, epochs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "fit", crash)
        with pytest.raises(CifarlabError, match="simulated crash"):  # a run to resume
            _quick(tiny_archive, tmp_path, model=f"{net}:Net")
    (run,) = cifarlab.results(tmp_path / "ws")
    net.write_text(net.read_text().replace("nn.ReLU()", "nn.Tanh()"))  # the same shapes
    # it resumed, training a Tanh net from epoch 2 on a run that records the ReLU one
    with pytest.raises(CifarlabError, match=rf"net.py' has changed since run {run['id']}"):
        cifarlab.train(resume=run["id"], workspace=str(tmp_path / "ws"), quiet=True)
    net.unlink()
    with pytest.raises(CifarlabError, match=rf"net.py' is gone since run {run['id']}"):
        cifarlab.train(resume=run["id"], workspace=str(tmp_path / "ws"), quiet=True)


def test_an_edited_helper_module_is_an_edited_model(tiny_archive, tmp_path, monkeypatch):
    """A net whose code lives in a helper beside its model file: editing the helper trained
    the same identity (a sweep called it done, a resume went on with the new code)."""
    from cifarlab.config import RunConfig
    from cifarlab.train.trainer import Trainer

    (tmp_path / "net.py").write_text(
        "from torch import nn\nfrom blocks import WIDTH\n\ndef Net(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3072, WIDTH), nn.ReLU(),"
        " nn.Linear(WIDTH, num_classes))\n"
    )
    blocks, ws = tmp_path / "blocks.py", tmp_path / "ws"
    blocks.write_text("WIDTH = 8\n")
    model = f"{tmp_path / 'net.py'}:Net"
    first = _quick(tiny_archive, tmp_path, model=model, epochs=1)
    assert (first.run_dir / "blocks.py").read_text() == "WIDTH = 8\n"  # kept beside model.py
    settings = RunConfig(model=model, data=str(tiny_archive)).hash()
    blocks.write_text("WIDTH = 16\n")
    # the settings keep their identity (runs recorded before helpers counted keep theirs)...
    assert RunConfig(model=model, data=str(tiny_archive)).hash() == settings
    _quick(tiny_archive, tmp_path, model=model, epochs=1)
    # ...and the runs of the two versions are two models, not two seeds of one
    assert [g["n"] for g in cifarlab.grouped_results(ws)] == [1, 1]
    index = cifarlab.report(workspace=ws)  # each net rebuilt as it trained
    assert "has changed" not in index.read_text()
    assert len(list(index.parent.glob("diagram-*.png"))) == 2

    def crash(self, epochs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "fit", crash)
        with pytest.raises(CifarlabError, match="simulated crash"):
            _quick(tiny_archive, tmp_path, model=model, seed=1)
    crashed = cifarlab.results(ws)[-1]["id"]
    blocks.write_text("WIDTH = 32\n")
    message = rf"net.py' imports a helper module that has changed since run {crashed}"
    with pytest.raises(CifarlabError, match=message):
        cifarlab.train(resume=crashed, workspace=str(ws), quiet=True)


NOTEBOOK_NET = """
class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), Block(3072, WIDTH), nn.Linear(WIDTH, num_classes))

    def forward(self, x):
        return self.body(x)
"""
NOTEBOOK_BLOCK = """
class Block(nn.Sequential):
    def __init__(self, n_in, n_out):
        super().__init__(nn.Linear(n_in, n_out), nn.ReLU())
"""


def _notebook(*cells: str, kernel: dict | None = None, width: int = 8) -> dict:
    """Run ``cells`` as a notebook runs them: one namespace (``kernel``), files named by cell."""
    from torch import nn

    kernel = kernel if kernel is not None else {"__name__": "__main__", "nn": nn}
    kernel["WIDTH"] = width
    for i, cell in enumerate(cells):
        exec(compile(cell, f"/tmp/ipykernel_{id(kernel)}/{i}.py", "exec"), kernel)
    return kernel


def test_a_registered_net_s_version_is_its_code_not_where_or_when_it_ran(tmp_path):
    from cifarlab.models.code_version import factory_digest

    def version(*cells: str, width: int = 8) -> str:
        return factory_digest(_notebook(*cells, width=width)["Net"])

    first = version(NOTEBOOK_BLOCK, NOTEBOOK_NET)
    # a new kernel, other cell files, a comment and blank lines: the same net
    assert version("# blocks\n\n" + NOTEBOOK_BLOCK, NOTEBOOK_NET + "\n# done\n") == first
    assert (
        version(NOTEBOOK_BLOCK, NOTEBOOK_NET.replace("self.body(x)", "self.body(x * 2)")) != first
    )
    assert version(NOTEBOOK_BLOCK.replace("ReLU", "Tanh"), NOTEBOOK_NET) != first  # its helper
    assert version(NOTEBOOK_BLOCK, NOTEBOOK_NET, width=16) != first  # WIDTH = 16 in a cell

    def cell(width):  # test_models' cell that closes over its width
        def net(num_classes=10):
            return torch.nn.Linear(width, num_classes)

        return net

    assert factory_digest(cell(4)) != factory_digest(cell(8))
    # what a net reads beyond its methods: each edit below made the same version
    edits = {
        "CFG = [64, 'M', 128]": "CFG = [64, 'M', 256]",  # a list or dict of settings
        "ACT = nn.ReLU": "ACT = nn.GELU",  # a torch class, by name
        "OPTS = Opts(width=64)": "OPTS = Opts(width=128)",  # a dataclass's fields
        "BLOCKS = (Block,)": "BLOCKS = (Wide,)",  # the user's classes in a tuple, by code
        "PLAIN.width = 3": "PLAIN.width = 4",  # a plain object's attributes
        "@functools.cache\ndef widths():\n    return (3,)": "@functools.cache\ndef widths():\n"
        "    return (4,)",  # a function behind a cache
    }
    net = """
from dataclasses import dataclass
@dataclass
class Opts:
    width: int
class Block(nn.Linear):
    pass
class Wide(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)
class Plain:
    pass
PLAIN = Plain()
import functools
{setting}
def Net(num_classes=10, act=nn.functional.relu):
    return nn.Sequential(*(b(3, 3) for b in BLOCKS), ACT(), nn.Linear(CFG[-1], OPTS.width),
                         nn.Linear(PLAIN.width, widths()[0]))
"""
    settings = "\n".join(edits)
    base = factory_digest(_notebook(net.format(setting=settings))["Net"])
    for old, new in edits.items():
        edited = _notebook(net.format(setting=settings.replace(old, new)))["Net"]
        assert factory_digest(edited) != base, new
    # and the same in every process: nothing hashed by address (the default relu's repr) or
    # in hashing order (a set literal's frozenset constant)
    script = tmp_path / "cell.py"
    script.write_text(
        net.format(setting=settings) + "\ndef kind(k):\n    return k in {'a', 'b', 'c', 'd'}\n"
    )
    code = ("from torch import nn\nfrom cifarlab.models.code_version import factory_digest\n"
            f"kernel = {{'nn': nn, '__name__': '__main__'}}\n"
            f"exec(compile(open({str(script)!r}).read(), {str(script)!r}, 'exec'), kernel)\n"
            "print(factory_digest(kernel['Net']), factory_digest(kernel['kind']))")  # fmt: skip
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}  # fmt: skip
    assert len(seen) == 1, seen


def test_an_edited_net_registered_from_python_trains_again_as_a_new_version(
    tiny_archive, tmp_path, monkeypatch
):
    """The name alone is a registered net's settings: a sweep of the edited cell reported the
    old net's result, and the two nets' runs pooled as seeds of one."""
    from cifarlab.model_files import model_of_run
    from cifarlab.models.registry import _REGISTRY
    from cifarlab.results import open_store
    from cifarlab.train.trainer import Trainer

    kernel = _notebook(NOTEBOOK_BLOCK, NOTEBOOK_NET)
    ws = tmp_path / "ws"
    grid = {"name": "mine", "grid": {"seed": [0]},
            "base": {"data": str(tiny_archive), "val_size": 30, "epochs": 1, "model": "my-lin",
                     "batch_size": 16}}  # fmt: skip
    try:
        cifarlab.register_model("my-lin")(kernel["Net"])
        assert cifarlab.sweep(grid, workspace=ws, quiet=True).outcomes
        with open_store(ws) as store:  # with its info: the code it trained
            (first,) = store.runs()
        # the Block cell edited and run again, the Net cell (which registers it) not
        _notebook(NOTEBOOK_BLOCK.replace("ReLU", "Tanh"), kernel=kernel)
        said = f"model 'my-lin', registered in this process, has changed since run {first['id']}"
        with pytest.warns(UserWarning, match=said):
            cifarlab.sweep(grid, workspace=ws, quiet=True)
        runs = cifarlab.results(ws)
        assert len(runs) == 2 and len({r["config"]["model"] for r in runs}) == 2, runs
        assert all(r["config"]["model"].startswith("my-lin@") for r in runs)
        assert [g["n"] for g in cifarlab.grouped_results(ws)] == [1, 1]  # two nets, not seeds
        assert len(cifarlab.results(ws, only={"model": "my-lin"})) == 2  # it matched none
        with pytest.raises(CifarlabError, match=f"not the version run {first['id']} trained"):
            model_of_run(first, ws)  # the report would draw and score the Tanh net for it

        def crash(self, epochs):
            raise RuntimeError("simulated crash")

        with monkeypatch.context() as patch:
            patch.setattr(Trainer, "fit", crash)
            with pytest.raises(CifarlabError, match="simulated crash"):
                _quick(tiny_archive, tmp_path, model="my-lin", epochs=1, seed=5)
        crashed = cifarlab.results(ws)[-1]["id"]
        _notebook(NOTEBOOK_BLOCK, kernel=kernel)  # ReLU again: the crashed run's Tanh is gone
        cifarlab.register_model("my-lin")(kernel["Net"])
        with pytest.raises(CifarlabError, match=f"not the version run {crashed} trained"):
            cifarlab.train(resume=crashed, workspace=str(ws), quiet=True)
        assert model_of_run(first, ws) == "my-lin"  # the first version, registered again
    finally:
        _REGISTRY.pop("my-lin", None)


def test_a_notebook_net_s_failure_is_recorded_at_its_cell(tiny_archive, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from cifarlab.models.registry import _REGISTRY

    cell = "/tmp/ipykernel_4242/2861180438.py"
    kernel = _notebook()
    source = (
        "\n\nclass Bomb(nn.Linear):\n    def forward(self, x):\n        if self.training:\n"
        "            raise ValueError('boom')\n        return super().forward(x.flatten(1))\n"
    )
    exec(compile(source, cell, "exec"), kernel)
    shell = SimpleNamespace(compile=SimpleNamespace(_filename_map={cell: 10}))
    monkeypatch.setitem(sys.modules, "IPython", SimpleNamespace(get_ipython=lambda: shell))
    cifarlab.register_model("bomb")(lambda num_classes: kernel["Bomb"](3072, num_classes))
    try:
        with pytest.raises(
            CifarlabError, match=r"raised ValueError at Cell In\[10\], line 6: boom"
        ):
            _quick(tiny_archive, tmp_path, model="bomb", epochs=1)
    finally:
        _REGISTRY.pop("bomb", None)
    # the run's record named the kernel's file: "ValueError: boom (2861180438.py:6)"
    (run,) = cifarlab.results(tmp_path / "ws")
    assert run["error"] == "ValueError: boom (Cell In[10], line 6)", run["error"]


def test_a_model_file_s_helpers_are_the_modules_it_imports_from_beside_it(tmp_path):
    from cifarlab.model_files import code_digest, helper_files

    net = tmp_path / "net.py"
    net.write_text("import os\nimport blocks\nfrom nets import wide\nfrom . import x\n"
                   "import wandb\n")  # fmt: skip
    (tmp_path / "blocks.py").write_text("from util import relu\n")  # a helper's helper
    (tmp_path / "util.py").write_text("relu = None\n")
    (tmp_path / "unused.py").write_text("")
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "__init__.py").write_text("from .deep import Deep\n")
    (tmp_path / "nets" / "wide.py").write_text("Wide = None\n")
    (tmp_path / "nets" / "deep.py").write_text("Deep = None\n")
    (tmp_path / "nets" / "other.py").write_text("")  # in the package, never imported
    (tmp_path / "nets" / ".#wide.py").symlink_to("me@host.1234")  # Emacs' lock: dangling
    (tmp_path / "wandb" / "files").mkdir(parents=True)  # a log folder, not a package
    (tmp_path / "wandb" / "files" / "snapshot.py").write_text("")
    found = [p.relative_to(tmp_path).as_posix() for p in helper_files(net)]
    assert found == ["blocks.py", "nets/__init__.py", "nets/deep.py", "nets/wide.py", "util.py"]
    before = code_digest(net)
    (tmp_path / "unused.py").write_text("x = 1\n")
    (tmp_path / "nets" / "other.py").write_text("x = 1\n")
    (tmp_path / "wandb" / "files" / "snapshot.py").write_text("x = 1\n")
    assert code_digest(net) == before  # not imported: not part of the model
    (tmp_path / "util.py").write_text("relu = 1\n")
    assert code_digest(net) != before
    lone = tmp_path / "lone.py"
    lone.write_text("import torch\n")  # no helpers: the plain digest
    assert code_digest(lone) == hashlib.sha256(lone.read_bytes()).hexdigest()


def test_a_sweep_trains_again_a_run_whose_helper_module_changed(tiny_archive, tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "from torch import nn\nfrom blocks import WIDTH\n\ndef Net(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3072, WIDTH),"
        " nn.Linear(WIDTH, num_classes))\n"
    )
    (tmp_path / "blocks.py").write_text("WIDTH = 8\n")
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f'name = "h"\n[base]\ndata = "{tiny_archive}"\nepochs = 1\nval_size = 30\n'
        f'[grid]\nmodel = ["{tmp_path / "net.py"}:Net"]\n'
    )
    ws = str(tmp_path / "ws")
    assert main(["sweep", str(grid), "--workspace", ws, "--quiet"]) == 0
    (tmp_path / "blocks.py").write_text("WIDTH = 16\n")
    capsys.readouterr()
    assert main(["sweep", str(grid), "--workspace", ws, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("new")  # it said "done": the old net stood
    assert main(["sweep", str(grid), "--workspace", ws, "--quiet"]) == 0
    assert "net.py:Net imports has changed since run" in capsys.readouterr().err
    assert [r["status"] for r in cifarlab.results(ws)] == ["completed", "completed"]
    assert main(["sweep", str(grid), "--workspace", ws, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("done")


def test_a_run_scored_on_an_older_test_subset_is_not_charted_beside_the_new_one(
    tiny_archive, tmp_path
):
    from cifarlab.experiments.store import ResultsStore
    from cifarlab.report.predict import predict_run

    result = _quick(tiny_archive, tmp_path, epochs=1, limit_test=30)
    with ResultsStore(tmp_path / "ws" / "runs.db") as store:
        run = store.run(result.run_id)
    assert len(predict_run(run, tmp_path / "ws").labels) == 30
    older = {**run, "info": {k: v for k, v in run["info"].items() if k != "test_subset"}}
    # its stored predictions belong to the images the seed drew then, not to today's subset
    with pytest.raises(CifarlabError, match="--limit-test subset that an older cifarlab drew"):
        predict_run(older, tmp_path / "ws")


# -- EMA, precision, bad combinations --------------------------------------------


def test_ema_moves_toward_the_weights_by_one_minus_decay():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, before + 0.1)


def test_ema_run_evaluates_the_averaged_weights(tiny_archive, tmp_path):
    import torch.nn.functional as F

    from cifarlab.config import make_run_config
    from cifarlab.data import load_dataset
    from cifarlab.train.build import build_trainer

    result = _quick(tiny_archive, tmp_path, epochs=2, ema=0.99)
    state = torch.load(result.run_dir / "last.pt", weights_only=True)
    assert state["ema"] is not None
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    config = make_run_config(data=str(tiny_archive), val_size=30, batch_size=16, ema=0.99)
    trainer = build_trainer(config, load_dataset(config.data, val_size=30), torch.device("cpu"),
                            "fp32")  # fmt: skip
    trainer.fit(2)
    test = trainer.eval_loaders["test"]

    def loss_of(module):  # the test split's mean cross-entropy under these weights
        module.eval()
        with torch.no_grad():
            return sum(F.cross_entropy(module(x), y, reduction="sum") for x, y in test).item()

    averaged, raw = loss_of(trainer.ema.module), loss_of(trainer.model)
    assert trainer.evaluate(test).loss == pytest.approx(averaged / test.num_images, rel=1e-5)
    assert abs(averaged - raw) / test.num_images > 1e-3  # the two weights score apart


def test_python_switches_are_not_numbers_and_none_means_the_default():
    from cifarlab.config import make_run_config

    for option in ("ema", "epochs", "lr"):  # pydantic took True for 1: one epoch, lr 1.0
        with pytest.raises(
            CifarlabError, match=rf"^invalid --{option}: must be a number \(got True\)$"
        ):
            make_run_config(**{option: True})
    # milestones in any order decay alike: one run, not two
    assert make_run_config(milestones="60,30").hash() == make_run_config(milestones=(30, 60)).hash()
    # a run recorded before a check existed is taken as it ran: --resume could not fix it
    from cifarlab.config import stored_run_config

    with pytest.raises(CifarlabError, match="use one or the other"):
        make_run_config(tta=2, early_stop=1)
    assert stored_run_config(tta=2, early_stop=1).tta == 2
    config = make_run_config(workspace=None, batch_size=None, resume=True, deterministic=True)
    assert (config.workspace, config.batch_size, config.resume) == ("cifarlab-runs", 64, "auto")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"nesterov": True, "momentum": 0.0}, "--nesterov"),
        ({"nesterov": True, "optimizer": "adam"}, "--nesterov"),
        ({"schedule": "onecycle"}, "--schedule: onecycle needs --max-lr"),
        ({"schedule": "multistep"}, "--schedule: multistep needs --milestones"),
        ({"schedule": "cosinus"}, "unknown schedule 'cosinus'"),
        ({"select_by": "test_acc"}, "unknown select_by 'test_acc'"),
        ({"precision": "fp16", "device": "cpu"}, "fp16 needs a CUDA device"),
        ({"crop_pad": 40}, r"^--crop-pad 40 must be smaller than the images. \d+-pixel side"),
        # TTA was silently skipped: it scores the last of --epochs, which the stop never reached
        ({"tta": 2, "early_stop": 1}, "--tta: augments the test scoring of the last of --epochs"),
    ],
)
def test_invalid_combinations_are_refused(tiny_archive, tmp_path, options, message):
    with pytest.raises(CifarlabError, match=message):
        _quick(tiny_archive, tmp_path, **options)
    assert not (tmp_path / "ws" / "runs.db").exists()


@pytest.mark.real_data
def test_bf16_autocast_trains_within_two_points_of_fp32(real_data, tmp_path):
    common = dict(data=str(real_data), workspace=str(tmp_path), limit_train=8000, epochs=3,
                  optimizer="adam", limit_test=4000, quiet=True, seed=3)  # fmt: skip
    fp32 = cifarlab.train(precision="fp32", **common)
    bf16 = cifarlab.train(precision="bf16", **common)
    assert fp32.info["precision"] == "fp32" and bf16.info["precision"] == "bf16"
    assert fp32.summary["final_test_acc"] > 0.35
    assert abs(fp32.summary["final_test_acc"] - bf16.summary["final_test_acc"]) <= 0.02


def test_fp16_loss_scaling_trains_and_its_scaler_survives_a_resume(
    tiny_archive, tmp_path, monkeypatch
):
    """fp16 runs only on CUDA (T4/V100 class GPUs under auto), with a GradScaler whose state a
    resume must restore; CPU autocast computes fp16 too, so the test lets this CPU take it."""
    from cifarlab.train.precision import resolve_precision as pick

    allow_fp16 = lambda asked, *rest: "fp16" if asked == "fp16" else pick(asked, *rest)
    monkeypatch.setattr("cifarlab.runner.resolve_precision", allow_fp16)
    options = dict(RESUMABLE, precision="fp16", device="cpu")
    whole = _quick(tiny_archive, tmp_path / "a", **options)
    assert whole.info["precision"] == "fp16"
    losses = [e["train_loss"] for e in whole.history]
    assert losses[-1] < losses[0] * 0.9, losses  # it learned, under loss scaling
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=2)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path / "b", **options)
    trained = trained_epochs(monkeypatch)
    resumed = _quick(tiny_archive, tmp_path / "b", resume="auto", **options)
    assert trained == [2, 3]
    expected = _rows(tmp_path / "a" / "ws", whole.run_id)
    assert _rows(tmp_path / "b" / "ws", resumed.run_id) == expected
    a = torch.load(whole.run_dir / "last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "last.pt", weights_only=True)
    # the scaler counted every step since its last change: a resume that forgot it restarts
    # the count, and on a GPU its grown or backed-off scale
    assert a["scaler"]["_growth_tracker"] > 0, a["scaler"]
    assert b["scaler"] == a["scaler"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize(
    "native, channels_last, picked",
    [
        (False, True, "fp32 (auto: this CPU has no native bf16), channels_last"),
        (True, True, "bf16 (auto: this CPU computes bf16 natively), channels_last"),
        (True, False, "fp32 (auto: bf16 pays only with channels_last), NCHW"),
    ],
)
def test_a_run_starts_with_a_line_saying_what_auto_picked_and_why(
    tiny_archive, tmp_path, monkeypatch, capsys, native, channels_last, picked
):
    precision = sys.modules["cifarlab.train.precision"]  # cifarlab.train is the function
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native)
    monkeypatch.setattr("cifarlab.runner.cpu_supports_bf16", lambda: native)
    run = _quick(tiny_archive, tmp_path, epochs=1, device="cpu", channels_last=channels_last,
                 val_size=10, quiet=False)  # fmt: skip
    first = capsys.readouterr().err.splitlines()[0]
    threads = torch.get_num_threads()
    assert first == (
        f"cifarlab: run {run.run_id}: tutorial ({run.info['parameters']:,} parameters), "
        f"1 epoch on {run.info['train_images']} training images (10 val, 60 test); "
        f"cpu, {threads} threads, {picked}"
    )
    assert run.info["precision"] == picked.split()[0]


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_emulated(
    tiny_archive, tmp_path, monkeypatch, native
):
    monkeypatch.setattr("cifarlab.runner.cpu_supports_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _quick(tiny_archive, tmp_path, epochs=1, precision="bf16", device="cpu")
    assert run.info["precision"] == "bf16"  # a warning, not a refusal: bf16's numerics
    emulated = [w for w in caught if "emulated" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
    if emulated:
        assert "--precision auto" in str(emulated[0].message)


def test_tensorboard_gets_every_epochs_scalars(tiny_archive, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cifarlab.experiments.store import ResultsStore

    args = ["train", "--data", str(tiny_archive), "--workspace", str(tmp_path / "ws"),
            "--epochs", "2", "--val-size", "30", "--quiet", "--tensorboard"]  # fmt: skip
    assert main(args) == 0
    (run,) = cifarlab.results(tmp_path / "ws")
    (events,) = (tmp_path / "ws" / run["id"]).glob("tensorboard/events.out.tfevents.*")
    logged = EventAccumulator(str(events)).Reload()
    assert {"train_loss", "val_acc", "test_acc", "lr"} <= set(logged.Tags()["scalars"])
    with ResultsStore(tmp_path / "ws" / "runs.db") as store:
        recorded = [(e["epoch"], pytest.approx(e["test_acc"])) for e in store.epochs(run["id"])]
    assert [step for step, _ in recorded] == [1, 2]
    assert [(e.step, e.value) for e in logged.Scalars("test_acc")] == recorded  # as stored


def test_tensorboard_missing_says_how_to_install_it(tiny_archive, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    args = ["train", "--data", str(tiny_archive), "--workspace", str(tmp_path / "ws"),
            "--epochs", "1", "--val-size", "30", "--quiet", "--tensorboard"]  # fmt: skip
    assert main(args) == 2
    assert "pip install 'cifarlab[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "ws" / "runs.db").exists()


_RSS_AFTER_FREE = """
import os, sys, torch
from cifarlab.train.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator()
def rss(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, above glibc's default mmap threshold
before = rss(); del x
print(tuned, (before - rss()) >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("setting, tuned", [("1", True), ("0", False)])
def test_tuned_allocator_keeps_freed_activation_memory_for_reuse(setting, tuned):
    env = {**os.environ, "CIFARLAB_TUNE_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE], env=env, capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    returned_mib = int(out[1])
    assert out[0] == str(tuned)
    # tuned: the heap keeps the block for the next step; untuned: munmap hands it back
    assert returned_mib < 8 if tuned else returned_mib > 56


# -- the machine's other work --------------------------------------------------------

needs_proc_stat = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux only")


@needs_proc_stat
def test_cpu_share_counts_another_process_but_not_this_ones_threads():
    from cifarlab.train.cpu_share import CpuShareMeter, allowed_cpus

    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # its start-up is done
        meter = CpuShareMeter()
        time.sleep(1.5)
        others = meter.stop()["others_cpu"]
    finally:
        child.kill()
        child.wait()
    assert others >= 0.6  # a whole core, less the scheduler's share to anyone else

    # this process's own threads, all busy: never counted as another's work
    a = torch.randn(512, 512)
    before, meter = os.times(), CpuShareMeter()
    end = time.perf_counter() + 1.5
    while time.perf_counter() < end:
        a @ a
    share = meter.stop()
    after = os.times()
    own = (after.user + after.system - before.user - before.system) / 1.5
    assert own > 0.5
    assert share["others_cpu"] + own <= allowed_cpus() + 0.3


def test_a_parallel_sweeps_own_workers_are_not_other_work():
    from cifarlab.train import cpu_share

    # this process as a sweep worker, a spinning child as its sibling: one job
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    sibling = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        cpu_share.count_as_own_job(os.getpid())
        meter = cpu_share.CpuShareMeter()
        time.sleep(1.5)
        ours = meter.stop()["others_cpu"]
        cpu_share.count_as_own_job(None)
        meter = cpu_share.CpuShareMeter()
        time.sleep(1.5)
        theirs = meter.stop()["others_cpu"]
    finally:
        cpu_share.count_as_own_job(None)
        sibling.kill()
        sibling.wait()
    assert theirs >= 0.6 and ours < theirs - 0.5  # the same spinning core, counted apart


def test_a_busy_machine_warns_once_and_a_quiet_or_short_epoch_does_not(recwarn):
    from types import SimpleNamespace

    from cifarlab.errors import BusyMachineWarning
    from cifarlab.train.callbacks import WarnWhenBusy
    from cifarlab.train.cpu_share import allowed_cpus

    cpus = allowed_cpus()
    cpu, gpu = (
        SimpleNamespace(device=torch.device("cpu")),
        SimpleNamespace(device=torch.device("cuda")),
    )
    busy = {"epoch_seconds": 10.0, "others_cpu": 0.6 * cpus, "steal_cpu": 0.1}
    quiet = {**busy, "others_cpu": 0.05 * cpus, "steal_cpu": 0.0}
    short = {**busy, "epoch_seconds": 1.0}
    watcher = WarnWhenBusy()
    for metrics in (quiet, short, busy, busy):
        watcher.on_epoch_end(cpu, 0, metrics)
    WarnWhenBusy().on_epoch_end(gpu, 0, busy)  # the host's load barely touches a GPU's speed
    WarnWhenBusy().on_epoch_end(cpu, 0, {"epoch_seconds": 10.0})  # off Linux: nothing measured
    warned = [w for w in recwarn if issubclass(w.category, BusyMachineWarning)]
    assert len(warned) == 1
    assert f"of the {cpus} CPU cores during epoch 1" in str(warned[0].message)


@needs_proc_stat
def test_each_epoch_records_the_cpu_share_and_results_show_it(tiny_archive, tmp_path, capsys):
    result = _quick(tiny_archive, tmp_path, epochs=2)
    assert all(m["others_cpu"] >= 0 and m["steal_cpu"] >= 0 for m in result.history)
    with sqlite3.connect(tmp_path / "ws" / "runs.db") as db:
        rows = db.execute("SELECT others_cpu, steal_cpu FROM epochs ORDER BY epoch").fetchall()
        (contention,) = db.execute("SELECT cpu_contention FROM runs").fetchone()
    assert [r[0] for r in rows] == [m["others_cpu"] for m in result.history]
    assert contention == pytest.approx(
        sum(m["others_cpu"] + m["steal_cpu"] for m in result.history) / 2
    )
    assert main(["results", "--workspace", str(tmp_path / "ws")]) == 0
    assert "cores taken" in capsys.readouterr().out


def test_a_run_whose_bookkeeping_fails_to_start_is_recorded_failed(
    tiny_archive, tmp_path, monkeypatch
):
    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ws"))

    monkeypatch.setattr("cifarlab.runner.Checkpointer", unwritable)
    with pytest.raises(PermissionError):
        _quick(tiny_archive, tmp_path, epochs=1)
    (record,) = cifarlab.results(tmp_path / "ws")
    assert record["status"] == "failed" and "Permission denied" in record["error"]


def test_to_dataframe_without_pandas_says_how_to_get_it(tiny_archive, tmp_path, monkeypatch):
    result = _quick(tiny_archive, tmp_path, epochs=1)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as where pandas is not installed
    with pytest.raises(CifarlabError, match="pip install pandas"):
        result.to_dataframe()


def test_an_early_stopped_run_interrupted_before_its_record_resumes_to_the_same_stop(
    tiny_archive, tmp_path, monkeypatch
):
    from cifarlab.experiments.store import ResultsStore

    options = dict(epochs=30, early_stop=2, deterministic=True)
    whole = _quick(tiny_archive, tmp_path / "whole", **options)
    finish = ResultsStore.finish_run

    def killed_before_completing(self, run_id, status, *args, **kwargs):
        if status == "completed":  # every checkpoint is written; the record is not
            raise KeyboardInterrupt
        return finish(self, run_id, status, *args, **kwargs)

    monkeypatch.setattr(ResultsStore, "finish_run", killed_before_completing)
    with pytest.raises(KeyboardInterrupt):
        _quick(tiny_archive, tmp_path, **options)
    monkeypatch.setattr(ResultsStore, "finish_run", finish)
    trained = trained_epochs(monkeypatch)
    resumed = _quick(tiny_archive, tmp_path, resume="auto", **options)
    assert trained == []  # every epoch was checkpointed: only the record was left to write
    assert resumed.summary["stopped_epoch"] == whole.summary["stopped_epoch"]
    assert len(resumed.history) == len(whole.history) < 30
    assert resumed.summary["final_test_acc"] == whole.summary["final_test_acc"]


def test_debris_of_a_killed_process_is_cleared_and_live_writes_are_kept(
    tiny_archive, tiny_folder, tmp_path, monkeypatch
):
    from cifarlab.data.cache import cache_root

    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, stop_at=1)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path, epochs=2)
    (run_dir,) = [d for d in (tmp_path / "ws").iterdir() if d.is_dir()]
    killed_mid_write = (  # as `kill -9` leaves a checkpoint write: no rename, no cleanup
        "import os, sys; from pathlib import Path; from cifarlab.files import written_atomically\n"
        "with written_atomically(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'half a checkpoint'); os._exit(9)"
    )
    files = set(run_dir.iterdir())
    subprocess.run([sys.executable, "-c", killed_mid_write, str(run_dir / "last.pt")])
    assert set(run_dir.iterdir()) > files, "the killed write left no temp file"
    _quick(tiny_archive, tmp_path, epochs=2, resume="auto")
    assert set(run_dir.iterdir()) == files  # the leftover went; nothing new was left

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    abandoned, in_progress = root / f".tmp-{gone.pid}-a1", root / f".tmp-{os.getpid()}-b2"
    for tmp in (abandoned, in_progress):
        tmp.mkdir()
    shutil.copytree(tiny_folder, tmp_path / "fresh")  # a source not cached yet: a new entry
    cifarlab.load_dataset(tmp_path / "fresh", val_size=0)
    assert not abandoned.exists() and in_progress.exists()
    in_progress.rmdir()


def test_a_resumed_run_keeps_its_best_checkpoint_until_a_better_epoch(tmp_path):
    from types import SimpleNamespace

    from cifarlab.train.callbacks import Checkpointer

    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}]  # before the stop
    trainer = SimpleNamespace(history=history, state_dict=lambda: {"epoch": len(history)})
    checkpointer = Checkpointer(tmp_path, {"run_id": "r"})  # a fresh process resumes the run
    checkpointer.on_fit_start(trainer)
    for epoch, acc in ((2, 0.6), (3, 0.8)):
        history.append({"epoch": epoch + 1, "val_acc": acc})
        checkpointer.on_epoch_end(trainer, epoch, history[-1])
        best = torch.load(tmp_path / "best.pt", weights_only=True) if epoch == 3 else None
        assert (tmp_path / "best.pt").exists() == (epoch == 3)  # 0.6 < 0.7: not the best
    assert best["epoch"] == 4 and checkpointer.best == 0.8


def test_lookahead_never_ends_a_short_run_on_its_starting_weights(tiny_archive, tmp_path):
    # airbench pulls the weights to a slow copy every 5 steps and, at the end, makes them that
    # copy: a 3-step run ended on its random starting weights
    from cifarlab.models import create_model

    with pytest.warns(UserWarning, match=r"too few steps for it \(3;"):
        result = cifarlab.train(data=str(tiny_archive), workspace=str(tmp_path / "ws"),
                                model="tutorial", lookahead=True, epochs=1, batch_size=40,
                                val_size=0, optimizer="adam", lr=0.01, quiet=True)  # fmt: skip
    torch.manual_seed(0)  # as the run built its model
    start = create_model("tutorial", num_classes=3).state_dict()
    trained = torch.load(result.run_dir / "last.pt", weights_only=True)["model"]
    assert all(not torch.equal(trained[k], start[k]) for k in start if "weight" in k)


def test_a_batch_size_that_leaves_out_much_of_the_data_says_so(tiny_archive, tmp_path):
    # as quick-cpu's batch of 512 with --drop-last left out 40% of an 860-image dataset
    options = dict(data=str(tiny_archive), workspace=str(tmp_path / "ws"), epochs=1,
                   val_size=0, quiet=True)  # fmt: skip
    with pytest.warns(UserWarning, match=r"--batch-size 50 with --drop-last leaves out 20 of "
                      r"the 120 training images every epoch \(17%\) and takes 2 steps an "
                      r"epoch; pass a smaller --batch-size, or --no-drop-last"):  # fmt: skip
        cifarlab.train(batch_size=50, drop_last=True, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cifarlab.train(batch_size=55, drop_last=True, seed=1, **options)  # 10 of 120 left out
    assert not [w for w in caught if "leaves out" in str(w.message)]  # 8%: CIFAR-sized


def test_test_time_augmentation_scores_the_test_split_only(tiny_archive, tmp_path, monkeypatch):
    # validation picks the best epoch: TTA on its last epoch alone would tilt the choice
    from cifarlab.train import trainer as trainer_module

    levels = []
    real = trainer_module.tta_logits

    def recording(model, x, level):
        levels.append((len(x), level))
        return real(model, x, level)

    monkeypatch.setattr(trainer_module, "tta_logits", recording)
    cifarlab.train(data=str(tiny_archive), workspace=str(tmp_path / "ws"), model="tutorial",
                   epochs=2, val_size=30, limit_test=40, tta=2, quiet=True)  # fmt: skip
    assert (30, 2) not in levels and (40, 2) in levels and (30, 0) in levels


def test_ema_warms_up_so_a_short_run_is_not_its_starting_weights():
    from cifarlab.train.ema import EMA

    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.999)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=0)  # the first update takes (1 - 1/10) of the new weights
    assert torch.allclose(ema.module.weight, start + 0.9)
    ema.update(model, step=10**6)  # later: the decay asked for
    assert torch.allclose(ema.module.weight, start + 0.9 + 0.1 * 0.001)


def test_a_relative_data_path_is_kept_absolute(tiny_folder, monkeypatch):
    from cifarlab.config import make_run_config

    monkeypatch.chdir(tiny_folder.parent)
    for given in (tiny_folder.name, f"./{tiny_folder.name}", str(tiny_folder)):
        assert make_run_config(data=given).data == str(tiny_folder)
    assert make_run_config(data="cifar10").data == "cifar10"  # a name, not a path here
    # pathlib.Path from Python, as the CLI's strings; recorded as text, so runs.db takes it
    paths = make_run_config(data=Path(tiny_folder.name), workspace=Path("ws"), model=Path("n.py"))
    assert (paths.data, paths.workspace, paths.model) == (str(tiny_folder), "ws", "n.py")


@pytest.mark.parametrize(
    ("options", "checkpoint", "metric"),
    [({"val_size": 30}, "best.pt", "test_acc"),  # a TTA run's predictions were the plain net's
     ({"val_size": 0, "tta": 2}, "last.pt", "final_test_acc"),
     ({"val_size": 30, "tta": 2, "epochs": 4}, "best.pt", "test_acc")],  # TTA: the last only
)  # fmt: skip
def test_a_checkpoint_is_usable_as_the_readme_shows(tiny_archive, tmp_path, options, checkpoint,
                                                    metric):  # fmt: skip
    from cifarlab.data import load_dataset
    from cifarlab.train.tta import tta_logits

    options = {"epochs": 2, **options}
    result = cifarlab.train(data=str(tiny_archive), workspace=str(tmp_path / "ws"),
                            precision="fp32", ema=0.9, quiet=True, **options)  # fmt: skip
    state = torch.load(result.run_dir / checkpoint, weights_only=True)
    assert options["epochs"] == 2 or state["epoch"] < 4  # best.pt from before the TTA epoch
    # a run trained on a GPU loads like this on a laptop without one too
    assert {t.device.type for t in _tensors_in(state)} == {"cpu"}
    c, h, w = state["image_shape"]
    model = cifarlab.create_model(state["config"]["model"], num_classes=len(state["classes"]),
                                  in_channels=c, image_size=h if h == w else (h, w))  # fmt: skip
    model.load_state_dict(state["ema"] or state["model"])
    model.eval()
    test = load_dataset(str(tiny_archive), val_size=options["val_size"]).test  # the run's
    images = torch.from_numpy(test.images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(state["mean"])[:, None, None]
    std = torch.tensor(state["std"])[:, None, None]
    tta = state["config"].get("tta", 0) if state["epoch"] == state["config"]["epochs"] else 0
    with torch.no_grad():
        logits = tta_logits(model, (images - mean) / std, tta)
    preds = logits.argmax(1)
    accuracy = (preds == torch.from_numpy(test.labels)).float().mean().item()
    assert accuracy == pytest.approx(result.summary[metric], abs=1 / len(test))
    scored = state["test_predictions"]  # image by image, as sure as the run was
    assert torch.equal(preds, scored["preds"].to(preds.dtype))
    assert torch.allclose(logits.softmax(1).max(1).values, scored["confidence"], atol=1e-5)
    # the same in one call, from the pixels as load_dataset gives them
    trained = cifarlab.load_trained(result.run_id, workspace=tmp_path / "ws")
    assert torch.allclose(trained.logits(test.images), logits, atol=1e-5)
    assert trained.predict(test.images[0]) == [state["classes"][preds[0]]]  # one image
    assert trained.predict(images[:2]) == [state["classes"][i] for i in preds[:2]]  # NCHW floats


def test_load_trained_names_what_it_cannot_use(tiny_archive, tmp_path):
    result = _quick(tiny_archive, tmp_path, epochs=1)
    listed = r"`cifarlab results` \(cifarlab.results\(\) in Python\) lists the runs there"
    with pytest.raises(CifarlabError, match=f"no run 'nope' in .*; {listed}"):
        cifarlab.load_trained("nope", workspace=tmp_path / "ws")
    trained = cifarlab.load_trained(result.run_id, workspace=tmp_path / "ws")
    with pytest.raises(CifarlabError, match=r"images of shape \(2, 3, 28, 28\): run .* classifies "
                       r"3 x 32 x 32 images; resize them to 32x32 \(bilinear"):  # fmt: skip
        trained.predict(torch.rand(2, 3, 28, 28))
    pixels = torch.randint(0, 256, (2, 32, 32, 3))  # int64, as np.array(image).astype(int)
    assert torch.equal(trained.logits(pixels), trained.logits(pixels.to(torch.uint8)))
    with pytest.raises(CifarlabError, match=r"floats must be in \[0, 1\] \(these reach 255\)"):
        trained.predict(torch.full((1, 32, 32, 3), 255.0))  # every image read as one class
    # normalized as the PyTorch tutorial does (to [-1, 1]): silently wrong classes before
    with pytest.raises(CifarlabError, match=r"floats must be in \[0, 1\] \(these go down to "
                       r"-1\): pass them before normalizing; the run normalizes"):  # fmt: skip
        trained.predict(torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32) * 2 - 1)
    bad = {"NaN or infinite values": torch.full((1, 3, 32, 32), float("nan")),
           "an empty list": [], "a NoneType": None, "a generator": (p for p in pixels),
           "a bytes:": b"\x89PNG",
           "different shapes": [np.zeros((32, 32, 3)), np.zeros((8, 8, 3))]}  # fmt: skip
    for said, images in bad.items():
        with pytest.raises(CifarlabError, match=re.escape(said)):
            trained.predict(images)
    from torch import nn

    from cifarlab.models.registry import _REGISTRY

    cifarlab.register_model("gone-net")(lambda num_classes: nn.Sequential(
        nn.Flatten(), nn.Linear(3072, num_classes)))  # fmt: skip
    try:
        run = _quick(tiny_archive, tmp_path, model="gone-net", epochs=1)
    finally:
        _REGISTRY.pop("gone-net", None)  # a new kernel: "unknown model 'gone-net'; choose..."
    with pytest.raises(CifarlabError, match="trained 'gone-net', which is not registered in this "
                       r"process; register it \(cifarlab.register_model\) to load it"):  # fmt: skip
        cifarlab.load_trained(run.run_id, workspace=tmp_path / "ws")
    page = cifarlab.report(workspace=tmp_path / "ws", run=run.run_id).read_text()
    # it said "unknown model 'gone-net'; choose one of channel, resnet18, ..."
    assert (f"Model gone-net: no diagram or summary (run {run.run_id} trained 'gone-net', which "
            "is not registered in this process; register it (cifarlab.register_model) to see "
            "its diagram and predictions)") in html.unescape(page)  # fmt: skip


def test_only_a_run_of_a_net_registered_from_python_is_told_to_register_it():
    from cifarlab.model_files import refuse_other_registered_version

    python_net = {"id": "my-net-1", "info": {"model_code_sha256": "ab12"}}
    with pytest.raises(CifarlabError, match="'my-net', which is not registered in this process"):
        refuse_other_registered_version(python_net, "my-net", "resume it")
    # a built-in renamed since recorded no code: create_model's "did you mean" is its fix
    refuse_other_registered_version({"id": "resnet20-1", "info": {}}, "resnet20", "resume it")


def _tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict | list | tuple):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _tensors_in(item)


def test_a_checkpoint_keeps_the_state_dicts_module_versions(tmp_path):
    from cifarlab.train.checkpoint import load_checkpoint, save_checkpoint

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict()})
    saved = load_checkpoint(tmp_path / "c.pt")["model"]
    # BatchNorm reads its version from _metadata to upgrade old state dicts
    assert saved._metadata == model.state_dict()._metadata
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


class _SignalOnThirdWrite:
    """A file that has this process sent ``signum`` while torch.save is writing to it."""

    def __init__(self, file, signum: int) -> None:
        self.file, self.signum, self.writes = file, signum, 0

    def write(self, data) -> int:
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), self.signum)  # its handler runs inside this call
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


@pytest.mark.parametrize(
    "signum, stop", [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")]
)
def test_a_stop_during_a_checkpoint_write_waits_for_the_whole_file(
    tmp_path, monkeypatch, ctrl_c_raises, signum, stop
):
    import signal

    from cifarlab.process import terminate_as_interrupt
    from cifarlab.train.checkpoint import load_checkpoint, save_checkpoint

    signum = getattr(signal, signum)
    real_save = torch.save
    monkeypatch.setattr(
        torch, "save", lambda obj, f: real_save(obj, _SignalOnThirdWrite(f, signum))
    )
    state = {"model": {f"w{i}": torch.randn(8, 8) for i in range(10)}, "epoch": 4}
    previous = terminate_as_interrupt()  # as the CLI runs: SIGTERM raises Terminated
    try:
        # raised inside torch.save's C++ writer, the stop broke it: a RuntimeError traceback
        # ("unexpected pos"), or the process aborted; the run was never recorded as stopped
        with pytest.raises(KeyboardInterrupt) as stopped:
            save_checkpoint(tmp_path / "c.pt", state)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert type(stopped.value).__name__ == stop
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved["epoch"] == 4 and torch.equal(saved["model"]["w9"], state["model"]["w9"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_a_stop_in_the_first_epoch_says_so_not_after_epoch_0(tiny_archive, tmp_path, monkeypatch):
    stop_training_at(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt) as stopped:
        _quick(tiny_archive, tmp_path, epochs=2)
    run_id = cifarlab.results(str(tmp_path / "ws"))[0]["id"]
    assert stopped.value.resume_hint.startswith(f"run {run_id} stopped in its first epoch; `")
    assert stopped.value.__notes__ == [
        f"cifarlab: run {run_id} stopped in its first epoch; cifarlab.train(resume={run_id!r}, "
        f"workspace={str(tmp_path / 'ws')!r}) continues it"
    ]


def test_resume_finding_no_run_names_the_stopped_run_meant(tiny_archive, tmp_path, monkeypatch,
                                                           capsys):  # fmt: skip
    import socket

    stop_training_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        _quick(tiny_archive, tmp_path, epochs=2)
    monkeypatch.undo()
    stopped = cifarlab.results(str(tmp_path / "ws"))[0]["id"]
    ws = os.path.abspath(tmp_path / "ws")
    with sqlite3.connect(tmp_path / "ws" / "runs.db") as db:  # then killed, as by kill -9:
        db.execute("UPDATE runs SET status = 'running', owner = ?",  # its process gone
                   (f"{socket.gethostname()}:999999999:0",))  # fmt: skip
    capsys.readouterr()
    # a typo on --resume: it started a new run without a word about the stopped one
    _quick(tiny_archive, tmp_path, epochs=1, lr=0.002, resume=True, quiet=False)
    assert (f"no earlier run with these settings (stopped run {stopped} has --lr 0.003, --epochs "
            f"2; `cifarlab train --resume {stopped} --workspace {ws}` continues it); "
            "starting a new one") in capsys.readouterr().err  # fmt: skip
    _quick(tiny_archive, tmp_path, epochs=3, resume=True, quiet=False)  # only the length
    assert f"(run {stopped} has them with --epochs 2: its learning-rate schedule" in (
        capsys.readouterr().err)  # fmt: skip
    # four settings apart is another run, not a typo: not named
    _quick(tiny_archive, tmp_path, epochs=1, lr=0.002, batch_size=8, seed=3, resume=True,
           quiet=False)  # fmt: skip
    assert "cifarlab: no earlier run with these settings; starting a new one\n" in (
        capsys.readouterr().err)  # fmt: skip


def test_a_stop_during_an_epochs_bookkeeping_waits_for_its_checkpoint(
    tiny_archive, tmp_path, monkeypatch, ctrl_c_raises
):
    import signal

    from cifarlab.train.callbacks import StoreEpochs
    from cifarlab.train.checkpoint import load_checkpoint

    record = StoreEpochs.on_epoch_end

    def record_then_stop(self, trainer, epoch, metrics):
        record(self, trainer, epoch, metrics)
        if epoch == 1:  # Ctrl-C between the second epoch's row and its checkpoint
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(StoreEpochs, "on_epoch_end", record_then_stop)
    with pytest.raises(KeyboardInterrupt) as stopped:
        _quick(tiny_archive, tmp_path, epochs=4)
    # it said "stopped after epoch 2" while last.pt held epoch 1, which a resume redid
    run_id = cifarlab.results(str(tmp_path / "ws"))[0]["id"]
    assert f"run {run_id} stopped after epoch 2;" in stopped.value.resume_hint
    assert load_checkpoint(tmp_path / "ws" / run_id / "last.pt")["epoch"] == 2
    monkeypatch.undo()
    trained = trained_epochs(monkeypatch)
    resumed = cifarlab.train(resume=run_id, workspace=str(tmp_path / "ws"), quiet=True)
    assert resumed.status == "completed" and [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
    assert trained == [2, 3]  # the second epoch was not redone


def test_a_model_file_run_rebuilds_from_its_checkpoint_in_any_folder(
    tiny_archive, tmp_path, monkeypatch
):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mynet.toml").write_text('layers = ["conv 8 3", "relu", "gap"]\n')
    monkeypatch.chdir(tmp_path / "nets")
    result = cifarlab.train(model="mynet.toml", data=str(tiny_archive), epochs=1, val_size=30,
                            workspace=str(tmp_path / "ws"), quiet=True)  # fmt: skip
    assert result.config.model == str(tmp_path / "nets" / "mynet.toml")  # ./mynet.toml: one
    monkeypatch.chdir(tmp_path)  # the README's snippet, run from elsewhere
    state = torch.load(result.run_dir / "best.pt", weights_only=True)
    model = cifarlab.create_model(state["config"]["model"], num_classes=len(state["classes"]))
    model.load_state_dict(state["ema"] or state["model"])


def test_a_diverged_run_in_python_says_so(tiny_archive, tmp_path):
    with pytest.warns(UserWarning, match="diverged to .*; lower --lr"):
        result = cifarlab.train(data=str(tiny_archive), workspace=str(tmp_path / "ws"), epochs=1,
                                optimizer="sgd", lr=10000.0, val_size=30, quiet=True)  # fmt: skip
    assert result.status == "diverged"


def test_the_readmes_model_helpers_need_only_import_cifarlab():
    code = "import cifarlab; print(cifarlab.models.summarize_model.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "summarize_model", out.stderr


def test_python_gets_short_answers_and_clear_errors(tiny_archive, tmp_path):
    from pathlib import Path

    result = _quick(tiny_archive, tmp_path, epochs=1)
    shown = repr(result)  # a notebook's cell output: one line
    assert shown.startswith(f"RunResult({result.run_id!r}, completed, test_acc=")
    assert "\n" not in shown
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with pytest.raises(CifarlabError, match="not a Sequential object") as err:
        cifarlab.train(model=net, data=str(tiny_archive), workspace=str(tmp_path / "ws"))
    assert "\n" not in str(err.value)  # not the net's whole repr
    with pytest.raises(CifarlabError, match="register_model"):
        cifarlab.create_model(net)
    with pytest.raises(CifarlabError, match="num_classes must be a whole number"):
        cifarlab.create_model("tutorial", num_classes="10")
    assert cifarlab.create_model("tutorial", image_size=tuple(np.array([32, 32]))) is not None
    for size in (32.5, (32,), "32", True):  # TypeErrors and ValueErrors from deep in a builder
        with pytest.raises(CifarlabError, match=r"image_size must be a whole number of at least "
                           r"1, or \(height, width\), not "):  # fmt: skip
            cifarlab.create_model("tutorial", image_size=size)
    with pytest.raises(CifarlabError, match="summarize_model takes a net .*, not str 'tutorial'"):
        cifarlab.models.summarize_model("tutorial")
    for group_by in (5, [5]):
        with pytest.raises(CifarlabError, match="group_by must be setting names"):
            cifarlab.grouped_results(tmp_path / "ws", group_by=group_by)
    spec = tmp_path / "net.toml"
    spec.write_text('layers = ["conv 8 3", "relu", "gap"]\n')
    assert cifarlab.create_model(Path(spec)) is not None  # a Path as its str


def test_a_resumed_run_does_not_repeat_its_start_notes(tiny_archive, tmp_path, monkeypatch):
    # The stored config comes back without --preset, so notes computed again on resume
    # blamed options the user never typed (a preset's --whiten-bias-epochs after --no-whiten)
    import warnings

    options = dict(preset="quick-cpu", whiten=False, batch_size=16, epochs=2, val_size=0,
                   optimizer="sgd")  # fmt: skip
    with monkeypatch.context() as m:
        stop_training_at(m, epoch=1)
        with pytest.raises(KeyboardInterrupt):
            _quick(tiny_archive, tmp_path, **options)
    (stopped,) = cifarlab.results(tmp_path / "ws")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        resumed = cifarlab.train(resume=stopped["id"], workspace=str(tmp_path / "ws"), quiet=True)
    assert resumed.status == "completed"
    assert not [w for w in said if "whiten" in str(w.message)], [str(w.message) for w in said]
