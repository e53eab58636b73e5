"""Where one run's time goes: a single run of a spec, executed as the executor executes it,
timed phase by phase.

The run (``--run-index``, default the first of the expanded design) executes in this
process (``execute_design`` with ``workers=0``, ``--threads`` torch threads) into a temporary
store, under cProfile, its testbed built (or found in the cache) first. Printed, in seconds of wall time:

- ``loading``: the worker's testbed state (theta_o loaded, its fingerprint and the
  snapshot's digests, the items encoded);
- ``theta_o_scores`` / ``theta_r_scores``: the step-0 evaluation and theta_r's (loaded,
  scored, released), once per worker; about 0 when the testbed's build recorded them
  (``item_es.json``, read instead);
- ``training``, split (``training_parts``) into ``backward``, the ``optimizer`` step,
  gradient ``clipping``, and the rest, ``forward_and_loss``: the objective's forward passes
  and loss, of which ``reference`` is the frozen reference's forwards (memoised per block,
  so a block's first run pays them); backward passes outside training (a spec's relearning
  attack) count in ``backward`` too, so profile specs without attacks;
- ``evaluations``: the later checkpoints' evaluations (each in ``evaluation_each``);
- ``utility_probes``: model utility and forget quality at each checkpoint, when the spec
  tracks MU95;
- ``after_training``: the run's metrics and attacks after its last step (forget quality,
  relearning, quantisation), theta_r's scores excluded;
- ``shared_model_check``: the bitwise hard-constraint check after the run;
- ``storing``: the run store's writes (SQLite) and runs.csv;
- ``other``: the rest of the wall time (imports and transformers' first load, the
  testbed's cache lookup, the spec's expansion, the mask).

cProfile adds a few percent of overhead to Python-heavy phases; the matmuls dominate a
model of SmolLM2's size, so the split is what a run without the profiler spends.

    python benchmarks/profile_run.py analyses/smollm2_oracle_vs_random.toml --threads 1
    python benchmarks/profile_run.py analyses/example_tiny.toml --run-index 3 --json
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import json
import pstats
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: cProfile phases inside training: (file suffix, function name); cumulative seconds summed
TRAINING_PARTS = {
    "reference": ("causalloc/unlearn/runner.py", "forward"),
    "backward": ("torch/_tensor.py", "backward"),
    "optimizer": ("torch/optim/optimizer.py", "wrapper"),
    "clipping": ("torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
}
#: the run store's methods whose time is ``storing``
STORE_METHODS = ("add_runs", "mark_running", "mark_done", "set_meta", "export_csv")


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of the functions named ``name`` in files ending in ``suffix``."""
    return sum(value[3] for (path, _line, function), value in stats.stats.items()
               if path.endswith(suffix) and function == name)


@contextmanager
def timed(owner, name: str, log: list):
    """Replace ``owner.name`` by a wrapper appending ``(first argument after self, or the
    ``step`` keyword, or None; seconds)`` of every call to ``log``; put back afterwards."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            log.append((args[1] if len(args) > 1 else kwargs.get("step"), time.perf_counter() - start))

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def narrowed(spec, chosen: dict):
    """The spec cut to the chosen run's seed, budget, algorithm and condition (one block)."""
    algorithm = next(a for a in spec.algorithms if a.label == chosen["algorithm"])
    return dataclasses.replace(
        spec, seeds=(chosen["seed"],), budgets=(chosen["budget"],), algorithms=(algorithm,),
        conditions=(spec.condition(chosen["condition"]),), k_random=chosen["mask_draw"] + 1)


def profile_run(spec_path: str, run_index: int, threads: int) -> dict:
    """Execute one run of the spec in this process under cProfile; its phase times."""
    import torch

    from causalloc.runs import RunStore, execute_design, expand, load_spec
    from causalloc.runs.worker import TestbedState, resolve_testbed

    torch.set_num_threads(threads)
    spec = load_spec(spec_path)
    runs = expand(spec)
    if not 0 <= run_index < len(runs):
        raise SystemExit(f"--run-index {run_index}: the design has {len(runs)} runs")
    chosen = runs[run_index]
    spec = narrowed(spec, chosen)
    resolve_testbed(chosen["testbed"], progress=True)  # built (or found) before the clock starts
    logs = {name: [] for name in ("loading", "scores", "scores_with_utility", "theta_r_scores", *STORE_METHODS)}
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="causalloc-profile-") as out, ExitStack() as patches:
        patches.enter_context(timed(TestbedState, "__init__", logs["loading"]))
        patches.enter_context(timed(TestbedState, "scores", logs["scores"]))
        patches.enter_context(timed(TestbedState, "scores_with_utility", logs["scores_with_utility"]))
        patches.enter_context(timed(TestbedState, "theta_r_scores", logs["theta_r_scores"]))
        for method in STORE_METHODS:
            patches.enter_context(timed(RunStore, method, logs[method]))
        start = time.perf_counter()
        profiler.enable()
        execute_design(spec, out, workers=0, progress=False, command="benchmarks/profile_run.py")
        profiler.disable()
        wall = time.perf_counter() - start
        with RunStore(out, create=False) as store:
            rows = [r for r in store.rows() if r["run_id"] == chosen["run_id"]]
    if not rows or rows[0]["status"] != "done":
        raise SystemExit(f"the run did not finish: {rows[0].get('error') if rows else 'not in the narrowed design'}")
    stats = pstats.Stats(profiler)
    timings = rows[0]["timings"]
    evaluations = [seconds for step, seconds in logs["scores"] if step != 0]
    theta_o = sum(seconds for step, seconds in logs["scores"] if step == 0)
    parts = {name: cumulative(stats, *key) for name, key in TRAINING_PARTS.items()}
    parts["forward_and_loss"] = timings["train"] - parts["backward"] - parts["optimizer"] - parts["clipping"]
    utility = sum(s for _, s in logs["scores_with_utility"])
    theta_r = sum(s for _, s in logs["theta_r_scores"])
    phases = {
        "loading": sum(s for _, s in logs["loading"]),
        "theta_o_scores": theta_o,
        "theta_r_scores": theta_r,
        "training": timings["train"],
        "evaluations": sum(evaluations),
        "utility_probes": utility - (theta_o + sum(evaluations) if utility else 0.0),
        "after_training": timings["metrics"] - theta_r,
        "storing": sum(s for name in STORE_METHODS for _, s in logs[name]),
        "shared_model_check": cumulative(stats, "causalloc/unlearn/trainer.py", "check_shared_model"),
    }
    return {
        "spec": spec_path, "run_id": chosen["run_id"], "condition": chosen["condition"],
        "algorithm": chosen["algorithm"], "threads": threads, "wall": wall, **phases,
        "other": wall - sum(phases.values()), "training_parts": parts, "steps": chosen["train"]["steps"],
        "evaluation_each": evaluations, "n_scored_items": _n_items(chosen),
        "metrics": rows[0]["metrics"],
    }


def _n_items(run: dict) -> str:
    retain = (run["eval"].get("retain_items") or {}).get("n")
    return f"forget: all; retain: {retain if retain else 'all'}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[-1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="experiment spec (TOML)")
    parser.add_argument("--run-index", type=int, default=0, help="which run of the expanded design")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as one "
                                                                 "of two workers on two cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = profile_run(args.spec, args.run_index, args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value:.1f}" if isinstance(value, float) else f"{key:>20}: {value}")
    return result


if __name__ == "__main__":
    main()
