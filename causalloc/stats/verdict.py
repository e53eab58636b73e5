"""Verdicts per comparison, and the default SESOI and direction of each known metric.

Decision rule (alpha = 0.05 unless the spec says otherwise; SESOI in metric units):

====================  ==========================================================
verdict               condition
====================  ==========================================================
``equivalent``        TOST p_adj < alpha (90% CI inside [-SESOI, SESOI]) and p_adj >= alpha
``negligible``        TOST p_adj < alpha and p_adj < alpha: different, but inside the SESOI
``a_better``          p_adj < alpha, not equivalent, and the difference favours a
``b_better``          p_adj < alpha, not equivalent, and the difference favours b
``inconclusive``      neither; ``blocks_needed`` says how many blocks would settle it
====================  ==========================================================

``p_adj`` is the verdict test's p (the stratified randomization test against K >= 2
random draws per block, else the sign-flip test; exact, or Monte Carlo resampled until
the decision is stable) adjusted within its family (Holm by default); the TOST p is
adjusted in the same family. "Favours a" means mean(a - b) > 0 for metrics where higher is better and
mean(a - b) < 0 where lower is better (e.g. ``relearn_es``: less extraction after a
relearning attack is better). A p-value above alpha alone never supports "no effect":
only TOST can give ``equivalent``.

When inconclusive, ``blocks_needed`` = max(blocks to detect the SESOI at the
family-adjusted alpha, blocks to show equivalence at a true difference of 0), both at 80%
power from the observed sd of the differences: with that many blocks either conclusion is
reachable, whichever is true.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: verdict labels, in the order reports list them
VERDICTS = ("a_better", "b_better", "equivalent", "negligible", "inconclusive")

#: default smallest effect size of interest per metric, in metric units. Metrics on the
#: [0, 1] scale of extraction strength (FS, RS, ES, AUES, FS@RS95) use 0.02, the seed
#: paper's reporting resolution (two decimals); log forget quality (natural log of a KS
#: p-value) and MU95 (a log forget quality) use 1.0, a factor e in the p-value. Override with
#: [sesoi] in the spec or ``--sesoi metric=value``; a metric with no SESOI is an error, never a
#: guess from data.
DEFAULT_SESOI: dict[str, float] = {
    "aues": 0.02,
    "fs_at_rs95": 0.02,
    "fs_final": 0.02,
    "rs_final": 0.02,
    "es_forget_final": 0.02,
    "es_retain_final": 0.02,
    "relearn_es": 0.02,
    "relearn_recovery": 0.02,
    # one per attack strength of [relearn] strengths (steps x lr); other strengths need [sesoi]
    "relearn_recovery_s5_lr0.001": 0.02,
    "relearn_recovery_s20_lr0.001": 0.02,
    "relearn_recovery_s20_lr0.01": 0.02,
    "quant_recovery": 0.02,
    "model_utility": 0.02,
    "log_forget_quality": 1.0,
    "mu95": 1.0,
}

#: whether a larger value is better for each known metric (override with [higher_is_better]);
#: unknown metrics default to True with a warning in analysis.json
HIGHER_IS_BETTER: dict[str, bool] = {
    "aues": True,
    "fs_at_rs95": True,
    "fs_final": True,
    "rs_final": True,
    "es_forget_final": False,
    "es_retain_final": True,
    "relearn_es": False,
    "relearn_recovery": False,
    "relearn_recovery_s5_lr0.001": False,
    "relearn_recovery_s20_lr0.001": False,
    "relearn_recovery_s20_lr0.01": False,
    "quant_recovery": False,
    "model_utility": True,
    "log_forget_quality": True,
    "mu95": True,
}


def verdicts(
    mean_diff: np.ndarray,
    p_adj: np.ndarray,
    tost_p: np.ndarray,
    higher_is_better: np.ndarray,
    alpha: float = 0.05,
) -> pd.Series:
    """Verdict per comparison by the rule in this module's docstring (NaN p = not significant)."""
    mean_diff = np.asarray(mean_diff, dtype=float)
    significant = np.nan_to_num(np.asarray(p_adj, dtype=float), nan=1.0) < alpha
    equivalent = np.nan_to_num(np.asarray(tost_p, dtype=float), nan=1.0) < alpha
    favours_a = np.where(np.asarray(higher_is_better, dtype=bool), mean_diff > 0, mean_diff < 0)
    label = np.select(
        [equivalent & ~significant, equivalent & significant, significant & favours_a, significant],
        ["equivalent", "negligible", "a_better", "b_better"],
        default="inconclusive",
    )
    return pd.Series(label, name="verdict")
