"""A sweep's runs as tasks of a Ray cluster (a local one here): they land as local runs do."""

from __future__ import annotations

import sys

import pytest
import ray  # the dev extra's: a broken install fails here, where a skip would hide 10 tests
import torch
from conftest import stop_training_at

import cifarlab
from cifarlab.cli import main
from cifarlab.errors import CifarlabWarning
from cifarlab.experiments.store import ResultsStore


@pytest.fixture(scope="module", autouse=True)
def _cluster_closed_after():
    yield
    ray.shutdown()


def _experiment(data, lrs: list[float], name: str = "tiny") -> dict:
    return {
        "name": name,
        "base": {"data": str(data), "epochs": 2, "val_size": 30, "batch_size": 16,
                 "optimizer": "sgd", "deterministic": True},
        "grid": {"lr": lrs},
    }  # fmt: skip


def _scores(workspace) -> dict:
    return {(r["lr"], r["status"]): r["test_acc"] for r in cifarlab.results(workspace)}


def test_runs_trained_on_ray_land_as_runs_trained_here(tiny_archive, tmp_path):
    experiment = _experiment(tiny_archive, [0.05, 0.1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task (--ray-cpus 1): the same sums, bit for bit
    try:
        cifarlab.sweep(experiment, tmp_path / "here", quiet=True)
    finally:
        torch.set_num_threads(threads)
    report = cifarlab.sweep(experiment, tmp_path / "ray", quiet=True, ray="local")
    assert report.failed == 0 and len(report.outcomes) == 2
    assert _scores(tmp_path / "ray") == _scores(tmp_path / "here")
    for run in cifarlab.results(tmp_path / "ray"):
        last = torch.load(tmp_path / "ray" / run["id"] / "last.pt", weights_only=True)
        assert last["run_id"] == run["id"] and last["epoch"] == 2
        trained = cifarlab.load_trained(run["id"], tmp_path / "ray")
        assert trained.predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)) is not None
    assert not list((tmp_path / "ray").glob(".landing-*"))
    again = cifarlab.sweep(experiment, tmp_path / "ray", quiet=True, ray="local")
    assert set(again.outcomes.values()) == {"completed"} and again.seconds < 5  # nothing ran


def test_a_run_that_diverges_or_fails_on_ray_is_recorded_so(tiny_archive, tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n\nclass Broken(nn.Module):\n"
        "    def __init__(self, num_classes=10, in_channels=3):\n"
        "        super().__init__()\n        self.fc = nn.Linear(4, num_classes)\n\n"
        "    def forward(self, x):\n        return self.fc(x)  # 4 inputs: not an image\n"
    )
    experiment = _experiment(tiny_archive, [1e6], "bad")
    experiment["grid"]["model"] = ["tutorial", f"{tmp_path / 'net.py'}:Broken"]
    report = cifarlab.sweep(experiment, tmp_path / "ws", quiet=True, ray="local")
    statuses = {r["model"].split(":")[-1]: r for r in cifarlab.results(tmp_path / "ws")}
    assert statuses["tutorial"]["status"] == "diverged"
    assert statuses["Broken"]["status"] == "failed" and "Broken" in statuses["Broken"]["error"]
    assert report.failed == 1
    (said,) = capsys.readouterr().err.splitlines()  # the worker's one line, here
    assert said.startswith(f"cifarlab: run {statuses['Broken']['id']} failed: model ")
    assert "raised RuntimeError at net.py:10" in said


def test_ray_options_that_cannot_work_are_refused_before_anything_runs(tiny_archive, tmp_path,
                                                                       capsys):  # fmt: skip
    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "x"\n[base]\ndata = "{tiny_archive}"\n[grid]\nlr = [0.1]\n')
    sweep = ["sweep", str(grid), "--workspace", str(tmp_path / "ws")]
    assert main([*sweep, "--ray", "local", "--workers", "2"]) == 2
    assert (
        "--workers with --ray: Ray decides how many runs train at once" in capsys.readouterr().err
    )
    assert main([*sweep, "--ray", "local", "--ray-cpus", "0"]) == 2
    assert "--ray-cpus must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_ray_missing_names_the_install(tiny_archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray then raises ImportError
    assert main(["compare", "--preset", "blog", "--ray", "auto", "--workspace",
                 str(tmp_path / "ws")]) == 2  # fmt: skip
    assert "--ray needs Ray: pip install 'cifarlab[ray]'" in capsys.readouterr().err


def test_no_cluster_at_the_address_is_said_before_anything_is_recorded(
    tiny_archive, tmp_path, monkeypatch, capsys
):
    ray.shutdown()  # a cluster an earlier test started in this process
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "x"\n[base]\ndata = "{tiny_archive}"\n[grid]\nlr = [0.1]\n')
    assert main(["sweep", str(grid), "--workspace", str(tmp_path / "ws"), "--ray", "auto"]) == 2
    assert "--ray auto: no Ray cluster there (" in capsys.readouterr().err
    assert cifarlab.results(tmp_path / "ws") == []


