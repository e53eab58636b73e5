"""Validation by simulation of issue 21: verdict-test intervals, equivalence under skew,
and the group-sequential analysis.

Shift model with K = 2 random draws per block: block effect u_b ~ N(0, 1); the random
draws are u_b + e_bj and the tested mask is u_b + Delta + e_b0, with e iid standard normal
or standardised lognormal ((exp(Z) - e^0.5) / sqrt(e (e - 1)), skewness 6.2), so the
tested mask's distribution is the random one shifted by Delta and the true mean difference
is Delta. SESOI = 1 (one noise sd). Fixed-sample part: every data set goes through
:func:`causalloc.stats.compare_paired` (the per-comparison statistics of ``analyze``; exact
randomization test: 3^8 and 3^10 assignments). Sequential part:
:func:`causalloc.stats.sequential.sequential_test`, 6 looks of 4 blocks (max 24 blocks),
alpha = 0.05, 9,999 resamples.

Run: python benchmarks/intervals_sequential.py --out reports/validation [--datasets 1000]
Writes intervals_sequential.csv and intervals_sequential.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from causalloc.stats import compare_paired
from causalloc.stats.sequential import sequential_test

SESOI = 1.0
K = 2


def noise(rng, kind, size):
    if kind == "normal":
        return rng.standard_normal(size)
    z = rng.lognormal(0.0, 1.0, size)
    return (z - math.exp(0.5)) / math.sqrt(math.e * (math.e - 1))


def data(rng, kind, n_sets, n_blocks, delta):
    block = rng.standard_normal((n_sets, n_blocks, 1))
    draws = block + noise(rng, kind, (n_sets, n_blocks, K))
    tested = block[..., 0] + delta + noise(rng, kind, (n_sets, n_blocks))
    return tested, draws


def mc_se(share, n):
    return math.sqrt(max(share * (1 - share), 1e-12) / n)


def fixed_sample(rng, n_sets):
    rows = []
    for kind in ("normal", "lognormal"):
        for n_blocks in (8, 10):
            for delta in (0.0, 0.5, SESOI):
                start = time.perf_counter()
                tested, draws = data(rng, kind, n_sets, n_blocks, delta)
                out = compare_paired(tested, draws.mean(axis=2), draws=draws, sesoi=SESOI,
                                     n_boot=999, seed=int(rng.integers(1 << 30)))
                covers = ((out["ci95_lo"] <= delta) & (delta <= out["ci95_hi"])).mean()
                bca = ((out["ci95_bca_lo"] <= delta) & (delta <= out["ci95_bca_hi"])).mean()
                excludes = (out["ci95_lo"] > 0) | (out["ci95_hi"] < 0)
                agree = (excludes == (out["p_rand"] < 0.05)).mean()
                equivalent = (out["tost_p"] < 0.05).mean()
                rows.append({
                    "part": "fixed", "noise": kind, "n_blocks": n_blocks, "delta": delta,
                    "datasets": n_sets, "ci95_coverage": covers,
                    "ci95_coverage_mc_se": mc_se(covers, n_sets), "bca_coverage": bca,
                    "ci_agrees_with_verdict_test": agree,
                    "reject_p_rand": (out["p_rand"] < 0.05).mean(),
                    "equivalent": equivalent, "equivalent_mc_se": mc_se(equivalent, n_sets),
                    "seconds": round(time.perf_counter() - start, 1)})
    return rows


def sequential(rng, n_sets, n_resamples):
    rows = []
    for kind in ("normal", "lognormal"):
        for delta in (0.0, SESOI, 3 * SESOI):
            start = time.perf_counter()
            tested, draws = data(rng, kind, n_sets, 24, delta)
            results = [sequential_test(tested[i], draws[i].mean(axis=1), draws[i], sesoi=SESOI,
                                       higher_is_better=True, look_every=4, max_blocks=24,
                                       alpha=0.05, family_size=1,
                                       rng=np.random.default_rng([2026, i]),
                                       n_resamples=n_resamples) for i in range(n_sets)]
            decisions = pd.Series([r["decision"] for r in results])
            used = np.array([r["blocks_used"] for r in results])
            directional = decisions.isin(["a_better", "b_better", "negligible"]).mean()
            equivalent = decisions.isin(["equivalent", "negligible"]).mean()
            rows.append({
                "part": "sequential", "noise": kind, "n_blocks": 24, "delta": delta,
                "datasets": n_sets, "directional": directional,
                "directional_mc_se": mc_se(directional, n_sets), "equivalent": equivalent,
                "equivalent_mc_se": mc_se(equivalent, n_sets),
                "a_better": (decisions == "a_better").mean(),
                "mean_blocks_used": used.mean(), "stopped_early": (used < 24).mean(),
                "seconds": round(time.perf_counter() - start, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/validation")
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--sequential-datasets", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=9999)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    frame = pd.DataFrame(fixed_sample(rng, args.datasets)
                         + sequential(rng, args.sequential_datasets, args.resamples))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "intervals_sequential.csv", index=False)
    fixed = frame[frame["part"] == "fixed"].dropna(axis=1, how="all")
    seq = frame[frame["part"] == "sequential"].dropna(axis=1, how="all")
    checks = {
        "ci95 coverage >= 0.95 within 2 MC se": bool(
            (fixed["ci95_coverage"] >= 0.95 - 2 * fixed["ci95_coverage_mc_se"]).all()),
        "ci95 excludes 0 iff the verdict test rejects (all data sets)": bool(
            (fixed["ci_agrees_with_verdict_test"] == 1).all()),
        "false equivalence at +SESOI <= 0.05 within 2 MC se": bool(
            (fixed.loc[fixed["delta"] == SESOI, "equivalent"]
             <= 0.05 + 2 * fixed.loc[fixed["delta"] == SESOI, "equivalent_mc_se"]).all()),
        "sequential type I error (delta 0) <= 0.05 within 2 MC se": bool(
            (seq.loc[seq["delta"] == 0, "directional"]
             <= 0.05 + 2 * seq.loc[seq["delta"] == 0, "directional_mc_se"]).all()),
        "sequential false equivalence at +SESOI <= 0.05 within 2 MC se": bool(
            (seq.loc[seq["delta"] == SESOI, "equivalent"]
             <= 0.05 + 2 * seq.loc[seq["delta"] == SESOI, "equivalent_mc_se"]).all()),
        "sequential stops early at delta 0 and 3 x SESOI (mean blocks < 24)": bool(
            (seq.loc[seq["delta"] != SESOI, "mean_blocks_used"] < 24).all()),
    }
    today = datetime.date.today().isoformat()
    text = [
        "# Intervals, equivalence and sequential designs (issue 21)", "",
        (f"Regenerate: `python benchmarks/intervals_sequential.py --out reports/validation "
         f"--datasets {args.datasets} --sequential-datasets {args.sequential_datasets}` "
         f"(seed {args.seed}; written {today}; {frame['seconds'].sum():.0f} s)."), "",
        __doc__.split("\n\n")[1].replace("\n", " "), "",
        "MC se: binomial standard error of a share over the data sets, sqrt(r (1 - r) / N).",
        ("`ci95_coverage`: the verdict test inverted under a shift (causalloc's `ci95`); "
         "`bca_coverage`: the former BCa interval (now `ci95_bca`); `equivalent`: share with "
         "`tost_p` < 0.05 (two one-sided shifted randomization tests)."), "",
        "## Fixed sample", "", fixed.drop(columns="part").to_markdown(index=False, floatfmt=".4f"),
        "", "## Sequential (6 looks of 4 blocks, alpha 0.05, O'Brien-Fleming-type spending)", "",
        ("`directional`: share of data sets with a directional decision at any look (at "
         "delta 0: the type I error over all looks); `equivalent`: share declared equivalent "
         "at any look (at delta = +SESOI: the false-equivalence rate)."), "",
        seq.drop(columns="part").to_markdown(index=False, floatfmt=".4f"), "",
        "## Criteria", "", *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()],
        "", ("Boundaries: the spending function equals rpact's asOF alpha spent and the "
             "boundaries set from a Brownian-motion joint sample reproduce rpact's critical "
             "values (tests/reference/rpact_obf_boundaries.csv, "
             "tests/unit/test_stats_sequential.py)."), ""]
    (out / "intervals_sequential.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
