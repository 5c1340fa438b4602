"""The report: every chart drawn and not blank, captions true to the data, and the page
checked in real headless Chromium (no failed requests or console errors, images decode,
tables sort on click, readable at 1280 and 400 px; screenshots in test-artifacts/)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

import cifarlab
from cifarlab.cli import main
from cifarlab.experiments.spec import build_experiment
from cifarlab.experiments.sweep import run_sweep
from cifarlab.report import aggregate, charts
from cifarlab.report.html import load_records

ARTIFACTS = REPO / "test-artifacts"
CORE_CHARTS = (
    "final-accuracy",
    "accuracy-curves",
    "loss-curves",
    "gap-curves",
    "train-time",
    "pareto",
    "confusion",
    "per-class",
    "mistakes",
)


def _sweep(workspace: Path, data: Path, name: str, grid: dict, **base) -> Path:
    base = {
        "data": str(data),
        "epochs": 3,
        "val_size": 30,
        "batch_size": 16,
        "lr": 0.003,
        "augment": "none",
        "precision": "fp32",
        **base,
    }
    run_sweep(build_experiment({"name": name, "base": base, "grid": grid}), workspace, quiet=True)
    return workspace


@pytest.fixture(scope="module")
def sweep_ws(tiny_archive, tmp_path_factory) -> Path:
    """Two models x two optimizers x two seeds on the synthetic data, plus an lr study."""
    ws = tmp_path_factory.mktemp("report") / "ws"
    grid = {"model": ["tutorial", "simple"], "optimizer": ["sgd", "adam"], "seed": [0, 1]}
    _sweep(ws, tiny_archive, "small", grid)
    _sweep(ws, tiny_archive, "lr", {"lr": [0.001, 0.01], "seed": [0]}, optimizer="adam", epochs=2)
    return ws


@pytest.fixture(scope="module")
def small_report(sweep_ws) -> Path:
    return cifarlab.report(experiment="small", workspace=sweep_ws)


def _png_ok(path: Path) -> None:
    with Image.open(path) as im:
        im.load()
        assert 300 <= im.width <= 3000 and 200 <= im.height <= 6000, (path.name, im.size)
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.std() > 10, f"{path.name} looks blank (pixel std {pixels.std():.1f})"


def _captions(index: Path) -> dict[str, str]:
    """figure id -> caption text, read back from the page."""
    import html
    import re

    text = index.read_text()
    found = re.findall(r'<figure id="([^"]+)">.*?<figcaption>(.*?)</figcaption>', text, re.S)
    return {k: html.unescape(v) for k, v in found}


def test_report_writes_every_chart_and_a_self_contained_page(small_report):
    out = small_report.parent
    assert small_report.name == "index.html" and out.name == "report-small"
    for name in CORE_CHARTS:
        _png_ok(out / f"{name}.png")
    for model in ("tutorial", "simple"):
        _png_ok(out / f"diagram-{model}.png")
    assert not (out / "sensitivity-lr.png").exists()  # the small sweep does not vary lr
    page = small_report.read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert page.count("data:image/png;base64,") == len(list(out.glob("*.png")))
    assert "Best configuration by validation" in page and "<details" in page
    assert page.count("<summary>tutorial-") + page.count("<summary>simple-") == 8  # every config


def test_captions_match_the_data(small_report, sweep_ws):
    caps = _captions(small_report)
    records = [r for r in cifarlab.results(sweep_ws, "small") if r["status"] == "completed"]
    mean = lambda rs, k: statistics.fmean(r[k] for r in rs)
    cell = {}
    for r in records:
        cell.setdefault((r["model"], r["optimizer"]), []).append(r)
    diffs = [
        (mean(cell[m, "adam"], "test_acc") - mean(cell[m, "sgd"], "test_acc")) * 100
        for m in ("tutorial", "simple")
    ]
    # ties keep the first-seen optimizer (sgd: the oldest runs) as the subject
    adam_wins, sgd_wins = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    winner, loser = ("adam", "sgd") if adam_wins > sgd_wins else ("sgd", "adam")
    signed = diffs if winner == "adam" else [-d for d in diffs]
    expected = (
        f"{winner} beats {loser} on {sum(d > 0 for d in signed)} of 2 models, "
        f"by {statistics.fmean(signed):.1f} points on average."
    )
    assert caps["final-accuracy"].startswith(expected), caps["final-accuracy"]
    best = max(cell.values(), key=lambda rs: mean(rs, "best_val_acc"))
    assert f"{mean(best, 'test_acc') * 100:.1f}%" in caps["final-accuracy"]

    times = sorted(mean(rs, "train_seconds") for rs in cell.values())
    assert f"{times[-1] / times[0]:.1f}x as long" in caps["train-time"]
    onsets = [r["overfit_epoch"] for r in records if r["overfit_epoch"]]
    if onsets:
        assert f"in {len(onsets)} of {len(records)} runs" in caps["loss-curves"]
    else:
        assert caps["loss-curves"].startswith("No run overfit within its 3 epochs")
    points = [(mean(rs, "train_seconds"), mean(rs, "test_acc")) for rs in cell.values()]
    front = aggregate.pareto_front(points)
    verb = "is" if len(front) == 1 else "are"
    assert caps["pareto"].startswith(f"{len(front)} of 4 configurations {verb} on the Pareto front")
    assert caps["confusion"].startswith(f"Run {best_run_id(records)}:")


def best_run_id(records) -> str:
    """The best run by validation, never test: the top run of the top group."""
    groups: dict[tuple, list] = {}
    for r in records:
        groups.setdefault((r["model"], r["optimizer"]), []).append(r)
    top = max(groups.values(), key=lambda rs: statistics.fmean(r["best_val_acc"] for r in rs))
    return max(top, key=lambda r: r["best_val_acc"])["id"]


def test_pareto_front_and_confusion_matrix_helpers():
    points = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (2.0, 40.0), (4.0, 70.0)]
    assert aggregate.pareto_front(points) == [0, 1, 4]
    m = charts.confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    assert m.tolist() == [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]]


def test_sensitivity_chart_when_the_sweep_varies_lr(sweep_ws, tmp_path):
    index = cifarlab.report(experiment="lr", workspace=sweep_ws, output=tmp_path / "lr")
    _png_ok(tmp_path / "lr" / "sensitivity-lr.png")
    records = cifarlab.results(sweep_ws, "lr")
    best = max(records, key=lambda r: r["best_val_acc"])  # chosen by validation, never test
    assert (
        f"validation picks learning rate {best['lr']:g} ({best['test_acc'] * 100:.1f}% test"
        in _captions(index)["sensitivity-lr"]
    )


def test_single_run_report_from_the_cli(sweep_ws, tmp_path, capsys):
    run_id = cifarlab.results(sweep_ws, "small")[0]["id"]
    out = tmp_path / "one"
    assert main(["report", "--run", run_id, "--workspace", str(sweep_ws), "-o", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    # one configuration: its curves and its predictions, nothing to rank or trade off
    comparisons = {"final-accuracy", "train-time", "pareto"}
    for name in CORE_CHARTS:
        assert (out / f"{name}.png").exists() == (name not in comparisons), name
        if name not in comparisons:
            _png_ok(out / f"{name}.png")
    page = (out / "index.html").read_text()
    assert f"Run {run_id}" in page and page.count("<summary>tutorial-") == 1
    assert "<b>Configuration:</b>" in page and "Which model and optimizer win" not in page
    assert f"Inside the run ({run_id})" in page and "<summary>1 run</summary>" in page
    # the captions describe its curves; they ranked it against itself ("widest for X and
    # narrowest for X", "peaks highest", "1 of 1 configurations")
    for ranking in ("highest", "widest", "narrowest", " of 1 configuration"):
        assert ranking not in page, ranking
    assert "peaks at" in page and "At the last epoch the gap is" in page


def test_missing_checkpoint_or_data_skips_best_run_charts_with_a_note(sweep_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(sweep_ws, ws)
    for best in ws.glob("*/best.pt"):
        best.unlink()
    failed = cifarlab.results(ws, "small")[-1]["id"]
    with sqlite3.connect(ws / "runs.db") as conn:  # and one run crashed: listed, not charted
        conn.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (failed,))
    index = cifarlab.report(experiment="small", workspace=ws)
    page = index.read_text()
    assert "skipped: run " in page and "no best.pt checkpoint" in page
    # named with the settings that tell it apart: the chart labels no longer do
    assert re.search(rf"Not in the charts:</b> {failed} \(model=\w+[^)]*\) failed", page)
    assert not (index.parent / "confusion.png").exists()
    _png_ok(index.parent / "final-accuracy.png")


def test_report_errors_are_one_line(sweep_ws, tmp_path, capsys):
    assert main(["report", "--experiment", "nope", "--workspace", str(sweep_ws)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    assert main(["report", "--run", "nope", "--workspace", str(sweep_ws)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["report", "--workspace", str(tmp_path / "empty")]) == 2


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """The figures the chart functions save, in order, to look inside them."""
    saved = []
    save = charts._save
    monkeypatch.setattr(
        charts, "_save", lambda fig, *args: (saved.append(fig), save(fig, *args))[1]
    )
    return saved


def _fake_runs(
    n_models: int = 5, lrs: int = 10, seeds: int = 2, epochs: int = 15, vary: str = "lr"
) -> list[dict]:
    """Completed run records (200 by default) with plausible curves, no training needed."""
    rng = np.random.default_rng(0)
    records = []
    for m in range(n_models):
        for opt in ("sgd", "adam"):
            for k in range(lrs):
                for seed in range(seeds):
                    lr = 10 ** (-4 + k / 3)
                    peak = 0.5 + 0.06 * m + 0.05 * (opt == "adam") - abs(k - 5) * 0.02
                    acc = peak * (1 - np.exp(-np.arange(1, epochs + 1) / 3))
                    acc = acc + rng.normal(0, 0.01, epochs)
                    rows = [
                        {
                            "epoch": e + 1,
                            "test_acc": a,
                            "val_acc": a,
                            "train_acc": a + 0.05 * e / epochs,
                            "gap": 0.05 * e / epochs,
                            "train_loss": 2 - a,
                            "val_loss": 2 - a + 0.01 * e,
                        }
                        for e, a in enumerate(acc)
                    ]
                    config = {
                        "model": f"net{m}",
                        "optimizer": opt,
                        "lr": lr if vary == "lr" else 0.001,
                        "seed": seed,
                        "batch_size": 2 ** (2 + k) if vary == "batch_size" else 64,
                    }
                    records.append(
                        {
                            "id": f"net{m}-{opt}-{k}-{seed}",
                            "status": "completed",
                            "config": config,
                            "epochs": rows,
                            "best_val_acc": max(acc),
                            "test_acc": max(acc),
                            "final_test_acc": acc[-1],
                            "train_seconds": 10.0 * (m + 1) + seed,
                            "images_per_sec": 1000.0,
                            "overfit_epoch": 7 if m > 2 else None,
                        }
                    )
    return records


def test_batch_size_sensitivity(tmp_path):
    groups = aggregate.group(_fake_runs(n_models=2, lrs=7, seeds=1, vary="batch_size"))
    keys = [set(g) for g in groups]
    chart = charts.sensitivity(groups, "batch_size", tmp_path)
    _png_ok(chart.path)
    assert charts.sensitivity(groups, "lr", tmp_path) is None  # lr does not vary here
    assert [set(g) for g in groups] == keys  # the page and the later charts get them as they were
    top = max(groups, key=lambda g: g["best_val_acc_mean"])
    assert chart.caption.startswith(
        f"For {top['model']} · {top['optimizer']}, validation picks batch size "
        f"{top['members'][0]['config']['batch_size']} ({top['test_acc_mean'] * 100:.1f}% test, "
        f"{top['best_val_acc_mean'] * 100:.1f}% validation)"
    ), chart.caption


def test_headline_words_ties_and_ranks_optimizers_on_the_models_they_share(tmp_path):
    from cifarlab.report.html import _optimizer_ranking

    records = [r for r in _fake_runs(n_models=2, lrs=1, seeds=1) if "adam" in r["id"]]
    for r in records:
        r["test_acc"] = 0.5  # two models tied
    caption = charts.final_caption(aggregate.group(records))
    # it said "net1 leads on test accuracy, 0.0 points ahead of net0"
    assert re.search(r"net[01] and net[01] tie on test accuracy\.", caption), caption
    pairs = aggregate.group([r for r in _fake_runs(n_models=2, lrs=1, seeds=1)
                             if r["id"] != "net1-sgd-0-0"])  # sgd on net0 only  # fmt: skip
    cell = {(g["model"], g["optimizer"]): g["test_acc_mean"] for g in pairs}
    ranking = _optimizer_ranking(pairs)
    # it was "adam (mean over 2 models), sgd (mean over 1 model)": the models differed
    assert "(test accuracy of net0, the one model trained with both)" in ranking
    assert "(mean test accuracy over the 2 models)" in _optimizer_ranking(aggregate.group(
        _fake_runs(n_models=2, lrs=1, seeds=1)))  # fmt: skip
    assert ranking.endswith("with one seed per configuration, no spread to judge these leads by.")
    assert f"adam {aggregate.pct(cell['net0', 'adam'])}" in ranking
    assert _optimizer_ranking([g for g in pairs if g["model"] == "net1"]) is None  # adam only


def test_a_workspace_report_says_when_its_runs_differ_in_budget():
    from cifarlab.report.html import _budget_note

    records = _fake_runs(n_models=2, lrs=1, seeds=1)
    assert _budget_note(aggregate.group(records)) == []  # one budget: nothing to say
    for r in records:  # net1's runs: another study's, 2 epochs on 500 images
        other = r["config"]["model"] == "net1"
        r["config"].update(epochs=2 if other else 10, limit_train=500 if other else None)
    (note,) = _budget_note(aggregate.group(records))
    assert note.startswith("These runs differ in epochs (2, 10), limit_train (all, 500): "), note
    for r in records:  # the same budget, on other data
        other = r["config"]["model"] == "net1"
        r["config"].update(epochs=10, limit_train=None, data="/d/tiny" if other else "/d/cifar")
    (note,) = _budget_note(aggregate.group(records))
    assert note.startswith("These runs differ in data (cifar, tiny): "), note
    # labels name the data by its last part: runs record absolute paths
    assert {g["label"].rpartition(" · ")[2] for g in aggregate.group(records)} == {
        "data=cifar", "data=tiny"}  # fmt: skip
    net0 = [r for r in records if r["config"]["model"] == "net0"]
    for i, r in enumerate(net0):  # one configuration on two datasets: two groups now
        r["config"]["data"] = f"/d/{i}"
    assert len(aggregate.group(net0)) == 2 and _budget_note(aggregate.group(net0))


def test_a_sensitivity_caption_picks_by_validation_never_test(tmp_path):
    records = _fake_runs(n_models=1, lrs=2, seeds=1)
    for r in records:  # the higher lr has the better test accuracy, the lower one validation
        high = r["config"]["lr"] == max(q["config"]["lr"] for q in records)
        r["best_val_acc"], r["test_acc"] = (0.40, 0.60) if high else (0.50, 0.55)
    caption = charts.sensitivity(aggregate.group(records), "lr", tmp_path).caption
    low = min(r["config"]["lr"] for r in records)
    # it said "the best learning rate is <high> (60.0%)": the test set chose
    assert f"validation picks learning rate {low:g} (55.0% test, 50.0% validation)" in caption


def test_the_gap_caption_ranks_gaps_by_size_and_a_lone_value_shows_no_sensitivity(tmp_path):
    records = _fake_runs(n_models=2, lrs=1, seeds=1)
    for r in records:  # net0 . sgd: validation well ahead of training (a -4.4 point gap)
        for row in r["epochs"]:
            row["gap"] = -0.044 if r["id"].startswith("net0-sgd") else 0.004
    groups = aggregate.group(records)
    caption = charts.gap_curves(groups, tmp_path).caption
    assert "widest for net0 · sgd (-4.4 points)" in caption
    assert "narrowest for net" in caption and "(+0.4 points)" in caption
    # each model/optimizer at its own single lr: nothing to draw a sensitivity from
    for i, r in enumerate(records):
        r["config"]["lr"] = 0.001 * (i + 1)
    assert charts.sensitivity(aggregate.group(records), "lr", tmp_path) is None


def test_a_preset_run_beside_a_sweep_keeps_short_labels_and_busy_runs_are_flagged(tmp_path):
    records = _fake_runs(n_models=2, lrs=2, seeds=1)
    preset = dict(records[0], id="quick", epochs=records[0]["epochs"])
    preset["config"] = {"model": "speedrun-small", "optimizer": "sgd", "preset": "quick-cpu",
                        "lr": 0.75, "seed": 0, "batch_size": 512, "label_smoothing": 0.2,
                        "whiten": True, "tta": 2}  # fmt: skip
    preset["cpu_contention"], preset["info"] = 1.2, {"threads": 2}
    groups = aggregate.group([*records, preset])
    labels = {g["label"] for g in groups}
    assert "speedrun-small · sgd · preset=quick-cpu" in labels  # not its 19 preset settings
    assert "net0 · adam · lr=0.0001" in labels  # the sweep's own axis still named
    chart = charts.time_bars(groups, tmp_path)
    busy = f"Hatched (1 of {len(groups)}): other work took a quarter or more of the CPU"
    assert busy in chart.caption
    assert aggregate.test_acc_label(groups) == "test accuracy at best-validation epoch"
    for g in groups:
        g["best_val_acc_mean"] = None  # as runs with --val-size 0
    assert aggregate.test_acc_label(groups) == "test accuracy at the last epoch"


def test_two_hundred_runs_aggregate_instead_of_two_hundred_lines(tmp_path):
    records = _fake_runs()
    assert len(records) == 200
    groups = aggregate.group(records)
    assert len(groups) == 100
    curves = charts.accuracy_curves(groups, tmp_path)
    pooled = "Of the 100 configurations, each panel draws one line per model: its best with"
    assert pooled in curves.caption and "(by validation)" in curves.caption
    _png_ok(curves.path)
    time_chart = charts.time_bars(groups, tmp_path)
    _png_ok(time_chart.path)
    with Image.open(time_chart.path) as im:
        assert im.height < 1500  # pooled per model/optimizer, not 100 bars
    for chart in (
        charts.final_accuracy(groups, tmp_path),
        charts.pareto(groups, tmp_path),
        charts.sensitivity(groups, "lr", tmp_path),
        charts.loss_curves(groups, tmp_path),
    ):
        _png_ok(chart.path)
    # recompute: per model/optimizer the lr with the best mean validation, then adam - sgd
    cells: dict[tuple, list] = {}
    for r in records:
        cells.setdefault(
            (r["config"]["model"], r["config"]["optimizer"], r["config"]["lr"]), []
        ).append(r)
    best: dict[tuple, tuple[float, float]] = {}
    for (model, opt, _), rs in cells.items():
        val, test = (statistics.fmean(r[k] for r in rs) for k in ("best_val_acc", "test_acc"))
        if (model, opt) not in best or val > best[model, opt][0]:
            best[model, opt] = (val, test)
    diffs = [(best[f"net{m}", "adam"][1] - best[f"net{m}", "sgd"][1]) * 100 for m in range(5)]
    caption = charts.final_caption(aggregate.best_per(groups, "model", "optimizer"))
    assert caption.startswith(
        f"adam beats sgd on 5 of 5 models, by {statistics.fmean(diffs):.1f} points on average."
    ), caption


# -- the real data and the real browser --------------------------------------------------------


@pytest.mark.real_data
def test_report_of_a_real_cifar10_sweep(real_data, tmp_path_factory):
    ws = tmp_path_factory.mktemp("real") / "ws"
    grid = {"model": ["tutorial"], "optimizer": ["sgd", "adam"], "seed": [0]}
    _sweep(
        ws,
        real_data,
        "real",
        grid,
        epochs=2,
        limit_train=1000,
        val_size=500,
        limit_test=500,
        batch_size=32,
        lr=0.002,
        precision="bf16",  # its rounding moves borderline images: the charts must score alike
    )
    index = cifarlab.report(experiment="real", workspace=ws)
    for name in CORE_CHARTS:
        _png_ok(index.parent / f"{name}.png")
    records = cifarlab.results(ws, "real")
    best = next(r for r in records if r["id"] == best_run_id(records))
    # the per-class chart's overall accuracy is recomputed from best.pt: it matches the run's
    caption = _captions(index)["per-class"]
    assert f"{best['test_acc'] * 100:.1f}% overall on 500 test images" in caption
    from cifarlab.report import predict

    _, (stored,) = load_records(ws, None, best["id"])  # as the report reads it: with its info
    pred = predict.predict_run(stored, ws)  # to the image, not only to the caption's 0.1%
    assert (pred.preds == pred.labels).mean() == pytest.approx(best["test_acc"], abs=1e-9)
    assert best["test_acc"] > 0.15  # learning happened: ten-way chance is 10%
    assert "(airplane)" in caption or "airplane" in index.read_text()  # real class names
    if _browser_available():
        _check_in_browser(index, "real")


def _chromium() -> str | None:
    return next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )


def _browser_available() -> bool:
    try:
        import websocket  # noqa: F401
    except ImportError:
        return False
    return _chromium() is not None


@pytest.fixture
def browser_required():
    if not _browser_available():
        reason = "headless Chromium or websocket-client missing"
        if os.environ.get("CIFARLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CIFARLAB_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def test_page_in_headless_chromium(small_report, browser_required):
    _check_in_browser(small_report, "synthetic")


def _check_in_browser(index: Path, tag: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with Chromium() as page:
        page.open(index.as_uri())
        assert page.eval("Promise.all([...document.images].map(i => i.decode())).then(() => 1)")
        images = page.eval("[...document.images].map(i => [i.alt, i.naturalWidth])")
        assert len(images) >= len(CORE_CHARTS) and all(w > 0 for _, w in images), images
        _check_sorting(page)
        for width in (1280, 400):
            page.resize(width)
            overflow = page.eval("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 0, f"page is {overflow}px wider than a {width}px window"
            widest = page.eval("Math.max(...[...document.images].map(i => i.clientWidth))")
            assert widest <= width
            page.screenshot(ARTIFACTS / f"report-{tag}-{width}.png")
        problems = page.problems()
        assert not problems, problems
        requested = [u for u in page.requested() if not u.startswith(("file:", "data:"))]
        assert not requested, f"the page fetched {requested}"


def _check_sorting(page: Chromium) -> None:
    column = page.eval(
        "[...document.querySelectorAll('#results-table th')].findIndex(h => "
        "h.textContent.startsWith('test@best'))"
    )
    assert column >= 0
    read = (
        f"[...document.querySelectorAll('#results-table tbody tr')]"
        f".map(r => Number(r.cells[{column}].dataset.v))"
    )
    for direction in ("ascending", "descending"):
        page.click(f"#results-table th:nth-child({column + 1})")
        values = page.eval(read)
        assert values == sorted(values, reverse=direction == "descending"), values
        assert (
            page.eval(
                f"document.querySelectorAll('#results-table th')[{column}]"
                ".getAttribute('aria-sort')"
            )
            == direction
        )


class Chromium:
    """Headless Chromium driven over the DevTools protocol: just what these tests need."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
    )

    def __enter__(self) -> Chromium:
        import tempfile

        import websocket

        self.profile = Path(tempfile.mkdtemp(prefix="cifarlab-chromium-"))
        self.proc = subprocess.Popen(
            [_chromium(), *self.FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            target = json.load(resp)
        self.ws = websocket.create_connection(
            target["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
        )
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, (method, message["error"])
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url: str) -> None:
        self.resize(1280)
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def eval(self, expression: str):
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, as a user would."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({selector!r}); "
            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    def resize(self, width: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=width < 600,
        )

    def screenshot(self, path: Path) -> None:
        self.eval("window.scrollTo(0, 0)")
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        import base64

        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        found = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                found.append(f"console.{p['type']}: {p['args']}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                found.append(f"failed load: {p.get('errorText')}")
            elif method == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
                found.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        return found

    def requested(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]


def test_charts_leave_a_notebooks_matplotlib_backend_and_style_alone(
    sweep_ws, tiny_folder, tmp_path
):
    code = """
import sys, matplotlib
matplotlib.use("pdf")  # the user's own choice, before cifarlab is imported
before = {k: v for k, v in matplotlib.rcParams.items() if k != "backend"}
import cifarlab
from cifarlab.data.inspect import preview_grid
from cifarlab.models import create_model
from cifarlab.models.diagram import draw_diagram
out = sys.argv[2]
cifarlab.report(experiment="small", workspace=sys.argv[1], output=out + "/report")
preview_grid(sys.argv[3], out + "/grid.png", per_class=2)
draw_diagram(create_model("tutorial"), out + "/net.png")
after = {k: v for k, v in matplotlib.rcParams.items() if k != "backend"}
changed = sorted(k for k in before if before[k] != after[k])
print(matplotlib.get_backend(), changed)
"""
    args = [sys.executable, "-c", code, str(sweep_ws), str(tmp_path), str(tiny_folder)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["pdf", "[]"]
    _png_ok(tmp_path / "report" / "final-accuracy.png")
    for png in ("grid.png", "net.png"):
        with Image.open(tmp_path / png) as im:
            assert im.format == "PNG" and min(im.size) > 50


def test_best_run_charts_rebuild_the_runs_own_data_and_refuse_a_damaged_checkpoint(
    tiny_archive, tmp_path
):
    ws = tmp_path / "ws"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial",
                            image_size=16, val_size=20, epochs=1, quiet=True)  # fmt: skip
    index = cifarlab.report(run=result.run_id, workspace=ws, output=tmp_path / "r1")
    _png_ok(index.parent / "confusion.png")  # the 16x16 net, fed 16x16 test images
    from cifarlab.models import create_model, summarize_model

    small = summarize_model(create_model("tutorial", image_size=16), (3, 16, 16))
    assert f"{small.flops / 1e6:,.2f} MFLOP per image forward" in index.read_text()

    (ws / result.run_id / "best.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    index = cifarlab.report(run=result.run_id, workspace=ws, output=tmp_path / "r2")
    assert "cannot be loaded safely" in index.read_text()
    assert not (index.parent / "confusion.png").exists()


def test_a_report_of_runs_without_a_validation_split(tiny_archive, tmp_path, capsys):
    # --val-size 0, as the speedrun presets: nothing is selected, the last epoch is reported
    ws = tmp_path / "ws"
    for seed in (0, 1):
        cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial", val_size=0,
                       epochs=2, seed=seed, optimizer="adam", lr=0.003, quiet=True,
                       precision="fp32", tta=2)  # fmt: skip
    assert main(["report", "--workspace", str(ws), "-o", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<b>Configuration:</b> tutorial · adam" in page  # one configuration, two seeds
    assert "no validation split, so no epoch was chosen" in page
    assert "selected nothing: each reports its last epoch" in page
    assert "uses the validation split only" not in page and "gap-curves" not in page
    assert "chosen by final test accuracy" in page
    _png_ok(tmp_path / "r" / "confusion.png")  # from last.pt: there is no best.pt
    # the best-run charts evaluate as the run did at its last epoch: with its TTA
    best = max(cifarlab.results(ws), key=lambda r: r["final_test_acc"])
    overall = _captions(tmp_path / "r" / "index.html")["per-class"]
    assert f"{best['final_test_acc'] * 100:.1f}% overall on" in overall


PROBE_NET = """
import torch
from torch import nn

SEEN = []  # (batch, activation dtype, channels_last input) of every forward


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, image_size=32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        y = self.conv(x)
        SEEN.append((len(x), y.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return self.head(y.mean((2, 3)))
"""


def _forget_predictions(path):
    state = torch.load(path, weights_only=True)
    del state["test_predictions"]
    torch.save(state, path)


def test_best_run_charts_show_what_the_run_predicted_not_a_rescoring(tiny_archive, tmp_path):
    # rescoring on another device (a GPU-trained run reported on a CPU) or with other kernels
    # moved borderline images: the charts must show the predictions the recorded accuracy came from
    from cifarlab.report import predict

    ws = tmp_path / "ws"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial",
                            epochs=2, val_size=20, quiet=True)  # fmt: skip
    _, (record,) = load_records(ws, None, result.run_id)
    path = ws / record["id"] / "best.pt"
    state = torch.load(path, weights_only=True)
    predicted = state["test_predictions"]
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
    torch.save(state, path)  # weights that would rescore every image at confidence 1/3

    pred = predict.predict_run(record, ws)
    assert (pred.preds == pred.labels).mean() == pytest.approx(record["test_acc"])
    assert pred.preds.tolist() == predicted["preds"].tolist()
    assert pred.confidence == pytest.approx(predicted["confidence"].numpy())
    assert not np.allclose(pred.confidence, 1 / 3)


def test_best_run_charts_score_in_the_runs_precision_and_layout(tiny_archive, tmp_path):
    # bf16 rounding moves borderline images: scored in fp32, the charts disagreed with the
    # recorded accuracy by an image or two
    from cifarlab.report import predict

    net = tmp_path / "probe.py"
    net.write_text(PROBE_NET)
    ws = tmp_path / "ws"
    cifarlab.train(data=str(tiny_archive), workspace=str(ws), model=f"{net}:Net", epochs=1,
                   val_size=30, precision="bf16", quiet=True)  # fmt: skip
    _, (record,) = load_records(ws, None, None)  # as the report reads it: with its info
    _forget_predictions(ws / record["id"] / "best.pt")  # a checkpoint from before they were kept
    predict.predict_run(record, ws)
    probe = next(m for n, m in sys.modules.items() if n.startswith("cifarlab_user_probe_"))
    scoring = {seen[1:] for seen in probe.SEEN if seen[0] > 2}  # not the shape check's batch
    assert scoring == {(torch.bfloat16, True)}


def test_best_run_predictions_use_tta_only_where_the_run_did(tiny_archive, tmp_path, monkeypatch):
    from cifarlab.report import predict

    levels = []
    real = predict.tta_logits
    monkeypatch.setattr(
        predict, "tta_logits", lambda m, x, level: levels.append(level) or real(m, x, level)
    )
    ws = tmp_path / "ws"
    for val_size in (0, 20):  # no validation: last.pt, the final epoch; else best.pt
        result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial",
                                val_size=val_size, epochs=2, tta=2, quiet=True)  # fmt: skip
        record = next(r for r in cifarlab.results(ws) if r["id"] == result.run_id)
        levels.clear()
        _forget_predictions(ws / record["id"] / ("best.pt" if val_size else "last.pt"))
        predict.predict_run(record, ws)
        final = val_size == 0 or record["best_epoch"] == 2
        assert set(levels) == {2 if final else 0}, (val_size, record["best_epoch"])


def test_the_page_header_says_where_runs_differ_in_data_and_the_table_shows_cores_taken():
    from cifarlab.report.html import _groups_table, _meta

    info = {"data_source": "/d/cifar.tar.gz", "train_images": 4000, "val_images": 500,
            "test_images": 1000, "device": "cpu", "precision": "bf16", "threads": 2}  # fmt: skip
    records = _fake_runs(n_models=1, lrs=2, seeds=1)
    records[0]["info"], records[1]["info"] = info, {**info, "val_images": 0}
    meta = _meta(records)
    assert "4,000 train / 500 or 0 (by run) validation / 1,000 test images" in meta
    assert "data: cifar.tar.gz" in meta and "device: cpu (bf16)" in meta
    records[0]["cpu_contention"] = 1.25
    table = _groups_table(aggregate.group(records))
    assert "<th" in table and "cores taken" in table and ">1.2<" in table


def test_an_edited_model_file_is_another_model_not_another_seed(tiny_archive, tmp_path):
    net, ws = tmp_path / "net.toml", tmp_path / "ws"
    train = dict(data=str(tiny_archive), workspace=str(ws), model=str(net), epochs=1,
                 val_size=30, precision="fp32", quiet=True)  # fmt: skip
    net.write_text('layers = ["conv 8 3", "relu", "gap", "linear"]\n')
    cifarlab.train(**train)
    net.write_text('layers = ["conv 16 3", "relu", "gap", "linear"]\n')  # the student edits it
    cifarlab.train(**train)
    names = sorted(r["config"]["model"] for r in cifarlab.results(ws))
    assert len(set(names)) == 2 and all(n.startswith(f"{net}@") for n in names)
    shown = {r["model"] for r in cifarlab.results(ws)}  # the plain table's column
    assert len(shown) == 2 and all("@" in n for n in shown), shown
    groups = cifarlab.grouped_results(ws)
    assert [g["n"] for g in groups] == [1, 1]  # two models, not one model with two seeds
    # each version drawn as it trained: the old one from the copy its run kept
    now = hashlib.sha256(net.read_bytes()).hexdigest()[:6]
    (old,) = (r for r in cifarlab.results(ws) if not r["config"]["model"].endswith(now))
    index = cifarlab.report(workspace=ws)
    page = index.read_text()
    assert "has changed" not in page and len(list(index.parent.glob("diagram-*.png"))) == 2
    # without that copy, the old version's net cannot be rebuilt: a note, not a wrong diagram
    (ws / old["id"] / "model.toml").unlink()
    page = cifarlab.report(workspace=ws).read_text()
    assert f"has changed since run {old['id']} trained it, and the run kept no copy" in page


def test_a_report_made_from_another_folder_rebuilds_a_relative_model_file(
    tiny_archive, tmp_path, monkeypatch
):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "net.toml").write_text('layers = ["conv 8 3", "relu", "gap", "linear"]\n')
    monkeypatch.chdir(tmp_path / "proj")
    cifarlab.train(data=str(tiny_archive), workspace="ws", model="net.toml", epochs=1,
                   val_size=30, precision="fp32", quiet=True)  # fmt: skip
    monkeypatch.chdir(tmp_path)  # `net.toml` is not here: the run's own copy is
    index = cifarlab.report(workspace="proj/ws")
    assert "no diagram" not in index.read_text() and list(index.parent.glob("diagram-*.png"))
    assert (index.parent / "confusion.png").is_file()  # the best run's predictions too


def test_a_report_stopped_half_way_leaves_the_earlier_one_whole(
    tiny_archive, tmp_path, monkeypatch
):
    import re

    from cifarlab.report import html

    ws, out = tmp_path / "ws", tmp_path / "report"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial",
                            val_size=20, epochs=1, quiet=True)  # fmt: skip
    index = cifarlab.report(run=result.run_id, workspace=ws, output=out)
    before = index.read_text()
    linked = set(re.findall(r'href="([\w-]+\.png)"', before))
    assert "confusion.png" in linked

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    for step in ("_chart_sections", "render_page"):  # Ctrl-C while drawing, or after it
        with monkeypatch.context() as patch:
            patch.setattr(html, step, ctrl_c)
            with pytest.raises(KeyboardInterrupt):
                cifarlab.report(run=result.run_id, workspace=ws, output=out)
        assert index.read_text() == before
        assert all((out / name).is_file() for name in linked), step
        assert [p.name for p in out.glob(".report-*")] == []  # no staging folder left

    (ws / result.run_id / "best.pt").unlink()  # the next report draws no confusion chart
    cifarlab.report(run=result.run_id, workspace=ws, output=out)
    assert not (out / "confusion.png").exists()  # the earlier one's is removed, not left over


def test_a_stop_while_a_report_is_published_waits_for_the_page(
    tiny_archive, tmp_path, monkeypatch, ctrl_c_raises
):
    import signal

    from cifarlab.report import html

    ws, out = tmp_path / "ws", tmp_path / "report"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial",
                            val_size=20, epochs=1, quiet=True)  # fmt: skip
    old_page = cifarlab.report(run=result.run_id, workspace=ws, output=out).stat().st_ino
    real_replace, renames = os.replace, []

    def ctrl_c_on_first_rename(src, dst):
        if Path(dst).parent == out:  # moved in, not drawn (a diagram is renamed when drawn)
            renames.append(Path(dst).name)
            if len(renames) == 1:  # the first chart moves in; the page is still the old one
                signal.raise_signal(signal.SIGINT)
        real_replace(src, dst)

    monkeypatch.setattr(html.os, "replace", ctrl_c_on_first_rename)
    with pytest.raises(KeyboardInterrupt):
        cifarlab.report(run=result.run_id, workspace=ws, output=out)
    # the stop came after the whole publication: new charts under the new page, not the old
    assert renames[-1] == html.REPORT_MANIFEST and "index.html" in renames
    assert (out / "index.html").stat().st_ino != old_page
    assert [p.name for p in out.glob(".report-*")] == []


