"""Small pure-numpy run functions for the executor tests (importable by dotted path,
e.g. ``--run-fn tests.runs_helpers:toy_run``), and a tiny spec writer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from causalloc.runs.spec import parse_spec

ALGORITHMS = {"ga": {}, "npo": {"beta": 0.1, "alpha": 1.0}, "rmu": {"layer": 0.25, "c": 20.0}}
METHODS = {"activations": None, "memflex": None}
TRAIN = {"steps": 100, "lr": 1e-3, "batch_size": 8, "optimizer": "adamw", "weight_decay": 0.0,
         "momentum": 0.9, "betas": [0.9, 0.999], "grad_clip": 1.0}
BASE = {
    "budgets": [0.1],
    "seeds": [0, 1],
    "k_random": 2,
    "testbed": {"kind": "tiny"},
    "conditions": [{"strategy": "oracle"}, {"strategy": "random"},
                   {"strategy": "disjoint:oracle"}],
    "algorithms": [{"name": "npo", "lr": 1e-3, "steps": 10}],
}


def parse(data: dict, **kw):
    """parse_spec with small fixed registries (no torch import)."""
    kw = {"algorithms": ALGORITHMS, "methods": METHODS, "train_defaults": TRAIN, **kw}
    return parse_spec(data, source="test.toml", **kw)


TINY_SPEC = """
name = "tiny_test"
budgets = [0.1]
seeds = [0, 1]
k_random = 2

[testbed]
kind = "tiny"

[[conditions]]
strategy = "oracle"

[[conditions]]
strategy = "random"

[[conditions]]
strategy = "disjoint:oracle"

[[algorithms]]
name = "ga"
steps = 5

[eval]
every = 1
metrics = ["aues", "fs_final", "rs_final"]
"""


def write_spec(folder: Path, text: str = TINY_SPEC, name: str = "spec.toml") -> Path:
    path = Path(folder) / name
    path.write_text(text)
    return path


def toy_run(run: dict, context) -> dict:
    """Deterministic in the run's seeds: oracle masks forget more than random ones."""
    rng = np.random.default_rng([run["mask"]["seed"], run["train"]["seed"]])
    effect = 0.3 if run["condition_kind"] == "oracle" else 0.0
    steps = np.arange(0, run["train"]["steps"] + 1, run["eval"]["every"])
    fs = np.clip(np.linspace(0.0, 0.5 + effect, steps.size) + rng.normal(0, 0.05, steps.size), 0, 1)
    rs = np.clip(1.0 - np.linspace(0.0, 0.2, steps.size) + rng.normal(0, 0.02, steps.size), 0, 1)
    context.cache["calls"] = context.cache.get("calls", 0) + 1
    metrics = {"aues": float(np.mean(fs)), "fs_final": fs[-1], "rs_final": rs[-1]}
    return {
        "metrics": {m: metrics.get(m, rng.uniform()) for m in run["eval"]["metrics"]},
        "trajectory": [{"step": int(s), "rs": float(r), "fs": float(f)}
                       for s, r, f in zip(steps, rs, fs)],
        "max_abs_change_outside_mask": 0.0,
        "mask_size": 13,
        "overlap_with_oracle": 1.0 if run["condition_kind"] == "oracle" else 0.0,
        "timings": {"train": 0.01},
        "worker_calls": context.cache["calls"],
    }


def failing_run(run: dict, context) -> dict:
    """Fails for the second random draw; fails for every run while DIR/FAIL exists."""
    if run["condition"] == "random" and run["mask_draw"] == 1:
        raise RuntimeError(f"planted failure in draw {run['mask_draw']}")
    if (Path(context.out_dir) / "FAIL").exists():
        raise RuntimeError("FAIL flag present")
    return toy_run(run, context)


def flaky_run(run: dict, context) -> dict:
    """Fails while the file DIR/FAIL exists (to test --retry-failed)."""
    if (Path(context.out_dir) / "FAIL").exists():
        raise RuntimeError("FAIL flag present")
    return toy_run(run, context)


def bad_result_run(run: dict, context) -> dict:
    """Breaks the result contract: the requested metrics are missing."""
    return {"metrics": {}}


def slow_run(run: dict, context) -> dict:
    """Sleeps, then appends the run id to DIR/completions.log (one line per completed call)."""
    time.sleep(float(os.environ.get("CAUSALLOC_TEST_SLEEP", "0.3")))
    result = toy_run(run, context)
    with open(Path(context.out_dir) / "completions.log", "a") as log:
        log.write(run["run_id"] + "\n")
    return result


def fingerprint_run(run: dict, context) -> dict:
    """Reports the theta_o fingerprint "a"*64, or "b"*64 for seed 1 (a node whose testbed
    differs), and which fingerprint it was told to expect."""
    result = toy_run(run, context)
    result["theta_o_fingerprint"] = ("b" if run["seed"] == 1 else "a") * 64
    result["was_expecting"] = run.get("expected_theta_o_fingerprint")
    return result


def dying_run(run: dict, context) -> dict:
    """Kills its worker process the first time it meets the oracle run of seed 0 (a lost
    worker or node), then runs normally."""
    marker = Path(context.out_dir) / f"died-{run['run_id']}"
    if run["condition"] == "oracle" and run["seed"] == 0 and not marker.exists():
        marker.touch()
        os._exit(1)
    return toy_run(run, context)
