"""Permutation tests on matched blocks: sign-flip over blocks and randomization vs K masks.

Both functions take many comparisons at once (rows of a 2-D array, all with the same
number of blocks ``n``) and share one set of sign patterns / draws across the rows, so
that a thousand comparisons cost one matrix product instead of a thousand scipy calls.
Each row's p-value is exactly what ``scipy.stats.permutation_test`` returns for that row
alone when the enumeration is exact (checked in tests/unit/test_stats_permutation.py).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

#: largest number of enumerated null patterns (2^16, as scipy's exact threshold in the brief)
MAX_EXACT_PATTERNS = 2**16

#: rows x patterns held in memory at once (float64: 64 MiB)
_CHUNK_ELEMENTS = 8_000_000


def monte_carlo_p(greater: np.ndarray, less: np.ndarray, n_resamples: int):
    """Two-sided Monte Carlo p and its standard error from the counts of R resamples.

    p = min(1, 2 (min(r_ge, r_le) + 1) / (R + 1)) (Phipson & Smyth 2010; scipy's Monte
    Carlo definition). Its Monte Carlo standard error is the binomial one of the one-sided
    share q = (min(r_ge, r_le) + 1) / (R + 1), doubled: se = 2 sqrt(q (1 - q) / R), the
    spread of p over repeated runs with other random patterns.
    """
    q = (np.minimum(greater, less) + 1) / (n_resamples + 1)
    return np.minimum(2 * q, 1.0), 2 * np.sqrt(q * (1 - q) / n_resamples)


def _as_2d(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"{name}: expected shape [n_comparisons, n_blocks], got {array.shape}")
    return array


def _two_sided_counts(null: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of null >= observed and null <= observed with scipy's relative tolerance.

    scipy.stats.permutation_test treats values within 100 machine epsilons (relative) of
    the observed statistic as ties, so that sums of the same numbers in another order tie.
    """
    gamma = np.abs(np.finfo(float).eps * 100 * observed)[:, None]
    greater = (null >= observed[:, None] - gamma).sum(axis=1)
    less = (null <= observed[:, None] + gamma).sum(axis=1)
    return greater, less


