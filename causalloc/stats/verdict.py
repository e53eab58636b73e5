"""Verdicts per comparison.

Decision rule (alpha = 0.05 unless the spec says otherwise; SESOI in metric units):

====================  ==========================================================
verdict               condition
====================  ==========================================================
``equivalent``        TOST p_adj < alpha ((1 - 2 alpha) CI inside (-SESOI, SESOI)) and p_adj >= alpha
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

When inconclusive, ``blocks_needed`` answers the open question at 80% power from the
observed sd of the differences: blocks to show equivalence at a true difference of 0 when
|mean_diff| < SESOI, else blocks to detect the observed difference at the family-adjusted
alpha (``causalloc.stats.analyze._planning_numbers``; the range over the sd's chi-square
interval is ``blocks_needed_detect_range``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: verdict labels, in the order reports list them
VERDICTS = ("a_better", "b_better", "equivalent", "negligible", "inconclusive")


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
