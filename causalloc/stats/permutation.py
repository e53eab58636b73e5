"""Permutation tests on matched blocks: sign-flip over blocks and randomization vs K masks.

Both functions take many comparisons at once (rows of a 2-D array, all with the same
number of blocks ``n``) and share one set of sign patterns / draws across the rows, so
that a thousand comparisons cost one matrix product instead of a thousand scipy calls.
Each row's p-value is exactly what ``scipy.stats.permutation_test`` returns for that row
alone when the enumeration is exact (checked in tests/unit/test_stats_permutation.py).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

#: largest number of enumerated null patterns (2^16, as scipy's exact threshold in the brief)
MAX_EXACT_PATTERNS = 2**16

#: rows x patterns held in memory at once (float64: 32 MiB; the inversion holds a second such array)
_CHUNK_ELEMENTS = 4_000_000


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


def _two_sided_counts(null: np.ndarray, observed: np.ndarray,
                      scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of null >= observed and null <= observed, ties within 100 eps of ``scale``.

    Values within 100 machine epsilons of the statistic's scale (the largest |value| a
    resampled statistic can take) count as ties, so that sums of the same numbers in another
    order tie. scipy.stats.permutation_test scales the tolerance by |observed| instead,
    which is ~0 when the observed mean is 0 up to rounding: differences
    +-0.1, +-0.2, +-0.3, +-0.7 then gave p = 0.961 where the exact p is 1.
    """
    gamma = (np.finfo(float).eps * 100 * np.maximum(np.abs(observed), scale))[:, None]
    greater = (null >= observed[:, None] - gamma).sum(axis=1)
    less = (null <= observed[:, None] + gamma).sum(axis=1)
    return greater, less


#: columns of the inverted-test intervals and shifted TOST added by both tests
INVERTED_COLUMNS = ("inv_ci_lo", "inv_ci_hi", "inv_tost_p", "inv_tost_lo", "inv_tost_hi")


class _ShiftInversion:
    """Accumulates the breakpoints of a permutation test under a shift and inverts it.

    Shift model: H0(delta) says the tested value minus delta is exchangeable with its
    baseline (sign flips: d_b - delta symmetric about 0; randomization: tested - delta is one
    more random draw). For a resampled assignment with weight g > 0 the resampled statistic
    is >= the observed one iff delta >= m = (observed - resampled) / g, so the counts
    r_ge(delta) = A + #{m <= delta}, r_le(delta) = A + #{m >= delta} are step functions
    (A: assignments with g = 0, which always tie, plus the +1 of Monte Carlo p's). The
    confidence set {delta: p(delta) >= level} (Hartigan 1969; for sign flips the breakpoints
    are the means of the flipped subsets) is [m_(k), m_(N'-k+1)], k = ceil(c N - A),
    with c = (1 - ci_level) / 2 for ``ci`` and c = alpha for the (1 - 2 alpha) TOST
    interval; N = number of assignments (+1 for Monte Carlo). The TOST p is
    max(r_ge(-SESOI), r_le(+SESOI)) / N: two one-sided shifted permutation tests, each exact
    (or Monte Carlo) under the shift model, and tost_p < alpha iff the TOST interval lies
    inside (-SESOI, +SESOI). Written by hand: no library inverts a permutation test.
    """

    def __init__(self, n_rows, n_assignments, always, ci_level, alpha, sesoi):
        self.n_total = n_assignments
        self.always = always
        self.k_ci = math.ceil((1 - ci_level) / 2 * n_assignments - always - 1e-9)
        self.k_tost = math.ceil(alpha * n_assignments - always - 1e-9)
        self.sesoi = np.broadcast_to(np.asarray(np.nan if sesoi is None else sesoi, dtype=float),
                                     (n_rows,))
        self.columns = {c: np.full(n_rows, np.nan) for c in INVERTED_COLUMNS}

    def add(self, rows: slice, observed: np.ndarray, null: np.ndarray, weight: np.ndarray):
        """Breakpoints of rows ``rows`` from their null statistics ([rows, P]) and weights [P].

        The assignments with weight 0 are the ``always`` ties and carry no breakpoint; one
        in-place partition finds all four interval ends."""
        positive = weight > 0
        breaks = observed[:, None] - (null if positive.all() else null[:, positive])
        breaks /= weight[positive]
        sesoi = self.sesoi[rows, None]
        with np.errstate(invalid="ignore"):
            p_lower = (self.always + (breaks <= -sesoi).sum(axis=1)) / self.n_total
            p_upper = (self.always + (breaks >= sesoi).sum(axis=1)) / self.n_total
        out = self.columns
        out["inv_tost_p"][rows] = np.where(np.isnan(self.sesoi[rows]), np.nan,
                                           np.maximum(p_lower, p_upper))
        n_breaks = breaks.shape[1]
        ends = {}
        wanted = [k for k in (self.k_ci, self.k_tost) if 1 <= k <= n_breaks]
        if wanted:
            kth = sorted({k - 1 for k in wanted} | {n_breaks - k for k in wanted})
            breaks.partition(kth, axis=1)
        for name, k in (("ci", self.k_ci), ("tost", self.k_tost)):
            if k <= 0:
                ends[name] = (-np.inf, np.inf)
            elif k > n_breaks:
                ends[name] = (np.nan, np.nan)
            else:
                ends[name] = (breaks[:, k - 1], breaks[:, n_breaks - k])
        out["inv_ci_lo"][rows], out["inv_ci_hi"][rows] = ends["ci"]
        out["inv_tost_lo"][rows], out["inv_tost_hi"][rows] = ends["tost"]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns)


