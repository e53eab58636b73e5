"""The prepared GPU check (benchmarks/gpu.py): its code path at toy size on CPU, and the
one-line skip where no CUDA device exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_gpu_check_runs_its_code_path_at_toy_size_on_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    report = gpu.main(["--device", "cpu", "--tiny", "--json", "--lr", "1e-2", "--out", str(out)])
    assert report["model"].startswith("toy LLaMA") and report["device"] == "cpu"
    assert report["model_dtypes"] == {"bfloat16": "bfloat16", "float32": "float32"}
    seeds = gpu.SIZES["tiny"]["seeds"]
    assert report["runs_per_dtype"] == 2 * seeds
    for name in gpu.DTYPES:
        runs = report["runs"][name]
        assert [(r["seed"], r["mask"]) for r in runs] == [(s, m) for s in range(seeds) for m in ("oracle", "random")]
        assert report[f"runs_per_hour_{name}"] > 0
        assert report[f"peak_gpu_memory_mb_{name}"] is None  # no GPU: not measured
        assert report["max_abs_change_outside_mask"][name] == 0.0  # hard constraint in both dtypes
        for run in runs:
            assert all(0.0 <= run[k] <= 1.0 for k in gpu.COMPARED)
    differences = [abs(a[k] - b[k]) for a, b in zip(report["runs"]["bfloat16"], report["runs"]["float32"])
                   for k in gpu.COMPARED]
    assert report["max_abs_metric_difference"] == pytest.approx(max(differences))
    assert np.isfinite(report["testbed"]["inject_final_loss"])
    assert report["testbed"]["inject_max_abs_change_outside_mask"] == 0.0
    assert out.read_text().strip() == capsys.readouterr().out.strip()


def test_gpu_check_without_cuda_prints_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py")], env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchmarks/gpu.py: skipped, no CUDA device"), done.stdout
