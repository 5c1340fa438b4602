"""The command line: a run end to end, its records, and every bad input's one-line error."""

from __future__ import annotations

import argparse
import errno
import importlib.abc
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import stop_training_at, write_image_folder
from PIL import Image

import cifarlab
from cifarlab.cli import main


def _train(tmp_path: Path, data: Path, *extra: str) -> int:
    return main([
        "train", "--data", str(data), "--workspace", str(tmp_path / "ws"), "--epochs", "2",
        "--val-size", "30", "--batch-size", "16", "--optimizer", "adam", "--lr", "0.003",
        "--quiet", *extra,
    ])  # fmt: skip


def _db_rows(workspace: Path, table: str) -> list[tuple]:
    db = workspace / "runs.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT * FROM {table}").fetchall()


def test_train_records_a_completed_run_with_one_row_per_epoch(tmp_path, tiny_archive, capsys):
    assert _train(tmp_path, tiny_archive) == 0
    out = capsys.readouterr().out
    assert "completed" in out
    assert main(["results", "--workspace", str(tmp_path / "ws"), "--format", "json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 1
    run = runs[0]
    for key in ("id", "model", "optimizer", "lr", "batch_size", "epochs", "status",
                "best_val_acc", "test_acc", "final_test_acc", "train_seconds"):  # fmt: skip
        assert key in run
    assert run["status"] == "completed" and run["model"] == "tutorial" and run["epochs"] == 2
    assert type(run["epochs_done"]) is int and run["epochs_done"] == 2  # 2, not 2.0
    assert 0 <= run["test_acc"] <= 1 and run["train_seconds"] > 0
    # the synthetic classes differ in colour and stripes: three-way chance is 33%
    assert run["final_test_acc"] > 0.6
    epochs = _db_rows(tmp_path / "ws", "epochs")
    assert len(epochs) == 2
    with sqlite3.connect(tmp_path / "ws" / "runs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ckpt = torch.load(tmp_path / "ws" / run["id"] / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and "model" in ckpt and "optimizer" in ckpt


def test_results_table_and_csv(tmp_path, tiny_archive, capsys):
    _train(tmp_path, tiny_archive, "--epochs", "1")
    capsys.readouterr()
    main(["results", "--workspace", str(tmp_path / "ws")])
    table = capsys.readouterr().out
    assert "tutorial" in table and "test@best" in table
    main(["results", "--workspace", str(tmp_path / "ws"), "--format", "csv"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("id,name,model") and len(lines) == 2


def test_same_options_twice_make_two_runs(tmp_path, tiny_archive):
    _train(tmp_path, tiny_archive, "--epochs", "1")
    _train(tmp_path, tiny_archive, "--epochs", "1")
    ids = [r[0] for r in _db_rows(tmp_path / "ws", "runs")]
    assert len(ids) == 2 and ids[1] == ids[0] + "-2"


def _bad_inputs(tmp_path: Path, tiny_archive: Path) -> dict[str, tuple[list[str], str]]:
    not_dataset = tmp_path / "empty.tar"
    import tarfile

    with tarfile.open(not_dataset, "w") as t:
        t.add(__file__, "readme.py")
    broken = write_image_folder(tmp_path / "broken", n_train=2, n_test=2)
    (broken / "train" / "dog" / "0001.png").write_bytes(b"not a png")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not an archive at all" * 10)
    bad_db = tmp_path / "bad-db-ws"
    bad_db.mkdir()
    (bad_db / "runs.db").write_text("a text file, not sqlite")
    data = ["--data", str(tiny_archive)]
    return {
        "unknown model": (["--model", "resnet-9000", *data], "unknown model 'resnet-9000'"),
        "unknown optimizer": (["--optimizer", "lion", *data], "unknown optimizer 'lion'"),
        "zero batch": (["--batch-size", "0", *data], "--batch-size"),
        "negative epochs": (["--epochs", "-1", *data], "--epochs"),
        "zero lr": (["--lr", "0", *data], "--lr"),
        "non-number lr": (["--lr", "fast", *data], "--lr"),
        "missing data": (["--data", str(tmp_path / "nowhere")], "does not exist"),
        "no data": ([], "cannot download"),  # default cifar10 download, offline here
        "not a dataset": (["--data", str(not_dataset)], "not an image-folder dataset"),
        "not an image": (["--data", str(broken)], "0001.png is not a readable image"),
        "unwritable workspace": ([*data, "--workspace", str(blocker / "ws")], "not writable"),
        "workspace is a file": ([*data, "--workspace", str(blocker)], "is a file, not a folder"),
        "fp16 on cpu": (["--precision", "fp16", "--device", "cpu", *data], "fp16 needs a CUDA"),
        "garbage archive": (["--data", str(garbage)], "cannot read the archive ("),
        "no full batch": (["--batch-size", "4096", "--drop-last", *data], "leaves no training"),
        "whiten, no stem": (["--whiten", *data], "model 'tutorial' has no whitening stem"),
        "early stop, no val": (
            ["--early-stop", "1", "--select-by", "val_loss", "--val-size", "0", *data],
            "--early-stop: needs a validation split",
        ),  # fmt: skip
        "not a database": ([*data, "--workspace", str(bad_db)], "not a readable cifarlab results"),
        "name too long": (  # it was the machine's "File name too long" (exit 1), after the data
            [*data, "--workspace", str(tmp_path / ("w" * 300))],
            "not writable (File name too long)",
        ),
    }


def test_another_programs_or_a_damaged_runs_db_gets_one_line(tmp_path, capsys):
    import sqlite3

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    with sqlite3.connect(theirs / "runs.db") as conn:  # another program's runs.db
        conn.execute("CREATE TABLE runs (id INTEGER, foo TEXT)")
    # it said "no such column: config_hash; another process may hold it" (exit 1), after
    # switching their database to WAL
    assert main(["results", "--workspace", str(theirs)]) == 2
    assert "is not a cifarlab results database (it holds other tables)" in capsys.readouterr().err
    with sqlite3.connect(theirs / "runs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    from cifarlab.errors import machine_trouble

    damaged = sqlite3.DatabaseError("database disk image is malformed")  # a traceback, before
    assert "results database is damaged (database disk image is malformed); move runs.db" in (
        machine_trouble(damaged)
    )
    full = OSError(errno.ENOSPC, "No space left on device")
    assert machine_trouble(full).endswith("free some space, or pass a --workspace (or "
                                          "CIFARLAB_CACHE) on another disk")  # fmt: skip


def test_a_missing_data_path_says_who_named_it_and_where_it_was_looked_for(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "../data/cifar.tgz"]) == 2
    err = capsys.readouterr().err
    assert f"'../data/cifar.tgz' does not exist (a relative path starts at {tmp_path})" in err
    monkeypatch.setenv("CIFARLAB_DATA", "/no/such/cifar.tgz")
    assert main(["train"]) == 2  # no --data: the variable named it, which the user may forget
    assert "'/no/such/cifar.tgz' does not exist (CIFARLAB_DATA names it)" in capsys.readouterr().err


def test_every_bad_input_gets_one_line_exit_2_and_no_run(
    tmp_path, tiny_archive, capsys, monkeypatch
):
    import socket

    with socket.socket() as s:  # a closed local port: the default download fails at once
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", f"http://127.0.0.1:{s.getsockname()[1]}/")
    workspace = tmp_path / "ws"
    for case, (args, message) in _bad_inputs(tmp_path, tiny_archive).items():
        if "--workspace" not in args:
            args = [*args, "--workspace", str(workspace)]
        code = main(["train", "--quiet", "--val-size", "4", *args])
        err = capsys.readouterr().err
        assert code == 2, case
        assert message in err, (case, err)
        assert err.count("\n") == 1 and err.startswith("cifarlab: error: "), (case, err)
        assert "Traceback" not in err
        assert _db_rows(workspace, "runs") == [], case


def test_an_unknown_option_points_at_its_command_help(capsys):
    assert main(["train", "--bogus-flag"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "cifarlab: error: unrecognized arguments: --bogus-flag; see `cifarlab train --help`\n"
    )


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cifarlab", "train", "--model", "nope", "--data", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("cifarlab: error: unknown model 'nope'")
    assert "Traceback" not in proc.stderr


def test_a_crash_mid_run_marks_the_run_failed(tmp_path, tiny_archive, monkeypatch):
    stop_training_at(monkeypatch, epoch=1, error=RuntimeError("disk on fire"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        _train(tmp_path, tiny_archive)
    (run,) = _db_rows(tmp_path / "ws", "runs")
    with sqlite3.connect(tmp_path / "ws" / "runs.db") as conn:
        status, error, done = conn.execute("SELECT status, error, epochs_done FROM runs").fetchone()
    assert status == "failed" and "disk on fire" in error and done == 1
    assert len(_db_rows(tmp_path / "ws", "epochs")) == 1
    # the epochs column read "1", as if the run had been set to train one epoch
    table = cifarlab.results(tmp_path / "ws")
    from cifarlab.results import format_runs

    assert " 1/2 " in format_runs(table, "table").splitlines()[2]
    from cifarlab.results import epochs_done

    # train's own table passes a flat record: the planned count is its "epochs"
    assert epochs_done({"epochs": 9, "epochs_done": 8}) == "8/9"


def test_a_diverging_run_is_marked_diverged_without_an_exception(tmp_path, tiny_archive, capsys):
    code = _train(tmp_path, tiny_archive, "--optimizer", "sgd", "--lr", "10000")
    assert code == 3  # neither bad input (2) nor the machine's trouble (1)
    with sqlite3.connect(tmp_path / "ws" / "runs.db") as conn:
        status, error = conn.execute("SELECT status, error FROM runs").fetchone()
    assert status == "diverged" and "diverged" in error and "lower --lr" in error
    assert "lower --lr, or add --grad-clip" in capsys.readouterr().err


def test_a_presets_switches_turn_off_with_no_options(tmp_path, tiny_archive, capsys):
    # quick-cpu turns on --whiten, which the tutorial net has no stem for: --no-whiten
    off = ["--no-whiten", "--no-lookahead"]
    code = _train(tmp_path, tiny_archive, "--preset", "quick-cpu", "--model", "tutorial", *off,
                  "--optimizer", "sgd", "--batch-size", "16", "--epochs", "1")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (run,) = cifarlab.results(tmp_path / "ws")
    assert run["config"]["whiten"] is False and run["config"]["lookahead"] is False


def test_an_invalid_choice_says_what_was_given_once(tmp_path, tiny_archive, capsys):
    assert _train(tmp_path, tiny_archive, "--device", "tpu") == 2
    assert capsys.readouterr().err.count("(got 'tpu')") == 1


def test_models_lists_tutorial_with_its_parameter_count(capsys):
    assert main(["models"]) == 0
    assert "62,006" in capsys.readouterr().out


def test_an_option_the_run_ignores_gets_a_warning_line(tmp_path, tiny_archive, capsys):
    assert _train(tmp_path, tiny_archive, "--epochs", "1", "--max-lr", "0.1") == 0
    err = capsys.readouterr().err
    assert "cifarlab: warning: --max-lr is onecycle's peak; --schedule constant ignores it" in err
    assert main(["train", "--data", str(tiny_archive), "--workspace", str(tmp_path / "ws"),
                 "--epochs", "1", "--val-size", "30", "--schedule", "onecycle", "--max-lr", "0.01",
                 "--quiet"]) == 0  # fmt: skip
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "note"),
    [
        ({"schedule": "cosine", "warmup_epochs": 1}, "--schedule cosine ignores it"),
        ({"gamma": 0.5}, "--gamma is step's and multistep's; --schedule constant ignores it"),
        ({"optimizer": "adam", "momentum": 0.5}, "--optimizer adam ignores it"),
        ({"schedule": "onecycle", "max_lr": 0.1, "lr": 0.01}, "it ignores --lr"),
        ({"whiten_bias_epochs": 3}, "without --whiten it is ignored"),
        ({"schedule": "warmup-cosine"}, "has no warm-up with --warmup-epochs 0 (the default)"),
    ],
)
def test_options_the_run_ignores_are_named(options, note):
    from cifarlab.config import make_run_config

    assert any(note in n for n in make_run_config(epochs=4, **options).unused_options())


def test_schedules_refuse_milestones_and_warmups_that_cannot_happen(tmp_path, tiny_archive, capsys):
    bad = {
        ("--schedule", "multistep", "--milestones", "0,-2"): "must be epochs from 1 on (got -2,0)",
        ("--schedule", "triangular", "--warmup-epochs", "9"): "must be less than --epochs",
    }
    for options, message in bad.items():
        assert _train(tmp_path, tiny_archive, *options) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "trouble, says",
    [
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"),
         "out of memory (DefaultCPUAllocator: can't allocate memory"),
        (OSError(28, "No space left on device"), "No space left on device"),
        (sqlite3.OperationalError("database or disk is full"),
         "the workspace's results database: database or disk is full"),
    ],
)  # fmt: skip
def test_the_machines_trouble_is_one_line_exit_1_and_the_run_failed(
    tmp_path, tiny_archive, monkeypatch, capsys, trouble, says
):
    from cifarlab.train.trainer import Trainer

    def fail(self, epoch):
        raise trouble

    monkeypatch.setattr(Trainer, "train_epoch", fail)
    assert _train(tmp_path, tiny_archive) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cifarlab: error: {says}")
    with sqlite3.connect(tmp_path / "ws" / "runs.db") as conn:
        assert conn.execute("SELECT status FROM runs").fetchone() == ("failed",)


def test_the_package_api_survives_its_subpackages_loading_and_the_cli_starts_light():
    code = """
import sys
import cifarlab
lightest = "torch" not in sys.modules and "pydantic" not in sys.modules  # see cifarlab.launch
import cifarlab.cli
light = "torch" not in sys.modules and "matplotlib" not in sys.modules
cifarlab.load_dataset  # loads torch on first use
import cifarlab.runner, cifarlab.report.html, cifarlab.report.predict, cifarlab.train.trainer
print(lightest, light, callable(cifarlab.train), callable(cifarlab.report),
      callable(cifarlab.results), cifarlab.RunConfig.__name__ == "RunConfig")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["True"] * 6, done.stderr


def test_ctrl_c_while_the_cli_loads_is_one_line(monkeypatch, capsys):
    from cifarlab import launch

    class InterruptedImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "cifarlab.cli":
                raise KeyboardInterrupt  # as Ctrl-C lands while pydantic or torch loads
            return None

    monkeypatch.delitem(sys.modules, "cifarlab.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    assert launch.main() == 130
    assert capsys.readouterr().err == "cifarlab: interrupted\n"


STOP_WHILE_IMPORTING = """
import importlib.abc, os, signal, sys

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal: see conftest
module, signum = sys.argv[1], getattr(signal, sys.argv[2])
del sys.argv[1:3]  # the rest is the command line

class StopWhileImporting(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == module:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signum)  # lands while the module loads
        return None

sys.meta_path.insert(0, StopWhileImporting())
from cifarlab.launch import main
sys.exit(main())
"""


@pytest.mark.parametrize("module", ["pydantic", "numpy"])
@pytest.mark.parametrize("signum, code, word", [("SIGTERM", 143, "terminated"),
                                                ("SIGINT", 130, "interrupted")])  # fmt: skip
def test_a_stop_while_the_modules_load_is_one_line(tiny_archive, tmp_path, module, signum,
                                                   code, word):  # fmt: skip
    # pydantic loads before the CLI's SIGTERM handler was set: SIGTERM ended the process
    # without a word. numpy loads from inside torch's C++, which dropped the exception: the
    # stop was lost (the run trained on) or numpy was left half-imported (a traceback).
    train = ["train", "--data", str(tiny_archive), "--workspace", str(tmp_path / "ws"),
             "--epochs", "1", "--val-size", "10", "--quiet"]  # fmt: skip
    cmd = [sys.executable, "-c", STOP_WHILE_IMPORTING, module, signum, *train]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (code, f"cifarlab: {word}\n")
    assert not (tmp_path / "ws").exists()  # nothing trained, nothing recorded


def test_train_help_states_the_defaults_runs_actually_use():
    from cifarlab.arguments import build_parser
    from cifarlab.config import RunConfig

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    checked = 0
    for action in train._actions:
        said = re.search(r"\(default:? ([^()$]+?)\)", action.help or "")
        default = RunConfig.model_fields.get(action.dest)
        if not said or default is None or default.default is None:  # prose, e.g. "keep it"
            continue
        value, token = default.default, said.group(1).removeprefix("./")
        if isinstance(value, bool):
            assert token in (("on",) if value else ("off", "keep it")), action.dest
        elif isinstance(value, int | float):
            assert float(token) == value, action.dest
        else:
            assert token == value, action.dest
        checked += 1
    assert checked >= 20  # the help still says its defaults


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    # as `cifarlab summary resnet18 | head -1`: the reader closes the pipe before we write
    cmd = [sys.executable, "-m", "cifarlab", "summary", "resnet18"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    assert proc.wait(60) == 141
    assert proc.stderr.read() == ""


@pytest.mark.parametrize(
    "given, meant",
    [("--batchsize", "--batch-size"), ("--learning-rate", "--lr"), ("--epochz", "--epochs")],
)
def test_a_misspelled_option_gets_a_suggestion_from_the_cli_and_from_python(given, meant, capsys):
    assert main(["train", given, "3"]) == 2
    assert f"did you mean {meant}?" in capsys.readouterr().err
    python = meant.removeprefix("--").replace("-", "_")  # as Python spells it
    with pytest.raises(cifarlab.CifarlabError, match=f"did you mean {python}\\?"):
        cifarlab.train(**{given.removeprefix("--").replace("-", "_"): 3})


def test_jupyter_shows_a_cifarlab_error_as_its_one_line(monkeypatch):
    # IPython shows what _render_traceback_ returns: the line, not cifarlab's frames above it
    error = cifarlab.CifarlabError("unknown model 'x'; choose one of ...")
    assert error._render_traceback_() == ["CifarlabError: unknown model 'x'; choose one of ..."]
    monkeypatch.setenv("CIFARLAB_TRACEBACK", "1")
    # IPython looks with hasattr: without it, the whole traceback (one raised from the method
    # printed IPython's "Unexpected exception formatting exception" instead)
    assert not hasattr(error, "_render_traceback_")


def test_an_argument_spelled_as_the_cli_spells_it_is_named_as_python_spells_it():
    # it said "unknown option --limit-train; did you mean --limit-train?"
    said = "^unknown argument 'limit-train'; write it limit_train; the arguments are `cifarlab"
    with pytest.raises(cifarlab.CifarlabError, match=said):
        cifarlab.train(**{"limit-train": 100})


def test_other_commands_suggest_their_own_options_not_trains(capsys):
    assert main(["results", "--workspce", "ws"]) == 2
    assert "did you mean --workspace?" in capsys.readouterr().err
    assert main(["report", "--epoch", "3"]) == 2  # a train option: report has none like it
    assert "did you mean" not in capsys.readouterr().err


FAILING_NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, image_size=32):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size * image_size, 16)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, num_classes)

    def forward(self, x):
        if self.training and x.shape[0] == 7:
            raise RuntimeError("my forward broke")
        return self.out(self.bn(self.fc(x.flatten(1))))
"""


def test_a_failure_inside_the_users_model_while_training_is_one_line(
    tiny_archive, tmp_path, capsys
):
    net = tmp_path / "net.py"
    net.write_text(FAILING_NET)
    # a batch of 7 reaches the user's raise: their file and line, not torch's internals; exit
    # 3, not 2: the run was recorded (as failed)
    assert _train(tmp_path, tiny_archive, "--model", f"{net}:Net", "--batch-size", "7") == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "model" in err[0]
        and "net.py:Net raised RuntimeError at net.py:" in err[0]
    )
    assert "my forward broke" in err[0] and "Traceback" not in err[0]
    # 90 training images in batches of 89 leave one image, which BatchNorm cannot normalize:
    # bad input, refused before a run is recorded
    assert _train(tmp_path, tiny_archive, "--model", f"{net}:Net", "--batch-size", "89") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the last of 90 training images make" in err[0]
    assert "pass --drop-last" in err[0]
    with sqlite3.connect(tmp_path / "ws" / "runs.db") as conn:  # the first, as failed
        assert conn.execute("SELECT status FROM runs").fetchall() == [("failed",)]


def test_train_ends_saying_which_epoch_it_reports_and_why_it_stopped(
    tmp_path, tiny_archive, capsys
):
    # an lr too small to move anything: validation never beats epoch 1, so early stopping
    # ends the run after epoch 3
    code = _train(tmp_path, tiny_archive, "--epochs", "6", "--early-stop", "2", "--lr", "1e-12")
    out = capsys.readouterr().out
    (run,) = cifarlab.results(tmp_path / "ws")
    assert code == 0 and run["epochs_done"] == 3 and run["best_epoch"] == 1
    assert (
        "3 of 6 epochs (stopped early: no val_acc gain in 2 epochs); best val_acc at epoch 1 "
        f"({run['best_val_acc']:.2%} val), where the test accuracy was {run['test_acc']:.2%}"
    ) in out
    # chosen by the loss, the line said "best val_loss at epoch 2 (22.00% val)"
    assert _train(tmp_path, tiny_archive, "--epochs", "2", "--select-by", "val_loss") == 0
    line = capsys.readouterr().out.splitlines()[-2]
    shown = r"best val_loss at epoch \d \(val loss \d\.\d{4}, \d+\.\d\d% val\)"
    assert re.search(shown, line), line


def test_resume_with_more_epochs_names_the_shorter_run_it_cannot_lengthen(
    tmp_path, tiny_archive, capsys
):
    args = ["train", "--data", str(tiny_archive), "--workspace", str(tmp_path / "ws"),
            "--val-size", "30", "--batch-size", "16"]  # fmt: skip
    assert main([*args, "--epochs", "1", "--quiet"]) == 0
    (first,) = cifarlab.results(tmp_path / "ws")
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"run {first['id']} has them with --epochs 1" in err and "starting a new one" in err


def test_each_epoch_line_names_its_run(tmp_path, tiny_archive, capsys):
    # in a sweep, lines of several runs follow each other: each says which run it is
    assert main(["train", "--data", str(tiny_archive), "--workspace", str(tmp_path / "ws"),
                 "--epochs", "2", "--val-size", "30", "--batch-size", "16"]) == 0  # fmt: skip
    (run_id,) = [r[0] for r in _db_rows(tmp_path / "ws", "runs")]
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "loss" in line]
    assert [line.split()[:2] for line in lines] == [[run_id, "epoch"]] * 2
    assert "\r" not in err  # stderr is no terminal here: the lines, not a live bar's refreshes


def test_every_option_of_every_command_is_described():
    from cifarlab.arguments import build_parser

    parser = build_parser()
    pages = [parser]
    while pages:
        page = pages.pop()
        for action in page._actions:
            if isinstance(action, argparse._SubParsersAction):
                pages += list(action.choices.values())
            elif action.option_strings:
                assert action.help, f"{page.prog} {action.option_strings[0]} has no help"
        assert page.description, f"`{page.prog} --help` says nothing about what it does"


def test_version_abbreviations_and_misspelt_commands(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"cifarlab {cifarlab.__version__}\n"
    assert main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err
    assert main(["data", "inf"]) == 2
    assert "did you mean 'info'?" in capsys.readouterr().err
    # --ep must not quietly mean --epochs: a later --epsilon would change what it meant
    assert main(["train", "--ep", "1"]) == 2
    assert "unrecognized arguments: --ep 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--lr", "inf"], "invalid --lr: must be a finite number (got inf)"),
        (["train", "--epochs", "0"], "invalid --epochs: must be greater than 0 (got 0)"),
        (["train", "--seed", str(2**63 - 1)], "invalid --seed: must be 4294967295 or less"),
        (
            ["results", "--only", "lr=0.1", "--only", "lr=0.2"],  # the last one won, silently
            "--only 'lr=0.2': lr is given twice ('lr=0.1' too), and a run has one lr: keep one",
        ),
        (["train", "--optimizer", "adma"], "'adma'; did you mean 'adam'? choose one of"),
        (["data", "preview", "--seed", "-1"], "--seed must be 0 or more (got -1)"),
        (["data", "preview", "--per-class", "6000"], "--per-class must be 1 to 100 (got 6000)"),
        (["compare", "--preset", "blog", "--seeds", "0", "--dry-run"], "--seeds must be at least"),
        (["compare", "--preset", "blog", "--epochs", "0", "--dry-run"], "--epochs must be at"),
        (["compare", "--preset", "blog", "--limit-train", "0", "--dry-run"], "--limit-train must"),
        (["compare", "--preset", "blog", "--limit-test", "0", "--dry-run"], "--limit-test must"),
        (["compare", "--preset", "blgo"], "unknown preset 'blgo'; did you mean 'blog'?"),
        (["compare", "--preset", "blog", "--models", ""], "--models names no model; list them"),
        (["train", "--preset", "speedrn"], "'speedrn'; did you mean 'speedrun'? choose one of"),
        (["train", "--model", "TUTORIAL"], "'TUTORIAL'; did you mean 'tutorial'? choose one of"),
    ],
)
def test_bad_values_are_one_line_in_the_words_of_the_option(args, message, tmp_path, capsys):
    assert main([*args, "--workspace" if args[0] != "data" else "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_run_recorded_with_a_seed_past_todays_range_is_still_found_and_resumed(
    tmp_path, tiny_archive, capsys
):
    big = 2**40  # trained before --seed was bounded to numpy's range
    with pytest.raises(cifarlab.CifarlabError, match="--seed: must be 4294967295 or less"):
        cifarlab.train(data=str(tiny_archive), seed=big, workspace=str(tmp_path / "ws"))
    assert _train(tmp_path, tiny_archive, "--epochs", "1") == 0
    ws = tmp_path / "ws"
    with sqlite3.connect(ws / "runs.db") as db:
        (config,) = db.execute("SELECT config FROM runs").fetchone()
        db.execute("UPDATE runs SET seed = ?, config = ?",
                   (big, json.dumps({**json.loads(config), "seed": big})))  # fmt: skip
    (run,) = cifarlab.results(ws, only={"seed": big})
    assert main(["results", "--only", f"seed={big}", "--workspace", str(ws)]) == 0
    assert run["id"] in capsys.readouterr().out
    # a finished run: --resume shows it (before, "invalid --seed", as no --seed was given)
    assert main(["train", "--resume", run["id"], "--workspace", str(ws), "--quiet"]) == 0
    assert f"run {run['id']}: checkpoints in" in capsys.readouterr().out


def test_a_damaged_run_row_is_one_line_with_the_way_out(tmp_path, tiny_archive, capsys):
    assert _train(tmp_path, tiny_archive, "--epochs", "1") == 0
    ws = tmp_path / "ws"
    (run,) = cifarlab.results(ws)
    image = tmp_path / "cat.png"
    Image.new("RGB", (32, 32)).save(image)
    way_out = f"PRAGMA foreign_keys=ON; DELETE FROM runs WHERE id = '{run['id']}'"
    capsys.readouterr()
    for column, value in (("config", "{not json"), ("config", "[]"), ("info", "garbage"),
                          ("test_acc", "abc"), ("best_epoch", float("inf"))):  # fmt: skip
        with sqlite3.connect(ws / "runs.db") as db:  # a hand edit gone wrong
            good = db.execute(f"SELECT {column} FROM runs").fetchone()[0]
            db.execute(f"UPDATE runs SET {column} = ?", (value,))
        for command in (["results"], ["predict", run["id"], str(image)], ["report"]):
            assert main([*command, "--workspace", str(ws)]) == 2, (column, command)
            err = capsys.readouterr().err
            db_path = ws / "runs.db"
            assert err == (f"cifarlab: error: run {run['id']}'s row in '{db_path}' is damaged; "
                           f"restore it from a copy, or drop the run: sqlite3 '{db_path}' "
                           f"\"{way_out}\"\n")  # fmt: skip
        with sqlite3.connect(ws / "runs.db") as db:
            db.execute(f"UPDATE runs SET {column} = ?", (good,))
    with sqlite3.connect(ws / "runs.db") as db:  # the way out it names
        db.executescript(way_out)
    assert main(["results", "--workspace", str(ws)]) == 0
    assert _db_rows(ws, "epochs") == []


def test_bad_input_leaves_no_workspace_behind(tmp_path, tiny_archive, capsys):
    # "nothing recorded" includes the folder: a typo must not leave an empty cifarlab-runs/
    workspace = tmp_path / "ws"
    for args in (["--model", "nosuch"], ["--data", str(tmp_path / "nowhere")],
                 ["--resume", "nosuch"], ["--crop-pad", "40"]):  # fmt: skip
        code = main(["train", "--data", str(tiny_archive), "--quiet", "--workspace",
                     str(workspace), *args])  # fmt: skip
        assert code == 2 and not workspace.exists(), (args, capsys.readouterr().err)
    assert _train(tmp_path, tiny_archive, "--epochs", "1") == 0  # a workspace with a run...
    assert main(["train", "--workspace", str(workspace), "--model", "nosuch"]) == 2
    assert (workspace / "runs.db").exists()  # ...keeps it


def test_running_out_of_memory_while_decoding_data_advises_the_image_size(
    tiny_folder, monkeypatch, capsys
):
    import cifarlab.data.dataset as dataset_module

    def fail(*args, **kwargs):
        raise MemoryError()  # as numpy raises it: no message

    monkeypatch.setattr(dataset_module, "read_image_folder", fail)
    monkeypatch.setenv("CIFARLAB_CACHE", str(tiny_folder.parent / "cache-oom"))
    assert main(["data", "info", "--data", str(tiny_folder)]) == 1
    err = capsys.readouterr().err.strip()
    # "out of memory (); try a smaller --batch-size or model": options data info lacks
    assert err == (
        "cifarlab: error: out of memory; the decoded images must fit in memory: try a smaller "
        "--image-size"
    )


def test_the_results_table_names_a_model_file_by_its_name_and_json_keeps_its_path(
    tiny_archive, tmp_path, capsys
):
    net, ws = tmp_path / "nets" / "net.toml", tmp_path / "ws"
    net.parent.mkdir()
    net.write_text('layers = ["conv 8 3", "relu", "gap", "linear"]\n')
    cifarlab.train(data=str(tiny_archive), workspace=str(ws), model=str(net), epochs=1,
                   val_size=30, quiet=True)  # fmt: skip
    for group in ([], ["--group-by", "model"]):
        assert main(["results", "--workspace", str(ws), *group]) == 0
        table = capsys.readouterr().out
        assert "net.toml" in table and str(net) not in table, table  # the path ran wide
    assert main(["results", "--workspace", str(ws), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model"] == str(net)  # for programs: whole


def test_results_group_runs_by_what_their_data_is_not_how_its_path_was_typed(tmp_path):
    """Runs on other data were pooled as seeds of one configuration; runs on one dataset
    at two paths must still pool, and a folder edited between runs is two datasets."""
    first = write_image_folder(tmp_path / "a" / "data", n_train=40, n_test=20)
    copy = shutil.copytree(first, tmp_path / "b" / "data")
    for data, seed in ((first, 0), (copy, 1)):  # one dataset, two spellings: seeds
        cifarlab.train(data=str(data), workspace=str(tmp_path / "ws"), epochs=1, val_size=30,
                       seed=seed, quiet=True)  # fmt: skip
    (row,) = cifarlab.grouped_results(tmp_path / "ws")
    assert row["n"] == 2, row
    write_image_folder(first, n_train=40, n_test=20, seed=7)  # the same path, other images
    cifarlab.train(data=str(first), workspace=str(tmp_path / "ws"), epochs=1, val_size=30,
                   seed=2, quiet=True)  # fmt: skip
    rows = cifarlab.grouped_results(tmp_path / "ws")
    assert sorted(r["n"] for r in rows) == [1, 2], rows
    assert len({r["data"] for r in rows}) == 2 and all("@" in r["data"] for r in rows), rows
    # the plain list keeps each run's path, with its version where one path held two datasets
    typed = sorted(r["config"]["data"] for r in cifarlab.results(tmp_path / "ws"))
    assert typed[2] == str(copy) and typed[0] != typed[1], typed
    assert all(t.startswith(f"{first}@") for t in typed[:2]), typed


def test_a_folder_named_runs_db_is_named_not_read_as_no_results(tmp_path, tiny_archive, capsys):
    (tmp_path / "ws" / "runs.db").mkdir(parents=True)
    assert main(["results", "--workspace", str(tmp_path / "ws")]) == 2  # "no runs.db there"
    assert "holds a folder named runs.db where its results database goes" in capsys.readouterr().err
    assert _train(tmp_path, tiny_archive) == 2
    assert "holds a folder named runs.db" in capsys.readouterr().err
