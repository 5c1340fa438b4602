"""One run spread over ranks by torchrun (gloo, on this CPU): it trains as one process would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from conftest import stop_training_at

import cifarlab
from cifarlab.cli import main
from cifarlab.experiments.store import ResultsStore

SETTINGS = dict(val_size=30, batch_size=16, epochs=3, optimizer="sgd", lr=0.05, seed=3,
                deterministic=True, augment="crop-flip-cutout")  # fmt: skip


def _options(settings: dict) -> list[str]:
    args = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def _torchrun(*args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (a free port) with a thread a rank, as on a 2-core machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", "-m", "cifarlab", *args]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def _info(workspace, run_id) -> dict:
    with ResultsStore(workspace / "runs.db") as store:
        return store.run(run_id)["info"]


def _epochs_said(stderr: str) -> list[int]:
    """The epochs a launch trained, from rank 0's progress lines ("epoch 2/8")."""
    return [int(n) for n in re.findall(r"  epoch (\d+)/\d+  ", stderr)]


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_two_ranks_train_as_one_process(tiny_archive, tmp_path):
    # the tutorial net has no BatchNorm: two halves of each batch make the whole's gradient
    alone = cifarlab.train(model="tutorial", data=str(tiny_archive), workspace=str(tmp_path / "a"),
                           quiet=True, **SETTINGS)  # fmt: skip
    done = _torchrun("train", "--model", "tutorial", "--data", str(tiny_archive),
                     "--workspace", str(tmp_path / "b"), *_options(SETTINGS))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = cifarlab.results(tmp_path / "b")  # rank 0 alone keeps the books
    assert run["status"] == "completed" and _info(tmp_path / "b", run["id"])["ranks"] == 2
    assert run["test_acc"] > 0.6  # 3 classes: it learned
    assert abs(run["test_acc"] - alone.summary["test_acc"]) < 1e-9
    assert _close(_weights(tmp_path / "b" / run["id"]), _weights(alone.run_dir))
    assert done.stdout.count("completed") == 1, done.stdout  # one results table, not one a rank
    assert "2 ranks (torchrun)" in done.stderr


def test_a_run_stopped_in_one_process_resumes_over_two_ranks(tiny_archive, tmp_path, monkeypatch):
    common = dict(model="tutorial", data=str(tiny_archive), quiet=True, **SETTINGS)
    whole = cifarlab.train(workspace=str(tmp_path / "a"), **common)
    with monkeypatch.context() as m:
        stop_training_at(m, epoch=2)
        with pytest.raises(KeyboardInterrupt):
            cifarlab.train(workspace=str(tmp_path / "b"), **common)
    (stopped,) = cifarlab.results(tmp_path / "b")
    done = _torchrun("train", "--resume", stopped["id"], "--workspace", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    assert _epochs_said(done.stderr) == [3]  # not from scratch: the seeded weights would match
    (resumed,) = cifarlab.results(tmp_path / "b")
    assert resumed["status"] == "completed" and resumed["epochs_done"] == 3
    assert abs(resumed["test_acc"] - whole.summary["test_acc"]) < 1e-9
    assert _close(_weights(tmp_path / "b" / stopped["id"]), _weights(whole.run_dir))


def test_the_speedrun_recipe_trains_over_two_ranks(tiny_archive, tmp_path):
    # BatchNorm, the whitening stem, its bias frozen after an epoch (requires_grad changes),
    # lookahead, EMA and TTA: every rank must make the same collective calls in the same order
    done = _torchrun("train", "--preset", "quick-cpu", "--model", "speedrun-tiny", "--data",
                     str(tiny_archive), "--workspace", str(tmp_path), "--val-size", "30",
                     "--batch-size", "32", "--epochs", "3", "--whiten-bias-epochs", "1",
                     "--ema", "0.9", "--no-drop-last")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = cifarlab.results(tmp_path)
    assert run["status"] == "completed" and _info(tmp_path, run["id"])["ranks"] == 2
    assert run["test_acc"] > 0.5  # 3 classes: it learned


def test_bad_input_under_torchrun_is_said_once_and_records_nothing(tiny_archive, tmp_path):
    done = _torchrun("train", "--model", "tutorial", "--data", str(tiny_archive),
                     "--workspace", str(tmp_path / "ws"), "--batch-size", "15")  # fmt: skip
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("cifarlab:")]
    assert said == [
        "cifarlab: error: --batch-size 15 does not split over 2 ranks: each trains on an equal "
        "share of every batch; pass --batch-size 14 (or a multiple of 2)"
    ]
    assert not (tmp_path / "ws").exists()