def test_a_report_never_writes_over_the_users_own_page_or_pictures(tiny_archive, tmp_path,
                                                                    capsys):  # fmt: skip
    ws = tmp_path / "ws"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial",
                            val_size=20, epochs=1, quiet=True)  # fmt: skip
    for mine in ("index.html", "confusion.png"):  # a name known at once, one known once drawn
        out = tmp_path / f"site-{mine}"
        out.mkdir()
        (out / mine).write_text("mine")
        code = main(["report", "--run", result.run_id, "--workspace", str(ws), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"already holds {mine}" in err, err
        assert "give -o a new or empty folder" in err
        assert [p.name for p in out.iterdir()] == [mine] and (out / mine).read_text() == "mine"


def test_a_report_into_a_folder_of_the_users_own_pictures_leaves_them_alone(tiny_archive, tmp_path):
    ws, out = tmp_path / "ws", tmp_path / "mypics"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), model="tutorial",
                            val_size=20, epochs=1, quiet=True)  # fmt: skip
    out.mkdir()
    (out / "holiday.png").write_bytes(b"\x89PNG mine")
    abandoned = out / ".report-999999999-abc"  # a report killed with kill -9 left it
    abandoned.mkdir()
    for _ in range(2):  # the second report finds the first one's index.html
        cifarlab.report(run=result.run_id, workspace=ws, output=out)
    assert (out / "holiday.png").read_bytes() == b"\x89PNG mine"
    assert not abandoned.exists()


