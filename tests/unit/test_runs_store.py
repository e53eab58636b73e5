"""The SQLite run store: status transitions, recovery, retries and the runs.csv export."""

from __future__ import annotations

import json
import math
import sqlite3

import pandas as pd
import pytest

from causalloc.errors import DataError
from causalloc.runs.design import expand
from causalloc.runs.store import RunStore, last_line
from tests.runs_helpers import BASE, parse


@pytest.fixture
def runs():
    return expand(parse(BASE))  # 2 seeds x (oracle + 2 random + 2 disjoint) = 10 runs


def result(value: float) -> dict:
    return {"metrics": {"aues": value, "fs_final": 0.5, "rs_final": 0.9, "extra_metric": 1.0},
            "trajectory": [{"step": 0, "rs": 1.0, "fs": 0.0}, {"step": 10, "rs": 0.9, "fs": 0.5}],
            "max_abs_change_outside_mask": 0.0, "mask_size": 7, "overlap_with_oracle": 0.25,
            "timings": {"train": 1.5}, "note": "kept as extra"}


def test_add_is_idempotent_and_wal(tmp_path, runs):
    with RunStore(tmp_path) as store:
        assert store.add_runs(runs) == 10
        assert store.add_runs(runs) == 0
        assert store.counts() == {"pending": 10, "running": 0, "done": 0, "failed": 0}
        assert [r["run_id"] for r in store.runs_to_do()] == [r["run_id"] for r in runs]
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(DISTINCT run_id), COUNT(*) FROM runs").fetchone() == (10, 10)


def test_transitions_recovery_and_retry(tmp_path, runs):
    with RunStore(tmp_path) as store:
        store.add_runs(runs)
        first, second, third = (r["run_id"] for r in runs[:3])
        for run_id in (first, second, third):
            store.mark_running(run_id)
        store.mark_done(first, result(0.7), seconds=2.0, versions={"numpy": "2"}, worker="h:1")
        store.mark_failed(second, "Traceback (most recent call last):\n  ...\nValueError: boom\n",
                          seconds=0.5)
        # `third` stays `running`, as after a SIGKILL
    with RunStore(tmp_path) as store:
        assert store.recover_interrupted() == 1
        assert store.counts() == {"pending": 8, "running": 0, "done": 1, "failed": 1}
        todo = [r["run_id"] for r in store.runs_to_do()]
        assert first not in todo and second not in todo and third in todo
        assert second in [r["run_id"] for r in store.runs_to_do(retry_failed=True)]
        (done,) = store.rows("done")
        assert done["metrics"]["aues"] == 0.7 and done["attempts"] == 1
        assert done["extra"] == {"note": "kept as extra"} and done["worker"] == "h:1"
        assert done["versions"] == {"numpy": "2"} and done["timings"] == {"train": 1.5}
        assert store.failed() == [{"run_id": second, "condition": runs[1]["condition"],
                                   "algorithm": "npo", "seed": 0, "attempts": 1,
                                   "error": "ValueError: boom"}]
        assert "Traceback" in store.rows("failed")[0]["error"]  # the full traceback is kept
        store.mark_running(second)
        store.mark_done(second, result(0.1), seconds=1.0)
        retried = next(r for r in store.rows("done") if r["run_id"] == second)
        assert retried["attempts"] == 2 and retried["error"] is None


def test_export_csv_follows_the_schema(tmp_path, runs):
    with RunStore(tmp_path) as store:
        store.add_runs(runs)
        store.set_meta(metrics=["aues", "fs_final", "rs_final"])
        store.mark_running(runs[0]["run_id"])
        store.mark_done(runs[0]["run_id"], {**result(0.7), "max_abs_change_outside_mask": None},
                        seconds=2.0)
        store.mark_running(runs[1]["run_id"])
        store.mark_failed(runs[1]["run_id"], "Traceback\nKeyError: 'x'", seconds=0.1)
        path = store.export_csv()
    assert path == tmp_path / "runs.csv"
    table = pd.read_csv(path)
    assert list(table.columns) == [
        "run_id", "status", "model", "data", "algorithm", "budget", "seed", "block_id",
        "condition", "condition_kind", "mask_draw", "lr", "overlap_with_oracle", "mask_size", "aues",
        "fs_final", "rs_final", "extra_metric", "flags", "max_abs_change_outside_mask", "theta_o_fingerprint",
        "seconds", "error", "trajectory"]
    assert len(table) == 2  # pending runs are not exported
    done, failed = table.iloc[0], table.iloc[1]
    assert (done["status"], done["condition"], done["mask_draw"]) == ("done", "oracle", 0)
    assert (failed["condition"], failed["condition_kind"], failed["mask_draw"]) == ("random", "random", 0)
    assert done["aues"] == 0.7 and done["mask_size"] == 7 and done["overlap_with_oracle"] == 0.25
    assert math.isnan(done["max_abs_change_outside_mask"]) and math.isnan(failed["aues"])
    assert failed["error"] == "KeyError: 'x'" and failed["status"] == "failed"
    assert json.loads(done["trajectory"])[1] == {"step": 10, "rs": 0.9, "fs": 0.5}
    assert done["block_id"] == runs[0]["block_id"] and done["algorithm"] == "npo"


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no run store"):
        RunStore(tmp_path / "nothing", create=False)
    (tmp_path / "runs.sqlite").write_text("not a database" * 100)
    with pytest.raises(DataError, match="not a usable run store"):
        RunStore(tmp_path)


def test_last_line():
    assert last_line("Traceback\n  File x\nValueError: bad\n\n") == "ValueError: bad"
    assert last_line(None) == ""