@pytest.fixture
def rank_0_of_2(monkeypatch):
    """torchrun's variables, without torchrun: for checks made before the ranks connect."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")


def test_a_sweep_under_torchrun_is_refused(rank_0_of_2, tmp_path, capsys):
    assert main(["compare", "--preset", "blog", "--workspace", str(tmp_path)]) == 2
    assert "a sweep under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "runs.db").exists()


def test_a_gpu_index_under_torchrun_is_refused(rank_0_of_2, tmp_path, capsys):
    assert main(["train", "--device", "cuda:1", "--workspace", str(tmp_path)]) == 2
    assert "each rank trains on the GPU of its local rank" in capsys.readouterr().err


def test_garbled_torchrun_variables_are_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "zero")
    assert main(["train", "--workspace", str(tmp_path)]) == 2
    assert "start a spread run with torchrun" in capsys.readouterr().err


def test_a_lost_rank_is_one_line_that_says_how_to_go_on(tiny_archive, tmp_path, monkeypatch,
                                                        capsys):  # fmt: skip
    gloo = ("[third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
            "[127.0.0.1]:45699. This is typically caused by a remote worker crashing.")  # fmt: skip
    stop_training_at(monkeypatch, epoch=1, error=RuntimeError(gloo))  # all_reduce, a rank gone
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # rank 0 of a launch
    code = main(["train", "--model", "tutorial", "--data", str(tiny_archive), "--workspace",
                 str(tmp_path), "--val-size", "30", "--epochs", "3", "--quiet"])  # fmt: skip
    assert code == 1
    (run,) = cifarlab.results(tmp_path)
    assert run["status"] == "failed" and run["epochs_done"] == 1
    assert run["error"] == "lost the other ranks of its torchrun launch (one stopped or hung)"
    (said,) = capsys.readouterr().err.strip().splitlines()
    resume = f"cifarlab train --resume {run['id']} --workspace {tmp_path}"
    assert said.endswith(f"stopped after epoch 1: `{resume}` (under torchrun or not) continues it")


DROPOUT_NET = """
from torch import nn


class Net(nn.Sequential):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                         nn.Dropout(0.5), nn.LazyLinear(num_classes))
"""


def test_a_spread_run_stopped_and_resumed_equals_one_never_stopped(tiny_archive, tmp_path):
    # dropout draws its masks from each rank's own generator: a resume must give each its own
    (tmp_path / "net.py").write_text(DROPOUT_NET)
    options = ["train", "--model", f"{tmp_path / 'net.py'}:Net", "--data", str(tiny_archive),
               *_options(SETTINGS | {"epochs": 8})]  # fmt: skip
    whole = _torchrun(*options, "--workspace", str(tmp_path / "a"))
    assert whole.returncode == 0, whole.stderr
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "cifarlab", *options, "--workspace",
               str(tmp_path / "b")]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as launch:  # fmt: skip
        for line in launch.stderr:  # Ctrl-C to the launch once epoch 1 is checkpointed
            if " epoch 1/8 " in line:
                os.killpg(launch.pid, signal.SIGINT)
                break
        launch.communicate(timeout=120)
    (stopped,) = cifarlab.results(tmp_path / "b")
    assert stopped["status"] == "failed" and 1 <= stopped["epochs_done"] < 8
    resumed = _torchrun("train", "--resume", stopped["id"], "--workspace", str(tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs_said(resumed.stderr) == list(range(stopped["epochs_done"] + 1, 9))
    (a,), (b,) = cifarlab.results(tmp_path / "a"), cifarlab.results(tmp_path / "b")
    assert b["status"] == "completed" and b["test_acc"] == a["test_acc"]
    wa, wb = _weights(tmp_path / "a" / a["id"]), _weights(tmp_path / "b" / b["id"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bitwise: same ranks, same threads


BATCHNORM_1D_NET = """
from torch import nn


class Net(nn.Sequential):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__(nn.Flatten(), nn.LazyLinear(8), nn.BatchNorm1d(8),
                         nn.Linear(8, num_classes))