def test_the_gap_chart_blames_augmentation_only_where_runs_had_it(tmp_path):
    records = _fake_runs(n_models=2, lrs=1, seeds=1, epochs=3)
    for record in records:
        record["config"]["augment"] = "none"  # the blog preset's
        for row in record["epochs"]:
            row["gap"] = -0.02  # validation ahead of training
    caption = charts.gap_curves(aggregate.group(records), tmp_path).caption
    assert "running mean while the net still improved; the model does not" in caption, caption
    assert "augmentation" not in caption  # it blamed augmentation the runs never had
    records[0]["config"]["augment"] = "crop-flip"
    caption = charts.gap_curves(aggregate.group(records), tmp_path).caption
    assert "augmentation handicaps the training images" in caption, caption


def test_the_loss_chart_says_when_training_loss_is_against_smoothed_targets(tmp_path):
    records = _fake_runs(n_models=1, lrs=1, seeds=1, epochs=3)
    assert "smoothed" not in charts.loss_curves(aggregate.group(records), tmp_path).caption
    for record in records:
        record["config"]["label_smoothing"] = 0.2  # the presets' (airbench's) value
    caption = charts.loss_curves(aggregate.group(records), tmp_path).caption
    # train 0.9 vs validation 0.6 read as a gap, on two scales
    assert " Training loss is against targets smoothed by 0.2 (--label-smoothing)" in caption
    records[0]["config"]["model"] = "/home/me/nets/my-net.toml"  # runs record the whole path
    records[1]["config"]["label_smoothing"] = 0.0  # and a plain tutorial run beside it
    caption = charts.loss_curves(aggregate.group(records), tmp_path).caption
    assert (" The training loss of 1 of the 2 runs (my-net.toml) is against targets smoothed "
            "by 0.2") in caption  # fmt: skip


