"""Tuning-fair comparisons: each arm's best grid setting, chosen on held-out items.

A tuned design (``[tuning]`` in the spec, ``tuning`` in design.json) runs every condition and
mask draw of a block at every point of its algorithm's grid (e.g. four learning rates). An arm
run at a learning rate tuned for another arm is a handicapped arm (Wang & Veitch 2025 find
random heads as good as localized ones once each arm's edit is optimised), so the comparison
is made between each arm's *own* best setting:

    selected(b, c, d) = argmax_g  select_<criterion>(b, c, d, g)

per block b, condition c and draw d, over the grid points g with a finite criterion. The
criterion (AUES by default) is scored on the *selection* items only; every outcome metric of
the kept run is scored on the disjoint *evaluation* items, so choosing the best of several
settings does not inflate the reported outcome (the winner's curse of choosing and scoring on
the same items). Ties go to the first grid point in design order (the smallest value when
the grid is written ascending). Pure pandas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causalloc.errors import TableError

#: the columns of selected_runs.csv before the metrics (those present in the table)
SELECTED_ID_COLUMNS = ("testbed", "seed", "algorithm", "condition", "mask_draw")


def grid_columns(tuning: dict) -> list[str]:
    """The run-table columns that hold grid values (``lr``, ``steps``), in a stable order."""
    keys = {key for grid in tuning.get("grid", {}).values() for key in grid}
    return [key for key in ("lr", "steps") if key in keys]


def select_runs(runs: pd.DataFrame, tuning: dict, *, block_columns: list[str], condition: str,
                draw: str | None, source: str = "") -> pd.DataFrame:
    """The selected run of every block x condition x draw (see the module docstring).

    ``runs``: the done runs of a tuned design, with the ``select_<criterion>`` column
    (``tuning["selection_column"]``) and the grid columns. A group whose grid points all
    lack a finite criterion keeps its first run (its metrics are then those of a failed
    selection and are NaN where the run diverged); the count is in :func:`tuning_summary`.
    """
    column = tuning["selection_column"]
    missing = [c for c in (column, *grid_columns(tuning)) if c not in runs.columns]
    if missing:
        raise TableError(f"{source}: design.json declares a tuned design, but the run table has "
                         f"no column(s) {missing}")
    identity = [*block_columns, condition] + ([draw] if draw else [])
    score = pd.to_numeric(runs[column], errors="coerce")
    ranked = runs.assign(_score=score.where(np.isfinite(score), -np.inf), _order=np.arange(len(runs)))
    ranked = ranked.sort_values(["_score", "_order"], ascending=[False, True], kind="stable")
    chosen = ranked.drop_duplicates(identity, keep="first").sort_values("_order", kind="stable")
    return chosen.drop(columns=["_score", "_order"])


def tuning_summary(runs: pd.DataFrame, selected: pd.DataFrame, tuning: dict, *,
                   condition: str) -> dict:
    """What the selection did: per algorithm and condition, how often each grid value was
    chosen and how often the choice sits at an edge of the grid (then the grid may not bracket
    the arm's optimum, and should be widened), plus the rule and the split."""
    rows = []
    for key in grid_columns(tuning):
        for (algorithm, cond), group in selected.groupby(["algorithm", condition], sort=True):
            grid = sorted(tuning["grid"].get(algorithm, {}).get(key, []))
            if not grid:
                continue
            chosen = group[key].to_numpy(dtype=float)
            rows.append({
                "algorithm": algorithm, "condition": cond, "key": key, "grid": grid,
                "counts": {f"{value:g}": int(np.isclose(chosen, value).sum()) for value in grid},
                "n": int(len(chosen)),
                "at_low_edge": int(np.isclose(chosen, grid[0]).sum()),
                "at_high_edge": int(np.isclose(chosen, grid[-1]).sum()),
            })
    finite = np.isfinite(pd.to_numeric(selected[tuning["selection_column"]], errors="coerce"))
    return {
        "criterion": tuning["criterion"],
        "selection_column": tuning["selection_column"],
        "selection_fraction": tuning["selection_fraction"],
        "rule": "per block x condition x draw, the grid point with the highest "
                f"{tuning['selection_column']} (scored on the selection items); every metric of "
                "the kept run scored on the evaluation items; ties to the first grid point",
        "n_runs": int(len(runs)),
        "n_selected": int(len(selected)),
        "n_without_finite_criterion": int((~finite).sum()),
        "choices": rows,
    }


def selected_table(selected: pd.DataFrame, metrics: list[str], tuning: dict) -> pd.DataFrame:
    """``selected_runs.csv``: one row per block x condition x draw with the identifying
    columns present (testbed, seed, algorithm, condition, mask_draw), the chosen grid values,
    the selection score and every metric under its runs.csv name, plus flags and run_id."""
    ids = [c for c in SELECTED_ID_COLUMNS if c in selected.columns]
    extra = [c for c in ("flags", "theta_o_fingerprint", "run_id") if c in selected.columns]
    columns = [*ids, *grid_columns(tuning), tuning["selection_column"], *metrics, *extra]
    return selected[list(dict.fromkeys(columns))].reset_index(drop=True)
