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

    python benchmarks/stats.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causalloc.stats import analyze, compare_paired, load_runs, parse_spec

N_BOOT = 9999


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
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
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>15}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
