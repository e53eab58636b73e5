"""The Ray backend on a real local Ray runtime: the same metrics as local processes, GPU
requests, and the theta_o fingerprint check of the real worker."""

from __future__ import annotations

import pandas as pd
import pytest

from causalloc.cli import main
from causalloc.runs import RunStore, execute_design
from tests.runs_helpers import BASE, parse, write_spec

ray = pytest.importorskip("ray")
METRICS = ["aues", "fs_final", "rs_final"]


@pytest.fixture(scope="module")
def testbed_cache(tmp_path_factory):
    """The testbed cache of the Ray workers (on a cluster: storage every node shares)."""
    return tmp_path_factory.mktemp("ray-cache")


@pytest.fixture(scope="module")
def ray_runtime(testbed_cache):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"CAUSALLOC_CACHE": str(testbed_cache)}})
    yield
    ray.shutdown()


@pytest.mark.ray
def test_ray_and_local_backends_give_identical_metrics(tmp_path, ray_runtime):
    spec = parse({**BASE, "eval": {"every": 2, "metrics": METRICS}})
    run_fn = "tests.runs_helpers:failing_run"
    on_ray = execute_design(spec, tmp_path / "ray", backend="ray", run_fn=run_fn, progress=False)
    local = execute_design(spec, tmp_path / "local", workers=2, run_fn=run_fn, progress=False)
    assert (on_ray["done"], on_ray["failed"]) == (local["done"], local["failed"]) == (8, 2)
    assert ray.is_initialized()  # a runtime it did not start is left running
    tables = [pd.read_csv(tmp_path / name / "runs.csv").set_index("run_id").sort_index()
              for name in ("ray", "local")]
    pd.testing.assert_frame_equal(tables[0][METRICS + ["status", "trajectory"]],
                                  tables[1][METRICS + ["status", "trajectory"]])
    with RunStore(tmp_path / "ray") as store:
        assert "planted failure in draw 1" in store.failed()[0]["error"]
        assert len({row["worker"] for row in store.rows("done")}) >= 1
    again = execute_design(spec, tmp_path / "ray", backend="ray", run_fn=run_fn, progress=False)
    assert (again["done"], again["skipped"], again["skipped_failed"]) == (0, 8, 2)


@pytest.mark.ray
def test_gpus_per_run_zero_runs_and_a_request_no_node_meets_is_refused_before_submitting(
        tmp_path, ray_runtime, capsys):
    spec = write_spec(tmp_path)
    args = ["run", str(spec), "--backend", "ray", "--no-progress", "--run-fn", "tests.runs_helpers:toy_run"]
    assert main([*args, "--out", str(tmp_path / "cpu"), "--gpus-per-run", "0"]) == 0
    assert pd.read_csv(tmp_path / "cpu" / "runs.csv")["status"].eq("done").all()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "gpu"), "--gpus-per-run", "1"]) == 2
    error = capsys.readouterr().err
    assert "gpus_per_run: each run asks for 1 GPU(s), but no node of the Ray cluster" in error
    assert "most on one node: 0" in error
    with RunStore(tmp_path / "gpu") as store:  # nothing was submitted
        assert store.counts()["pending"] == 10 and store.counts()["running"] == 0
    assert ray.is_initialized()


@pytest.mark.ray
@pytest.mark.slow  # ~35 s: Ray worker processes import torch and load the testbed
def test_a_task_whose_theta_o_differs_from_the_record_fails_with_the_message(
        tmp_path, ray_runtime, testbed_cache):
    """The real worker on Ray: theta_o in the (shared) cache is modified after the build."""
    import torch
    from safetensors.torch import load_file, save_file

    from causalloc.testbed import build_testbed, config_for
    from tests.unit.test_testbed import SMALL

    torch.set_num_threads(1)
    testbed = build_testbed(config_for("tiny", **SMALL), cache_dir=testbed_cache / "testbeds")
    weights = testbed.path / "theta_o" / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"][0] += 1e-3  # tampered (a node with another theta_o)
    save_file(tensors, weights, metadata={"format": "pt"})
    build = {k: v for k, v in SMALL.items() if k not in ("n_authors", "n_forget_authors", "n_questions")}
    spec = parse({"seeds": [0], "budgets": [0.1], "conditions": [{"strategy": "oracle"}],
                  "algorithms": [{"name": "ga", "steps": 1}], "eval": {"every": 1, "metrics": METRICS},
                  "testbed": {"kind": "tiny", "n_authors": 6, "n_forget_authors": 1, "n_questions": 6,
                              "build": build}})
    summary = execute_design(spec, tmp_path, backend="ray", progress=False)
    assert (summary["done"], summary["failed"]) == (0, 1)
    with RunStore(tmp_path) as store:
        error = store.failed()[0]["error"]
    assert error.startswith("causalloc.errors.ConstraintError: theta_o fingerprint mismatch")
    assert testbed.theta_o_fingerprint in error and "was modified after it was built" in error


@pytest.mark.ray
def test_a_task_lost_with_its_ray_worker_is_submitted_again_and_recorded(tmp_path, ray_runtime):
    spec = parse({**BASE, "eval": {"every": 2, "metrics": METRICS}})
    summary = execute_design(spec, tmp_path, backend="ray", run_fn="tests.runs_helpers:dying_run",
                             progress=False)
    assert (summary["done"], summary["failed"]) == (10, 0)
    with RunStore(tmp_path) as store:
        oracle = next(r for r in store.rows() if r["run"]["condition"] == "oracle" and r["run"]["seed"] == 0)
    assert oracle["attempts"] == 2 and len(oracle["extra"]["lost_attempts"]) == 1
