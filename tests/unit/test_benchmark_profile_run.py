"""benchmarks/profile_run.py: one run of a spec timed by phase, on a toy spec."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import profile_run
from tests.unit.test_benchmark_gpu import TOY_SPEC

from causalloc.runs import expand, load_spec


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_profile_of_one_run_accounts_for_its_wall_time(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALLOC_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "toy.toml"
    spec.write_text(TOY_SPEC)
    chosen = expand(load_spec(spec))[3]  # seed 1, random: the narrowed design must find it
    result = profile_run.main([str(spec), "--run-index", "3", "--json"])
    assert result["run_id"] == chosen["run_id"] and result["condition"] == "random"
    assert len(result["evaluation_each"]) == 2  # steps 2 and 4; step 0 is theta_o's, once per worker
    phases = ("loading", "theta_o_scores", "theta_r_scores", "training", "evaluations", "utility_probes",
              "after_training", "storing", "shared_model_check", "other")
    assert all(result[name] >= 0 for name in phases if name != "other")
    assert sum(result[name] for name in phases) == pytest.approx(result["wall"])
    assert result["theta_o_scores"] > 0 and result["theta_r_scores"] > 0 and result["training"] > 0
    parts = result["training_parts"]
    assert parts["backward"] > 0 and parts["forward_and_loss"] > 0
    assert parts["backward"] + parts["optimizer"] + parts["clipping"] < result["training"]
    assert 0 <= result["metrics"]["rs_final"] <= 1


def test_profile_refuses_a_run_index_outside_the_design(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALLOC_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "toy.toml"
    spec.write_text(TOY_SPEC)
    with pytest.raises(SystemExit, match="--run-index 9: the design has 4 runs"):
        profile_run.main([str(spec), "--run-index", "9"])
