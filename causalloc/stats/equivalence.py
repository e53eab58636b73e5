"""Equivalence of paired conditions: two one-sided tests (TOST) against a SESOI."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def tost_paired(diffs: np.ndarray, sesoi: float | np.ndarray, alpha: float = 0.05) -> pd.DataFrame:
    """TOST of |mean(d)| < SESOI for each row of paired differences (Schuirmann 1987).

    H01: mean <= -SESOI, t1 = (mean + SESOI) / se, p1 = T_{n-1}.sf(t1);
    H02: mean >= +SESOI, t2 = (mean - SESOI) / se, p2 = T_{n-1}.cdf(t2);
    tost_p = max(p1, p2), with se = sd(d) / sqrt(n). Equivalent at level alpha iff
    tost_p < alpha, i.e. iff the (1 - 2 alpha) CI (90% for alpha = 0.05),
    mean -+ t_{1-alpha, n-1} se, lies inside [-SESOI, SESOI]. Same numbers as
    ``statsmodels.stats.weightstats.ttost_paired(a, b, -SESOI, SESOI)`` and
    ``pingouin.tost(a, b, bound=SESOI, paired=True)``, vectorised over rows.
    With sd = 0 the test is decided by the sign of |mean| - SESOI (se = 0).
    Returns ``tost_p``, ``tost_ci90_lo``, ``tost_ci90_hi``.
    """
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    sesoi = np.broadcast_to(np.asarray(sesoi, dtype=float), (diffs.shape[0],))
    n_blocks = diffs.shape[1]
    df = n_blocks - 1
    mean = diffs.mean(axis=1)
    se = diffs.std(axis=1, ddof=1) / np.sqrt(n_blocks)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_lower = stats.t.sf((mean + sesoi) / se, df)
        p_upper = stats.t.cdf((mean - sesoi) / se, df)
    half = stats.t.ppf(1 - alpha, df) * se
    return pd.DataFrame(
        {
            "tost_p": np.maximum(p_lower, p_upper),
            "tost_ci90_lo": mean - half,
            "tost_ci90_hi": mean + half,
        }
    )