def sign_flip_test(
    diffs: np.ndarray,
    *,
    rng: np.random.Generator,
    n_resamples: int = 9999,
    max_exact_patterns: int = MAX_EXACT_PATTERNS,
) -> pd.DataFrame:
    """Two-sided sign-flip permutation test of mean(diff) = 0 for each row of ``diffs``.

    Under H0 (a and b exchangeable within each block) every per-block difference is
    symmetric about 0, so the 2^n sign patterns are equally likely. Statistic: the mean
    difference T = mean_b(s_b * d_b). Exact when 2^n <= ``max_exact_patterns``:
    p = min(1, 2 * min(P(T* >= T), P(T* <= T))) over all patterns (scipy's definition, equal
    to P(|T*| >= |T|) because the null is symmetric). Otherwise Monte Carlo with
    ``n_resamples`` sign patterns drawn from ``rng``: p = min(1, 2 * min(r_ge + 1,
    r_le + 1) / (R + 1)) (Phipson & Smyth 2010; scipy's Monte Carlo definition).

    Returns a DataFrame with columns ``p_perm``, ``p_perm_exact``, ``n_resamples`` (the
    number of patterns used, 2^n when exact) and ``p_perm_mc_se`` (:func:`monte_carlo_p`;
    0 when exact), one row per comparison.
    """
    diffs = _as_2d(diffs, "diffs")
    n_rows, n_blocks = diffs.shape
    exact = 2**n_blocks <= max_exact_patterns
    if exact:
        patterns = np.array(list(itertools.product((1.0, -1.0), repeat=n_blocks)))
    else:
        patterns = rng.integers(0, 2, size=(n_resamples, n_blocks)) * 2.0 - 1.0
    observed = diffs.mean(axis=1)
    greater = np.empty(n_rows)
    less = np.empty(n_rows)
    step = max(1, _CHUNK_ELEMENTS // len(patterns))
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        null = diffs[rows] @ patterns.T / n_blocks
        greater[rows], less[rows] = _two_sided_counts(null, observed[rows])
    if exact:
        p, se = np.minimum(2 * np.minimum(greater, less) / len(patterns), 1.0), np.zeros(n_rows)
    else:
        p, se = monte_carlo_p(greater, less, len(patterns))
    return pd.DataFrame(
        {
            "p_perm": p,
            "p_perm_exact": np.full(n_rows, exact),
            "n_resamples": np.full(n_rows, len(patterns)),
            "p_perm_mc_se": se,
        }
    )


def randomization_test(
    treated: np.ndarray,
    draws: np.ndarray,
    *,
    rng: np.random.Generator,
    n_resamples: int = 9999,
    max_exact_patterns: int = MAX_EXACT_PATTERNS,
) -> pd.DataFrame:
    """Randomization test of one mask against K random masks, stratified by block.

    ``treated`` is [m, n] (the tested mask's metric per block), ``draws`` is [m, n, K] (the
    K random masks of the same block). H0: within each block the tested mask is one more
    exchangeable draw, so any of the K+1 values could have been the "tested" one
    (randomization inference as in circuit hypothesis testing; Shi et al. 2024). The
    statistic is the mean over blocks of (chosen - mean of the other K), which equals the
    paired mean difference for the observed assignment. Blocks are combined by permuting
    the choice independently within every block (a stratified permutation), never by
    multiplying p-values. Exact over the (K+1)^n assignments when that is at most
    ``max_exact_patterns`` (the null distribution is built block by block as a sum),
    else Monte Carlo with ``n_resamples`` assignments drawn from ``rng``. Two-sided
    p-values as in :func:`sign_flip_test`. With K = 1 this is the sign-flip test.

    Written by hand: no library implements a stratified randomization test over block-wise
    exchangeable groups. Valid for any distribution of the metric: it needs only the
    exchangeability of the K+1 masks within a block, whereas the sign-flip test on
    (tested - mean of K draws) needs that difference to be symmetric, which fails for
    skewed metrics (one draw vs a mean of K; reports/validation/calibration.md).
    Returns columns ``p_rand``, ``p_rand_exact``, ``n_resamples_rand``, ``k_random``,
    ``p_rand_mc_se`` (0 when exact).
    """
    treated = _as_2d(treated, "treated")
    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 2:
        draws = draws[None]
    n_rows, n_blocks = treated.shape
    if draws.shape[:2] != (n_rows, n_blocks) or draws.shape[2] < 1:
        raise ValueError(f"draws: expected shape [{n_rows}, {n_blocks}, K], got {draws.shape}")
    k = draws.shape[2]
    pool = np.concatenate([treated[:, :, None], draws], axis=2)  # [m, n, K+1], column 0 = tested
    # contribution of block b when value j is the tested one: v_j - (sum - v_j) / K
    contribution = pool * (1 + 1 / k) - pool.sum(axis=2, keepdims=True) / k
    observed = contribution[:, :, 0].mean(axis=1)
    exact = (k + 1) ** n_blocks <= max_exact_patterns
    greater = np.zeros(n_rows)
    less = np.zeros(n_rows)
    if exact:
        n_used = (k + 1) ** n_blocks
        step = max(1, _CHUNK_ELEMENTS // n_used)
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            totals = np.zeros((len(observed[rows]), 1))
            for block in range(n_blocks):
                totals = (totals[:, :, None] + contribution[rows, block, None, :]).reshape(
                    len(totals), -1
                )
            greater[rows], less[rows] = _two_sided_counts(totals / n_blocks, observed[rows])
        p, se = np.minimum(2 * np.minimum(greater, less) / n_used, 1.0), np.zeros(n_rows)
    else:
        choice = rng.integers(0, k + 1, size=(n_resamples, n_blocks))
        step = max(1, _CHUNK_ELEMENTS // (n_resamples * n_blocks))
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            chosen = contribution[rows][:, np.arange(n_blocks), choice]  # [rows, R, n]
            g, s = _two_sided_counts(chosen.mean(axis=2), observed[rows])
            greater[rows], less[rows] = g, s
        p, se = monte_carlo_p(greater, less, n_resamples)
        n_used = n_resamples
    return pd.DataFrame(
        {
            "p_rand": p,
            "p_rand_exact": np.full(n_rows, exact),
            "n_resamples_rand": np.full(n_rows, n_used),
            "k_random": np.full(n_rows, k),
            "p_rand_mc_se": se,
        }
    )
