"""The committed regression report regenerates (issue 14, item 8).

``reports/regression/`` holds a two-seed design on the unit tests' SMALL testbed (spec
``analyses/regression.toml``): its runs, analysis and report as committed. This test reruns
the spec from scratch, analyses it and compares every metric, trajectory point and statistic
with the committed numbers, so the next change that moves them fails here instead of
silently disagreeing with the committed reports.

Bitwise agreement needs the same torch build on the same kind of CPU and the same thread
count (float reduction order), so the tolerance is 1e-12 when this machine's torch version
and CPU capability equal the committed environment's (``design.json``), and 0.02 (one ES
item of a small split) otherwise: a change of code still shows, a change of hardware alone
does not fail the suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from causalloc.provenance import torch_build
from causalloc.report import write_report
from causalloc.runs import execute_design
from causalloc.stats import analyze, load_runs, write_analysis

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "analyses" / "regression.toml"
COMMITTED = ROOT / "reports" / "regression"
METRICS = ["aues", "fs_at_rs95", "fs_final", "rs_final", "log_forget_quality"]
STATISTICS = ["mean_a", "mean_b", "mean_diff", "d_z", "p_perm", "p_t", "tost_p"]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """The regression design run, analysed and reported again, in a fresh folder (the
    testbed comes from the session's shared cache: the SMALL testbed of the unit tests)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    out = tmp_path_factory.mktemp("regression")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAUSALLOC_CACHE", str(cache))
        torch.set_num_threads(1)
        summary = execute_design(SPEC, out, workers=0, progress=False)
    assert summary["failed"] == 0, summary
    write_analysis(analyze(load_runs(out)), out)
    write_report(out)
    return out


def tolerance() -> float:
    committed = json.loads((COMMITTED / "design.json").read_text())["environments"]
    here = torch_build()
    same = all(env.get("torch") == here["torch"] and env.get("cpu_capability") == here["cpu_capability"]
               and env.get("torch_threads") == 1 for env in committed)
    return 1e-12 if same else 0.02


def test_the_runs_reproduce_the_committed_numbers(regenerated):
    old = pd.read_csv(COMMITTED / "runs.csv").set_index("run_id").sort_index()
    new = pd.read_csv(regenerated / "runs.csv").set_index("run_id").sort_index()
    assert list(new.index) == list(old.index), "the design's run ids changed"
    assert (new["status"] == "done").all() and (new["max_abs_change_outside_mask"] == 0.0).all()
    assert list(new["mask_size"]) == list(old["mask_size"])
    atol = tolerance()
    np.testing.assert_allclose(new[METRICS].to_numpy(float), old[METRICS].to_numpy(float), rtol=0, atol=atol,
                               err_msg="a metric of the committed reports/regression/runs.csv moved")
    for run_id in old.index:
        before = [(p["rs"], p["fs"]) for p in json.loads(old.at[run_id, "trajectory"])]
        after = [(p["rs"], p["fs"]) for p in json.loads(new.at[run_id, "trajectory"])]
        np.testing.assert_allclose(after, before, rtol=0, atol=atol, err_msg=f"trajectory of {run_id}")


def test_the_analysis_and_report_reproduce_the_committed_ones(regenerated):
    old = {c["id"]: c for c in json.loads((COMMITTED / "analysis.json").read_text())["comparisons"]}
    new = {c["id"]: c for c in json.loads((regenerated / "analysis.json").read_text())["comparisons"]}
    assert new.keys() == old.keys()
    atol = tolerance()
    for key, comparison in old.items():
        for stat in STATISTICS:
            assert new[key][stat] == pytest.approx(comparison[stat], abs=atol, nan_ok=True), (key, stat)
        assert new[key]["verdict"] == comparison["verdict"], key
    report = (regenerated / "report.md").read_text()
    assert "Runs made with" in report and "Testbed fingerprint" in report