def test_an_lr_study_of_one_model_colours_each_line_and_one_epoch_shows_points(
    tmp_path, saved_figures
):
    saved = saved_figures
    groups = aggregate.group(_fake_runs(n_models=1, lrs=6, seeds=2, epochs=1))
    charts.accuracy_curves(groups, tmp_path)
    charts.loss_curves(groups, tmp_path)
    accuracy, loss = saved
    for fig in saved:
        panel = fig.axes[0]
        lines = [line for line in panel.get_lines() if line.get_label()[0] != "_"]
        colours = {line.get_color() for line in lines}
        assert len(lines) == 6 and len(colours) == 6, "six lrs of one model, all one blue"
        assert all(line.get_marker() not in (None, "None", "") for line in lines)  # blank chart
        assert list(panel.get_xticks()) == [1]  # not 0.96, 0.98, 1.00...
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        inside = fig.bbox
        assert legend.x0 >= inside.x0 and legend.x1 <= inside.x1, "legend cut at both ends"
    bars = [c for c in accuracy.axes[0].containers]  # two seeds: their spread at one epoch
    assert bars, "a band over one epoch has no width; the spread went unseen"
    charts.pareto(groups, tmp_path)
    ax = saved[-1].axes[0]
    dots = {tuple(c.get_facecolor()[0]) for c in ax.collections if c.get_sizes()[0] == 55}
    assert len(dots) == 6, "twelve dots in one blue, a legend naming only net0"
    legend = ax.get_legend() or saved[-1].legends[0]  # below the plot for long labels
    assert "net0 · lr=0.0001" in [t.get_text() for t in legend.get_texts()]


