"""ResultsStore: the workspace's SQLite database of runs and their per-epoch metrics, and
the workspace folder that holds it (``check_workspace``, ``prepare_workspace``).

One file (``runs.db``) per workspace, in WAL mode so readers never block the
writer and several processes can append safely; every write is its own
transaction, so a crash loses at most the row being written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError, as_path
from cifarlab.process import current_owner, refuse_if_owned

WORKSPACE = "cifarlab-runs"  # where runs are kept when no --workspace is given
DATABASE = "runs.db"  # the results database, in its workspace


def database_path(workspace: str | os.PathLike) -> Path:
    """The results database of ``workspace``."""
    return Path(workspace) / DATABASE


FINISHED = ("completed", "diverged")  # settled: running them again gives the same answer
SCHEMA_VERSION = 3  # 2: CPU share columns (others_cpu, steal_cpu, cpu_contention); 3: owner

EPOCH_METRICS = (
    "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
    "gap", "lr", "epoch_seconds", "eval_seconds", "images_per_sec", "others_cpu", "steal_cpu",
)  # fmt: skip

RUN_SUMMARY = (
    "best_epoch", "best_val_acc", "test_acc", "final_val_acc", "final_test_acc",
    "final_train_acc", "epochs_done", "train_seconds", "images_per_sec", "overfit_epoch",
    "stopped_epoch", "cpu_contention",
)  # fmt: skip

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    model TEXT, optimizer TEXT, lr REAL, batch_size INTEGER, epochs INTEGER, seed INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'diverged')),
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    {", ".join(f"{c} REAL" for c in RUN_SUMMARY)},
    info TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (config_hash);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    {", ".join(f"{c} REAL" for c in EPOCH_METRICS)},
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    definition TEXT NOT NULL,
    config_hashes TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


class ResultsStore:
    """Runs and epoch rows of one workspace database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self._refuse_another_programs()  # before WAL and our tables change its file
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:  # not a database, or a damaged one
            self.conn.close()
            if isinstance(err, sqlite3.OperationalError):  # locked, disk full: not the file's fault
                raise
            raise CifarlabError(
                f"'{self.path}' is not a readable cifarlab results database ({err}); "
                "move it away or use another --workspace"
            ) from None
        if self.conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._add_new_columns()  # once per older workspace, not on every open
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _refuse_another_programs(self) -> None:
        """A database of other tables (another program's runs.db) is not ours to change."""
        tables = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            return  # new
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(runs)")}
        if not {"id", "config_hash", "config", "status"} <= columns:
            self.conn.close()
            raise CifarlabError(
                f"'{self.path}' is not a cifarlab results database (it holds other tables); "
                "move it away or use another --workspace"
            )

    def _add_new_columns(self) -> None:
        """A workspace from an older cifarlab gets the metric columns added since (as NULL)."""
        added = [("runs", c, "REAL") for c in RUN_SUMMARY] + [("runs", "owner", "TEXT")]
        added += [("epochs", c, "REAL") for c in EPOCH_METRICS]
        for table in ("runs", "epochs"):
            have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            for col, kind in ((c, k) for t, c, k in added if t == table):
                if col not in have:
                    try:
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
                    except sqlite3.OperationalError as err:  # another process added it first
                        if "duplicate column" not in str(err):
                            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------
    def new_run_id(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... whichever is not taken yet."""
        taken = {
            r[0] for r in self.conn.execute("SELECT id FROM runs WHERE id LIKE ?", (base + "%",))
        }
        n = 1
        while (run_id := base if n == 1 else f"{base}-{n}") in taken:
            n += 1
        return run_id

    def start_run(self, base: str, name: str, config: dict[str, Any], config_hash: str) -> str:
        """Record a new running run under ``base`` (or ``base-2``...) and return its id; two
        processes starting the same settings at once each get an id of their own."""
        while True:
            run_id = self.new_run_id(base)
            try:
                self.create_run(run_id, name, config, config_hash)
                return run_id
            except sqlite3.IntegrityError:  # another process took that id in between
                continue

    def create_run(self, run_id: str, name: str, config: dict[str, Any], config_hash: str) -> None:
        self.conn.execute(
            "INSERT INTO runs (id, name, config_hash, config, model, optimizer, lr, batch_size,"
            " epochs, seed, status, started_at, owner)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,'running',?,?)",
            (
                run_id, name, config_hash, json.dumps(config, sort_keys=True),
                config.get("model"), config.get("optimizer"), config.get("lr"),
                config.get("batch_size"), config.get("epochs"), config.get("seed"), time.time(),
                current_owner(),
            ),
        )  # fmt: skip

    def reopen_run(self, run_id: str, keep_epochs: int) -> None:
        """Claim a run for a resume: mark it running by this process and drop the epoch rows
        its checkpoint lacks. The look at its owner and the claim are one write transaction:
        two resumes started together both passed the look (made before their minutes of data
        loading) and trained one run into the same folder and rows."""
        self.conn.execute("BEGIN IMMEDIATE")  # no other writer between the look and the claim
        try:
            row = self.conn.execute("SELECT status, owner FROM runs WHERE id = ?", (run_id,))
            refuse_if_owned(run_id, *row.fetchone())
            self.conn.execute(
                "DELETE FROM epochs WHERE run_id = ? AND epoch > ?", (run_id, keep_epochs)
            )
            self.conn.execute(
                "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL, owner = ?,"
                " epochs_done = ? WHERE id = ?",
                (current_owner(), keep_epochs, run_id),
            )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def add_epoch(self, run_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        """Insert (or replace, after a resume) the row of one finished epoch."""
        cols = ["run_id", "epoch", *EPOCH_METRICS]
        values = [run_id, epoch, *(metrics.get(c) for c in EPOCH_METRICS)]
        marks = ", ".join("?" * len(cols))
        sql = f"INSERT OR REPLACE INTO epochs ({', '.join(cols)}) VALUES ({marks})"
        self.conn.execute(sql, values)
        # counted as it goes: a run killed (-9) before its summary showed 0 epochs done
        self.conn.execute("UPDATE runs SET epochs_done = ? WHERE id = ?", (epoch, run_id))

    def drop_epochs(self, run_id: str) -> None:
        """Forget a run's epoch rows (a run trained elsewhere brings its own)."""
        self.conn.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))

    def finish_run(
        self,
        run_id: str,
        status: str,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        summary = summary or {}
        sets = ["status = ?", "finished_at = ?", "error = ?", "info = ?"]
        values: list[Any] = [status, time.time(), error, json.dumps(info) if info else None]
        for col in RUN_SUMMARY:
            if col in summary:
                sets.append(f"{col} = ?")
                values.append(summary[col])
        self.conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", [*values, run_id])

    def fail_running(self, owner: str, error: str) -> None:
        """Record as failed what ``owner`` (process.current_owner) left running: a run
        stopped before its own bookkeeping could record it."""
        self.conn.execute(
            "UPDATE runs SET status = 'failed', finished_at = ?, error = ? "
            "WHERE status = 'running' AND owner = ?",
            (time.time(), error, owner),
        )

    def save_experiment(
        self, name: str, fingerprint: str, definition: dict[str, Any], hashes: list[str]
    ) -> None:
        """Record (or replace) an experiment: a named set of run configurations."""
        self.conn.execute(
            "INSERT OR REPLACE INTO experiments VALUES (?, ?, ?, ?, ?)",
            (name, fingerprint, json.dumps(definition), json.dumps(hashes), time.time()),
        )

    # -- reading -----------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, as plain dicts with the config parsed."""
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started_at, id").fetchall()
        return [_run_record(r, self.path) for r in rows]

    def latest_with_hash(self, config_hash: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT * FROM runs WHERE config_hash = ? ORDER BY started_at DESC LIMIT 1",
            (config_hash,),
        ).fetchone()
        return _run_record(row, self.path) if row else None

    def standing_run(self, config_hash: str) -> dict[str, Any] | None:
        """The run that stands for these settings in an experiment: the latest finished one
        (completed or diverged), else the latest. A later run of the same settings that
        failed or is still running never hides a finished result, unless it trained on
        other data or code (edited since): the finished one then answers for what is gone."""
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE config_hash = ? ORDER BY started_at DESC", (config_hash,)
        ).fetchall()
        if not rows:
            return None
        latest = _run_record(rows[0], self.path)
        finished = next((_run_record(r, self.path) for r in rows if r["status"] in FINISHED), None)
        return latest if finished is None or _edited_between(finished, latest) else finished

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run_record(row, self.path) if row else None

    def experiment(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM experiments WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        record["definition"] = json.loads(record["definition"])
        record["config_hashes"] = json.loads(record["config_hashes"])
        return record

    def experiment_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM experiments ORDER BY name")]

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]


