"""Effect sizes of paired differences: bootstrap CI of the mean, d_z, g_av, P(improvement).

Functions take many comparisons at once (rows, all with the same number of blocks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.proportion import proportion_confint

#: bootstrap statistics held in memory at once (float64: 64 MiB)
_CHUNK_ELEMENTS = 8_000_000


def _quantile_rows(sorted_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise quantile of pre-sorted rows at per-row levels ``q`` (numpy's 'linear')."""
    n_cols = sorted_rows.shape[1]
    position = np.clip(q, 0, 1) * (n_cols - 1)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, n_cols - 1)
    weight = position - below
    rows = np.arange(len(sorted_rows))
    return sorted_rows[rows, below] * (1 - weight) + sorted_rows[rows, above] * weight


def bootstrap_mean_ci(
    diffs: np.ndarray,
    *,
    rng: np.random.Generator,
    n_boot: int = 9999,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Bootstrap CI of the mean of each row: BCa where defined, else percentile.

    BCa (Efron 1987; Efron & Tibshirani 1993, eq. 14.10 and 14.15): bias
    z0 = Phi^-1(mid-rank share of bootstrap means below the mean), acceleration
    a = sum(U^3) / (6 sum(U^2)^1.5) from the jackknife U_i = (n-1)(mean_(.) - mean_(-i)),
    levels Phi(z0 + (z0 + z)/(1 - a(z0 + z))) for z = Phi^-1(alpha/2), Phi^-1(1-alpha/2).
    Identical to ``scipy.stats.bootstrap((d,), np.mean, method='BCa', rng=rng)`` row by row
    when given a Generator in the same state (except that bootstrap means equal to the
    estimate up to rounding count as ties, where scipy's count depends on summation order): resample indices are drawn once as
    ``rng.integers(0, n, (n_boot, n))`` and shared by all rows; the means come from one
    matrix product with the resample count matrix (scipy would materialise
    [rows, n_boot, n]). Where BCa is undefined (all differences equal, or every bootstrap
    mean on one side of the estimate) the percentile interval is returned and
    ``ci_method`` says so. With fewer than 3 blocks a t interval is returned instead.

    Returns columns ``mean_diff``, ``ci_lo``, ``ci_hi``, ``ci_method``, ``n_boot``.
    """
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    n_rows, n_blocks = diffs.shape
    mean = diffs.mean(axis=1)
    alpha = 1 - ci_level
    if n_blocks < 3:
        lo, hi = t_interval(diffs, ci_level)
        return pd.DataFrame(
            {"mean_diff": mean, "ci_lo": lo, "ci_hi": hi, "ci_method": "t", "n_boot": 0}
        )
    index = rng.integers(0, n_blocks, size=(n_boot, n_blocks))
    flat = (np.arange(n_boot)[:, None] * n_blocks + index).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_blocks).reshape(n_boot, n_blocks) / n_blocks
    # jackknife acceleration
    leave_one_out = (diffs.sum(axis=1, keepdims=True) - diffs) / (n_blocks - 1)
    u = (n_blocks - 1) * (leave_one_out.mean(axis=1, keepdims=True) - leave_one_out)
    with np.errstate(invalid="ignore", divide="ignore"):
        accel = (u**3).sum(axis=1) / n_blocks**3 / 6 / ((u**2).sum(axis=1) / n_blocks**2) ** 1.5
    lo = np.empty(n_rows)
    hi = np.empty(n_rows)
    method = np.empty(n_rows, dtype=object)
    step = max(1, _CHUNK_ELEMENTS // n_boot)
    z_lo, z_hi = special.ndtri(alpha / 2), special.ndtri(1 - alpha / 2)
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        boot = np.sort(diffs[rows] @ counts.T, axis=1)
        theta = mean[rows, None]
        # resamples that are a permutation of the data tie with the estimate; summing in
        # another order moves them by an ulp, so ties are judged within 100 eps of the scale
        gamma = 100 * np.finfo(float).eps * np.abs(diffs[rows]).max(axis=1, keepdims=True)
        below = (boot < theta - gamma).sum(axis=1)
        share = (2 * below + (np.abs(boot - theta) <= gamma).sum(axis=1)) / (2 * n_boot)
        with np.errstate(invalid="ignore", divide="ignore"):
            z0 = special.ndtri(share)
            a = accel[rows]
            level_lo = special.ndtr(z0 + (z0 + z_lo) / (1 - a * (z0 + z_lo)))
            level_hi = special.ndtr(z0 + (z0 + z_hi) / (1 - a * (z0 + z_hi)))
        bca_ok = np.isfinite(level_lo) & np.isfinite(level_hi)
        level_lo = np.where(bca_ok, level_lo, alpha / 2)
        level_hi = np.where(bca_ok, level_hi, 1 - alpha / 2)
        lo[rows] = _quantile_rows(boot, level_lo)
        hi[rows] = _quantile_rows(boot, level_hi)
        method[rows] = np.where(bca_ok, "BCa", "percentile")
    return pd.DataFrame(
        {"mean_diff": mean, "ci_lo": lo, "ci_hi": hi, "ci_method": method, "n_boot": n_boot}
    )


def t_interval(diffs: np.ndarray, ci_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student t interval of the mean of each row: mean -+ t_{(1+level)/2, n-1} * sd / sqrt(n)."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    n_blocks = diffs.shape[1]
    mean = diffs.mean(axis=1)
    se = diffs.std(axis=1, ddof=1) / np.sqrt(n_blocks)
    half = stats.t.ppf((1 + ci_level) / 2, n_blocks - 1) * se
    return mean - half, mean + half


def paired_effect_sizes(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """d_z and Hedges' g_av of paired values (rows = comparisons, columns = blocks).

    d_z = mean(a - b) / sd(a - b) (Cohen 1988; Lakens 2013 eq. 6): the standardised mean
    of the differences, the effect size the paired t-test and its power use.
    g_av = (mean(a) - mean(b)) / sqrt((sd(a)^2 + sd(b)^2) / 2) * (1 - 3 / (8n - 9)):
    d_av with the average-variance standardiser (Cumming 2012; pingouin's correction of
    Lakens 2013 eq. 10) and Hedges' small-sample factor 1 - 3 / (4(n1 + n2) - 9), exactly
    pingouin.compute_effsize(a, b, paired=True, eftype='hedges'). Comparable with
    between-subject effect sizes; d_z is the one the paired tests use.
    Returns columns ``d_z``, ``g_av``.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    diffs = a - b
    n_blocks = diffs.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        d_z = diffs.mean(axis=1) / diffs.std(axis=1, ddof=1)
        d_av = (a.mean(axis=1) - b.mean(axis=1)) / np.sqrt(
            (a.var(axis=1, ddof=1) + b.var(axis=1, ddof=1)) / 2
        )
    g_av = d_av * (1 - 3 / (4 * 2 * n_blocks - 9))
    return pd.DataFrame({"d_z": d_z, "g_av": g_av})


def prob_improvement(
    diffs: np.ndarray, higher_is_better: bool | np.ndarray = True, ci_level: float = 0.95
) -> pd.DataFrame:
    """Share of blocks in which a improves on b, with a Wilson score CI.

    P(improvement) = (#{blocks better} + #{ties} / 2) / n, "better" meaning d > 0 when
    higher is better and d < 0 otherwise (the paired analogue of the probability of
    improvement P(X > Y) of Agarwal et al. 2021). Wilson interval (Wilson 1927) via
    statsmodels ``proportion_confint(method='wilson')``: unlike a bootstrap it does not
    collapse to [1, 1] when every block improves. Returns ``prob_improvement``,
    ``prob_improvement_lo``, ``prob_improvement_hi``.
    """
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    sign = np.where(np.asarray(higher_is_better), 1.0, -1.0)
    signed = diffs * np.reshape(sign, (-1, 1))
    n_blocks = diffs.shape[1]
    wins = (signed > 0).sum(axis=1) + 0.5 * (signed == 0).sum(axis=1)
    lo, hi = proportion_confint(wins, n_blocks, alpha=1 - ci_level, method="wilson")
    return pd.DataFrame(
        {
            "prob_improvement": wins / n_blocks,
            "prob_improvement_lo": np.asarray(lo, dtype=float),
            "prob_improvement_hi": np.asarray(hi, dtype=float),
        }
    )
