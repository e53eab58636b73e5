"""Classical paired tests used as robustness checks: paired t and Wilcoxon signed-rank."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from causalloc.stats.effects import t_interval


def paired_t(diffs: np.ndarray, ci_level: float = 0.95) -> pd.DataFrame:
    """Paired (one-sample on differences) t-test of mean = 0 for each row, with its t CI.

    t = mean(d) / (sd(d) / sqrt(n)), df = n - 1, two-sided p = 2 * T_{n-1}.sf(|t|)
    (Student 1908; identical to ``scipy.stats.ttest_rel(a, b)``). Vectorised with
    ``scipy.stats.ttest_1samp(axis=1)``. Returns ``t``, ``df``, ``p_t``, ``t_ci_lo``,
    ``t_ci_hi``.
    """
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # sd = 0 gives t = nan/inf, kept
        result = stats.ttest_1samp(diffs, 0.0, axis=1)
    lo, hi = t_interval(diffs, ci_level)
    return pd.DataFrame(
        {
            "t": result.statistic,
            "df": diffs.shape[1] - 1,
            "p_t": result.pvalue,
            "t_ci_lo": lo,
            "t_ci_hi": hi,
        }
    )


def wilcoxon_signed_rank(diffs: np.ndarray) -> pd.Series:
    """Two-sided Wilcoxon signed-rank p of each row, ``scipy.stats.wilcoxon(axis=1)``.

    scipy's defaults (method='auto', scipy >= 1.13): the exact null distribution for
    n <= 50 without ties or zeros; with ties or zeros, exhaustive permutations of the signs
    for n <= 13 and the tie-corrected normal approximation above; zero differences dropped
    ('wilcox'); no continuity correction (pingouin.wilcoxon applies one by default, so its p
    differs slightly). NaN when every difference is zero (the statistic is undefined);
    reported as null.
    """
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", (RuntimeWarning, UserWarning))
        result = stats.wilcoxon(diffs, axis=1)
    return pd.Series(np.asarray(result.pvalue, dtype=float), name="p_wilcoxon")