# summary columns that count epochs: stored as REAL with the rest, read back as integers
_EPOCH_COUNTS = ("best_epoch", "epochs_done", "overfit_epoch", "stopped_epoch")


# Settings added after runs were recorded, with the value those older runs trained with: a
# record without the key grouped apart from one with it (eval_every None vs 1: n=1 and n=1).
ADDED_LATER = {"eval_every": 1}


def _edited_between(earlier: dict[str, Any], later: dict[str, Any]) -> bool:
    """Whether ``later`` trained on other data or model code than ``earlier`` (runs that
    recorded neither, e.g. killed before they started, tell nothing)."""
    a, b = earlier.get("info") or {}, later.get("info") or {}
    if "data_content" not in a or "data_content" not in b:
        return False
    code_a, code_b = a.get("model_code_sha256"), b.get("model_code_sha256")
    return a["data_content"] != b["data_content"] or bool(code_a and code_b and code_a != code_b)


def summary_of(record: dict[str, Any]) -> dict[str, Any]:
    """A run record's summary columns (what ``finish_run`` takes)."""
    return {key: record.get(key) for key in RUN_SUMMARY}


def _run_record(row: sqlite3.Row, db: Path) -> dict[str, Any]:
    record = dict(row)
    try:
        config = json.loads(record["config"])
        info = json.loads(record["info"]) if record["info"] else {}
        if not isinstance(config, dict) or not isinstance(info, dict):
            raise ValueError("not a run's settings")
        if any(not isinstance(record[k], int | float | None) for k in RUN_SUMMARY):
            raise ValueError("a score that is not a number")
        for key in _EPOCH_COUNTS:
            if record[key] is not None:
                record[key] = int(record[key])  # inf: OverflowError
    except (ValueError, TypeError, OverflowError):  # edited by hand, or a damaged disk: one
        run = record["id"]  # line, not a traceback from every command that reads the workspace
        raise CifarlabError(
            f"run {run}'s row in {str(db)!r} is damaged; restore it from a copy, or drop the "
            f"run: sqlite3 '{db}' \"PRAGMA foreign_keys=ON; DELETE FROM runs WHERE id = '{run}'\""
        ) from None
    record["config"] = {**ADDED_LATER, **config}
    record["info"] = info
    return record


