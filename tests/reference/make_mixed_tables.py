"""Write the validation tables of the pooled mixed model (tests/reference/mixed/*.csv).

Each table is one row per (block, condition); ``tables.csv`` lists, per table, its cell
columns, replicate, condition column, reference condition and metric, which
make_mixed_reference.R reads to fit lmerTest. Deterministic (numpy Generator, seeds
below)::

    python tests/reference/make_mixed_tables.py && Rscript tests/reference/make_mixed_reference.R
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FOLDER = Path(__file__).resolve().parent / "mixed"


def _table(cells: pd.DataFrame, seeds, effects: dict, *, seed: int, sd_seed_condition=0.0,
           sd_block=0.03, sd_seed=0.03, sd_residual=0.01) -> pd.DataFrame:
    """metric = 0.5 + seed + block + seed:condition + condition effect + residual."""
    rng = np.random.default_rng(seed)
    seed_shift = dict(zip(seeds, rng.normal(0, sd_seed, len(seeds))))
    slope = {(s, c): rng.normal(0, sd_seed_condition) for s in seeds for c in effects}
    rows = []
    for cell in cells.to_dict("records"):
        for s in cell.pop("_seeds", seeds):
            block_shift = rng.normal(0, sd_block)
            for condition, effect in effects.items():
                value = 0.5 + seed_shift[s] + block_shift + slope[s, condition] + effect
                rows.append({**cell, "seed": s, "condition": condition,
                             "aues": round(value + rng.normal(0, sd_residual), 6)})
    return pd.DataFrame(rows)


def tables() -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """name -> (table, cell columns)."""
    out = {}
    # one cell, six seeds: the model is the paired t-test (df = 5; p = 0.041 where a
    # normal reference gives 0.0064, the case)
    out["one_cell_six_seeds"] = (
        _table(pd.DataFrame([{"algorithm": "npo"}]), list(range(6)),
               {"random": 0.0, "oracle": 0.004}, seed=1),
        ["algorithm"],
    )
    # three algorithms x 10 seeds, three conditions; the oracle effect varies by seed
    three = _table(pd.DataFrame({"algorithm": ["ga", "npo", "simnpo"]}), list(range(10)),
                   {"random": 0.0, "oracle": 0.01, "attributed": 0.004}, seed=2,
                   sd_seed_condition=0.004)
    out["three_algorithms"] = (three, ["algorithm"])
    # the same design without seed:condition variation; its REML estimate is 0 (boundary)
    # and the model reduces to the y ~ condition + algorithm + (1|seed) + (1|block)
    out["three_algorithms_boundary"] = (
        _table(pd.DataFrame({"algorithm": ["ga", "npo", "simnpo"]}), list(range(10)),
               {"random": 0.0, "attributed": 0.004}, seed=10),
        ["algorithm"],
    )
    # 12 cells from three cell columns, 8 seeds
    grid = pd.MultiIndex.from_product(
        [["tiny", "small"], ["ga", "npo", "simnpo"], [0.05, 0.1]],
        names=["model", "algorithm", "budget"],
    ).to_frame(index=False)
    out["twelve_cells"] = (
        _table(grid, list(range(8)), {"random": 0.0, "attributed": 0.005}, seed=3,
               sd_seed_condition=0.003),
        ["model", "algorithm", "budget"],
    )
    # unbalanced: different seeds per algorithm, and one block missing its attributed run
    cells = pd.DataFrame({"algorithm": ["ga", "npo", "simnpo", "rmu"]})
    cells["_seeds"] = [list(range(10)), list(range(8)), list(range(6)), list(range(2, 10))]
    unbalanced = _table(cells, list(range(10)), {"random": 0.0, "attributed": 0.006}, seed=4,
                        sd_seed_condition=0.004)
    missing = (unbalanced["algorithm"] == "npo") & (unbalanced["seed"] == 3) & (
        unbalanced["condition"] == "attributed")
    out["unbalanced"] = (unbalanced[~missing].reset_index(drop=True), ["algorithm"])
    return out


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    manifest = []
    for name, (frame, cells) in tables().items():
        frame.to_csv(FOLDER / f"{name}.csv", index=False)
        manifest.append({"table": name, "cells": ":".join(cells), "replicate": "seed",
                         "condition": "condition", "reference": "random", "metric": "aues"})
    pd.DataFrame(manifest).to_csv(FOLDER / "tables.csv", index=False)


if __name__ == "__main__":
    main()
