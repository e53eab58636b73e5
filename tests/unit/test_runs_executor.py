"""execute_design with the local backend and the run/status/export commands, on pure-numpy
run functions from tests/runs_helpers.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from causalloc.cli import main
from causalloc.errors import CausallocError, SpecError
from causalloc.runs import RunStore, execute_design
from causalloc.runs.backends import _folder_lock
from tests.runs_helpers import BASE, parse, write_spec

METRICS = ["aues", "fs_final", "rs_final"]


@pytest.fixture
def spec():
    return parse({**BASE, "eval": {"every": 2, "metrics": METRICS}})


def metric_table(out) -> pd.DataFrame:
    table = pd.read_csv(out / "runs.csv")
    return table.set_index("run_id")[METRICS + ["status"]].sort_index()


def test_same_metrics_in_process_and_in_worker_processes(tmp_path, spec):
    summary = execute_design(spec, tmp_path / "a", workers=0, run_fn="tests.runs_helpers:toy_run",
                             progress=False)
    assert (summary["total"], summary["done"], summary["failed"], summary["skipped"]) == (10, 10, 0, 0)
    execute_design(spec, tmp_path / "b", workers=2, run_fn="tests.runs_helpers:toy_run",
                   progress=False)
    a, b = metric_table(tmp_path / "a"), metric_table(tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    assert (a["status"] == "done").all() and len(a) == 10
    with RunStore(tmp_path / "a") as store:  # one context per process: its cache persists
        assert max(r["extra"]["worker_calls"] for r in store.rows()) == 10
    with RunStore(tmp_path / "b") as store:
        rows = store.rows()
        calls = [r["extra"]["worker_calls"] for r in rows]
        assert max(calls) >= 2 and len({r["worker"] for r in rows}) <= 2
        assert rows[0]["versions"]["numpy"] and rows[0]["trajectory"][0]["step"] == 0


def test_rerun_skips_done_runs(tmp_path, spec, monkeypatch):
    monkeypatch.setenv("CAUSALLOC_TEST_SLEEP", "0")
    run_fn = "tests.runs_helpers:slow_run"
    execute_design(spec, tmp_path, workers=0, run_fn=run_fn, progress=False)
    summary = execute_design(spec, tmp_path, workers=0, run_fn=run_fn, progress=False)
    assert (summary["done"], summary["skipped"], summary["status"]["done"]) == (0, 10, 10)
    completions = (tmp_path / "completions.log").read_text().split()
    assert len(completions) == len(set(completions)) == 10  # every run executed once


def test_failures_are_kept_and_retried_only_on_request(tmp_path, spec):
    summary = execute_design(spec, tmp_path, workers=0, run_fn="tests.runs_helpers:failing_run",
                             progress=False)
    assert (summary["done"], summary["failed"]) == (8, 2)  # draw 1 of `random`, both seeds
    with RunStore(tmp_path) as store:
        failed = store.rows("failed")
        assert {(r["run"]["condition"], r["run"]["mask_draw"]) for r in failed} == {("random", 1)}
        assert "Traceback" in failed[0]["error"] and "planted failure in draw 1" in failed[0]["error"]
    again = execute_design(spec, tmp_path, workers=0, run_fn="tests.runs_helpers:toy_run",
                           progress=False)
    assert (again["done"], again["skipped"], again["skipped_failed"]) == (0, 8, 2)
    retried = execute_design(spec, tmp_path, workers=0, run_fn="tests.runs_helpers:toy_run",
                             retry_failed=True, progress=False)
    assert (retried["done"], retried["failed"], retried["status"]["done"]) == (2, 0, 10)
    with RunStore(tmp_path) as store:
        assert sorted(r["attempts"] for r in store.rows()) == [1] * 8 + [2] * 2


def test_broken_result_contract_fails_the_run(tmp_path, spec):
    summary = execute_design(spec, tmp_path, workers=1, run_fn="tests.runs_helpers:bad_result_run",
                             progress=False)
    assert summary["failed"] == 10
    with RunStore(tmp_path) as store:
        assert "returned no value for metric(s) ['aues', 'fs_final', 'rs_final']" in store.failed()[0]["error"]


def test_guards(tmp_path, spec):
    with pytest.raises(SpecError, match="must be a module-level function"):
        execute_design(spec, tmp_path / "x", workers=1, run_fn=lambda run, ctx: {}, progress=False)
    with pytest.raises(SpecError, match="cannot be imported"):
        execute_design(spec, tmp_path / "x", run_fn="tests.runs_helpers:nothing", progress=False)
    with pytest.raises(SpecError, match="backend: unknown 'slurm'"):
        execute_design(spec, tmp_path / "x", backend="slurm")
    execute_design(spec, tmp_path / "y", workers=0, run_fn="tests.runs_helpers:toy_run", progress=False)
    other = parse({**BASE, "eval": {"every": 3, "metrics": METRICS}})
    with pytest.raises(SpecError, match="holds 10 run"):
        execute_design(other, tmp_path / "y", workers=0, run_fn="tests.runs_helpers:toy_run")
    more_seeds = parse({**BASE, "seeds": [0, 1, 2], "eval": {"every": 2, "metrics": METRICS}})
    summary = execute_design(more_seeds, tmp_path / "y", workers=0,
                             run_fn="tests.runs_helpers:toy_run", progress=False)
    assert (summary["skipped"], summary["done"]) == (10, 5)  # a superset design extends the folder
    with _folder_lock(tmp_path / "y"), pytest.raises(CausallocError, match="another `causalloc run`"):
        execute_design(spec, tmp_path / "y", workers=0, run_fn="tests.runs_helpers:toy_run")


def test_cli_run_status_export(tmp_path, capsys):
    spec_path = write_spec(tmp_path)
    out = tmp_path / "out"
    code = main(["run", str(spec_path), "--out", str(out), "--workers", "0", "--no-progress",
                 "--run-fn", "tests.runs_helpers:failing_run", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["failed"] == 2 and summary["done"] == 8
    design = json.loads((out / "design.json").read_text())
    assert design["metrics"] == ["aues", "fs_final", "rs_final"] and design["replicate"] == "seed"
    assert design["command"].startswith("causalloc ")
    assert (out / "spec.toml").read_text() == spec_path.read_text()
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"] == {"pending": 0, "running": 0, "done": 8, "failed": 2}
    assert status["failed"][0]["error"] == "RuntimeError: planted failure in draw 1"
    assert main(["status", str(out)]) == 0
    assert "RuntimeError: planted failure" in capsys.readouterr().out
    assert main(["export", str(out), "--out", str(tmp_path / "t.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "t.csv")) == 10
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "no run store" in capsys.readouterr().err
    broken = write_spec(tmp_path, "budgets = [2]\n", "broken.toml")
    assert main(["run", str(broken), "--out", str(out)]) == 2
    assert "budgets[0]: must be in (0.0, 1.0], got 2" in capsys.readouterr().err


#: allocate, touch and free 40 MB twice, as two training steps do with activations; print the
#: minor page faults of the second (10,240 pages touched; with glibc's defaults most fault again)
_PAGE_FAULT_PROBE = """
import resource, sys, torch
from causalloc.runs.backends import keep_freed_memory
def step():
    kept = [torch.ones(2**18) for _ in range(40)]
    del kept
