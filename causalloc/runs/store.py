"""The resumable run store: one SQLite file (WAL journal) per output folder, one row per run.

Only the executor's parent process writes, each change in one short transaction; a run
becomes ``done`` in the same transaction that writes its results, so a process killed at
any moment (SIGKILL included) leaves every row either as it was or fully updated. Status
moves ``pending -> running -> done | failed``; rows left ``running`` by a killed process
are put back to ``pending`` by :meth:`RunStore.recover_interrupted` on restart; ``failed``
rows keep their traceback and are only retried on request.
"""

from __future__ import annotations

import datetime
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from causalloc.errors import DataError

DB_NAME = "runs.sqlite"
STATUSES = ("pending", "running", "done", "failed")
#: packages whose versions are recorded with every run and in design.json
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    block_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    metrics TEXT,
    trajectory TEXT,
    max_abs_change_outside_mask REAL,
    mask_size INTEGER,
    overlap_with_oracle REAL,
    extra TEXT,
    seconds REAL,
    timings TEXT,
    versions TEXT,
    worker TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, position);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _dumps(value) -> str | None:
    return None if value is None else json.dumps(value)


def last_line(text: str | None) -> str:
    """The last non-empty line of an error text (the exception and its message)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class RunStore:
    """SQLite run store of an output folder (``DIR/runs.sqlite``).

    ``create=False`` opens an existing store only (``causalloc status`` / ``export``).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, out_dir: str | Path, create: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        if not create and not self.path.is_file():
            raise DataError(f"{self.out_dir}: no run store ({DB_NAME}) here; is it a "
                            "`causalloc run --out` folder?")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable run store ({exc})") from None

    # lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # writing ----------------------------------------------------------------------
    def add_runs(self, runs: Iterable[dict]) -> int:
        """Insert the design's runs as ``pending`` (existing rows keep their status and
        results; only their design position is updated). Returns the number of new rows."""
        now = _now()
        rows = [(run["run_id"], position, run["block_id"], json.dumps(run), now, now)
                for position, run in enumerate(runs)]
        with self._transaction() as db:
            before = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            db.executemany(
                "INSERT INTO runs (run_id, position, block_id, spec, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET position = excluded.position", rows)
            after = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return after - before

    def recover_interrupted(self) -> int:
        """Put rows left ``running`` by a killed process back to ``pending``; returns how many."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE runs SET status = 'pending', updated_at = ?"
                                " WHERE status = 'running'", (_now(),))
        return cursor.rowcount

    def mark_running(self, run_id: str) -> None:
        now = _now()
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = 'running', attempts = attempts + 1,"
                       " started_at = ?, updated_at = ? WHERE run_id = ?", (now, now, run_id))

    def mark_done(self, run_id: str, result: dict, seconds: float, versions: dict | None = None,
                  worker: str | None = None) -> None:
        """Write a run's results and its ``done`` status in one transaction.

        ``result`` follows the run-function contract (``metrics``, optional ``trajectory``,
        ``max_abs_change_outside_mask``, ``mask_size``, ``overlap_with_oracle``, ``timings``;
        anything else is kept as ``extra``)."""
        known = ("metrics", "trajectory", "max_abs_change_outside_mask", "mask_size",
                 "overlap_with_oracle", "timings")
        extra = {key: value for key, value in result.items() if key not in known}
        now = _now()
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = 'done', metrics = ?, trajectory = ?,"
                " max_abs_change_outside_mask = ?, mask_size = ?, overlap_with_oracle = ?,"
                " extra = ?, seconds = ?, timings = ?, versions = ?, worker = ?, error = NULL,"
                " finished_at = ?, updated_at = ? WHERE run_id = ?",
                (json.dumps(result["metrics"]), _dumps(result.get("trajectory")),
                 result.get("max_abs_change_outside_mask"), result.get("mask_size"),
                 result.get("overlap_with_oracle"), _dumps(extra or None), seconds,
                 _dumps(result.get("timings")), _dumps(versions), worker, now, now, run_id))

    def mark_failed(self, run_id: str, error: str, seconds: float | None = None,
                    versions: dict | None = None, worker: str | None = None) -> None:
        """Record a failure with its full traceback text (kept until a retry succeeds)."""
        now = _now()
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = 'failed', error = ?, seconds = ?, versions = ?,"
                       " worker = ?, finished_at = ?, updated_at = ? WHERE run_id = ?",
                       (error, seconds, _dumps(versions), worker, now, now, run_id))

    def set_meta(self, **values) -> None:
        with self._transaction() as db:
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)"
                           " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           [(key, json.dumps(value)) for key, value in values.items()])

    # reading ----------------------------------------------------------------------
    def meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def counts(self) -> dict[str, int]:
        """Number of runs per status (every status present, zeros included)."""
        found = dict(self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        return {status: found.get(status, 0) for status in STATUSES}

    def run_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT run_id FROM runs")}

    def runs_to_do(self, retry_failed: bool = False) -> list[dict]:
        """Run dicts still to execute, in design order: pending (and failed on request)."""
        statuses = ("pending", "failed") if retry_failed else ("pending",)
        marks = ", ".join("?" * len(statuses))
        rows = self._db.execute(f"SELECT spec FROM runs WHERE status IN ({marks})"
                                " ORDER BY position", statuses)
        return [json.loads(row[0]) for row in rows]

    def rows(self, status: str | None = None) -> list[dict]:
        """Stored rows as dicts with JSON columns decoded and the run dict under ``run``."""
        query = "SELECT * FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY position"
        out = []
        for row in self._db.execute(query, (status,) if status else ()):
            record = dict(row)
            record["run"] = json.loads(record.pop("spec"))
            for key in ("metrics", "trajectory", "extra", "timings", "versions"):
                record[key] = None if record[key] is None else json.loads(record[key])
            out.append(record)
        return out

    def environments(self) -> list[dict]:
        """The distinct environments (:func:`causalloc.provenance.run_environment`) the done
        runs recorded, each with its run count ``runs``, most runs first."""
        counts: dict[str, int] = {}
        for (versions,) in self._db.execute("SELECT versions FROM runs WHERE status = 'done'"):
            key = versions or "{}"
            counts[key] = counts.get(key, 0) + 1
        return [{**json.loads(key), "runs": n} for key, n in sorted(counts.items(), key=lambda kv: -kv[1])]

    def failed(self) -> list[dict]:
        """Failed runs: run_id, condition, block columns and the error's last line."""
        return [{"run_id": r["run_id"], "condition": r["run"]["condition"],
                 "algorithm": r["run"]["algorithm"], "seed": r["run"]["seed"],
                 "attempts": r["attempts"], "error": last_line(r["error"])}
                for r in self.rows("failed")]

    # export -------------------------------------------------------------------------
    def export_csv(self, path: str | Path | None = None) -> Path:
        """Write ``runs.csv`` (schema.md): one row per done or failed run with the block
        columns (those recorded in the meta, e.g. ``testbed`` for replicated testbeds), condition,
        ``lr`` (the run's learning rate: its grid point in a tuned design), every metric, the
        outcome ``flags`` (``;``-joined, :mod:`causalloc.flags`), ``max_abs_change_outside_mask``,
        the fingerprint of the theta_o the run used (``theta_o_fingerprint``, empty if the run
        function gave none) and the trajectory as a JSON column. Metrics come in design order,
        then any extra ones sorted."""
        import pandas as pd

        from causalloc.runs.design import BLOCK_COLUMNS, block_value, train_settings

        path = Path(path) if path is not None else self.out_dir / "runs.csv"
        records = [r for r in self.rows() if r["status"] in ("done", "failed")]
        block_columns = list(self.meta("block_columns", BLOCK_COLUMNS))
        metrics = list(self.meta("metrics", []))
        for record in records:
            metrics += sorted(set(record["metrics"] or {}) - set(metrics))
        table = []
        for record in records:
            run = record["run"]
            extra = record["extra"] or {}
            row = {"run_id": record["run_id"], "status": record["status"]}
            row.update({column: block_value(run, column) for column in block_columns})
            row.update(block_id=run["block_id"], condition=run["condition"],
                       condition_kind=run["condition_kind"], mask_draw=run["mask_draw"],
                       lr=_nan(train_settings(run).get("lr")),
                       overlap_with_oracle=_nan(record["overlap_with_oracle"]),
                       mask_size=record["mask_size"])
            row.update({metric: _nan((record["metrics"] or {}).get(metric)) for metric in metrics})
            row.update(flags=";".join(extra.get("flags") or []) or None,
                       max_abs_change_outside_mask=_nan(record["max_abs_change_outside_mask"]),
                       theta_o_fingerprint=extra.get("theta_o_fingerprint"),
                       seconds=record["seconds"], error=last_line(record["error"]) or None,
                       trajectory=_dumps(record["trajectory"]))
            table.append(row)
        columns = (["run_id", "status", *block_columns, "block_id", "condition", "condition_kind",
                    "mask_draw", "lr", "overlap_with_oracle", "mask_size", *metrics, "flags",
                    "max_abs_change_outside_mask", "theta_o_fingerprint", "seconds", "error",
                    "trajectory"])
        frame = pd.DataFrame(table, columns=columns)
        frame["mask_size"] = frame["mask_size"].astype("Int64")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        return path


def _nan(value) -> float:
    """Missing numbers become NaN so the metric columns stay numeric."""
    return math.nan if value is None else float(value)