"""


def test_a_last_batch_that_leaves_a_rank_one_image_is_refused_up_front(tiny_archive, tmp_path):
    # 90 training images in batches of 22 leave 2: one image a rank, which BatchNorm1d refuses
    (tmp_path / "net.py").write_text(BATCHNORM_1D_NET)
    done = _torchrun("train", "--model", f"{tmp_path / 'net.py'}:Net", "--data", str(tiny_archive),
                     "--workspace", str(tmp_path / "ws"), "--val-size", "30", "--batch-size",
                     "22")  # fmt: skip
    said = [line for line in done.stderr.splitlines() if line.startswith("cifarlab:")]
    assert done.returncode != 0 and said == [
        "cifarlab: error: the last 2 of 90 training images, shared by 2 ranks, make a training "
        "batch of 1 image, which BatchNorm cannot normalize; pass --drop-last, or a "
        "--batch-size that leaves a larger last batch"
    ]
    assert not (tmp_path / "ws").exists()


FAILING_NET = """
import os

from torch import nn


class Net(nn.Sequential):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x):
        if self.training and os.environ["RANK"] in os.environ["FAIL_ON_RANKS"].split(","):
            raise RuntimeError("my model broke")
        return super().forward(x)
"""


@pytest.mark.parametrize("ranks", ["0,1", "1"])
def test_a_failure_in_training_is_said_once_and_recorded(tiny_archive, tmp_path, monkeypatch,
                                                         ranks):  # fmt: skip
    # every rank fails alike (a user's model): rank 0 alone says it, and records it before
    # torchrun stops the launch; one rank's own failure: it says it, with its rank
    (tmp_path / "net.py").write_text(FAILING_NET)
    monkeypatch.setenv("FAIL_ON_RANKS", ranks)
    done = _torchrun("train", "--model", f"{tmp_path / 'net.py'}:Net", "--data", str(tiny_archive),
                     "--workspace", str(tmp_path / "ws"), "--val-size", "30")  # fmt: skip
    said = [line for line in done.stderr.splitlines() if line.startswith("cifarlab:")]
    assert done.returncode != 0 and "]: Traceback" not in done.stderr  # no rank's traceback
    (run,) = cifarlab.results(tmp_path / "ws")
    assert run["status"] == "failed"
    broke = f"epoch 1: model {tmp_path / 'net.py'}:Net raised RuntimeError at net.py:13: my model"
    if ranks == "0,1":
        assert run["error"] == "RuntimeError: my model broke (net.py:13)"
        assert said[1:] == [f"cifarlab: error: {broke} broke (CIFARLAB_TRACEBACK=1 shows the "
                            "traceback)"]  # fmt: skip
    else:
        assert run["error"] == "lost the other ranks of its torchrun launch (one stopped or hung)"
        assert f"cifarlab: error (rank 1): {broke} broke" in " ".join(said)


def test_more_ranks_than_gpus_on_a_machine_is_said_by_every_rank(monkeypatch):
    from cifarlab.distributed import World, rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    for local_rank in (0, 3):  # rank 0 too: it is the one that speaks
        with pytest.raises(cifarlab.CifarlabError, match="4 ranks on this machine but 2 GPUs"):
            rank_device(World(local_rank, local_rank, 4), torch.device("cuda"))


def test_world_size_without_torchrun_is_named(rank_0_of_2, tmp_path, capsys):
    assert main(["train", "--workspace", str(tmp_path)]) == 2
    assert "but no MASTER_ADDR: cifarlab spreads a run over the processes torchrun starts" in (
        capsys.readouterr().err
    )


RANK_EXITING = """
import atexit, sys
import torch.distributed as dist
from cifarlab import distributed, launch
atexit.register(lambda: print("exit handlers ran, group", dist.is_initialized()))
dist.init_process_group("gloo", init_method="file://{store}", rank=0, world_size=1)
atexit.register(distributed._leave)  # as join() leaves a rank of a torchrun launch
distributed._joined = True
if sys.argv[1] == "bug":
    import cifarlab.cli
    cifarlab.cli.main = lambda: 1 / 0
sys.argv = ["cifarlab", *sys.argv[2:]]
code = launch.main()
print("returned", code)  # a rank never gets here: it ends in exit_rank
"""


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["ok", "models"], 0, "speedrun-tiny"),  # the table's last rows: flushed
        (["ok", "train", "--epochs", "0"], 2, "invalid --epochs"),
        (["bug"], 1, "ZeroDivisionError"),  # its traceback, then the same way out
    ],
)
def test_a_rank_ends_past_the_teardown_with_its_status_said_and_flushed(tmp_path, args, code, says):
    # gloo could abort at interpreter teardown after a recorded run: exit_rank skips it
    script = RANK_EXITING.format(store=tmp_path / "store")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert says in done.stdout + done.stderr
    assert done.stdout.endswith("exit handlers ran, group False\n")  # destroyed, before os._exit
    assert "returned" not in done.stdout
