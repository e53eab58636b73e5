"""The Ray backend on a real local Ray runtime gives the same metrics as local processes."""

from __future__ import annotations

import pandas as pd
import pytest

from causalloc.runs import RunStore, execute_design
from tests.runs_helpers import BASE, parse

ray = pytest.importorskip("ray")
METRICS = ["aues", "fs_final", "rs_final"]


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
