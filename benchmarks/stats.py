"""Speed of the stats layer, side by side with a per-comparison scipy/pingouin loop.

Table: 500 cells (5 models x 10 algorithms x 10 budgets) x 10 seeds x 2 conditions
(attributed:activations, random) = 10,000 runs, 2 metrics -> 1,000 comparisons of 10
blocks. Both sides compute, per comparison: exact sign-flip p (1,024 patterns), 95% BCa
CI with 9,999 resamples, paired t, Wilcoxon and TOST.

- ``seconds``: ``load_runs`` + ``analyze`` without mixed models / dose-response (it also
  does matching checks, Bayes factors, Holm, power and verdicts, which the loop does not);
- ``seconds_loop``: one call each of scipy.stats.permutation_test, scipy.stats.bootstrap
  (paired, BCa), scipy.stats.ttest_rel, scipy.stats.wilcoxon and pingouin.tost per comparison;
- ``seconds_full``: the whole analysis, mixed models and dose-response included.

``scaling`` (issue 13): the shape that used to exhaust memory, 1,500 cells (one cell
column, ``config``) x 8 seeds x (one attributed mask + K = 2 random draws) = 36,000 runs,
2 metrics and ``overlap_with_oracle``, measured in fresh subprocesses (wall seconds and
peak resident memory, VmHWM) on at most 2 threads:

- ``analyze_36k``: ``load_runs`` + the whole default ``analyze`` (mixed models and
  dose-response on) of the 36,000-run table;
- ``pooled_model_300_cells``: the pooled mixed model on a 300-cell table (7,200 runs),
  ``causalloc.stats.mixed_model`` vs the model it replaces (statsmodels MixedLM with one
  fixed effect per cell, random seed intercept), both metrics; ``ratio`` = old / new.
  The old model cannot run the 36,000-run table (killed at 23 GB in the issue).

    python benchmarks/stats.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causalloc.stats import analyze, compare_paired, load_runs, mixed_model, parse_spec

N_BOOT = 9999
#: the scaling table: cells, seeds, random draws K
SCALING_SHAPE = {"cells": 1500, "seeds": 8, "draws": 2}
REFERENCE_CELLS = 300


def make_table(folder: Path, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """Write the benchmark run table as a CSV; returns its path and the table."""
    rng = np.random.default_rng(seed)
    models, algorithms, budgets = range(5), range(10), [0.01 * (i + 1) for i in range(10)]
    index = pd.MultiIndex.from_product(
        [models, algorithms, budgets, range(10), ["attributed:activations", "random"]],
        names=["model", "algorithm", "budget", "seed", "condition"],
    ).to_frame(index=False)
    block_shift = rng.normal(0, 0.05, size=len(index) // 2).repeat(2)
    effect = np.where(index["condition"] == "random", 0.0, 0.01)
    index["aues"] = 0.5 + block_shift + effect + rng.normal(0, 0.02, len(index))
    index["relearn_es"] = 0.3 + block_shift + rng.normal(0, 0.02, len(index))
    path = folder / "runs.csv"
    index.to_csv(path, index=False)
    return path, index


def paired_arrays(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a (attributed), b (random) as [comparisons, 10 seeds] and each comparison's SESOI."""
    a, b = [], []
    for metric in ("aues", "relearn_es"):
        wide = table.pivot_table(index=["model", "algorithm", "budget", "seed"],
                                 columns="condition", values=metric)
        a.append(wide["attributed:activations"].to_numpy().reshape(-1, 10))
        b.append(wide["random"].to_numpy().reshape(-1, 10))
    a, b = np.concatenate(a), np.concatenate(b)
    return a, b, np.full(len(a), 0.02)


def reference_loop(a: np.ndarray, b: np.ndarray, sesoi: np.ndarray, seed: int = 0) -> float:
    """Seconds for the per-comparison scipy/pingouin loop over rows of a, b."""
    import pingouin
    from scipy import stats

    def mean_diff(x, y, axis=-1):
        return np.mean(x - y, axis=axis)

    start = time.perf_counter()
    for i in range(len(a)):
        x, y = a[i], b[i]
        stats.permutation_test((x - y,), np.mean, permutation_type="samples",
                               n_resamples=np.inf, vectorized=True, axis=-1,
                               rng=np.random.default_rng(seed))
        stats.bootstrap((x, y), mean_diff, paired=True, vectorized=True, n_resamples=N_BOOT,
                        method="BCa", rng=np.random.default_rng(seed))
        stats.ttest_rel(x, y)
        stats.wilcoxon(x, y)
        pingouin.tost(x, y, bound=sesoi[i], paired=True)
    return time.perf_counter() - start


