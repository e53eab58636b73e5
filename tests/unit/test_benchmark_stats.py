"""benchmarks/stats.py's scaling part on a small table: its table shape and measured parts."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import stats as stats_benchmark


def test_scaling_table_and_each_measured_part(tmp_path):
    path = tmp_path / "runs.csv"
    rows = stats_benchmark.make_scaling_table(path, cells=12, seeds=4, draws=2)
    table = pd.read_csv(path)
    assert rows == len(table) == 12 * 4 * 3
    assert table.groupby(["config", "seed"]).size().eq(3).all()
    whole = stats_benchmark._child("analyze", path)
    assert whole["comparisons"] == 12 * 2 and whole["mixed_models"] == 2
    assert whole["dose_response"] == 12 * 2 and whole["peak_rss_mb"] >= whole["rss_before_mb"]
    for kind in ("mixed_model", "previous"):
        assert stats_benchmark._child(kind, path)["seconds"] >= 0
