"""Reading results back: run records as plain rows, and their table/CSV/JSON forms."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError
from cifarlab.experiments.store import ResultsStore

RESULT_FIELDS = (
    "id", "name", "model", "optimizer", "lr", "batch_size", "epochs", "seed", "status",
    "epochs_done", "best_epoch", "best_val_acc", "test_acc", "final_val_acc", "final_test_acc",
    "overfit_epoch", "stopped_epoch", "train_seconds", "images_per_sec", "started_at",
    "finished_at", "error",
)  # fmt: skip

TABLE_COLUMNS = (
    ("id", "run", "{}"),
    ("model", "model", "{}"),
    ("optimizer", "opt", "{}"),
    ("lr", "lr", "{:g}"),
    ("batch_size", "batch", "{}"),
    ("epochs_done", "epochs", "{:.0f}"),
    ("status", "status", "{}"),
    ("best_val_acc", "best val", "{:.2%}"),
    ("test_acc", "test@best", "{:.2%}"),
    ("final_test_acc", "final test", "{:.2%}"),
    ("train_seconds", "time (s)", "{:.1f}"),
    ("images_per_sec", "img/s", "{:,.0f}"),
)


def results(workspace: str | Path = "cifarlab-runs") -> list[dict[str, Any]]:
    """Every run of the workspace as a flat record (accuracies are fractions in [0, 1])."""
    db = Path(workspace) / "runs.db"
    if not db.is_file():
        raise CifarlabError(
            f"no results in {str(workspace)!r} (no runs.db there); train a model first "
            "or pass --workspace DIR"
        )
    with ResultsStore(db) as store:
        return [
            {k: run.get(k) for k in RESULT_FIELDS} | {"config": run["config"]}
            for run in store.runs()
        ]


def format_results(records: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    return format_table(records)


def format_table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no runs yet"
    rows = [[h for _, h, _ in TABLE_COLUMNS]]
    for r in records:
        rows.append(["-" if r.get(k) is None else f.format(r[k]) for k, _, f in TABLE_COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
