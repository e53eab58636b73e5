"""`causalloc demo --quick` on a clean install: the whole pipeline, end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.unit.test_report import assert_number, parse_verdict_table


def test_quick_demo_produces_the_report(tmp_path):
    env_cache = tmp_path / "cache"
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "causalloc", "demo", "--quick", "--out", str(out), "--json"],
        capture_output=True, text=True, check=False, timeout=900,
        env={**os.environ, "CAUSALLOC_CACHE": str(env_cache)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["summary"]["failed"] == 0
    for name in ("report.md", "report.html", "analysis.json", "tables.tex", "runs.csv"):
        assert (out / name).stat().st_size > 0, name
    figures = list((out / "figures").glob("*.png"))
    assert figures and all(f.stat().st_size > 0 for f in figures)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 72 and (runs["status"] == "done").all()
    assert (runs["max_abs_change_outside_mask"] == 0.0).all()
    assert np.isfinite(runs[["mu95", "model_utility"]]).all(axis=1).mean() >= 0.9  # issue 10 acceptance
    analysis = json.loads((out / "analysis.json").read_text())
    pairs = {(c["a"], c["b"]) for c in analysis["comparisons"]}
    assert ("oracle", "random") in pairs
    rows = parse_verdict_table((out / "report.md").read_text())
    assert len(rows) == len(analysis["comparisons"])
    for row, comparison in zip(rows, analysis["comparisons"]):
        assert row["verdict"] == comparison["verdict"]
        verdict_p = {"sign_flip": "p_perm", "randomization": "p_rand"}
        assert_number(row["p_verdict"], comparison[verdict_p[comparison["verdict_test"]]],
                      comparison["id"])
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']https?://""", html)


@pytest.mark.slow
def test_full_demo_completes_every_run(tmp_path):
    """The full demo end to end (its time is measured, not asserted: reports/demo/README.md)."""
    proc = subprocess.run(
        [sys.executable, "-m", "causalloc", "demo", "--out", str(tmp_path / "demo"), "--json"],
        capture_output=True, text=True, check=False, timeout=1800,
        env={**os.environ, "CAUSALLOC_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["summary"]["failed"] == 0 and np.isfinite(result["seconds"])