def test_a_run_stopped_here_resumes_on_ray_from_its_checkpoint(tiny_archive, tmp_path,
                                                               monkeypatch):  # fmt: skip

    experiment = _experiment(tiny_archive, [0.05]) | {"name": "stop"}
    experiment["base"]["epochs"] = 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray task: the same sums, bit for bit
    try:
        cifarlab.sweep(experiment, tmp_path / "whole", quiet=True)
        with monkeypatch.context() as m:
            stop_training_at(m, epoch=2)
            with pytest.raises(KeyboardInterrupt):
                cifarlab.sweep(experiment, tmp_path / "ws", quiet=True)
    finally:
        torch.set_num_threads(threads)
    plan = cifarlab.sweep(experiment, tmp_path / "ws", dry_run=True, ray="local")
    assert [p.action for p in plan.planned] == ["resume"]
    (stopped,) = cifarlab.results(tmp_path / "ws")
    with ResultsStore(tmp_path / "ws" / "runs.db") as store:
        before = store.epochs(stopped["id"])
    cifarlab.sweep(experiment, tmp_path / "ws", quiet=True, ray="local")
    (whole,), (resumed,) = cifarlab.results(tmp_path / "whole"), cifarlab.results(tmp_path / "ws")
    assert resumed["status"] == "completed" and resumed["test_acc"] == whole["test_acc"]
    with ResultsStore(tmp_path / "ws" / "runs.db") as store:
        epochs = store.epochs(resumed["id"])
    # its first two epochs were not trained again: their rows, timings included, are kept
    assert len(before) == 2 and epochs[:2] == before
    with ResultsStore(tmp_path / "whole" / "runs.db") as store:
        expected = store.epochs(whole["id"])
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["val_loss"] for e in epochs] == [e["val_loss"] for e in expected]


def test_what_a_run_warns_on_ray_is_said_here(tiny_archive, tmp_path):
    experiment = _experiment(tiny_archive, [0.003], "warned")
    experiment["base"] |= {"optimizer": "adam", "momentum": 0.8, "epochs": 1}
    with pytest.warns(CifarlabWarning, match="--momentum is"):
        cifarlab.sweep(experiment, tmp_path / "ws", quiet=True, ray="local")


def test_a_cluster_that_can_never_run_a_run_is_said_up_front(tiny_archive, tmp_path):
    with pytest.raises(cifarlab.CifarlabError, match="--ray-cpus 64 --ray-gpus 0: no machine"):
        cifarlab.sweep(_experiment(tiny_archive, [0.1]), tmp_path / "ws", ray="local",
                       ray_cpus=64)  # fmt: skip
    assert cifarlab.results(tmp_path / "ws") == []
    with pytest.raises(cifarlab.CifarlabError, match="--ray 127.0.0.1:1: nothing answers there"):
        cifarlab.sweep(_experiment(tiny_archive, [0.1]), tmp_path / "ws", ray="127.0.0.1:1")
    with pytest.raises(cifarlab.CifarlabError, match="--ray-cpus and --ray-gpus are for --ray"):
        cifarlab.sweep(_experiment(tiny_archive, [0.1]), tmp_path / "ws", ray_cpus=2)


def test_a_run_that_cannot_resume_on_its_worker_says_why(tiny_archive, tmp_path, monkeypatch):
    # the worker's side, called here: a stopped run's data gone from that machine
    import shutil

    from cifarlab.experiments import ray_runs
    from cifarlab.train import cpu_share

    data = shutil.copy(tiny_archive, tmp_path / "data.tar.gz")
    stop_training_at(monkeypatch, epoch=1)
    with pytest.raises(KeyboardInterrupt):
        cifarlab.train(model="tutorial", data=str(data), workspace=str(tmp_path / "ws"),
                       val_size=30, epochs=3, quiet=True)  # fmt: skip
    (stopped,) = cifarlab.results(tmp_path / "ws")
    with ResultsStore(tmp_path / "ws" / "runs.db") as store:
        kit = ray_runs._kit(store, tmp_path / "ws", stopped["id"])
        config = cifarlab.RunConfig(**kit["record"]["config"])
    (tmp_path / "data.tar.gz").unlink()
    threads = torch.get_num_threads()
    try:
        shipped = ray_runs._train_remote(config, 1, stopped["id"], kit)
    finally:  # what a worker sets for itself: put back for the tests after this one
        torch.set_num_threads(threads)
        cpu_share.count_as_own_job(None)
    assert shipped["record"]["status"] == "failed" and "data.tar.gz" in shipped["record"]["error"]
    with ResultsStore(tmp_path / "ws" / "runs.db") as store:  # a lost task keeps what it had
        info = store.run(stopped["id"])["info"]
        ray_runs._land(store, tmp_path / "ws", stopped["id"], {"record": None, "error": "lost"})
        after = store.run(stopped["id"])
    assert after["error"] == "lost" and after["info"] == info and info["data_content"]


def test_a_process_joined_to_ray_is_refused_what_cannot_work_there(tiny_archive, tmp_path):
    from cifarlab.experiments.ray_runs import RayOptions, connect

    on_cuda = _experiment(tiny_archive, [0.1], "on-cuda")
    on_cuda["base"]["device"] = "cuda"
    for address, experiment, refusal in [
        ("local", on_cuda, "runs set to train on cuda would get no GPU on Ray"),
        ("127.0.0.1:1", _experiment(tiny_archive, [0.1]),
         "--ray 127.0.0.1:1: this process is joined to Ray at 'local' already"),
    ]:  # fmt: skip
        connect(RayOptions("local"), [])  # as a sweep before this one left it
        with pytest.raises(cifarlab.CifarlabError, match=refusal):
            cifarlab.sweep(experiment, tmp_path / "ws", ray=address, ray_gpus=0)
        assert not ray.is_initialized()  # the cluster it started ended with the sweep
    assert cifarlab.results(tmp_path / "ws") == []
