"""Sweeps: grids that survive SIGKILL, concurrent workers, seeds with error bars."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sigint_as_in_a_terminal

import cifarlab
from cifarlab.cli import main
from cifarlab.experiments.analysis import compare_means, group_runs, t_quantile
from cifarlab.experiments.spec import build_experiment, load_experiment
from cifarlab.experiments.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _tiny_grid(tmp_path: Path, data: Path, extra: str = "", epochs: int = 2) -> Path:
    return _write(
        tmp_path / "grid.toml",
        f"""
name = "tiny"
[base]
data = "{data}"
epochs = {epochs}
val_size = 30
batch_size = 16
lr = 0.003
[grid]
optimizer = ["sgd", "adam"]
seed = [0, 1]
{extra}
""",
    )


def _db(workspace: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(workspace / "runs.db") as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.real_data
def test_a_2x2x2_grid_on_real_data_completes_with_8_runs(real_data, tmp_path, capsys):
    grid = _write(
        tmp_path / "g.toml",
        f"""
name = "real"
[base]
data = "{real_data}"
epochs = 2
limit_train = 2000
val_size = 500
limit_test = 500
[grid]
model = ["tutorial", "simple"]
optimizer = ["sgd", "adam"]
seed = [0, 1]
""",
    )
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    assert _db(ws, "SELECT status, count(*) FROM runs GROUP BY status") == [("completed", 8)]
    assert _db(ws, "SELECT count(*) FROM epochs") == [(16,)]
    records = cifarlab.results(ws, experiment="real")
    assert len(records) == 8
    # 1,500 images, 2 epochs: SGD at lr 0.001 barely moves, Adam learns (chance is 10%).
    # Measured on the shared copy: Adam 24.8-39.4%, each 10-25 points above its SGD twin.
    acc = {(r["model"], r["optimizer"], r["seed"]): r["test_acc"] for r in records}
    for model, _, seed in [key for key in acc if key[1] == "adam"]:
        adam, sgd = acc[model, "adam", seed], acc[model, "sgd", seed]
        assert adam > 0.2 and adam > sgd + 0.05, (model, seed, adam, sgd)


PART_WAY = (
    "SELECT count(*) FROM runs r WHERE status = 'running' "
    "AND (SELECT count(*) FROM epochs e WHERE e.run_id = r.id) >= 1"
)


def test_sigkill_mid_sweep_then_rerun_completes_without_duplicates(tmp_path, tiny_archive):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=3)
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "cifarlab", "sweep", str(grid), "--workspace", str(ws), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill once a run is part-way: 1+ epoch rows, not done
            time.sleep(0.05)
            if not (ws / "runs.db").exists():
                continue
            try:
                partial = _db(ws, PART_WAY)
            except sqlite3.OperationalError:
                continue
            if partial[0][0]:
                break
        else:
            pytest.fail("the sweep never reached the middle of a run")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _db(ws, "SELECT count(*) FROM runs WHERE status = 'completed'")[0][0] < 4

    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    assert _db(ws, "SELECT status, count(*) FROM runs GROUP BY status") == [("completed", 4)]
    rows = _db(ws, "SELECT run_id, epoch FROM epochs ORDER BY run_id, epoch")
    assert len(rows) == 12 and len(set(rows)) == 12  # every epoch row present once
    assert _db(ws, "PRAGMA integrity_check") == [("ok",)]
    # a third run finds nothing to do
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    assert _db(ws, "SELECT count(*) FROM runs") == [(4,)]


def test_two_workers_write_concurrently_without_losing_rows(tmp_path, tiny_archive):
    grid = _tiny_grid(tmp_path, tiny_archive)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--workers", "2", "--quiet"]) == 0
    assert _db(ws, "SELECT status, count(*) FROM runs GROUP BY status") == [("completed", 4)]
    assert _db(ws, "SELECT count(*) FROM epochs") == [(8,)]
    assert _db(ws, "PRAGMA integrity_check") == [("ok",)]


def test_a_script_without_the_main_guard_is_refused_before_workers_start(tmp_path, tiny_archive):
    script = tmp_path / "study.py"
    grid = {"name": "s", "base": {"data": str(tiny_archive), "val_size": 30, "epochs": 1},
            "grid": {"seed": [0, 1]}}  # fmt: skip
    call = f"cifarlab.sweep({grid!r}, workspace={str(tmp_path / 'ws')!r}, workers=2, quiet=True)"
    script.write_text(f"import cifarlab\n{call}\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    # each worker ran the script again: a traceback per worker, then BrokenProcessPool
    assert done.returncode == 1 and "BrokenProcessPool" not in done.stderr
    assert done.stderr.count("Traceback") == 1  # the script's own, of the one error
    assert 'outside `if __name__ == "__main__":`' in done.stderr
    assert not (tmp_path / "ws").exists()


def test_a_killed_worker_stops_the_sweep_with_one_line(tmp_path, tiny_archive, capsys):
    net = tmp_path / "killed.py"  # as the kernel's out-of-memory killer would end a worker
    net.write_text(
        "import os, signal\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes):\n        super().__init__()\n"
        "        self.fc = nn.Linear(3, num_classes)\n"
        "    def forward(self, x):\n"
        "        if self.training:\n            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return self.fc(x.mean((2, 3)))\n"
    )
    grid = _tiny_grid(tmp_path, tiny_archive, extra=f'model = ["{net}:Net"]', epochs=1)
    argv = ["sweep", str(grid), "--workspace", str(tmp_path / "ws"), "--workers", "2", "--quiet"]
    assert main(argv) == 1  # the machine stopped the work, as for other machine trouble
    err = capsys.readouterr().err
    assert "a sweep worker process died" in err and err.count("\n") == 1, err


def test_a_diverging_or_failing_run_does_not_stop_the_sweep(
    tmp_path, tiny_archive, monkeypatch, capsys
):
    from cifarlab.train.trainer import Trainer

    original = Trainer.fit

    def fail_for_adagrad(self, epochs):
        if type(self.optimizer).__name__ == "Adagrad":
            raise RuntimeError("simulated crash")
        return original(self, epochs)

    monkeypatch.setattr(Trainer, "fit", fail_for_adagrad)
    grid = _write(
        tmp_path / "g.toml",
        f"""
