"""SIGKILL `causalloc run` mid-design, restart it: every run ends done exactly once, no
duplicate rows, no completed run lost or redone, the store intact. (The restart runs in
process, --workers 0, only to save the worker start-up time.) SIGTERM to the executor alone
ends its worker processes too."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

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


def start_design(tmp_path: Path, out: Path, sleep: float):
    """`causalloc run` of SPEC into ``out`` with 2 workers whose runs sleep ``sleep`` s, in
    its own session (so that killpg reaches the workers); returns (process, command, env)."""
    command = [sys.executable, "-m", "causalloc", "run", str(write_spec(tmp_path, SPEC)),
               "--out", str(out), "--workers", "2", "--no-progress",
               "--run-fn", "tests.runs_helpers:slow_run"]
    env = {**os.environ, "CAUSALLOC_TEST_SLEEP": str(sleep), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return process, command, env


def test_sigkill_mid_design_then_restart(tmp_path):
    out = tmp_path / "out"
    process, command, env = start_design(tmp_path, out, sleep=0.4)
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


def _worker_pids(pid: int) -> set[int]:
    """The spawned pool workers among the children of ``pid`` (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = {int(p) for p in children.read_text().split()} if children.exists() else set()
    return {p for p in pids if b"spawn_main" in _read(f"/proc/{p}/cmdline")}


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:  # the process is gone
        return b""


def _alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for a reaper."""
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def running_rows(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker processes from /proc")
def test_sigterm_to_the_executor_ends_its_workers(tmp_path):
    out = tmp_path / "out"
    process, _, _ = start_design(tmp_path, out, sleep=600)
    try:
        deadline = time.monotonic() + 180
        workers: set[int] = set()
        while len(workers) < 2 or running_rows(out / "runs.sqlite") < 2:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the workers did not start in time"
            time.sleep(0.1)
            workers = _worker_pids(process.pid)
        process.send_signal(signal.SIGTERM)  # the executor only, as `kill PID` does
        assert process.wait(timeout=60) == 128 + signal.SIGTERM, process.stdout.read().decode()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived the executor"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
