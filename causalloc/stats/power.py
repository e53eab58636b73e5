"""Prospective sample size: blocks needed to detect an effect and to show equivalence.

Planning numbers use a standard deviation of the paired differences (observed, or a
pilot's, with its chi-square interval) and a stated effect (the SESOI, ``--effect``, or
for an inconclusive comparison the observed difference). Observed ("post hoc") power is a
function of the p-value and says nothing new (Hoenig & Heisey 2001), so it is never
reported; the blocks needed to detect the observed difference answer a different
question: how many blocks a new study would need if the difference were that large.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.power import TTestPower

#: a search beyond this many blocks reports None ("not reachable in practice")
MAX_BLOCKS = 1_000_000

_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(64)
#: the TOST power integral stops here: the standard normal density beyond it is < 1e-31
_NORMAL_TAIL = 12.0


def min_blocks_sign_flip(alpha: float = 0.05) -> int:
    """Fewest blocks for which an exact two-sided sign-flip test can reach p < alpha.

    The smallest attainable p is 2 / 2^n, so n >= log2(2 / alpha) (6 blocks at 0.05).
    """
    return math.ceil(math.log2(2 / alpha) - 1e-12)


def p_floor(n_blocks, k_random=None, max_exact_patterns: int = 2**16,
            max_resamples: int = 2**20) -> np.ndarray:
    """Smallest two-sided p the verdict test can return with ``n_blocks`` blocks.

    Exact sign-flip test: 2 / 2^n; exact randomization test against K draws:
    2 / (K + 1)^n (one assignment as extreme as the observed one, doubled); when those
    counts exceed ``max_exact_patterns`` the test is Monte Carlo and its p cannot go below
    2 / (R + 1) with R = ``max_resamples`` (the adaptive cap) either.
    """
    n = np.asarray(n_blocks, dtype=float)
    k_values = np.broadcast_to(np.asarray(k_random, dtype=object), n.shape)
    k = np.where(pd.isna(k_values), 1.0, k_values).astype(float)
    patterns = (k + 1) ** n
    floor = np.minimum(2 / patterns, 1.0)
    monte_carlo = patterns > max_exact_patterns
    return np.where(monte_carlo, np.maximum(floor, 2 / (max_resamples + 1)), floor)


def sd_interval(sd: np.ndarray, n_blocks, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square confidence interval of a standard deviation estimated from n blocks.

    (n - 1) s^2 / sigma^2 ~ chi2_{n-1} under normal differences: sigma in
    [s sqrt((n-1) / chi2_{1-a/2}), s sqrt((n-1) / chi2_{a/2})]. With 8 blocks the upper
    end is 2.0 s: the sd behind a pilot's blocks-needed is that uncertain.
    """
    sd = np.asarray(sd, dtype=float)
    df = np.asarray(n_blocks, dtype=float) - 1
    tail = (1 - level) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = sd * np.sqrt(df / stats.chi2.ppf(1 - tail, df))
        hi = sd * np.sqrt(df / stats.chi2.ppf(tail, df))
    return lo, hi


