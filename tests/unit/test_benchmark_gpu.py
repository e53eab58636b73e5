"""The GPU run of a design spec (benchmarks/gpu.py --spec): its code path on a toy spec on the
CPU in bfloat16, and the one-line skip where no CUDA device exists."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu

from causalloc.runs import RunStore, expand, load_spec

#: two seeds of oracle vs random, a few NPO steps, on a testbed built in seconds
TOY_SPEC = """
name = "gpu_toy"
seeds = [0, 1]
budgets = [0.1]
k_random = 1

[testbed]
kind = "tiny"
n_authors = 4
n_forget_authors = 1
n_questions = 4

[testbed.build]
hidden = 32
intermediate = 64
layers = 2
retain_epochs = 8
retain_batch = 8
inject_steps = 30
inject_lr = 1e-2

[[conditions]]
strategy = "oracle"

[[conditions]]
strategy = "random"

[[algorithms]]
name = "npo"
steps = 4
lr = 1e-1
batch_size = 4

[eval]
every = 2
metrics = ["aues", "fs_at_rs95", "fs_final", "rs_final"]
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CAUSALLOC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


@pytest.fixture
def toy_spec(tmp_path) -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(TOY_SPEC)
    return path


def _done(folder: Path) -> dict[str, dict]:
    with RunStore(folder, create=False) as store:
        assert store.counts()["failed"] == 0
        return {row["run_id"]: row for row in store.rows("done")}


def test_a_design_runs_in_bfloat16_and_its_first_block_again_in_float32(toy_spec, tmp_path, capsys):
    out, report_file = tmp_path / "out", tmp_path / "report.json"
    report = gpu.main(["--spec", str(toy_spec), "--out", str(out), "--device", "cpu",
                       "--dtype", "bfloat16", "--json", "--json-out", str(report_file)])
    assert json.loads(capsys.readouterr().out) == json.loads(report_file.read_text()) == report
    spec = load_spec(toy_spec)
    assert report["device"] == "cpu" and report["spec_hash"] == spec.spec_hash
    assert report["testbed_overrides"] == {"run_dtype": "bfloat16"}  # device: auto is the CPU here
    assert report["peak_memory_kind"] == "cpu peak RSS" and report["peak_memory_mb"] > 0
    assert report["torch"] == torch.__version__ and report["runs_per_hour"] > 0

    design = _done(out / "design")
    assert len(design) == report["runs"]["done"] == report["runs"]["total"] == 2 * 2
    assert report["runs"]["failed"] == 0 and report["runs"]["done_now"] == 4
    assert all(row["run"]["testbed"]["run_dtype"] == "bfloat16" for row in design.values())
    assert not set(design) & {run["run_id"] for run in expand(spec)}  # a store of its own

    # the float32 rerun is the first block of the float32 design: its run ids, all its runs
    float32 = _done(out / gpu.FLOAT32_FOLDER)
    first = [run for run in expand(spec) if run["block_id"] == expand(spec)[0]["block_id"]]
    assert set(float32) == {run["run_id"] for run in first} and len(first) == 2
    assert report["float32_first_block"]["done"] == 2

    # agreement: recomputed from the two stores, run by run
    twins = {(r["run"]["condition"], r["run"]["mask_draw"]): r for r in float32.values()}
    differences = {metric: [] for metric in gpu.COMPARED}
    for row in design.values():
        if row["run"]["seed"] == spec.seeds[0]:
            twin = twins[(row["run"]["condition"], row["run"]["mask_draw"])]
            for metric in gpu.COMPARED:
                differences[metric].append(abs(row["metrics"][metric] - twin["metrics"][metric]))
    agreement = report["agreement"]
    assert agreement["matched_runs"] == 2 and agreement["not_finite"] == 0
    every = [d for values in differences.values() for d in values]
    assert all(math.isfinite(d) for d in every)
    assert agreement["max_abs_difference"] == max(every)
    assert agreement["median_abs_difference"] == statistics.median(every)
    for metric, values in differences.items():
        assert agreement["by_metric"][metric]["max_abs_difference"] == max(values)
        assert sorted(r[metric]["abs_difference"] for r in agreement["runs"]) == sorted(values)
    assert report["max_abs_change_outside_mask"] == 0.0  # the hard constraint, in bfloat16 too

    # a second call resumes: nothing left to run, the same agreement
    again = gpu.main(["--spec", str(toy_spec), "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert again["runs"]["done_now"] == 0 and again["agreement"] == agreement
    assert "runs: 4/4 done, 0 failed" in text
    assert "max change outside the mask over all runs: 0.0" in text


def test_float32_on_a_float32_testbed_keeps_the_run_ids_of_a_cpu_store(toy_spec):
    spec = load_spec(toy_spec)
    assert gpu.run_settings(spec, "float32", "cpu") == {}
    assert gpu.run_settings(spec, "bfloat16", "cpu") == {"run_dtype": "bfloat16"}
    already = gpu.with_testbed(spec, run_dtype="bfloat16")  # a spec that sets it is set back
    assert gpu.run_settings(already, "float32", "cpu") == {"run_dtype": None}
    elsewhere = gpu.with_testbed(spec, device="cuda")
    assert gpu.run_settings(elsewhere, "float32", "cpu") == {"device": "cpu"}


def test_gpu_run_without_cuda_prints_one_line_and_exits_0(toy_spec, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--spec", str(toy_spec),
                           "--out", str(tmp_path / "out")], env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert lines[0].startswith("benchmarks/gpu.py: skipped, no CUDA device")
    assert not (tmp_path / "out").exists()


def test_help_shows_the_spec_option_with_examples():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--help"], check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "--spec SPEC" in done.stdout
    assert "python benchmarks/gpu.py --spec analyses/" in done.stdout


def test_until_conclusive_grows_the_design_by_the_analysis_spec(toy_spec, tmp_path, capsys):
    """--until-conclusive --analysis FILE: the waves follow the file's [sequential] plan."""
    analysis = tmp_path / "toy.analysis.toml"
    analysis.write_text('metrics = ["aues"]\n\n[sequential]\nlook_every = 1\nmax_blocks = 3\n')
    report = gpu.main(["--spec", str(toy_spec), "--out", str(tmp_path / "out"), "--device", "cpu",
                       "--dtype", "float32", "--json", "--until-conclusive",
                       "--analysis", str(analysis)])
    capsys.readouterr()
    sequential = report["sequential"]
    assert sequential["look_every"] == 1 and sequential["max_blocks"] == 3
    assert sequential["seeds"][:2] == [0, 1] and len(sequential["seeds"]) in (2, 3)
    assert report["runs"]["done"] == report["runs"]["total"] == 2 * len(sequential["seeds"])
