"""SIGKILL `causalloc run` mid-design, restart it: every run ends done exactly once, no
duplicate rows, no completed run lost or redone, the store intact. (The restart runs in
process, --workers 0, only to save the worker start-up time.)"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from tests.runs_helpers import write_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
budgets = [0.1]
seeds = [0, 1, 2, 3]
k_random = 2

[[conditions]]
strategy = "oracle"

[[conditions]]
strategy = "random"

[[conditions]]
strategy = "layer_matched:oracle"

[[algorithms]]
name = "ga"
steps = 4

[eval]
every = 2
metrics = ["aues", "fs_final"]
"""
N_RUNS = 4 * (1 + 2 + 2)


def done_rows(db_path: Path) -> dict:
    if not db_path.exists():
        return {}
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0]: row[1:] for row in db.execute(
            "SELECT run_id, metrics, finished_at, attempts FROM runs WHERE status = 'done'")}
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        db.close()


def test_sigkill_mid_design_then_restart(tmp_path):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "causalloc", "run", str(spec), "--out", str(out),
               "--workers", "2", "--no-progress", "--run-fn", "tests.runs_helpers:slow_run"]
    env = {**os.environ, "CAUSALLOC_TEST_SLEEP": "0.4", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    before = {}
    while len(before) < 4:
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the design did not start in time"
        time.sleep(0.05)
        before = done_rows(out / "runs.sqlite")
    os.killpg(process.pid, signal.SIGKILL)  # the executor and its worker processes
    process.wait(timeout=30)
    before = done_rows(out / "runs.sqlite")  # what was committed when the kill landed
    assert 4 <= len(before) < N_RUNS, "the kill must land mid-design"
    db = sqlite3.connect(out / "runs.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    restart = command[:command.index("--workers") + 1] + ["0"] + command[command.index("--workers") + 2:]
    finished = subprocess.run(restart, cwd=ROOT, env={**env, "CAUSALLOC_TEST_SLEEP": "0"},
                              capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    after = done_rows(out / "runs.sqlite")
    assert len(after) == N_RUNS
    for run_id, row in before.items():  # completed runs kept as they were, not redone
        assert after[run_id] == row and row[2] == 1
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == N_RUNS and table["run_id"].is_unique and (table["status"] == "done").all()
    completions = (out / "completions.log").read_text().split()
    assert set(completions) == set(after)
    assert all(completions.count(run_id) == 1 for run_id in before)