def power_paired_t(effect: np.ndarray, n_blocks: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Power of the two-sided paired t-test at d_z = ``effect`` (statsmodels TTestPower).

    statsmodels returns NaN when the noncentral t tail underflows at very large
    noncentrality (e.g. d_z = 20, n = 2); there the power is 1 to machine precision."""
    power = np.asarray(
        TTestPower().power(effect_size=effect, nobs=n_blocks, alpha=alpha), dtype=float
    )
    huge = np.abs(np.asarray(effect, dtype=float)) * np.sqrt(np.asarray(n_blocks, dtype=float)) > 8
    return np.where(np.isnan(power) & huge, 1.0, power)


def power_tost_paired(margin: np.ndarray, n_blocks: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Exact power of the paired TOST when the true difference is 0.

    ``margin`` = SESOI / sd(d). With Z = sqrt(n) mean / sd ~ N(0, 1) independent of
    V = (n-1) s^2 / sd^2 ~ chi2_{n-1}, both one-sided tests reject iff
    |Z| < c - t_{1-alpha, n-1} sqrt(V / (n-1)), c = sqrt(n) * margin, so
    power = 2 * int_0^c phi(z) F_chi2_{n-1}((n-1) (c - z)^2 / t^2) dz
    (Phillips 1990), integrated with 64-point Gauss-Legendre over [0, min(c, 12)]
    (phi(z) < 1e-31 beyond 12, and spreading the nodes over a huge c lost the mass near 0:
    1.23 at margin 100), clipped to [0, 1]. Written by hand because statsmodels has power
    for TOST only in the one-way ANOVA setting.
    """
    margin, n_blocks = np.broadcast_arrays(
        np.asarray(margin, dtype=float), np.asarray(n_blocks, dtype=float)
    )
    df = n_blocks - 1
    t_crit = stats.t.ppf(1 - alpha, df)
    c = np.sqrt(n_blocks) * margin
    half = np.where(np.isfinite(c), np.minimum(c, _NORMAL_TAIL) / 2, 0.0)[..., None]
    z = half * (_LEGENDRE_NODES + 1)
    with np.errstate(invalid="ignore"):
        integrand = stats.norm.pdf(z) * special.chdtr(
            df[..., None], df[..., None] * (c[..., None] - z) ** 2 / t_crit[..., None] ** 2
        )
    power = 2 * (integrand * _LEGENDRE_WEIGHTS).sum(axis=-1) * half[..., 0]
    return np.clip(np.where(np.isfinite(c), power, 1.0), 0.0, 1.0)


def _smallest_n(power_at, n_rows: int, target: float, start: int) -> np.ndarray:
    """Smallest integer n >= start with power_at(n) >= target, row-wise (power rises with n)."""
    lo = np.full(n_rows, start - 1, dtype=float)  # power(lo) < target (or lo below start)
    hi = np.full(n_rows, start, dtype=float)
    reached = power_at(hi) >= target
    while not reached.all() and (hi[~reached] < MAX_BLOCKS).any():
        lo = np.where(reached, lo, hi)
        hi = np.where(reached, hi, np.minimum(hi * 2, MAX_BLOCKS))
        reached = power_at(hi) >= target
    while (hi - lo > 1).any():
        mid = np.floor((lo + hi) / 2)
        active = hi - lo > 1
        ok = power_at(np.where(active, mid, hi)) >= target
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid, lo)
    return np.where(reached, hi, np.nan)


def blocks_to_detect(sd_diff: np.ndarray, effect: np.ndarray, alpha: float = 0.05,
                     power: float = 0.8, family_size: np.ndarray | int = 1) -> np.ndarray:
    """Smallest n at which a two-sided paired t-test at alpha / k (k = the comparison's family
    size: Holm's first step, i.e. the Bonferroni bound) has ``power`` against a true
    difference ``effect`` (d_z = |effect| / sd), and at least :func:`min_blocks_sign_flip`
    at alpha / k, so that the exact sign-flip test can reject at all after adjustment
    (2 / 2^n * k < alpha: 8 blocks for k = 5). NaN beyond MAX_BLOCKS."""
    sd_diff = np.asarray(sd_diff, dtype=float)
    effect = np.broadcast_to(np.abs(np.asarray(effect, dtype=float)), sd_diff.shape)
    family_alpha = alpha / np.broadcast_to(np.asarray(family_size, dtype=float), sd_diff.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sd_diff > 0, effect / sd_diff, np.inf)
    safe = np.where(np.isfinite(ratio), ratio, 1e6)
    detect = _smallest_n(lambda n: power_paired_t(safe, n, family_alpha), len(safe), power, 2)
    floor = np.array([min_blocks_sign_flip(a) for a in family_alpha.ravel()]).reshape(sd_diff.shape)
    return np.maximum(detect, floor)


def blocks_needed(
    sd_diff: np.ndarray, sesoi: np.ndarray, alpha: float = 0.05, power: float = 0.8,
    family_size: np.ndarray | int = 1, effect: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blocks needed (detect, equivalence) at ``power`` from a sd of the differences.

    detect: :func:`blocks_to_detect` against a true difference ``effect`` (default the SESOI).
    equivalence: smallest n at which TOST at alpha / k (its p is adjusted in the same
    family) has the given power when the true difference is 0 (:func:`power_tost_paired`).
    NaN where more than MAX_BLOCKS would be needed.
    """
    sd_diff = np.asarray(sd_diff, dtype=float)
    sesoi = np.broadcast_to(np.asarray(sesoi, dtype=float), sd_diff.shape)
    family_alpha = alpha / np.broadcast_to(np.asarray(family_size, dtype=float), sd_diff.shape)
    detect = blocks_to_detect(sd_diff, sesoi if effect is None else effect, alpha, power,
                              family_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sd_diff > 0, sesoi / sd_diff, np.inf)
    equivalence = _smallest_n(
        lambda n: power_tost_paired(ratio, n, family_alpha), len(ratio), power, 2
    )
    return detect, equivalence