def test_a_model_keeps_its_colour_in_a_chart_that_leaves_another_out(tmp_path, saved_figures):
    records = _fake_runs(n_models=3, lrs=1, seeds=1, epochs=3)
    for r in records:
        if r["config"]["model"] == "net0":  # trained with --val-size 0: no gap to draw
            r["epochs"] = [{k: v for k, v in e.items() if k not in ("val_acc", "gap")}
                           for e in r["epochs"]]  # fmt: skip
    groups = aggregate.group(records)
    colours = charts.model_colours(groups)
    charts.gap_curves(groups, tmp_path)
    lines = saved_figures[-1].axes[0].get_lines()
    drawn = {line.get_label().split(" · ")[0]: line.get_color() for line in lines}
    assert "net0" not in drawn and drawn["net1"] == colours["net1"]  # orange, not blue
    assert drawn["net2"] == colours["net2"]


def test_the_headline_shows_the_validation_score_that_ranks_the_models():
    from cifarlab.report.html import _headline

    records = _fake_runs(n_models=2, lrs=1, seeds=1)
    for r in records:  # net1 ahead on validation, behind on test
        ahead = r["config"]["model"] == "net1"
        r["best_val_acc"], r["test_acc"] = (0.6, 0.5) if ahead else (0.5, 0.55)
    page = _headline(aggregate.group(records), records)
    # "1. net1 50.0%, 2. net0 55.0%" read as a sorting bug
    assert "1. net1 60.0% validation (50.0% test), 2. net0 50.0% validation (55.0% test)" in page