def check_workspace(path: str | os.PathLike) -> Path:
    """The workspace path, refused now if it could never be written; nothing is created."""
    workspace = as_path(path, "workspace")
    try:
        if workspace.exists() and not workspace.is_dir():
            raise CifarlabError(
                f"workspace {str(workspace)!r} is a file, not a folder; pass --workspace DIR"
            )
        refuse_database_folder(workspace)
        parents = (workspace.absolute(), *workspace.absolute().parents)
        existing = next(p for p in parents if p.exists())
    except OSError as err:  # a name too long, a loop of links: refused now, not after the data
        raise _not_writable(workspace, err.strerror or err) from None
    if not existing.is_dir():
        raise _not_writable(workspace, "Not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _not_writable(workspace, "Permission denied")
    return workspace


def refuse_database_folder(workspace: Path) -> None:
    """A folder where the results database goes read as "no runs.db there" (results) or
    failed deep in sqlite (train)."""
    if database_path(workspace).is_dir():
        raise CifarlabError(
            f"workspace {str(workspace)!r} holds a folder named runs.db where its results "
            "database goes; rename or remove that folder, or pass another --workspace"
        )


def prepare_workspace(path: str | os.PathLike) -> Path:
    """Create the workspace folder and prove it is writable, or say how to fix it."""
    workspace = check_workspace(path)
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        probe = workspace / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise _not_writable(workspace, err.strerror or err) from None
    return workspace


def _not_writable(workspace: Path, why: object) -> CifarlabError:
    return CifarlabError(
        f"workspace {str(workspace)!r} is not writable ({why}); "
        "pass --workspace DIR with a folder you can write to"
    )