name = "mixed"
[base]
data = "{tiny_archive}"
epochs = 1
val_size = 30
optimizer = "sgd"
[grid]
lr = [0.01, 10000.0]
[[include]]
optimizer = "adagrad"
""",
    )
    ws = tmp_path / "ws"
    # 3: the file was fine (2 is bad input), but a run failed
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 3
    statuses = dict(_db(ws, "SELECT lr, status FROM runs"))
    assert statuses == {0.01: "completed", 10000.0: "diverged", 0.001: "failed"}
    ((failed,),) = _db(ws, "SELECT id FROM runs WHERE status = 'failed'")
    # named by its id, which results, report --run and train --resume take (not its name)
    assert f"cifarlab: run {failed} failed: simulated crash" in capsys.readouterr().err
    # the table that answers "what won" keeps the runs that did not: lr=10000 diverging is
    # the finding of an lr study
    assert main(["results", "--workspace", str(ws), "--experiment", "mixed"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]  # below the header and its rule
    assert len(rows) == 3  # lr, optimizer, n, ...
    assert [row.split()[:3] for row in rows if row.endswith("1 diverged")] == [
        ["10000.0", "sgd", "0"]
    ]
    assert [row.split()[1:3] for row in rows if row.endswith("1 failed")] == [["adagrad", "0"]]
    # the report's headline names the one completed configuration by what set it apart
    page = cifarlab.report(experiment="mixed", workspace=ws).read_text()
    assert "Configuration:</b> tutorial · sgd · lr=0.01 — " in page
    # the crash mended, a rerun trains the failed run; the diverged one is a result: exit 0
    monkeypatch.setattr(Trainer, "fit", original)
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    assert _db(ws, "SELECT status, count(*) FROM runs GROUP BY status") == [
        ("completed", 2),
        ("diverged", 1),
    ]


def test_seed_grouped_table_matches_a_hand_computation(tmp_path, tiny_archive, capsys):
    grid = _tiny_grid(tmp_path, tiny_archive, extra='model = ["tutorial"]')
    ws = tmp_path / "ws"
    run_sweep(load_experiment(grid), ws, quiet=True)
    runs = cifarlab.results(ws, experiment="tiny")
    groups = cifarlab.grouped_results(ws, experiment="tiny")
    assert {g["optimizer"] for g in groups} == {"sgd", "adam"} and all(g["n"] == 2 for g in groups)
    for g in groups:
        accs = [r["test_acc"] for r in runs if r["optimizer"] == g["optimizer"]]
        assert g["test_acc_mean"] == pytest.approx(statistics.fmean(accs))
        assert g["test_acc_std"] == pytest.approx(statistics.stdev(accs))
    capsys.readouterr()
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny", "--format", "markdown",
                 "--sort", "test_acc"]) == 0  # fmt: skip
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| optimizer | n | best val")
    best = max(groups, key=lambda g: g["test_acc_mean"])
    assert table[2].startswith(f"| {best['optimizer']} | 2 | ")
    # the header says "best val": its key was not among "try test_acc or train_seconds"
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny", "--sort",
                 "best_val"]) == 2  # fmt: skip
    assert "did you mean 'best_val_acc'? choose one of best_val_acc, final_test_acc, " \
        in capsys.readouterr().err  # fmt: skip
    # runs sort by a setting the table shows (seed) or not; "config" (a dict) is no column
    assert main(["results", "--workspace", str(ws), "--sort", "seed", "--format", "json"]) == 0
    assert [r["config"]["seed"] for r in json.loads(capsys.readouterr().out)] == [0, 0, 1, 1]
    assert main(["results", "--workspace", str(ws), "--sort", "config"]) == 2  # a traceback
    assert "--sort 'config': not a column here;" in capsys.readouterr().err
    # --only filters every view, its values read as the sweep's --only reads them
    assert main(["results", "--workspace", str(ws), "--only", "optimizer=ADAM", "--format",
                 "json"]) == 0  # fmt: skip
    assert {r["optimizer"] for r in json.loads(capsys.readouterr().out)} == {"adam"}
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny", "--only",
                 "optimizer=sgd", "--only", "seed=1", "--format", "csv"]) == 0  # fmt: skip
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["n"] == "1"
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny", "--only",
                 "optimizer=sgd"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("optimizer  n")  # the row says what it is
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny",
                 "--compare", "optimizer=adam", "optimizer=sgd"]) == 0  # fmt: skip
    line = capsys.readouterr().out
    assert line.startswith("optimizer=adam vs optimizer=sgd: ") and "95% CI" in line
    # values as --only reads them (ADAM is adam, 3e-3 is 0.003), and the numbers as JSON
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny", "--format", "json",
                 "--compare", "optimizer=ADAM,lr=3e-3", "optimizer=sgd"]) == 0  # fmt: skip
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_a"] == stats["n_b"] == 2 and line.split()[3] == f"{stats['diff'] * 100:+.2f}"
    # a list value keeps its commas: milestones=3,6 is one setting, not a pair and a stray 6
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny", "--compare",
                 "optimizer=adam,milestones=3,6", "optimizer=sgd"]) == 2  # fmt: skip
    assert "no completed run matches it" in capsys.readouterr().err
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny",
                 "--compare", "optimzer=adam", "optimizer=sgd"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--compare 'optimzer=adam': unknown setting 'optimzer'; did you mean 'optimizer'?" in err
    assert main(["results", "--workspace", str(ws), "--only", "lr=7"]) == 0
    said = capsys.readouterr().out.strip()  # not "no runs yet"; and what the runs hold
    assert said.startswith("no runs match --only lr=7; lr here: "), said
    assert main(["results", "--workspace", str(ws), "--only", "model=tutoral"]) == 0
    said = capsys.readouterr().out.strip()  # a typo read as an empty workspace
    assert said == "no runs match --only model=tutoral; model here: tutorial (did you mean " \
        "'tutorial'?)", said  # fmt: skip
    assert main(["results", "--workspace", str(ws), "--only", "workspace=x"]) == 2
    assert "unknown setting 'workspace'; see" in capsys.readouterr().err  # not "did you mean"
    assert main(["results", "--workspace", str(ws), "--group-by", "optimizer, seed"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("optimizer  seed  n")  # as Python
    assert main(["results", "--workspace", str(ws), "--group-by", "ema"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("-    ")  # unset, not "None"
    assert main(["results", "--workspace", str(ws), "--group-by", "optimzer"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) optimzer; did you mean 'optimizer'? settings are train's" in err
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny", "--group-by", "seed",
                 "--compare", "optimizer=adam", "optimizer=sgd"]) == 2  # fmt: skip
    assert "--compare prints one comparison: it takes no --group-by" in capsys.readouterr().err


def test_welch_interval_matches_textbook_values():
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)
    assert t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-5)
    stats = compare_means([0.80, 0.82, 0.81], [0.78, 0.77, 0.79])
    # means 0.81 vs 0.78, both variances 1e-4, se = sqrt(2e-4/3), df = 4
    half = 2.776445 * (2e-4 / 3) ** 0.5
    assert stats["diff"] == pytest.approx(0.03)
    assert (stats["low"], stats["high"]) == pytest.approx((0.03 - half, 0.03 + half), abs=1e-6)


def test_a_dry_run_refuses_a_data_path_the_sweep_would_refuse(tmp_path, tiny_archive, capsys):
    missing = tmp_path / "gone.tar.gz"
    grid = _tiny_grid(tmp_path, missing, epochs=1)
    for plan in ("--dry-run", "--quiet"):  # it said "4 runs, 4 to run", exit 0
        assert main(["sweep", str(grid), "--workspace", str(tmp_path / "ws"), plan]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"data path '{missing}' does not exist" in err, err
    assert not (tmp_path / "ws").exists()  # its empty database made `results` say "no runs yet"


def test_a_dry_run_stopped_says_no_way_to_continue(tmp_path, tiny_archive, capsys, monkeypatch):
    from cifarlab.experiments import sweep

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "plan_dry_run", stopped)  # Ctrl-C while it reads the data
    grid = _tiny_grid(tmp_path, tiny_archive)
    assert main(["sweep", str(grid), "--workspace", str(tmp_path / "ws"), "--dry-run"]) == 130
    # "the same command again (it skips finished runs...) continues it": nothing ran
    assert capsys.readouterr().err == "cifarlab: interrupted\n"
    with pytest.raises(KeyboardInterrupt) as stop:
        cifarlab.sweep(str(grid), workspace=tmp_path / "ws", dry_run=True)
    assert not getattr(stop.value, "__notes__", None)


def test_dry_run_max_runs_and_only(tmp_path, tiny_archive, capsys):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("new") == 4 and "tiny: 4 runs, 4 to run" in out
    assert not ws.exists()  # a dry run writes nothing, not even an empty workspace
    # an axis beyond model, optimizer, lr, batch size and seed is shown too
    other = _write(tmp_path / "ls.toml", grid.read_text() + "label_smoothing = [0.0, 0.1]\n")
    assert main(["sweep", str(other), "--workspace", str(ws), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    assert sorted(line.split()[-1] for line in lines) == 4 * ["label_smoothing=0.0"] + 4 * [
        "label_smoothing=0.1"
    ]
    # a list setting reads as the command line types it, not as a Python tuple
    steps = 'schedule = ["multistep"]\nmilestones = [[1], [1, 2]]\n'
    steps = _write(tmp_path / "ms.toml", grid.read_text() + steps)
    assert main(["sweep", str(steps), "--workspace", str(ws), "--dry-run"]) == 0
    shown = {line.split()[-1] for line in capsys.readouterr().out.splitlines()[:-1]}
    assert shown == {"milestones=1", "milestones=1,2"}
    main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "optimizer=adam",
          "--max-runs", "1"])  # fmt: skip
    assert _db(ws, "SELECT optimizer, status FROM runs") == [("adam", "completed")]
    capsys.readouterr()
    main(["sweep", str(grid), "--workspace", str(ws), "--dry-run"])
    assert "tiny: 4 runs, 3 to run" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'name = "x"\n[base]\nepoch = 3\n[grid]\nseed = [0]',
            "base.epoch: unknown key; did you mean 'epochs'?",
        ),
        ('name = "x"\n[grid]\nlr = 0.1', "grid.lr: must be a list of values"),
        ('name = "x"\n[grid]\n', "grid: empty"),
        ('name = "x"\n[grid]\nepochs = ["ten"]', "grid.epochs[0]: must be a valid integer"),
        (
            'name = "x"\n[grid]\nmodle = ["tutorial"]',
            "grid.modle: unknown key; did you mean 'model'?",
        ),
        ("[grid]\nseed = [0]", "name: missing"),
        (
            'name = "x"\n[grid]\nschedule = ["onecycle"]',
            "schedule=onecycle: schedule: onecycle needs",
        ),
        ('name = "x"\n[grid\n', "not valid TOML"),
        (
            'name = "x"\n[grid]\nmodel = ["tutorial", "tutorail"]',
            "grid.model[1]: unknown model 'tutorail'; did you mean 'tutorial'?",
        ),
        # a part of the wrong shape is one line, and the rest is still checked
        ('name = "x"\ngrid = [1, 2]\n[base]\nepoch = 3', "grid: must be a table ([grid])"),
        ('name = "x"\ninclude = 3\n[grid]\nseed = [0]', "include: must be an array of tables"),
        ("name = 5\n[grid]\nseed = [0]", "name: must be a string"),
        ('name = "../../out"\n[grid]\nseed = [0]', "name: '../../out' may hold only ASCII"),
        ('name = "-x"\n[grid]\nseed = [0]', "must start with a letter, digit or '_'"),  # a flag
        (
            'name = "x"\n[base]\nworkspace = "w"\n[grid]\nseed = [0]',
            "base.workspace: workspace is set per command, not in a file; pass --workspace",
        ),
        (
            'name = "x"\n[grid]\noptimizer = ["sgd"]\n[[exclude]]\noptimizer = "SGD"',
            "[[exclude]] drops all 1 grid runs",
        ),
        (  # an [[include]] kept it from dropping all: it quietly dropped the grid's runs
            'name = "x"\n[grid]\nseed = [0, 1]\n[[include]]\nseed = 0\n[[exclude]]\n',
            'exclude[0]: empty; name the settings of the runs to drop, e.g. model = "wobbly"',
        ),
    ],
)
def test_bad_experiment_files_get_a_line_per_problem_and_run_nothing(
    tmp_path, capsys, text, message
):
    grid = _write(tmp_path / "bad.toml", text)
    assert main(["sweep", str(grid), "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert all(line.startswith("cifarlab: error: ") for line in err.splitlines())
    assert not (tmp_path / "ws" / "runs.db").exists()


def test_a_file_that_is_not_toml_text_is_one_line(tmp_path, capsys):
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00garbage")
    for path, says in ((binary, "not a text file"), (tmp_path, "is a folder")):
        assert main(["sweep", str(path), "--workspace", str(tmp_path / "ws")]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


def test_an_exclude_matches_values_as_the_runs_read_them():
    definition = {
        "name": "x",
        "grid": {"optimizer": ["sgd", "adam"], "lr": [0.1, 0.01]},
        "exclude": [{"optimizer": "SGD", "lr": 1e-1}, {"optimizer": "adam", "epochs": 10}],
    }
    runs = {(c.optimizer, c.lr) for c in build_experiment(definition).configs}
    # "SGD" is sgd, 1e-1 is 0.1, and epochs = 10 is what every run has by default
    assert runs == {("sgd", 0.01)}
    # settings left out of a run's hash count too, and `--data B` keeps an exclude on A off
    definition = {"name": "x", "base": {"data": "A"}, "grid": {"lr": [0.1, 0.01]},
                  "exclude": [{"data": "A", "lr": 0.1}]}  # fmt: skip
    assert [c.lr for c in build_experiment(definition).configs] == [0.01]
    assert [c.lr for c in build_experiment(definition, data="B").configs] == [0.1, 0.01]
    definition = {"name": "x", "grid": {"lr": [0.1, 0.01], "tensorboard": [True, False]},
                  "exclude": [{"tensorboard": True, "lr": 0.1}]}  # fmt: skip
    kept = {(c.lr, c.tensorboard) for c in build_experiment(definition).configs}
    assert kept == {(0.1, False), (0.01, True)}  # lr 0.01 twice is one run: same hash


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    grid = _write(tmp_path / "bad.toml", 'name = "x"\n[base]\nlr = -1\nepoch = 3\n[grid]\nseed = 1')
    assert main(["sweep", str(grid)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


def test_same_name_with_a_different_grid_needs_new_name_or_force(tmp_path, tiny_archive, capsys):
    ws = str(tmp_path / "ws")
    first = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    assert main(["sweep", str(first), "--workspace", ws, "--quiet", "--max-runs", "1"]) == 0
    # a partial sweep read as a finished one: "1 run (1 completed); 1 trained now"
    assert (
        "sweep tiny: 3 of its 4 runs not run yet (--only / --max-runs)" in capsys.readouterr().err
    )
    # and its table showed one row of n=1 as if that were the experiment
    assert main(["results", "--workspace", ws, "--experiment", "tiny"]) == 0
    assert "note: 3 of experiment 'tiny''s 4 runs have not started yet; sweeping its file " \
        "again runs them" in capsys.readouterr().err  # fmt: skip
    changed = _write(
        tmp_path / "changed.toml", first.read_text().replace("seed = [0, 1]", "seed = [5]")
    )
    capsys.readouterr()
    assert main(["sweep", str(changed), "--workspace", ws, "--quiet"]) == 2
    assert "pass --force to point the name at these runs (finished ones are reused, none " \
        "deleted) or --new-name NAME" in capsys.readouterr().err  # fmt: skip
    # the plan of a grown grid is what one looks at before choosing: it refused to show it
    assert main(["sweep", str(changed), "--workspace", ws, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 2 runs, 2 to run" in out and "note: experiment 'tiny' holds other runs" in out
    assert main(["sweep", str(changed), "--workspace", ws, "--quiet", "--new-name", "tiny2"]) == 0
    assert main(["sweep", str(changed), "--workspace", ws, "--quiet", "--force"]) == 0
    assert len(cifarlab.results(ws, experiment="tiny")) == 2  # sgd+adam at seed 5 (shared runs)
    # from a notebook: the same choice, by keyword
    with pytest.raises(cifarlab.CifarlabError, match="from Python: force=True, new_name="):
        cifarlab.sweep(first, workspace=ws, quiet=True, new_name="tiny2")
    assert cifarlab.sweep(first, workspace=ws, quiet=True, new_name="tiny3").failed == 0
    assert cifarlab.sweep(first, workspace=ws, quiet=True, force=True).failed == 0
    assert len(cifarlab.results(ws, experiment="tiny")) == 4  # the first grid again


def test_python_api_sweep_and_results(tmp_path, tiny_archive, capsys):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    plan = cifarlab.sweep(grid, workspace=tmp_path / "ws", dry_run=True)  # as --dry-run
    assert repr(plan).splitlines()[-1] == "tiny: 4 runs, 4 to run"
    assert [p.action for p in plan.planned] == ["new"] * 4 and not (tmp_path / "ws").exists()
    report = cifarlab.sweep(_tiny_grid(tmp_path, tiny_archive, epochs=1), workspace=tmp_path / "ws",
                            quiet=True)  # fmt: skip
    plan = cifarlab.sweep(grid, workspace=tmp_path / "ws", dry_run=True)
    assert repr(plan).startswith("done    tutorial-") and "4 runs, 0 to run" in repr(plan)
    assert report.failed == 0 and len(report.outcomes) == 4
    assert len(cifarlab.results(tmp_path / "ws", experiment="tiny")) == 4
    assert repr(report).startswith("SweepReport('tiny': 4 runs (4 completed) in ")  # one line
    capsys.readouterr()
    again = cifarlab.sweep(_tiny_grid(tmp_path, tiny_archive, epochs=1), workspace=tmp_path / "ws")
    assert "cifarlab: sweep tiny: 4 runs: 4 done before" in capsys.readouterr().err  # up front
    # it read "4 runs (4 completed) in 0 s", as if it had trained them
    assert repr(again).startswith("SweepReport('tiny': 4 runs (4 completed; all done before) in")


def test_python_api_sweep_takes_the_clis_options(tmp_path, tiny_archive):
    grid = _tiny_grid(tmp_path, tmp_path / "not-this-data", epochs=1)
    report = cifarlab.sweep(grid, workspace=tmp_path / "ws", quiet=True, data=tiny_archive,
                            only={"optimizer": "ADAM"}, max_runs=1)  # fmt: skip
    (run,) = cifarlab.results(tmp_path / "ws")
    assert len(report.outcomes) == 1 and run["optimizer"] == "adam"
    assert repr(report).endswith(", 3 of 4 not run yet)")
    assert run["config"]["data"] == str(tiny_archive)
    # values as Python has them, typed as a run reads them
    assert cifarlab.results(tmp_path / "ws", only={"optimizer": "ADAM", "lr": "3e-3"}) == [run]
    assert cifarlab.results(tmp_path / "ws", only={"milestones": [1, 2]}) == []
    with pytest.raises(cifarlab.CifarlabError, match="unknown setting 'bogus'"):
        cifarlab.results(tmp_path / "ws", only={"bogus": 1})
    with pytest.raises(cifarlab.CifarlabError, match="only= \"optimiser='adam'\": unknown"):
        cifarlab.sweep(grid, workspace=tmp_path / "ws", only={"optimiser": "adam"})
    with pytest.raises(cifarlab.CifarlabError, match="grid: must be a table"):
        cifarlab.sweep({"name": "x", "grid": "oops"}, workspace=tmp_path / "ws")
    with pytest.raises(cifarlab.CifarlabError, match="experiment name: '../x' may hold only"):
        cifarlab.sweep(grid, workspace=tmp_path / "ws", new_name="../x", data=tiny_archive)


def test_base_reaching_into_a_preset_of_the_grid_or_an_include_is_named():
    definition = {
        "name": "own",
        "base": {"epochs": 2, "lr": 0.001, "val_size": 86, "data": "ds"},
        "grid": {"model": ["tutorial"]},
        "include": [
            {"preset": "quick-cpu"},
            {"preset": "quick-cpu", "lr": 0.75, "epochs": 4, "val_size": 0},
        ],  # fmt: skip
    }
    with pytest.warns(UserWarning) as caught:
        tutorial, quick, quick_kept = build_experiment(definition, source="own.toml").configs
    messages = [str(w.message) for w in caught if "overrides preset" in str(w.message)]
    # options given override a preset (runs recorded so keep their settings), but say so
    assert messages == [
        "own.toml: [base] overrides preset 'quick-cpu' of include[0]: epochs = 2 (the "
        "preset's 4), lr = 0.001 (the preset's 0.75), val_size = 86 (the preset's 0); settings "
        "given override a preset, so to keep the preset's, set them in include[0]"
    ]
    assert (quick.lr, quick.epochs) == (0.001, 2) and (quick_kept.lr, quick_kept.epochs) == (
        0.75,
        4,
    )


def test_presets_expand_to_the_blog_grid():
    from cifarlab.experiments.presets import preset_definition

    # a model file among --models: the name keeps its letters, not its path
    mine = preset_definition("blog", epochs=1, models=["tutorial", "nets/my.py:Net"])
    assert mine["name"] == "blog-e1-tutorial-nets-my.py-Net"

    blog = build_experiment(preset_definition("blog", epochs=5, limit_train=10_000))
    assert len(blog.configs) == 10 and blog.name == "blog-e5-limittrain10000"
    assert {c.model for c in blog.configs} == {"tutorial", "simple", "stacked", "channel", "wobbly"}
    assert all(c.lr == 0.001 and c.batch_size == 64 and c.epochs == 5 for c in blog.configs)
    assert len(build_experiment(preset_definition("lr", seeds=2)).configs) == 28
    # a quick look scores fewer images too (it scored 15,000 an epoch, whatever it trained on)
    quick = build_experiment(preset_definition("blog", epochs=1, limit_test=1000, val_size=500))
    assert quick.name == "blog-e1-limittest1000-valsize500"
    assert all(c.limit_test == 1000 and c.val_size == 500 for c in quick.configs)


def test_a_bad_data_source_fails_the_sweep_once_before_any_run(tmp_path, capsys):
    grid = _tiny_grid(tmp_path, tmp_path / "nowhere", epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err, err
    assert not (ws / "runs.db").exists()  # nothing recorded, not even an empty database


def test_a_val_size_the_data_cannot_spare_fails_the_sweep_once_before_any_run(
    tmp_path, tiny_archive, capsys
):
    data = tmp_path / "copy.tar.gz"  # a source the cache does not know yet
    data.write_bytes(tiny_archive.read_bytes())
    grid = _tiny_grid(tmp_path, data, epochs=1)
    grid.write_text(grid.read_text().replace("val_size = 30", "val_size = 5000"))  # CIFAR's
    ws = tmp_path / "ws"
    dry_run = ["sweep", str(grid), "--workspace", str(ws), "--dry-run"]
    assert main(dry_run) == 0  # it decodes nothing: the size is unknown to it yet
    capsys.readouterr()
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # not once per run, and no "4 trained now"
    assert main(dry_run) == 2  # the cache holds the source now: the plan says so too
    assert capsys.readouterr().err == err
    assert "val_size 5000 leaves no training images in" in err
    assert ("(its training split has 120); set a smaller one (12, a tenth, is usual; 0: no "
            "validation): val_size = 12 in the experiment's [base], or compare's --val-size "
            "12") in err  # fmt: skip
    # nothing recorded: no run "failed", no experiment whose runs "have not started yet"
    assert _db(ws, "SELECT * FROM runs") == [] and _db(ws, "SELECT * FROM experiments") == []


def test_a_finished_sweep_reruns_without_reading_its_data_again(tmp_path, tiny_archive, capsys):
    data = tmp_path / "copy.tar.gz"
    data.write_bytes(tiny_archive.read_bytes())
    grid = _tiny_grid(tmp_path, data, epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "seed=0"]) == 0
    data.unlink()  # done runs need no data: the rerun has nothing to do
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "seed=0"]) == 0
    assert "2 runs (2 completed); 0 trained now" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-runs", "0"], "--max-runs must be a whole number of at least 1, not 0"),
        (["--max-runs", "-1"], "--max-runs must be a whole number of at least 1, not -1"),
        (
            ["--only", "model=resnet18"],
            "--only model=resnet18 matches none of the 4 runs of experiment 'tiny'",
        ),
    ],
)
def test_sweep_options_that_select_nothing_are_refused(
    tmp_path, tiny_archive, capsys, args, message
):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (ws / "runs.db").exists() or _db(ws, "SELECT * FROM experiments") == []


def test_a_workspace_from_before_the_cpu_share_columns_still_opens_and_records(tmp_path):
    from cifarlab.experiments.store import ResultsStore

    db = tmp_path / "runs.db"
    with ResultsStore(db) as store:
        store.create_run("old", "old", {"model": "tutorial"}, "h")
        store.add_epoch("old", 1, {"train_loss": 1.5, "images_per_sec": 900.0})
        store.finish_run("old", "completed", {"test_acc": 0.5, "train_seconds": 3.0})
    with sqlite3.connect(db) as conn:  # back to schema 1, as the previous release wrote it
        for table, col in (("epochs", "others_cpu"), ("epochs", "steal_cpu"),
                           ("runs", "cpu_contention")):  # fmt: skip
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
        conn.execute("PRAGMA user_version=1")
    with ResultsStore(db) as store:
        assert store.run("old")["test_acc"] == 0.5 and store.run("old")["cpu_contention"] is None
        store.add_epoch("old", 2, {"train_loss": 1.2, "others_cpu": 0.4, "steal_cpu": 0.0})
        assert [e["others_cpu"] for e in store.epochs("old")] == [None, 0.4]
        # another process records "old-2" between this one choosing it and recording it
        choose = store.new_run_id
        raced = iter(["old-2"])

        def chosen_then_taken(base):
            run_id = next(raced, None) or choose(base)
            if run_id == "old-2" and not store.run("old-2"):
                store.create_run("old-2", "other", {}, "h")
            return run_id

        store.new_run_id = chosen_then_taken
        assert store.start_run("old", "mine", {}, "h") == "old-3"


def test_a_later_failed_run_of_the_same_settings_does_not_hide_the_finished_one(
    tmp_path, tiny_archive, capsys, monkeypatch
):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "seed=0"]) == 0
    done = {r["id"]: r["test_acc"] for r in cifarlab.results(ws, "tiny")}
    from cifarlab.train.trainer import Trainer

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):  # the same settings again, by hand, cut short
        cifarlab.train(data=str(tiny_archive), workspace=str(ws), epochs=1, val_size=30,
                       batch_size=16, lr=0.003, optimizer="adam", seed=0, quiet=True)  # fmt: skip
    assert {r["id"]: r["test_acc"] for r in cifarlab.results(ws, "tiny")} == done
    capsys.readouterr()
    assert main(["sweep", str(grid), "--workspace", str(ws), "--dry-run", "--only", "seed=0"]) == 0
    assert capsys.readouterr().out.count("done") == 2


def test_a_dry_run_says_restart_for_a_stopped_run_without_a_checkpoint(
    tmp_path, tiny_archive, capsys, monkeypatch
):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=2)
    ws = tmp_path / "ws"
    from cifarlab.train.trainer import Trainer

    trained = Trainer.train_epoch
    sgd_seed_0 = dict(epochs=2, val_size=30, batch_size=16, lr=0.003, optimizer="sgd", seed=0)
    for stop_in in (1, 2):  # stopped in its first epoch (no checkpoint yet), then its second

        def stopped(self, epoch, stop_in=stop_in):
            if epoch == stop_in - 1:  # 0-based
                raise KeyboardInterrupt
            return trained(self, epoch)

        monkeypatch.setattr(Trainer, "train_epoch", stopped)
        with pytest.raises(KeyboardInterrupt):  # the grid's run, by hand
            cifarlab.train(data=str(tiny_archive), workspace=str(ws), quiet=True, **sgd_seed_0)
        capsys.readouterr()
        assert main(["sweep", str(grid), "--workspace", str(ws), "--dry-run", "--only",
                     "seed=0", "--only", "optimizer=sgd"]) == 0  # fmt: skip
        # it said "resume" for both, though the first starts over from epoch 1
        out = capsys.readouterr().out
        assert out.split()[0] == ("restart" if stop_in == 1 else "resume")
        # it showed the settings' 12-character hash, which --resume does not take
        assert out.split()[1] == cifarlab.results(ws)[-1]["id"]


# -- who trains a run: no two processes on one run ------------------------------------


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline:
        alive = [p for p in pids if _running(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def test_owner_of_a_run_is_this_host_pid_and_start_time():
    from cifarlab.process import _start_time, current_owner, owner_pid

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = f"{os.uname().nodename}:{child.pid}:{_start_time(child.pid)}"
        assert owner_pid(owner) == child.pid
        assert owner_pid(f"{os.uname().nodename}:{child.pid}:1") is None  # a recycled pid
        assert owner_pid(f"elsewhere:{child.pid}:{_start_time(child.pid)}") is None
        assert owner_pid(current_owner()) is None  # this process is not "another" trainer
    finally:
        child.kill()
        child.wait()
    assert owner_pid(owner) is None and owner_pid(None) is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux")
def test_two_resumes_started_together_do_not_both_train_the_run(
    tmp_path, tiny_archive, monkeypatch
):
    from cifarlab import runner
    from cifarlab.process import _start_time

    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "seed=0"]) == 0
    run_id = cifarlab.results(ws)[0]["id"]
    with sqlite3.connect(ws / "runs.db") as conn:  # as if stopped: a resume may continue it
        conn.execute("UPDATE runs SET status='running', owner='gone:1:1' WHERE id=?", (run_id,))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # both looked before loading the data, when nobody owned it; the other claimed it first
        monkeypatch.setattr(runner, "refuse_if_training_elsewhere", lambda record: None)
        owner = f"{os.uname().nodename}:{other.pid}:{_start_time(other.pid)}"
        with sqlite3.connect(ws / "runs.db") as conn:
            conn.execute("UPDATE runs SET owner=? WHERE id=?", (owner, run_id))
        with pytest.raises(
            cifarlab.CifarlabError, match=f"being trained right now by process {other.pid}"
        ):
            cifarlab.train(resume=run_id, workspace=str(ws), quiet=True)
        assert _db(ws, f"SELECT owner FROM runs WHERE id='{run_id}'") == [(owner,)]  # untouched
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux")
def test_a_run_in_training_is_neither_resumed_nor_swept_twice(tmp_path, tiny_archive, capsys):
    from cifarlab.experiments.sweep import _sweeping
    from cifarlab.process import _start_time

    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "seed=0"]) == 0
    run_id = cifarlab.results(ws)[0]["id"]
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # as if that process were training the run right now
        owner = f"{os.uname().nodename}:{trainer.pid}:{_start_time(trainer.pid)}"
        with sqlite3.connect(ws / "runs.db") as conn:
            conn.execute("UPDATE runs SET status='running', owner=? WHERE id=?", (owner, run_id))
        capsys.readouterr()
        assert main(["train", "--workspace", str(ws), "--resume", run_id]) == 2
        err = capsys.readouterr().err
        assert f"run {run_id} is being trained right now by process {trainer.pid}" in err
        assert (
            main(["sweep", str(grid), "--workspace", str(ws), "--dry-run", "--only", "seed=0"]) == 0
        )
        assert "busy" in capsys.readouterr().out
        # exit 3: the busy run has no result yet, which a script must not take for done
        assert (
            main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "seed=0"]) == 3
        )
        assert "1 completed, 1 running" in capsys.readouterr().err  # the busy one left alone
        # a sweep that planned it before that process started does not train it either
        from cifarlab.config import make_run_config
        from cifarlab.experiments.sweep import _run_one

        record = next(r for r in cifarlab.results(ws) if r["id"] == run_id)
        config = make_run_config(**record["config"], workspace=str(ws), quiet=True)
        assert _run_one(config) == "running"
        with _sweeping(ws, "tiny"):  # another sweep of the experiment is under way
            assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 2
        assert "experiment 'tiny' is being swept right now" in capsys.readouterr().err
    finally:
        trainer.kill()
        trainer.wait()
    assert _db(ws, "SELECT count(*) FROM runs") == [(2,)]  # nothing trained twice


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux")
def test_sigterm_records_the_run_failed_and_a_killed_sweep_leaves_no_workers(
    tmp_path, tiny_archive
):
    ws = tmp_path / "ws"
    train = [sys.executable, "-m", "cifarlab", "train", "--data", str(tiny_archive),
             "--workspace", str(ws), "--epochs", "200", "--val-size", "30", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(train, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not _epoch_rows(ws):
        time.sleep(0.1)
    proc.terminate()  # SIGTERM, as `kill`, a job scheduler or `docker stop` send
    code, err = proc.wait(60), proc.stderr.read()
    assert code == 143, err
    assert "cifarlab: terminated; run " in err and "`cifarlab train --resume " in err
    assert _db(ws, "SELECT status, error FROM runs") == [("failed", "terminated (SIGTERM)")]

    grid = _tiny_grid(tmp_path, tiny_archive, epochs=200)
    sweep = [sys.executable, "-m", "cifarlab", "sweep", str(grid), "--workspace",
             str(tmp_path / "ws2"), "--workers", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(sweep, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_epoch_rows(tmp_path / "ws2")) < 2:
        time.sleep(0.1)
    workers = _children(proc.pid)
    assert workers
    proc.kill()  # kill -9: no chance to clean up
    proc.wait()
    assert _wait_gone(workers, 30) == []  # the kernel took the workers down with it
    assert _db(tmp_path / "ws2", "SELECT DISTINCT status FROM runs") == [("failed",)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux")
def test_sigterm_to_a_parallel_sweep_alone_stops_its_runs_now(tmp_path, tiny_archive):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=5000)  # minutes: it must not wait them out
    ws = tmp_path / "ws"
    sweep = [sys.executable, "-m", "cifarlab", "sweep", str(grid), "--workspace", str(ws),
             "--workers", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(sweep, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_epoch_rows(ws)) < 2:
        time.sleep(0.1)
    workers = _spawned_workers(proc.pid)
    try:
        assert len(workers) == 2, "the sweep never started its workers"
        proc.terminate()  # `kill PID`: the sweep alone, as docker stop or a scheduler send it
        code, err = proc.wait(60), proc.stderr.read()
    finally:  # the 5000-epoch runs must not outlive a failed test
        proc.kill()
    assert code == 143 and "cifarlab: terminated; the same command again" in err, err
    assert _wait_gone(workers, 30) == []
    assert _db(ws, "SELECT DISTINCT status, error FROM runs") == [
        ("failed", "terminated (SIGTERM)")
    ]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux")
def test_ctrl_c_while_sweep_workers_start_is_one_line_and_trains_nothing(tmp_path, tiny_archive):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=200)
    sweep = [sys.executable, "-m", "cifarlab", "sweep", str(grid), "--workspace",
             str(tmp_path / "ws"), "--workers", "2", "--quiet"]  # fmt: skip
    # its own process group, as a terminal's Ctrl-C reaches every process of the command
    proc = subprocess.Popen(sweep, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=sigint_as_in_a_terminal)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(_spawned_workers(proc.pid)) < 2:
        time.sleep(0.02)
    workers = _spawned_workers(proc.pid)
    assert len(workers) == 2, "the sweep never started its workers"
    time.sleep(0.5)  # into their start-up: Python's own, then the imports (~2 s)
    os.killpg(proc.pid, signal.SIGINT)  # while the workers still import torch
    assert proc.wait(120) == 130
    err = proc.stderr.read()
    assert "Traceback" not in err and err.strip().splitlines() == [
        "cifarlab: interrupted; the same command again (it skips finished runs, resumes stopped "
        "ones) continues it"
    ], err
    assert _wait_gone(workers, 30) == []
    assert _db(tmp_path / "ws", "SELECT count(*) FROM runs") == [(0,)]  # none started after it


def _spawned_workers(pid: int) -> list[int]:
    """The sweep's worker processes (not multiprocessing's resource tracker)."""

    def is_worker(child: int) -> bool:
        try:
            return b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            return False

    return [child for child in _children(pid) if is_worker(child)]


def _epoch_rows(ws: Path) -> list[tuple]:
    try:
        return _db(ws, "SELECT run_id FROM epochs") if (ws / "runs.db").exists() else []
    except sqlite3.OperationalError:
        return []


@pytest.mark.real_data
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux")
def test_decode_workers_end_with_a_killed_cli(real_data, tmp_path):
    source = tmp_path / "copy.tar.gz"  # not cached yet: a first decode, in forked workers
    shutil.copy(real_data, source)
    env = {**os.environ, "CIFARLAB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "cifarlab", "data", "info", "--data", str(source)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(_children(proc.pid)) < 2:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "the decode never started its workers"
    proc.kill()
    proc.wait()
    assert _wait_gone(workers, 15) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux")
def test_a_run_whose_process_died_unrecorded_shows_stopped_with_how_to_go_on(
    tmp_path, tiny_archive, capsys
):
    from cifarlab.process import _start_time

    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "my runs"  # the hint named no workspace, and a space broke it in a shell
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "seed=0"]) == 0
    run_id = cifarlab.results(ws)[0]["id"]
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    owner = f"{os.uname().nodename}:{gone.pid}:{_start_time(gone.pid)}"
    gone.kill()
    gone.wait()  # as `kill -9` leaves a run: "running", its process ended
    with sqlite3.connect(ws / "runs.db") as conn:
        conn.execute("UPDATE runs SET status='running', owner=? WHERE id=?", (owner, run_id))
    run = next(r for r in cifarlab.results(ws) if r["id"] == run_id)
    command = f"cifarlab train --resume {run_id} --workspace '{ws}'"
    assert run["status"] == "stopped" and f"`{command}` continues it" in run["error"]
    capsys.readouterr()
    assert main(["results", "--workspace", str(ws)]) == 0
    assert f"{run_id} stopped: its process ended unrecorded" in capsys.readouterr().out


def test_a_run_counts_its_epochs_as_it_goes(tmp_path):
    from cifarlab.experiments.store import ResultsStore

    with ResultsStore(tmp_path / "runs.db") as store:  # killed (-9) after two epochs: no summary
        store.create_run("r", "r", {"epochs": 40}, "h")
        for epoch in (1, 2):
            store.add_epoch("r", epoch, {"train_loss": 1.0})
        assert store.run("r")["epochs_done"] == 2  # it read 0 (shown 0/40) until the summary
        store.reopen_run("r", keep_epochs=1)  # a resume from the epoch-1 checkpoint
        assert store.run("r")["epochs_done"] == 1


@pytest.mark.parametrize(
    "call, says",
    [
        (lambda ws: cifarlab.results(workspace=None), "workspace must be a path"),
        (lambda ws: cifarlab.results(workspace=""), "workspace is an empty path; give a"),
        (
            lambda ws: cifarlab.sweep({"name": "x", "grid": {"seed": [0]}}, "", dry_run=True),
            "workspace is an empty path",
        ),  # fmt: skip
        (lambda ws: cifarlab.report(workspace=123), "workspace must be a path"),
        (lambda ws: cifarlab.report(workspace=ws, output=5), "output must be a path"),
        (lambda ws: cifarlab.sweep(123), "sweep takes an experiment file's path or a dict"),
        (lambda ws: cifarlab.sweep({"name": "x"}, workers="2"), "--workers must be a whole"),
        (lambda ws: cifarlab.sweep({"name": "x"}, new_name=1), "new_name must be a string"),
        (lambda ws: cifarlab.results(ws, only=5), "only= takes a dict like"),
        (lambda ws: cifarlab.load_trained(None), "run_id must be a run's id"),
        (lambda ws: cifarlab.load_trained("r", workspace=5), "workspace must be a path"),
    ],
)
def test_python_calls_with_wrong_types_get_one_clear_error(tmp_path, call, says):
    with pytest.raises(cifarlab.CifarlabError, match=says):
        call(tmp_path)


def test_python_calls_take_what_the_cli_takes(tmp_path, tiny_archive):
    ws = tmp_path / "ws"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), epochs=1, val_size=30,
                            quiet=True)  # fmt: skip
    cifarlab.train(data=str(tiny_archive), workspace=str(ws), epochs=1, val_size=30,
                   optimizer="adam", quiet=True)  # fmt: skip
    (sgd,) = cifarlab.results(ws, only="optimizer=SGD")  # --only's form, a name in any case
    assert sgd["id"] == result.run_id and len(cifarlab.results(ws)) == 2
    assert cifarlab.grouped_results(ws, group_by="model,optimizer")[0]["n"] == 1
    index = cifarlab.report(run=result.run_dir, workspace=ws)  # the run's folder names it
    assert index.parent.name == f"report-{result.run_id}"


def test_data_edited_in_place_is_trained_again_not_reported_as_done(tmp_path, capsys):
    from conftest import write_image_folder

    from cifarlab.experiments.store import ResultsStore
    from cifarlab.report.predict import predict_run

    data = write_image_folder(tmp_path / "data", n_train=12, n_test=4)
    grid = _tiny_grid(tmp_path, data, epochs=1).read_text().replace("seed = [0, 1]", "")
    grid = _write(tmp_path / "one.toml", grid.replace('["sgd", "adam"]', '["sgd"]'))
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    (old,) = cifarlab.results(ws)
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    assert "has changed" not in capsys.readouterr().err  # the same data: nothing to redo
    assert main(["sweep", str(grid), "--workspace", str(ws), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("done    ")  # the cache knows the data as is
    write_image_folder(data, n_train=12, n_test=4, seed=7)  # other images, same names
    assert main(["sweep", str(grid), "--workspace", str(ws), "--dry-run"]) == 0
    out = capsys.readouterr().out  # not decoded since: the dry run cannot tell, and says so
    assert out.startswith("done*") and "* its data is not cached as it is now" in out
    assert main(["data", "info", "--data", str(data)]) == 0  # now the cache knows the edit
    capsys.readouterr()
    assert main(["sweep", str(grid), "--workspace", str(ws), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("new ")  # it said "done"
    # it said "1 run (1 completed); 0 trained now": the old data's result for the new data
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"the data of run {old['id']} ({data}) has changed since it trained" in err
    (new,) = cifarlab.results(ws, experiment="tiny")  # the run that stands for its settings
    assert len(cifarlab.results(ws)) == 2  # the old run is kept, as a record
    assert new["id"] != old["id"] and new["status"] == "completed"
    with ResultsStore(ws / "runs.db") as store:
        old, new = store.run(old["id"]), store.run(new["id"])
    assert new["info"]["data_content"] != old["info"]["data_content"]
    # the report showed the old run's predictions beside the new data's images
    with pytest.raises(cifarlab.CifarlabError, match="has changed since run .* trained on it"):
        predict_run(old, ws)
    predict_run(new, ws)


def test_a_failed_retrain_on_edited_data_stands_for_its_settings(tmp_path, capsys, monkeypatch):
    from conftest import write_image_folder

    from cifarlab.train.trainer import Trainer

    data = write_image_folder(tmp_path / "data", n_train=12, n_test=4)
    grid = _tiny_grid(tmp_path, data, epochs=1).read_text().replace("seed = [0, 1]", "")
    grid = _write(tmp_path / "one.toml", grid.replace('["sgd", "adam"]', '["sgd"]'))
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    write_image_folder(data, n_train=12, n_test=4, seed=7)

    def crash(self, epoch):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:  # the retrain on the new data fails
        patch.setattr(Trainer, "train_epoch", crash)
        assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 3
    # the old data's completed result stood for the experiment, as if nothing had happened
    (standing,) = cifarlab.results(ws, experiment="tiny")
    assert standing["status"] == "failed", standing
    capsys.readouterr()
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0  # tries again
    assert [r["status"] for r in cifarlab.results(ws, experiment="tiny")] == ["completed"]


def test_a_run_stopped_before_its_checkpoint_is_trained_anew_on_edited_data(
    tmp_path, capsys, monkeypatch
):
    from conftest import write_image_folder

    from cifarlab.train.trainer import Trainer

    data = write_image_folder(tmp_path / "data", n_train=12, n_test=4)
    grid = _tiny_grid(tmp_path, data, epochs=1).read_text().replace("seed = [0, 1]", "")
    grid = _write(tmp_path / "one.toml", grid.replace('["sgd", "adam"]', '["sgd"]'))
    ws = tmp_path / "ws"

    def crash(self, epoch):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:  # failed in its first epoch: no checkpoint
        patch.setattr(Trainer, "train_epoch", crash)
        assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 3
    write_image_folder(data, n_train=12, n_test=4, seed=7)
    capsys.readouterr()
    # it failed again: "... its checkpoint belongs to other data", of a run with none
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet"]) == 0
    assert "has changed since it trained" in capsys.readouterr().err


def test_a_model_registered_in_python_is_not_swept_by_other_processes(tmp_path, tiny_archive):
    from torch import nn

    from cifarlab.models.registry import _REGISTRY

    cifarlab.register_model("here-only")(lambda num_classes: nn.Sequential(
        nn.Flatten(), nn.Linear(3072, num_classes)))  # fmt: skip
    grid = {"name": "h", "base": {"data": str(tiny_archive), "val_size": 30, "epochs": 1,
                                  "model": "here-only"}, "grid": {"seed": [0, 1]}}  # fmt: skip
    try:  # every run failed in the workers: "unknown model 'here-only'"
        with pytest.raises(cifarlab.CifarlabError, match="'here-only' is registered in this pro"):
            cifarlab.sweep(grid, workspace=tmp_path / "ws", workers=2, quiet=True)
        assert not (tmp_path / "ws").exists()
    finally:
        _REGISTRY.pop("here-only", None)


def test_a_sweep_stopped_from_python_says_to_call_the_sweep_again(tmp_path, tiny_archive,
                                                                  monkeypatch):  # fmt: skip
    from cifarlab.train.trainer import Trainer

    def stop(self, epoch):
        raise KeyboardInterrupt  # a notebook's interrupt, mid-run

    grid = {"name": "h", "base": {"data": str(tiny_archive), "val_size": 30, "epochs": 1},
            "grid": {"seed": [0, 1]}}  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_epoch", stop)
        with pytest.raises(KeyboardInterrupt) as stopped:
            cifarlab.sweep(grid, workspace=tmp_path / "ws", quiet=True)
    # the one run's note said cifarlab.train(resume=...), which leaves the other seed untrained
    assert stopped.value.__notes__ == [
        "cifarlab: sweep 'h' stopped; the same cifarlab.sweep(...) call again skips its "
        "finished runs and resumes the stopped ones"
    ]
    assert cifarlab.sweep(grid, workspace=tmp_path / "ws", quiet=True).outcomes
    assert [r["status"] for r in cifarlab.results(tmp_path / "ws")] == ["completed"] * 2


def test_runs_recorded_before_a_setting_existed_group_with_later_ones(tmp_path, tiny_archive):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "ws"
    assert (
        main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--only", "optimizer=sgd"])
        == 0
    )
    with sqlite3.connect(ws / "runs.db") as conn:  # seed 1 as an older version recorded it
        (config,) = conn.execute("SELECT config FROM runs WHERE seed = 1").fetchone()
        older = {k: v for k, v in json.loads(config).items() if k != "eval_every"}
        conn.execute("UPDATE runs SET config = ? WHERE seed = 1", (json.dumps(older),))
    (group,) = cifarlab.grouped_results(ws, experiment="tiny")  # two groups of n=1 each
    assert group["n"] == 2


def test_resuming_a_run_on_data_edited_since_is_refused(tmp_path, monkeypatch):
    from conftest import write_image_folder

    from cifarlab.train.trainer import Trainer

    data = write_image_folder(tmp_path / "data", n_train=12, n_test=4)
    options = dict(data=str(data), val_size=3, epochs=1, workspace=str(tmp_path / "ws"), quiet=True)

    def crash(self, epochs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "fit", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            cifarlab.train(**options)
    write_image_folder(data, n_train=12, n_test=4, seed=7)
    # its checkpoint would go on training on other images, as if nothing had changed
    with pytest.raises(cifarlab.CifarlabError, match="has changed since run .* without --resume"):
        cifarlab.train(**options, resume=True)


def test_repeated_grid_values_are_said_not_merged_in_silence():
    definition = {"name": "x", "grid": {"seed": [0, 0], "lr": [0.01, 1e-2, 0.1]}}
    with pytest.warns(UserWarning, match=r"grid.lr lists 0.01 more than once") as said:
        experiment = build_experiment(definition)
    assert any("grid.seed lists 0 more than once" in str(w.message) for w in said)
    assert len(experiment.configs) == 2  # "1 run" from seed = [0, 0], without a word


def test_a_rerun_sweep_reads_its_data_once_before_training(tmp_path, tiny_archive, monkeypatch):
    import cifarlab.data.dataset as dataset_module

    grid, ws = _tiny_grid(tmp_path, tiny_archive, epochs=1), str(tmp_path / "ws")
    assert main(["sweep", str(grid), "--workspace", ws, "--quiet", "--max-runs", "1"]) == 0
    reads = []
    decode = dataset_module.decode_source
    monkeypatch.setattr(
        dataset_module, "decode_source", lambda *a, **k: (reads.append(a), decode(*a, **k))[1]
    )
    assert main(["sweep", str(grid), "--workspace", ws, "--quiet"]) == 0
    # one read to compare the finished run's data, one per run trained; the check of the
    # sources for the runs to train read the same source a second time
    assert len(reads) == 1 + 3


def test_a_list_in_base_is_pointed_to_the_grid_and_a_tuple_in_the_grid_is_a_list():
    definition = {"name": "x", "base": {"lr": [0.1, 0.01]}, "grid": {"seed": [0]}}
    with pytest.raises(cifarlab.CifarlabError, match=r"base.lr: must be a valid number "
                       r"\(got \[0.1, 0.01\]\); values to try go under \[grid\]"):  # fmt: skip
        build_experiment(definition)
    # from Python: it said "must be a list of values, e.g. model = [('tutorial', 'simple')]"
    definition = {"name": "x", "grid": {"model": ("tutorial", "simple")}}
    assert len(build_experiment(definition).configs) == 2


def test_an_include_beside_a_grid_of_seeds_says_it_is_one_run():
    definition = {
        "name": "x",
        "grid": {"seed": [0, 1, 2]},
        "include": [{"model": "simple", "lr": 0.05}, {"model": "stacked", "seed": 1}],
    }
    # compared as n=1 against n=3 without a word
    with pytest.warns(UserWarning, match=r"include\[0\] is one run, with seed 0, where the grid "
                      r"runs seeds \[0, 1, 2\]; repeat it with seed = N") as said:  # fmt: skip
        assert len(build_experiment(definition).configs) == 5
    assert len(said) == 1  # include[1] names its seed
    definition = {"name": "x", "grid": {"model": ["tutorial", "simple"]},
                  "exclude": [{"model": "simple"}, {"model": "stacked"}]}  # fmt: skip
    with pytest.warns(UserWarning, match=r"exclude\[1\] matches none of the grid's runs") as said:
        assert len(build_experiment(definition).configs) == 1
    assert len(said) == 1  # exclude[0] dropped its run


def test_compare_and_group_by_say_when_they_pool_other_budgets():
    from cifarlab.experiments.analysis import pooled_budgets
    from cifarlab.results import compare

    def run(i: int, optimizer: str, epochs: int, acc: float) -> dict:
        config = {"model": "tutorial", "optimizer": optimizer, "epochs": epochs, "seed": i}
        return {"id": f"r{i}", "status": "completed", "test_acc": acc, "config": config}

    records = [run(0, "adam", 2, 0.30), run(1, "adam", 4, 0.40), run(2, "sgd", 2, 0.25),
               run(3, "sgd", 4, 0.35)]  # fmt: skip
    # "results --group-by optimizer" showed n=2 rows of 2- and 4-epoch runs as seeds
    assert pooled_budgets(records, ["optimizer"]) == ["epochs"]
    assert pooled_budgets(records, ["optimizer", "epochs"]) == []
    said = compare(records, "optimizer=adam", "optimizer=sgd")
    assert said.endswith("note: the runs compared differ in epochs, and the difference mixes "
                         "those in: filter both sides to one value of each"), said  # fmt: skip
    assert "note" not in compare(records, "optimizer=adam,epochs=2", "optimizer=sgd,epochs=2")
    assert "differ in epochs" not in compare(records, "epochs=2", "epochs=4")  # compared
    said = compare(records, "optimizer=adam,epochs=2", "optimizer=sgd")
    assert "differ in epochs" in said  # two sides of other budgets, not asked for
    with pytest.raises(cifarlab.CifarlabError, match="run r0 matches both 'epochs=2' and"):
        compare(records, "epochs=2", "optimizer=adam")  # a side set against itself
    records.append({**run(4, "adam", 2, 0.0), "status": "diverged"})
    said = compare(records, "optimizer=adam,epochs=2", "optimizer=sgd,epochs=2")
    # it flattered adam without a word, then without saying whose runs they were
    assert said.endswith("; left out: 1 diverged of optimizer=adam,epochs=2"), said
    records[0]["config"]["limit_train"] = 500  # two budgets now: a list of two, not three
    said = compare(records, "optimizer=adam", "optimizer=sgd")
    assert "differ in epochs and limit_train, and the difference" in said, said


def test_compare_says_when_a_side_pools_configurations_as_seeds():
    import json

    from cifarlab.results import compare

    def run(i: int, model: str, optimizer: str, acc: float) -> dict:
        config = {"model": model, "optimizer": optimizer, "seed": 0}
        return {"id": f"r{i}", "status": "completed", "test_acc": acc, "config": config}

    records = [run(0, "tutorial", "adam", 0.30), run(1, "simple", "adam", 0.50),
               run(2, "tutorial", "sgd", 0.25), run(3, "simple", "sgd", 0.45)]  # fmt: skip
    # "n=2 vs 2" with a 95% CI were two models a side, one seed each
    said = compare(records, "optimizer=adam", "optimizer=sgd")
    assert said.endswith("; note: each side pools runs that differ in model, not only seeds, so "
                         "the interval is not a seed interval: filter both sides to one "
                         "configuration (the report ranks like for like)"), said  # fmt: skip
    records[3]["config"]["model"] = "stacked"  # and unbalanced: a different mix a side
    said = compare(records, "optimizer=adam", "optimizer=sgd")
    assert "and the sides hold different mixes of them" in said, said
    assert "note" not in compare(records, "model=tutorial,optimizer=adam",
                                 "model=tutorial,optimizer=sgd")  # fmt: skip
    out = json.loads(compare(records, "optimizer=adam", "optimizer=sgd", fmt="json"))
    assert out["pooled"] == ["model"] and out["left_out"] == [{}, {}]


def test_a_mean_over_fewer_runs_than_the_row_says_its_own_n():
    from cifarlab.results import format_groups

    def run(i: int, val: float | None) -> dict:
        config = {"model": "tutorial", "optimizer": "adam", "seed": i}
        return {"id": f"r{i}", "status": "completed", "best_val_acc": val, "test_acc": 0.5,
                "config": config}  # fmt: skip

    groups = group_runs([run(0, 0.4), run(1, 0.6), run(2, None)], ["model"])
    assert (groups[0]["n"], groups[0]["best_val_acc_n"], groups[0]["test_acc_n"]) == (3, 2, 3)
    row = format_groups(groups, ["model"], "table").splitlines()[-1]
    # "n=3" stood over a validation mean of two runs (the third had no validation split)
    assert "50.00% ± 14.14% (n=2)" in row and row.count("(n=") == 1, row
    assert "best_val_acc_n" in format_groups(groups, ["model"], "csv").splitlines()[0]


def test_the_runs_table_shows_the_settings_that_tell_its_runs_apart():
    from cifarlab.results import format_runs

    def run(i: int, limit: int | None) -> dict:
        config = {"model": "tutorial", "optimizer": "adam", "lr": 0.001, "batch_size": 64,
                  "epochs": 2, "seed": i % 2, "limit_train": limit,
                  "data": "/d/cifar.tar.gz"}  # fmt: skip
        return {"id": f"r{i}", "model": "tutorial", "status": "completed", "epochs_done": 2,
                "lr": 0.001, "batch_size": 64, "optimizer": "adam", "config": config}  # fmt: skip

    table = format_runs([run(0, 1000), run(1, 1000), run(2, 2000), run(3, 2000)], "table")
    header, _, *rows = table.splitlines()
    # four rows of "tutorial adam 0.001 64 2": the seed and the training images were hidden
    assert header.split()[:7] == ["run", "model", "opt", "lr", "batch", "seed", "limit_train"]
    assert len({tuple(row.split()[5:7]) for row in rows}) == 4
    assert "data" not in header  # one dataset: no column


def test_an_experiment_of_one_standing_configuration_labels_its_row(tmp_path, tiny_archive, capsys):
    grid = _tiny_grid(tmp_path, tiny_archive, epochs=1)
    ws = tmp_path / "ws"
    assert main(["sweep", str(grid), "--workspace", str(ws), "--quiet", "--max-runs", "1"]) == 0
    capsys.readouterr()
    assert main(["results", "--workspace", str(ws), "--experiment", "tiny"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[:2] == ["model", "optimizer"], header  # a row of numbers with no name