def make_scaling_table(path: Path, cells: int, seeds: int, draws: int, seed: int = 0) -> int:
    """Write cells x seeds x (1 attributed + ``draws`` random) runs as a CSV; returns rows."""
    rng = np.random.default_rng(seed)
    blocks = pd.MultiIndex.from_product(
        [[f"c{i:04d}" for i in range(cells)], range(seeds)], names=["config", "seed"]
    ).to_frame(index=False)
    shift = rng.normal(0, 0.05, len(blocks))
    parts = []
    for condition, n_draws, effect, overlap in (("attributed:activations", 1, 0.01, (0.3, 0.6)),
                                                ("random", draws, 0.0, (0.0, 0.1))):
        for draw in range(n_draws):
            part = blocks.assign(condition=condition, mask_draw=draw)
            part["aues"] = 0.5 + shift + effect + rng.normal(0, 0.02, len(blocks))
            part["relearn_es"] = 0.3 + shift + rng.normal(0, 0.02, len(blocks))
            part["overlap_with_oracle"] = rng.uniform(*overlap, len(blocks))
            parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table.to_csv(path, index=False)
    return len(table)


def previous_pooled_model(block_means: pd.DataFrame, metric: str):
    """The pooled model before issue 13: one fixed effect per cell, random seed intercept."""
    formula = f"{metric} ~ C(condition, Treatment(reference='random')) + C(config)"
    return smf.mixedlm(formula, block_means, groups=block_means["seed"]).fit(reml=True)


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (Linux; ru_maxrss there survives exec and
    so can be the parent's), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind: str, path: Path) -> dict:
    """Run one measured part in this (fresh) process: wall seconds and peak RSS in MB."""
    metrics = ["aues", "relearn_es"]
    before = _peak_rss_mb()
    start = time.perf_counter()
    if kind == "analyze":
        result = analyze(load_runs(path, block="config,seed", metric=",".join(metrics)))
        extra = {"comparisons": len(result.comparisons), "mixed_models": len(result.mixed_models),
                 "dose_response": len(result.dose_response)}
    else:
        runs = pd.read_csv(path)
        block_means = runs.groupby(["config", "seed", "condition"])[metrics].mean().reset_index()
        start = time.perf_counter()
        for metric in metrics:
            if kind == "previous":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # it warns about convergence here
                    previous_pooled_model(block_means, metric)
            else:
                mixed_model(block_means, metric=metric, condition="condition",
                            reference="random", replicate="seed",
                            block_columns=["config", "seed"])
        extra = {}
    return {"seconds": round(time.perf_counter() - start, 3),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "rss_before_mb": round(before, 1), **extra}


def _measure(kind: str, path: Path) -> dict:
    threads = {name: "2" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                       "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True,
        env={**os.environ, **threads}, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling() -> dict:
    """The 36,000-run analysis, and the pooled model old vs new at 300 cells."""
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "runs_36k.csv", Path(tmp) / "runs_300.csv"
        rows = make_scaling_table(big, **SCALING_SHAPE)
        small_rows = make_scaling_table(small, REFERENCE_CELLS, SCALING_SHAPE["seeds"],
                                        SCALING_SHAPE["draws"])
        whole = _measure("analyze", big)
        new = _measure("mixed_model", small)
        old = _measure("previous", small)
    return {
        "analyze_36k": {"n_runs": rows, **SCALING_SHAPE, **whole},
        "pooled_model_300_cells": {
            "n_runs": small_rows, "seconds": new["seconds"], "seconds_previous": old["seconds"],
            "ratio": round(old["seconds"] / max(new["seconds"], 1e-3), 1),
            "peak_rss_mb": new["peak_rss_mb"], "peak_rss_mb_previous": old["peak_rss_mb"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--part", choices=["all", "comparisons", "scaling"], default="all",
                        help="which measurements to run (default: all)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], Path(args.child[1]))))
        return 0
    report = comparisons() if args.part in ("all", "comparisons") else {}
    if args.part in ("all", "scaling"):
        report["scaling"] = scaling()
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=1))
    return 0


def comparisons() -> dict:
    """The 1,000-comparison table: analyze vs the per-comparison loop (see the docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, table = make_table(Path(tmp))
        a, b, sesoi = paired_arrays(table)
        # warm-up of both sides (imports, caches) so that neither pays one-off costs
        reference_loop(a[:2], b[:2], sesoi[:2])
        compare_paired(a[:2], b[:2], sesoi=sesoi[:2], n_boot=N_BOOT)
        columns = {"block": "model,algorithm,budget,seed", "metric": "aues,relearn_es"}
        spec = parse_spec({"n_boot": N_BOOT, "mixed_model": False, "dose_response": False})
        start = time.perf_counter()
        result = analyze(load_runs(path, **columns), spec)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        full = analyze(load_runs(path, **columns), parse_spec({"n_boot": N_BOOT}))
        seconds_full = time.perf_counter() - start
    frame = result.comparisons
    seconds_loop = reference_loop(a, b, sesoi)
    report = {
        "seconds": round(seconds, 3),
        "seconds_loop": round(seconds_loop, 3),
        "ratio": round(seconds_loop / seconds, 2),
        "seconds_full": round(seconds_full, 3),
        "n_runs": len(table),
        "n_comparisons": len(frame),
        "n_blocks": int(frame["n_blocks"].iloc[0]),
        "n_boot": N_BOOT,
        "mixed_models": len(full.mixed_models),
        "dose_response": len(full.dose_response),
    }
    return report


if __name__ == "__main__":
    sys.exit(main())