def test_model_files_are_shown_by_their_name_unless_two_share_it():
    from cifarlab.model_files import short_model_names

    shown = short_model_names(
        ["/home/me/nets/net.toml", "/home/me/nets/net.toml@a24e21", "/x/my.py:Net", "tutorial",
         "/a/twin.toml", "/b/twin.toml"]
    )  # fmt: skip
    assert shown == {
        "/home/me/nets/net.toml": "net.toml",
        "/home/me/nets/net.toml@a24e21": "net.toml@a24e21",
        "/x/my.py:Net": "my.py:Net",
        "tutorial": "tutorial",
        "/a/twin.toml": "/a/twin.toml",  # two files of one name: the paths tell them apart
        "/b/twin.toml": "/b/twin.toml",
    }
    records = _fake_runs(n_models=2, lrs=1, seeds=1)
    for r in records:  # runs record a model file by its absolute path
        r["config"]["model"] = f"/tmp/review/nets/{r['config']['model']}.toml"
    groups = aggregate.group(records)
    labels = {g["label"] for g in groups}
    assert "net0.toml · sgd" in labels, labels  # the bar chart's labels overlapped
    from cifarlab.report.html import _groups_table

    table = _groups_table(groups)  # the page's Results table kept the whole path
    assert ">net0.toml<" in table and "/tmp/review" not in table, table


def test_a_sensitivity_caption_says_what_else_its_points_differ_in(tmp_path):
    records = _fake_runs(n_models=1, lrs=3, seeds=1)
    for i, r in enumerate(records):  # a workspace's runs: other budgets beside the lr
        r["config"]["batch_size"] = 32 if i % 2 else 64
        r["config"]["epochs"] = 2 if i % 2 else 8
    caption = charts.sensitivity(aggregate.group(records), "lr", tmp_path).caption
    # "the best learning rate is 0.001; 0.03 is 32 points lower", across 8- and 2-epoch runs
    assert "Each point is the best configuration at that learning rate (by validation), " in caption
    assert "whatever its batch_size, epochs: points can differ in those too." in caption
    lone = charts.sensitivity(
        aggregate.group(_fake_runs(n_models=1, lrs=3, seeds=1)), "lr", tmp_path
    )
    assert "whatever" not in lone.caption  # only the lr varies: nothing else to say


