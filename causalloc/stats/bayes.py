"""Bayes factor of the paired t-test (JZS prior), a secondary view next to the p-values."""

from __future__ import annotations

import math

import numpy as np


def jzs_bf10(t: np.ndarray, n_blocks: int, r: float = 0.707) -> np.ndarray:
    """JZS Bayes factor BF10 of a paired t statistic (Rouder et al. 2009, eq. 1).

    Cauchy prior on d_z with scale ``r`` = 0.707 (the JASP/BayesFactor default).
    Computed by ``pingouin.bayesfactor_ttest(t, n, paired=True, r=r)`` for each t; NaN
    where t is not finite (all differences equal) or n < 2. pingouin is imported here, not at
    module load: it pulls in matplotlib and takes seconds, which every CLI start would pay.
    """
    import pingouin

    values = np.asarray(t, dtype=float)
    return np.array(
        [
            float(pingouin.bayesfactor_ttest(value, n_blocks, paired=True, r=r))
            if math.isfinite(value) and n_blocks >= 2
            else math.nan
            for value in values
        ]
    )
