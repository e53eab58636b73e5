"""Family-wise false-call rate of the default families on a null design, via ``analyze``.

Design (issue 13 acceptance): 5 cells x 3 metrics x 4 comparisons per simulated dataset:
conditions attributed:grad, attributed:act, attributed:ig and oracle, each vs random with
K = 2 random draws per block, ``--blocks`` blocks (seeds) per cell. Every mask is an
exchangeable draw (the null is true everywhere); the noise is lognormal (sigma 1.5, the
skewed case) around a block effect. All datasets go into one run table with a
``dataset`` cell column and are analysed once by ``causalloc.stats.analyze`` with
``family_split = ["dataset"]``, so each dataset has its own families:

- default families: ``primary`` = the 3 attributed conditions vs random in all 5 cells of
  the first metric (15 hypotheses, Holm), ``controls | m1`` (oracle vs random, 5),
  ``secondary | m2`` and ``secondary | m3`` (20 each);
- for contrast, the previous default: one family per (metric, cell) (``family_split =
  ["dataset", "cell"]`` with every comparison of a metric and cell in one family).

Reported: the share of datasets with at least one false call (a_better / b_better
verdict) among the primary hypotheses, with its Monte Carlo standard error, and the same
over all 60 comparisons. Acceptance: primary family-wise rate <= 0.05 (+ 1.96 MC se).

    python benchmarks/families.py --out reports/validation
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
CELLS = 5
METRICS = ("m1", "m2", "m3")
TESTED = ("attributed:grad", "attributed:act", "attributed:ig", "oracle")
K_RANDOM = 2
LOGNORMAL_SIGMA = 1.5


def simulate(path: Path, datasets: int, blocks: int, rng: np.random.Generator) -> None:
    """Write the null run table: every condition and draw is noise around the block effect."""
    conditions = [(c, 0) for c in TESTED] + [("random", d) for d in range(K_RANDOM)]
    shape = (datasets, CELLS, blocks, len(conditions))
    dataset, cell, seed, which = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    frame = pd.DataFrame({
        "dataset": dataset.ravel(), "cell": cell.ravel(), "seed": seed.ravel(),
        "condition": np.array([c for c, _ in conditions])[which.ravel()],
        "mask_draw": np.array([d for _, d in conditions])[which.ravel()],
    })
    for metric in METRICS:
        block = rng.normal(0, 1, size=shape[:3])[..., None]
        noise = rng.lognormal(0, LOGNORMAL_SIGMA, size=shape)
        frame[metric] = (block + noise).ravel()
    frame.to_csv(path, index=False)


def rate(flags: pd.Series) -> tuple[float, float]:
    r = float(flags.mean())
    return r, math.sqrt(r * (1 - r) / len(flags))


def run(datasets: int, blocks: int, seed: int, contrast_datasets: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "null.csv"
        simulate(path, datasets, blocks, rng)
        contrast = Path(tmp) / "contrast.csv"
        pd.read_csv(path).query("dataset < @contrast_datasets").to_csv(contrast, index=False)
        settings = {"sesoi": {m: 0.5 for m in METRICS},
                    "higher_is_better": {m: True for m in METRICS}, "mixed_model": False,
                    "dose_response": False, "n_boot": 100, "seed": seed, "alpha": ALPHA}
        # the previous default: a family per metric, split by cell
        per_cell = [{"a": c, "b": "random", "metrics": [m], "family": m}
                    for c in TESTED for m in METRICS]
        for name, source, extra in (
            ("default families (primary / controls / secondary)", path,
             {"family_split": ["dataset"]}),
            ("previous default: one family per (metric, cell)", contrast,
             {"family_split": ["dataset", "cell"], "comparisons": per_cell}),
        ):
            start = time.perf_counter()
            table = load_runs(source, block="dataset,cell,seed", condition="condition",
                              metric=",".join(METRICS), replicate="seed", draw="mask_draw")
            frame = analyze(table, parse_spec(settings | extra)).comparisons
            false_call = frame["verdict"].isin(["a_better", "b_better"])
            frame["dataset"] = frame["cell"].map(lambda c: c["dataset"])
            primary = (frame["metric"] == "m1") & frame["a"].str.startswith("attributed")
            any_primary = false_call[primary].groupby(frame.loc[primary, "dataset"]).any()
            any_call = false_call.groupby(frame["dataset"]).any()
            fwer, fwer_se = rate(any_primary)
            rows.append({
                "families": name, "datasets": int(frame["dataset"].nunique()), "blocks": blocks,
                "cells": CELLS,
                "metrics": len(METRICS), "comparisons_per_cell": len(TESTED),
                "k_random": K_RANDOM,
                "primary_hypotheses": int(primary.sum() // len(any_primary)),
                "primary_fwer": fwer, "primary_fwer_mc_se": fwer_se,
                "any_false_call_rate": rate(any_call)[0],
                "false_call_rate_per_comparison": rate(false_call)[0],
                "pass": bool(fwer <= ALPHA + 1.96 * math.sqrt(ALPHA * (1 - ALPHA)
                                                              / len(any_primary))),
                "seconds": round(time.perf_counter() - start, 1),
            })
    return pd.DataFrame(rows)


def write(results: pd.DataFrame, out: Path, command: str, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "families.csv", index=False, float_format="%.4f")
    lines = [
        "# Family-wise false calls under the null",
        "",
        f"Regenerate: `{command}` (seed {seed}; written {datetime.date.today().isoformat()}).",
        "",
        "Null design per simulated dataset: 5 cells x 3 metrics x 4 comparisons (3 attributed",
        "conditions and oracle, each vs random with K = 2 draws), lognormal noise (sigma 1.5),",
        "analysed by `causalloc.stats.analyze` with families split by dataset. `primary_fwer`:",
        "share of datasets with at least one a_better / b_better verdict among the 15 primary",
        "hypotheses (attributed vs random, all cells, first metric), with its Monte Carlo",
        "standard error; `any_false_call_rate`: the same over all 60 comparisons (families",
        "are not adjusted against each other); `false_call_rate_per_comparison`: per",
        "comparison. Acceptance: primary_fwer <= 0.05 (+ 1.96 MC se) with the default families.",
        "The contrast row (the first datasets of the same simulation) shows the previous",
        "default, one Holm family per (metric, cell): nothing controlled across cells.",
        "",
        results.to_markdown(index=False, floatfmt=".4f"),
        "",
        f"Package versions: `{json.dumps(package_versions())}`",
        "",
    ]
    (out / "families.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/validation", help="folder for the table")
    parser.add_argument("--datasets", type=int, default=2000)
    parser.add_argument("--contrast-datasets", type=int, default=500,
                        help="datasets analysed with the previous per-(metric, cell) families")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    results = run(args.datasets, args.blocks, args.seed, args.contrast_datasets)
    command = "python benchmarks/families.py " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
    write(results, Path(args.out), command.strip(), args.seed)
    print(results.drop(columns=["cells", "metrics", "comparisons_per_cell"]).to_string(
        index=False))
    return 0 if results["pass"].iloc[0] else 1


if __name__ == "__main__":
    sys.exit(main())