def test_validation_loss_marks_the_epochs_eval_every_scored(tmp_path, saved_figures):
    saved = saved_figures
    records = _fake_runs(n_models=1, lrs=1, seeds=1, epochs=6)
    for r in records:  # --eval-every 3: validation scored in epochs 3 and 6 only
        for row in r["epochs"]:
            if row["epoch"] % 3:
                row.update(val_loss=None, val_acc=None, test_acc=None)
    charts.loss_curves(aggregate.group(records), tmp_path)
    dashed = [line for line in saved[0].axes[0].get_lines() if line.get_linestyle() == "--"]
    # the dashes bridged epochs 4-5 with no sign that nothing was measured there
    assert dashed and all(line.get_marker() == "s" for line in dashed)
    assert list(dashed[0].get_xdata()) == [3, 6]


def test_captions_say_whether_seeds_can_tell_a_lead_from_noise():
    def runs(accs: dict[str, list[float]], optimizer: str = "adam") -> list[dict]:
        records = []
        for model, values in accs.items():
            for seed, acc in enumerate(values):
                (r,) = _fake_runs(n_models=1, lrs=1, seeds=1)[:1]
                r.update(id=f"{model}-{optimizer}-{seed}", test_acc=acc, best_val_acc=acc)
                r["config"].update(model=model, seed=seed, optimizer=optimizer)
                records.append(r)
        return records

    def caption(records: list[dict]) -> str:
        return charts.final_caption(
            aggregate.best_per(aggregate.group(records), "model", "optimizer")
        )

    # one seed each, one image in 500 apart: it said "tutorial leads on test accuracy"
    assert "with one seed each, no spread to judge it by" in caption(
        runs({"tutorial": [0.302], "simple": [0.300]})
    )
    noisy = {"tutorial": [0.30, 0.36, 0.33], "simple": [0.31, 0.34, 0.29]}
    assert "within seed noise" in caption(runs(noisy))
    apart = {"tutorial": [0.50, 0.51, 0.52], "simple": [0.30, 0.31, 0.29]}
    assert "beyond seed noise" in caption(runs(apart))
    # adam vs adamw at weight decay 0 (one algorithm): "adam beats adamw on 2 of 2 models"
    same = runs({"tutorial": [0.26, 0.27], "simple": [0.25, 0.27]}, "adam")
    same += runs({"tutorial": [0.25, 0.265], "simple": [0.255, 0.26]}, "adamw")
    text = caption(same)
    assert "adam's lead is beyond seed noise (95% Welch interval) on none of them." in text
    # a clear lead of the runner-up is its own, not the leader's
    mixed = runs({"tutorial": [0.95, 0.45], "simple": [0.30, 0.31]}, "adam")
    mixed += runs({"tutorial": [0.50, 0.51], "simple": [0.35, 0.36]}, "sgd")
    text = caption(mixed)
    assert "on none of them; sgd is clearly ahead on 1." in text, text
    from cifarlab.report.html import _optimizer_ranking

    ranking = _optimizer_ranking(aggregate.best_per(aggregate.group(mixed), "model", "optimizer"))
    assert ranking.endswith("on no model is adam's lead over sgd beyond seed noise."), ranking


def test_the_curves_caption_describes_the_configuration_validation_picks(tmp_path):
    records = _fake_runs(n_models=2, lrs=1, seeds=1)
    for r in records:  # net1 peaks higher on test; validation prefers net0
        net0 = r["config"]["model"] == "net0"
        r["best_val_acc"] = 0.9 if net0 else 0.5
    caption = charts.accuracy_curves(aggregate.group(records), tmp_path).caption
    # it named net1, the configuration whose test curve peaked highest
    assert caption.startswith("Best by validation: net0 · "), caption


def test_a_report_names_why_runs_are_missing_a_dead_one_as_stopped(tiny_archive, tmp_path):
    import os
    import sqlite3
    import warnings

    ws = tmp_path / "ws"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), epochs=1,
                                optimizer="sgd", lr=10000.0, val_size=30, quiet=True)  # fmt: skip
    page = cifarlab.report(workspace=ws, run=result.run_id).read_text()
    # it said only "no completed runs yet"
    assert f"{result.run_id} diverged: " in page and "lower --lr" in page, page
    with sqlite3.connect(ws / "runs.db") as db:  # as a run whose process was killed (-9)
        db.execute("UPDATE runs SET status = 'running', owner = ? WHERE id = ?",
                   (f"{os.uname().nodename}:999999999:1", result.run_id))  # fmt: skip
    page = cifarlab.report(workspace=ws).read_text()
    assert f"{result.run_id} stopped: its process ended unrecorded" in page  # "running"


def test_an_experiment_that_sets_budgets_per_model_says_so_in_labels_and_note():
    from cifarlab.report.html import _budget_note, _groups_table

    records = [r for r in _fake_runs(n_models=2, lrs=1, seeds=1) if "adam" in r["id"]]
    for r in records:  # as an experiment file's [[include]] entries may set them
        r["config"]["epochs"] = 4 if r["config"]["model"] == "net0" else 2
    groups = aggregate.group(records)
    # labels read "net0 · adam" and "net1 · adam", a fair race to the eye
    assert sorted(g["label"] for g in groups) == [
        "net0 · adam · epochs=4",
        "net1 · adam · epochs=2",
    ]
    (note,) = _budget_note(groups, whole=False)  # only the whole workspace's page said it
    assert note.startswith("These runs differ in epochs (2, 4)") and "--experiment" not in note
    assert ">epochs</th>" in _groups_table(groups)


def test_curves_fade_where_seeds_that_stopped_early_leave_the_mean(tmp_path, saved_figures):
    saved = saved_figures
    records = _fake_runs(n_models=1, lrs=1, seeds=2, epochs=6)
    for r in records:
        if r["config"]["seed"] == 1:  # stopped early after epoch 3, as --early-stop does
            r["epochs"] = r["epochs"][:3]
    groups = [g for g in aggregate.group(records) if g["optimizer"] == "adam"]
    chart = charts.accuracy_curves(groups, tmp_path)
    # the line jumped from the pair's mean to one seed's and still read as a 2-seed mean
    assert "Where a line fades, some of its seeds had stopped early" in chart.caption
    lines = [line for line in saved[0].axes[0].get_lines() if list(line.get_xdata())]
    solid, faded = lines[0], lines[1]
    assert list(solid.get_xdata()) == [1, 2, 3] and solid.get_alpha() is None
    assert list(faded.get_xdata()) == [3, 4, 5, 6] and faded.get_alpha() == 0.35
    full = _fake_runs(n_models=1, lrs=1, seeds=2, epochs=6)
    caption = charts.accuracy_curves(aggregate.group(full), tmp_path).caption
    assert "fades" not in caption


def test_the_lr_chart_names_the_learning_rates_that_diverged(tmp_path):
    records = _fake_runs(n_models=1, lrs=3, seeds=1)
    records[0]["model"] = "net0"
    diverged = {**records[0], "id": "x", "status": "diverged", "config": {
        **records[0]["config"], "lr": 0.1, "optimizer": "adam"}}  # fmt: skip
    chart = charts.sensitivity(aggregate.group(records), "lr", tmp_path, [diverged])
    # the chart ended at the last completed lr and its caption said nothing of 0.1
    assert chart.caption.endswith("Diverged, so not drawn: learning rate 0.1 (net0 · adam).")
    drawn_lr = records[1]["config"]["lr"]  # one seed diverged where another completed: drawn
    also = {**diverged, "config": {**diverged["config"], "lr": drawn_lr}}
    also["config"]["optimizer"] = records[1]["config"]["optimizer"]
    chart = charts.sensitivity(aggregate.group(records), "lr", tmp_path, [diverged, also])
    assert chart.caption.endswith("Diverged, so not drawn: learning rate 0.1 (net0 · adam).")


