"""Multiplicity adjustment within declared families of comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from causalloc.errors import SpecError

#: adjustment names accepted in specs, as statsmodels' multipletests spells them
ADJUST_METHODS = ("holm", "fdr_bh")


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p for each row: max_{j<=i} (k - j) p_(j), capped at 1."""
    k = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1) * np.arange(k, 0, -1)
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


def adjust_pvalues(p: pd.Series, families: pd.Series, method: str = "holm") -> pd.Series:
    """Adjusted p-values within each family, batched over families of equal size.

    ``holm``: Holm (1979) step-down, controls the family-wise error rate.
    ``fdr_bh``: Benjamini & Hochberg (1995), controls the false discovery rate, via
    ``scipy.stats.false_discovery_control(method='bh', axis=1)``.
    Both equal ``statsmodels.stats.multitest.multipletests(p, method=...)`` (checked in
    tests), whose default 'hs' (Holm-Sidak) is never used implicitly. Holm is written
    out (three lines) because multipletests(method='holm') runs gc.collect() on every call,
    which costs ~0.1 s with a full heap: minutes for a thousand families.
    NaN p-values stay NaN and do not count towards the family size.
    """
    if method not in ADJUST_METHODS:
        raise SpecError(f"adjust: unknown method {method!r} (known: {', '.join(ADJUST_METHODS)})")
    finite = p.dropna()
    members = finite.groupby(families[finite.index], sort=False).indices
    by_size: dict[int, list[np.ndarray]] = {}
    for positions in members.values():
        by_size.setdefault(len(positions), []).append(positions)
    adjusted = pd.Series(np.nan, index=p.index, dtype=float)
    values = finite.to_numpy(dtype=float)
    for groups in by_size.values():
        index = np.stack(groups)
        matrix = values[index]
        if method == "holm":
            result = _holm_rows(matrix)
        else:
            result = stats.false_discovery_control(matrix, axis=1, method="bh")
        adjusted[finite.index[index.ravel()]] = result.ravel()
    return adjusted


#: half-width, in Monte Carlo standard errors, of the interval a decision must clear (99%)
MC_Z = 2.576


def unstable_decisions(p: pd.Series, mc_se: pd.Series, families: pd.Series, method: str,
                       alpha: float, z: float = MC_Z) -> np.ndarray:
    """Rows whose adjusted decision (p_adj < alpha) could flip on Monte Carlo noise.

    Every p is moved to the low and to the high end of its Monte Carlo interval
    p -+ z * se (exact p's have se = 0) and the family is adjusted both ways. Holm and BH
    adjusted p-values never decrease when an input p increases, so a row whose decision
    is the same at both ends keeps it for any values inside the intervals.
    """
    se = mc_se.fillna(0.0) * z
    low = adjust_pvalues((p - se).clip(lower=0.0), families, method) < alpha
    high = adjust_pvalues((p + se).clip(upper=1.0), families, method) < alpha
    return (low != high).to_numpy(copy=True)
