"""Calibration of the stats layer on simulated matched run tables with known truth.

Each scenario writes one run table in which every simulated dataset is its own cell
(``dataset`` column), analyses it once with ``causalloc.stats.analyze`` (families split by
``dataset``, so nothing is adjusted across datasets) and reports how often each test
rejects at alpha = 0.05 and how often each verdict occurs, with the Monte Carlo standard
error sqrt(r (1 - r) / N). Per block, a = mu_block + delta + e_a and each of the K random
draws r_k = mu_block + e_k with e i.i.d. N(0, s^2), t_3, lognormal (sigma 1.5) or
exponential, centred and scaled to variance s^2; b = mean_k r_k, so sd(a - b) =
s sqrt(1 + 1/K) and s is chosen to make sd(a - b) = 1, i.e. d_z = delta. Under the null
the tested mask is exchangeable with the K draws, whatever the noise.

Checks (issue 6 and issue 13 acceptance):
- null: the verdict test (randomization against K >= 2 draws, else sign-flip) rejects at
  most 0.05 + 1.96 MC se (within Monte Carlo error of alpha, or below), and so do the
  directional verdicts a_better + b_better (p_perm, p_t, p_wilcoxon recorded alongside:
  the sign-flip test on mask - mean of K draws is not valid for skewed metrics);
- d_z = 1 with 12 blocks: power of the verdict test >= 0.8;
- true difference 0, SESOI = 1 sd, 36 blocks: ``equivalent`` in >= 80% of datasets.

    python benchmarks/calibration.py --out reports/validation
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causalloc.stats import analyze, load_runs, parse_spec
from causalloc.stats.analyze import package_versions

ALPHA = 0.05

#: name, n blocks, K random draws, true d_z, SESOI (sd units), noise, datasets, check
SCENARIOS = [
    ("null, normal, K = 4, 10 blocks", 10, 4, 0.0, 0.5, "normal", 4000, "null"),
    ("null, heavy tails (t3)", 10, 4, 0.0, 0.5, "t3", 2000, "null"),
    ("null, Monte Carlo sign-flip", 20, 1, 0.0, 0.5, "normal", 2000, "null"),
    ("d_z = 1, 12 blocks", 12, 4, 1.0, 0.5, "normal", 2000, "power"),
    ("zero effect, SESOI = 1 sd, 36 blocks", 36, 4, 0.0, 1.0, "normal", 2000, "equivalence"),
    ("null, lognormal 1.5, K = 2, 8 blocks", 8, 2, 0.0, 0.5, "lognormal", 4000, "null"),
    ("null, lognormal 1.5, K = 2, 10 blocks", 10, 2, 0.0, 0.5, "lognormal", 4000, "null"),
    ("null, exponential, K = 2, 8 blocks", 8, 2, 0.0, 0.5, "exponential", 4000, "null"),
    ("null, exponential, K = 2, 10 blocks", 10, 2, 0.0, 0.5, "exponential", 4000, "null"),
]
#: sigma of the lognormal noise (the issue's reproduction)
LOGNORMAL_SIGMA = 1.5


def simulate(folder: Path, n_blocks: int, k: int, d_z: float, noise: str, datasets: int,
             rng: np.random.Generator) -> Path:
    """Write a matched run table with ``datasets`` cells of ``n_blocks`` blocks each."""
    scale = 1 / math.sqrt(1 + 1 / k)  # sd(a - mean of K draws) = 1

    def errors(size):
        if noise == "t3":
            return rng.standard_t(3, size=size) / math.sqrt(3.0) * scale  # unit variance
        if noise == "lognormal":
            s2 = LOGNORMAL_SIGMA**2
            mean, sd = math.exp(s2 / 2), math.sqrt((math.exp(s2) - 1) * math.exp(s2))
            return (rng.lognormal(0, LOGNORMAL_SIGMA, size=size) - mean) / sd * scale
        if noise == "exponential":
            return (rng.exponential(1.0, size=size) - 1.0) * scale
        return rng.normal(0, scale, size=size)

    shape = (datasets, n_blocks)
    block = rng.normal(0, 1, size=shape)
    a = block + d_z + errors(shape)
    draws = block[..., None] + errors((*shape, k))
    dataset, seed = np.meshgrid(np.arange(datasets), np.arange(n_blocks), indexing="ij")
    frames = [pd.DataFrame({"dataset": dataset.ravel(), "seed": seed.ravel(),
                            "condition": "attributed", "mask_draw": 0, "metric": a.ravel()})]
    for draw in range(k):
        frames.append(pd.DataFrame({"dataset": dataset.ravel(), "seed": seed.ravel(),
                                    "condition": "random", "mask_draw": draw,
                                    "metric": draws[..., draw].ravel()}))
    path = folder / f"runs_{n_blocks}_{k}_{d_z}_{noise}.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def rate(flags: pd.Series) -> tuple[float, float]:
    """Share of True and its Monte Carlo standard error (NaN for an empty selection)."""
    if not len(flags):
        return math.nan, math.nan
    r = float(flags.mean())
    return r, math.sqrt(r * (1 - r) / len(flags))


def rejection_rate(p: pd.Series) -> float:
    """Share of p < alpha among the datasets where the test was computed (NaN if none)."""
    return rate(p.dropna() < ALPHA)[0]


def run(seed: int, n_boot: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, n_blocks, k, d_z, sesoi, noise, datasets, check in SCENARIOS:
            start = time.perf_counter()
            path = simulate(Path(tmp), n_blocks, k, d_z, noise, datasets, rng)
            spec = parse_spec({"sesoi": {"metric": sesoi}, "higher_is_better": {"metric": True},
                               "mixed_model": False, "dose_response": False, "n_boot": n_boot,
                               "seed": seed, "alpha": ALPHA, "family_split": ["dataset"]})
            table = load_runs(path, block="dataset,seed", condition="condition",
                              metric="metric", replicate="seed", draw="mask_draw")
            frame = analyze(table, spec).comparisons
            rejection, rejection_se = rate(frame["p_adj"] < ALPHA)  # families of one: p_adj = p
            directional, directional_se = rate(frame["verdict"].isin(["a_better", "b_better"]))
            equivalent, _ = rate(frame["verdict"] == "equivalent")
            null_se = math.sqrt(ALPHA * (1 - ALPHA) / datasets)
            if check == "null":
                passed = rejection <= ALPHA + 1.96 * null_se and (
                    directional <= ALPHA + 1.96 * null_se
                )
                criterion = ("verdict-test rate <= 0.05 + 1.96 MC se; "
                             "a/b_better <= 0.05 + 1.96 MC se")
            elif check == "power":
                passed = rejection >= 0.8
                criterion = "verdict-test power >= 0.8"
            else:
                passed = equivalent >= 0.8
                criterion = "equivalent >= 0.8"
            rows.append({
                "scenario": name, "n_blocks": n_blocks, "k_random": k, "true_d_z": d_z,
                "sesoi_sd": sesoi, "noise": noise, "datasets": datasets,
                "verdict_test": "/".join(sorted(frame["verdict_test"].unique())),
                "exact": bool(np.where(frame["verdict_test"] == "randomization",
                                       frame["p_rand_exact"], frame["p_perm_exact"]).all()),
                "reject_verdict_p": rejection, "mc_se": rejection_se,
                "reject_p_perm": rejection_rate(frame["p_perm"]),
                "reject_p_rand": rejection_rate(frame["p_rand"]),
                "reject_p_t": rejection_rate(frame["p_t"]),
                "reject_p_wilcoxon": rejection_rate(frame["p_wilcoxon"]),
                "bca_covers_truth": rate((frame["ci95_lo"] <= d_z) & (d_z <= frame["ci95_hi"]))[0],
                "t_ci_covers_truth": rate(
                    (frame["t_ci95_lo"] <= d_z) & (d_z <= frame["t_ci95_hi"])
                )[0],
                "a_or_b_better": directional, "a_or_b_better_mc_se": directional_se,
                "a_better": rate(frame["verdict"] == "a_better")[0],
                "b_better": rate(frame["verdict"] == "b_better")[0],
                "equivalent": equivalent,
                "negligible": rate(frame["verdict"] == "negligible")[0],
                "inconclusive": rate(frame["verdict"] == "inconclusive")[0],
                "criterion": criterion, "pass": bool(passed),
                "seconds": round(time.perf_counter() - start, 1),
            })
    return pd.DataFrame(rows)


def write(results: pd.DataFrame, out: Path, command: str, seed: int, n_boot: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "calibration.csv", index=False, float_format="%.4f")
    shown = results.drop(columns=["criterion", "noise", "k_random", "sesoi_sd"])
    lines = [
        "# Calibration of causalloc.stats",
        "",
        (f"Regenerate: `{command}` (seed {seed}, {n_boot} bootstrap resamples per CI; "
         f"written {datetime.date.today().isoformat()})."),
        "",
        "Simulated matched run tables with known truth; every dataset is one cell analysed by",
        "`causalloc.stats.analyze` with alpha = 0.05 (families split by dataset). `reject_*`:",
        "share of datasets with p < 0.05; `reject_verdict_p`: the verdict test's p",
        "(`verdict_test`: the stratified randomization test against the K random draws when",
        "K >= 2, else sign-flip), `mc_se` its Monte Carlo standard error sqrt(r (1 - r) / N);",
        "`a_or_b_better_mc_se` likewise for the directional verdicts. `bca_covers_truth` and",
        "`t_ci_covers_truth`: coverage of the true mean difference by the 95% BCa bootstrap and",
        "t intervals (`reject_p_rand` is empty with K = 1: no randomization test). Verdict",
        "columns are shares of datasets. Skewed nulls (lognormal sigma 1.5, exponential): the",
        "sign-flip test on mask - mean of K draws (`reject_p_perm`) is not valid there, the",
        "randomization test is (the masks are exchangeable within a block under the null).",
        "",
        shown.to_markdown(index=False, floatfmt=".4f"),
        "",
        "Criteria:",
        "",
        *[f"- {r.scenario}: {r.criterion} -> {'pass' if r['pass'] else 'FAIL'}"
          for _, r in results.iterrows()],
        "",
        f"Package versions: `{json.dumps(package_versions())}`",
        "",
    ]
    (out / "calibration.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/validation", help="folder for the table")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--n-boot", type=int, default=1999)
    args = parser.parse_args(argv)
    results = run(args.seed, args.n_boot)
    command = "python benchmarks/calibration.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])
    write(results, Path(args.out), command.strip(), args.seed, args.n_boot)
    print(results[["scenario", "reject_verdict_p", "mc_se", "reject_p_perm", "a_or_b_better",
                   "a_or_b_better_mc_se", "equivalent", "pass"]].to_string(index=False))
    return 0 if results["pass"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