def test_the_sensitivity_chart_says_its_bars_are_std_over_seeds(tmp_path):
    one = charts.sensitivity(
        aggregate.group(_fake_runs(n_models=1, lrs=3, seeds=1)), "lr", tmp_path
    )
    two = charts.sensitivity(
        aggregate.group(_fake_runs(n_models=1, lrs=3, seeds=2)), "lr", tmp_path
    )
    assert "bars" not in one.title  # one seed: no bars drawn
    assert two.title.endswith("(bars: ± std over seeds)")  # unlabelled beside min–max bands


def test_long_labels_move_the_pareto_legend_below_the_plot(tmp_path, saved_figures):
    saved = saved_figures
    records = _fake_runs(n_models=2, lrs=1, seeds=1)
    charts.pareto(aggregate.group(records), tmp_path)
    for r in records:
        r["config"]["model"] += "-a-long-model-file-name.toml"
    charts.pareto(aggregate.group(records), tmp_path)
    short, long = saved
    assert short.axes[0].get_legend() is not None and not short.legends
    # at the side, long names squeezed the plot to 40% of the figure's width
    assert long.axes[0].get_legend() is None and long.legends


def test_captions_and_headline_name_budgets_and_noise_in_plain_words(tmp_path):
    from cifarlab.report.html import _headline

    records = [r for r in _fake_runs(n_models=2, lrs=1, seeds=1) if "adam" in r["id"]]
    for r in records:  # net0 trained 4 epochs, net1 2: an experiment may set them per model
        r["config"]["epochs"] = 4 if r["config"]["model"] == "net0" else 2
    groups = aggregate.group(records)
    caption = charts.final_accuracy(groups, tmp_path).caption
    # "On test accuracy net1 is 6.0 points ahead of net0": 2 epochs against 4, unsaid
    assert "net1 · adam · epochs=2 is" in caption and "ahead of net0 · adam · epochs=4" in caption
    headline = _headline(groups, records)
    assert "one seed each: no spread to judge the order of the first two by" in headline
    pareto = charts.pareto(groups, tmp_path).caption
    assert pareto.startswith("2 of 2 configurations are on the Pareto front, from net0 · adam · "
                             "epochs=4 (44.9% in 10.0 s) to net1 · adam · epochs=2")  # fmt: skip


def test_final_accuracy_labels_each_bar_s_budget_one_setting_a_line(tmp_path, saved_figures):
    records = _fake_runs(n_models=2, lrs=1, seeds=1)
    for r in records:  # net0's adam run saw 5,000 images, every other run 2,000
        big = r["config"]["model"] == "net0" and r["config"]["optimizer"] == "adam"
        r["config"] |= {"limit_train": 5000 if big else 2000, "epochs": 2}
    records[-1]["config"]["epochs"] = 3  # and net1's adam run trained 3 epochs
    chart = charts.final_accuracy(aggregate.group(records), tmp_path)
    ticks = [t.get_text() for t in saved_figures[-1].axes[0].get_xticklabels()]
    # it read "net0\nlimit_train=2000" under both bars, side by side with net1's settings
    assert ticks == [
        "net0\nlimit_train=2000 | 5000\nepochs=2",
        "net1\nlimit_train=2000\nepochs=2 | 3",
    ]
    assert chart.caption.endswith("its label gives their values left to right.")


def test_a_report_loads_a_versioned_run_s_data_from_its_own_path(tiny_archive, tmp_path):
    from cifarlab.experiments.store import ResultsStore
    from cifarlab.report.predict import predict_run

    ws = tmp_path / "ws"
    result = cifarlab.train(data=str(tiny_archive), workspace=str(ws), epochs=1, val_size=30,
                            quiet=True)  # fmt: skip
    with ResultsStore(ws / "runs.db") as store:
        run = store.run(result.run_id)
    path = run["config"]["data"]
    versioned = {**run, "data_path": path, "config": {**run["config"], "data": f"{path}@abcdef"}}
    # "data path '...tiny.tar.gz@abcdef' does not exist": best-run charts skipped
    assert len(predict_run(versioned, ws).labels) == 60


def test_every_run_table_shows_the_budgets_runs_differ_in_and_labels_say_off(tmp_path):
    from cifarlab.report.html import _runs_details

    records = _fake_runs(n_models=1, lrs=1, seeds=2)
    for r in records:
        r.update(model=r["config"]["model"], optimizer=r["config"]["optimizer"], lr=0.001,
                 batch_size=64, seed=r["config"]["seed"], epochs_done=15, best_epoch=3,
                 overfit_epoch=None, train_seconds=1.0, info={})  # fmt: skip
        r["config"].update(limit_train=1000 if r["config"]["seed"] else None, val_size=500)
    table = _runs_details(records)
    # the page's note named limit_train; the table of every run did not show it
    assert ">limit_train</th>" in table and ">1000<" in table
    assert aggregate.short(None, "early_stop") == "off" and aggregate.short(None) == "-"


@pytest.mark.parametrize("k", [10, 40, 100])
def test_class_charts_grow_with_the_classes_so_their_names_stay_readable(tmp_path, k):
    from cifarlab.report import charts
    from cifarlab.report.predict import Predictions

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(k), 5)
    preds = np.where(rng.random(len(labels)) < 0.6, labels, rng.integers(0, k, len(labels)))
    names = [f"class {i} rotated 90 degrees" for i in range(k)]
    pred = Predictions("r-1", names, labels, preds, rng.random(len(labels)),
                       rng.integers(0, 255, (len(labels), 32, 32, 3), dtype=np.uint8))  # fmt: skip
    confusion = Image.open(charts.confusion(pred, tmp_path).path)
    per_class = Image.open(charts.per_class(pred, tmp_path, (0.2, 0.4, 0.8)).path)
    dpi = confusion.info["dpi"][0]
    # at least 0.18 in (a 6-point name and its gap) for each class's row
    assert confusion.height >= 0.18 * k * dpi
    assert per_class.height >= 0.19 * k * dpi  # a bar each, one above another
    assert charts._short(names[0]) == "class 0 rotat…" and charts._short("cat") == "cat"


def test_an_unbalanced_test_set_is_named_beside_the_accuracy_it_flatters(tmp_path):
    from cifarlab.report import charts
    from cifarlab.report.predict import Predictions

    labels = np.array([0] * 87 + [1] * 10 + [2] * 3)  # 87% one class
    preds = np.zeros_like(labels)  # the net answers "plane" for everything
    pred = Predictions("r-1", ["plane", "truck", "ship"], labels, preds, np.ones(100),
                       np.zeros((100, 32, 32, 3), np.uint8))  # fmt: skip
    caption = charts.per_class(pred, tmp_path, (0.2, 0.4, 0.8)).caption
    assert "87.0% overall" in caption
    assert ("The test set is unbalanced: always answering plane would score 87.0%; the mean "
            "of the per-class accuracies (balanced accuracy) is 33.3%.") in caption  # fmt: skip
    images = np.zeros((15, 32, 32, 3), np.uint8)
    balanced = Predictions("r-1", ["a", "b", "c"], np.repeat(np.arange(3), 5),
                           np.zeros(15, int), np.ones(15), images)  # fmt: skip
    assert "unbalanced" not in charts.per_class(balanced, tmp_path, (0.2, 0.4, 0.8)).caption