def sign_flip_test(
    diffs: np.ndarray,
    *,
    rng: np.random.Generator,
    n_resamples: int = 9999,
    max_exact_patterns: int = MAX_EXACT_PATTERNS,
    ci_level: float = 0.95,
    alpha: float = 0.05,
    sesoi: float | np.ndarray | None = None,
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
    0 when exact), one row per comparison, plus the test inverted under a shift with the
    same patterns (:class:`_ShiftInversion`): ``inv_ci_lo/hi`` (level ``ci_level``),
    ``inv_tost_p`` against ``sesoi`` and ``inv_tost_lo/hi`` (level 1 - 2 ``alpha``).
    """
    diffs = _as_2d(diffs, "diffs")
    n_rows, n_blocks = diffs.shape
    exact = 2**n_blocks <= max_exact_patterns
    if exact:
        patterns = np.array(list(itertools.product((1.0, -1.0), repeat=n_blocks)))
    else:
        patterns = rng.integers(0, 2, size=(n_resamples, n_blocks)) * 2.0 - 1.0
    observed = diffs.mean(axis=1)
    scale = np.abs(diffs).mean(axis=1)
    greater = np.empty(n_rows)
    less = np.empty(n_rows)
    # weight of a pattern under a shift: 2 |flipped| / n (0 for the identity)
    weight = (n_blocks - patterns.sum(axis=1)) / n_blocks
    always = int((weight == 0).sum()) + (0 if exact else 1)
    inversion = _ShiftInversion(n_rows, len(patterns) + (0 if exact else 1), always,
                                ci_level, alpha, sesoi)
    step = max(1, _CHUNK_ELEMENTS // len(patterns))
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        null = diffs[rows] @ patterns.T / n_blocks
        greater[rows], less[rows] = _two_sided_counts(null, observed[rows], scale[rows])
        inversion.add(rows, observed[rows], null, weight)
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
    ).join(inversion.frame())


def randomization_test(
    treated: np.ndarray,
    draws: np.ndarray,
    *,
    rng: np.random.Generator,
    n_resamples: int = 9999,
    max_exact_patterns: int = MAX_EXACT_PATTERNS,
    ci_level: float = 0.95,
    alpha: float = 0.05,
    sesoi: float | np.ndarray | None = None,
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
    ``p_rand_mc_se`` (0 when exact), and the test inverted under a shift (tested - delta
    exchangeable with the draws; :class:`_ShiftInversion`) with the same assignments:
    ``inv_ci_lo/hi``, ``inv_tost_p``, ``inv_tost_lo/hi``. Under a shift delta the
    contribution of a block moves by -delta when the tested value is chosen and by
    +delta / K otherwise, so an assignment that chooses the tested value in a share f of the
    blocks has weight g = (1 - f)(1 + 1/K).
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
    scale = np.abs(contribution).max(axis=2).mean(axis=1)
    exact = (k + 1) ** n_blocks <= max_exact_patterns
    greater = np.zeros(n_rows)
    less = np.zeros(n_rows)
    if exact:
        n_used = (k + 1) ** n_blocks
        tested = np.zeros(1)
        for block in range(n_blocks):  # blocks whose tested value is chosen, same order
            tested = (tested[:, None] + (np.arange(k + 1) == 0)).reshape(-1)
    else:
        n_used = n_resamples
        choice = rng.integers(0, k + 1, size=(n_resamples, n_blocks))
        tested = (choice == 0).sum(axis=1)
    weight = (1 - tested / n_blocks) * (1 + 1 / k)
    always = int((tested == n_blocks).sum()) + (0 if exact else 1)
    inversion = _ShiftInversion(n_rows, n_used + (0 if exact else 1), always, ci_level, alpha,
                                sesoi)
    if exact:
        step = max(1, _CHUNK_ELEMENTS // n_used)
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            totals = np.zeros((len(observed[rows]), 1))
            for block in range(n_blocks):
                totals = (totals[:, :, None] + contribution[rows, block, None, :]).reshape(
                    len(totals), -1
                )
            null = totals / n_blocks
            greater[rows], less[rows] = _two_sided_counts(null, observed[rows], scale[rows])
            inversion.add(rows, observed[rows], null, weight)
        p, se = np.minimum(2 * np.minimum(greater, less) / n_used, 1.0), np.zeros(n_rows)
    else:
        step = max(1, _CHUNK_ELEMENTS // (n_resamples * n_blocks))
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            chosen = contribution[rows][:, np.arange(n_blocks), choice]  # [rows, R, n]
            null = chosen.mean(axis=2)
            g, s = _two_sided_counts(null, observed[rows], scale[rows])
            greater[rows], less[rows] = g, s
            inversion.add(rows, observed[rows], null, weight)
        p, se = monte_carlo_p(greater, less, n_resamples)
    return pd.DataFrame(
        {
            "p_rand": p,
            "p_rand_exact": np.full(n_rows, exact),
            "n_resamples_rand": np.full(n_rows, n_used),
            "k_random": np.full(n_rows, k),
            "p_rand_mc_se": se,
        }
    ).join(inversion.frame())