if sys.argv[1] == "keep":
    assert keep_freed_memory()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_keep_freed_memory_lets_the_next_step_reuse_pages_without_faults():
    """In a fresh process each (the heap of a long test session is no clean slate)."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _PAGE_FAULT_PROBE, mode], check=True,
                              capture_output=True, text=True)
        return int(done.stdout.split()[-1])

    kept, default = faults("keep"), faults("default")
    assert default > 5000  # the probe sees the faults that the setting removes
    assert kept < 0.1 * default  # measured here: 256-512 vs about 10,190


def test_a_run_reporting_another_theta_o_fingerprint_is_recorded_failed(tmp_path, spec):
    summary = execute_design(spec, tmp_path, workers=0, run_fn="tests.runs_helpers:fingerprint_run",
                             progress=False)
    assert (summary["done"], summary["failed"]) == (5, 5)  # seed 0 first: its fingerprint is the design's
    with RunStore(tmp_path) as store:
        assert set(store.meta("matched")["theta_o_fingerprint"].values()) == {"a" * 64}
        done = store.rows("done")
        assert {r["run"]["seed"] for r in done} == {0}
        # every run after the first was told the design's fingerprint before it ran
        assert [r["extra"]["was_expecting"] for r in done] == [None] + ["a" * 64] * 4
        for row in store.failed():
            assert row["seed"] == 1 and "theta_o fingerprint mismatch" in row["error"]
            assert "b" * 64 in row["error"] and "a" * 64 in row["error"]
    table = pd.read_csv(tmp_path / "runs.csv")
    assert set(table.loc[table["status"] == "done", "theta_o_fingerprint"]) == {"a" * 64}


@pytest.mark.slow  # ~30 s: worker pools spawned 4 times (Ray: tests/integration/test_runs_ray.py)
def test_a_run_lost_with_its_worker_is_submitted_again_and_the_loss_recorded(tmp_path, spec):
    summary = execute_design(spec, tmp_path, workers=1, run_fn="tests.runs_helpers:dying_run",
                             progress=False)
    assert (summary["done"], summary["failed"]) == (10, 0)
    with RunStore(tmp_path) as store:
        oracle = next(r for r in store.rows() if r["run"]["condition"] == "oracle" and r["run"]["seed"] == 0)
        assert oracle["attempts"] == 2 and "worker process died" in oracle["extra"]["lost_attempts"][0]
    lost = tmp_path / "again"
    summary = execute_design(spec, lost, workers=1, run_fn="tests.runs_helpers:dying_run",
                             progress=False, retries=0)
    assert summary["failed"] >= 1
    with RunStore(lost) as store:
        assert any("worker process died" in row["error"] for row in store.failed())


def test_gpus_per_run_is_a_ray_request_and_a_spec_key(tmp_path, spec):
    with pytest.raises(SpecError, match="gpus_per_run: 1 GPUs per run needs backend 'ray'"):
        execute_design(spec, tmp_path, workers=0, run_fn="tests.runs_helpers:toy_run", gpus_per_run=1)
    with_gpus = parse({**BASE, "execution": {"gpus_per_run": 0.5}})
    assert with_gpus.execution.gpus_per_run == 0.5
    assert with_gpus.spec_hash == parse(BASE).spec_hash  # where runs execute changes no result
    with pytest.raises(SpecError, match=r"execution.gpus_per_run: must be in \[0.0, inf\)"):
        parse({**BASE, "execution": {"gpus_per_run": -1}})
    summary = execute_design(with_gpus, tmp_path, workers=0, run_fn="tests.runs_helpers:toy_run",
                             progress=False)  # locally the spec key requests nothing
    assert summary["gpus_per_run"] == 0.0 and summary["done"] == 10
