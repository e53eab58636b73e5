"""Group-sequential permutation tests: looks every N blocks, alpha spent over the looks.

Method (a group-sequential permutation test; Lan & DeMets 1983 spending, applied to the
joint permutation distribution as in Mehta et al. 1994):

- Blocks are read in ascending replicate value; look l uses the first n_l blocks
  (n_l = N, 2N, ..., up to the planned maximum M; a last look at M when N does not
  divide it). The information fraction is t_l = n_l / M.
- One set of R resampled assignments (sign flips of every block, or the stratified
  choice of the "tested" mask among the K + 1 of every block) is drawn once and applied
  to all looks, so the R resamples give the joint null distribution of the statistics at
  every look (the statistic at look l is the mean over the first n_l blocks, as in the
  fixed-sample tests of :mod:`causalloc.stats.permutation`).
- Boundaries: an O'Brien-Fleming-type spending function
  alpha(t) = 2 - 2 Phi(z_{1 - a/2} / sqrt t) (Lan & DeMets 1983; rpact's "asOF"). The
  boundary b_l on the look's p-value is the largest value such that the share of
  resamples that cross at any look <= l is at most alpha(t_l): the probability under H0
  of ever crossing is alpha(1) = a.
- Directional: the two-sided sign-flip / randomization p at shift 0 against b_l.
  Equivalence: two one-sided tests shifted to -SESOI and +SESOI (H01: Delta <= -SESOI,
  H02: Delta >= +SESOI), each with its own boundaries at level a; equivalent at a look
  when both cross there. Stopping for equivalence is non-binding for the directional
  test and vice versa, so each error rate stays <= a over all looks.
- Multiplicity: Bonferroni within the comparison's family: each of the m hypotheses
  spends a / m (directional and each one-sided equivalence test). Conservative, valid
  whatever the dependence between comparisons and whenever each one stops.

Assumes what the fixed tests assume (exchangeable blocks; sign flips: differences
symmetric about the shift; randomization: the tested mask minus the shift is one more
random draw) and that M and N are fixed before the data are seen. Valid for skewed
metrics: no normal approximation is used. Written by hand: no Python library provides
group-sequential permutation tests.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

#: the sequential ``decision`` values besides the verdict labels
CONTINUE = "continue"


def obf_spending(t: np.ndarray, alpha: float) -> np.ndarray:
    """Cumulative alpha spent at information fraction t (Lan-DeMets O'Brien-Fleming type)."""
    t = np.clip(np.asarray(t, dtype=float), 1e-12, 1.0)
    return 2 - 2 * special.ndtr(special.ndtri(1 - alpha / 2) / np.sqrt(t))


def look_sizes(n_available: int, look_every: int, max_blocks: int) -> list[int]:
    """Blocks at each look: N, 2N, ... up to M (and M itself), those already available."""
    sizes = list(range(look_every, max_blocks + 1, look_every))
    if not sizes or sizes[-1] != max_blocks:
        sizes.append(max_blocks)
    return [n for n in sizes if n <= n_available]


def boundaries(null_p: np.ndarray, spend: np.ndarray) -> np.ndarray:
    """Largest p-boundary at each look so that P(cross by look l) <= spend[l] under H0.

    ``null_p`` [R, L]: the p-value of each resampled data set at each look (its rank among
    the R resamples); ``spend``: cumulative alpha at each look. A resample crosses at look
    l when its p there is <= b_l and it did not cross earlier.
    """
    n_resamples, n_looks = null_p.shape
    crossed = np.zeros(n_resamples, dtype=bool)
    out = np.zeros(n_looks)
    for look in range(n_looks):
        allowed = math.floor(spend[look] * n_resamples + 1e-9) - int(crossed.sum())
        values = np.sort(null_p[~crossed, look])
        if allowed <= 0 or not len(values):
            bound = 0.0
        elif allowed >= len(values):
            bound = 1.0
        else:
            # the largest value with at most `allowed` alive resamples at or below it
            below = values[values < values[allowed]]
            bound = float(below[-1]) if len(below) else 0.0
        out[look] = bound
        crossed |= null_p[:, look] <= bound
    return out


def _rank_p(null: np.ndarray, observed: np.ndarray, side: str):
    """(null p's [R, L], observed p's [L]) one-sided ('greater', 'less') or two-sided."""
    n_resamples = null.shape[0]
    ordered = np.sort(null, axis=0)
    scale = np.abs(null).max(axis=0) + np.abs(observed)
    gamma = 100 * np.finfo(float).eps * scale
    ge_null = np.empty_like(null)
    le_null = np.empty_like(null)
    ge_obs = np.empty(null.shape[1])
    le_obs = np.empty(null.shape[1])
    for look in range(null.shape[1]):
        column = ordered[:, look]
        ge_null[:, look] = n_resamples - np.searchsorted(column, null[:, look] - gamma[look], "left")
        le_null[:, look] = np.searchsorted(column, null[:, look] + gamma[look], "right")
        ge_obs[look] = n_resamples - np.searchsorted(column, observed[look] - gamma[look], "left")
        le_obs[look] = np.searchsorted(column, observed[look] + gamma[look], "right")
    if side == "greater":
        return ge_null / n_resamples, (ge_obs + 1) / (n_resamples + 1)
    if side == "less":
        return le_null / n_resamples, (le_obs + 1) / (n_resamples + 1)
    null_p = np.minimum(1.0, 2 * np.minimum(ge_null, le_null) / n_resamples)
    return null_p, np.minimum(1.0, 2 * (np.minimum(ge_obs, le_obs) + 1) / (n_resamples + 1))


def _statistics(a, b, draws, sizes, shift, assignment):
    """Observed [L] and resampled [R, L] mean statistics at each look under a shift."""
    sizes = np.asarray(sizes)
    if draws is None:
        diffs = a - b - shift
        signed = assignment * diffs  # assignment: signs [R, n]
        observed = np.cumsum(diffs)[sizes - 1] / sizes
    else:
        k = draws.shape[1]
        pool = np.concatenate([(a - shift)[:, None], draws], axis=1)  # [n, K+1]
        contribution = pool * (1 + 1 / k) - pool.sum(axis=1, keepdims=True) / k
        signed = contribution[np.arange(len(a)), assignment]  # assignment: choices [R, n]
        observed = np.cumsum(contribution[:, 0])[sizes - 1] / sizes
    null = np.cumsum(signed, axis=1)[:, sizes - 1] / sizes
    return observed, null


def sequential_test(a, b, draws, *, sesoi: float, higher_is_better: bool, look_every: int,
                    max_blocks: int | None, alpha: float, family_size: int,
                    rng: np.random.Generator, n_resamples: int = 9999) -> dict:
    """The group-sequential analysis of one comparison (blocks already in replicate order).

    Returns ``{decision, blocks_used, max_blocks, looks: [{blocks, p, boundary, p_equiv,
    boundary_equiv, decision}]}``: ``p``/``boundary`` are the directional test's,
    ``p_equiv`` the larger of the two one-sided shifted p's and ``boundary_equiv`` the
    smaller of their boundaries. ``decision`` is the verdict at the first look where the
    comparison is conclusive, ``inconclusive`` when the last planned look is reached
    without one, ``continue`` when fewer blocks than planned are available.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    n = len(a)
    planned = max_blocks or n
    sizes = look_sizes(min(n, planned), look_every, planned)
    if not sizes:
        return {"decision": CONTINUE, "blocks_used": 0, "max_blocks": planned, "looks": []}
    used = sizes[-1]
    a, b = a[:used], b[:used]
    draws = None if draws is None else np.asarray(draws, dtype=float)[:used]
    if draws is None:
        assignment = rng.integers(0, 2, size=(n_resamples, used)) * 2.0 - 1.0
    else:
        assignment = rng.integers(0, draws.shape[1] + 1, size=(n_resamples, used))
    level = alpha / family_size
    all_sizes = look_sizes(planned, look_every, planned)
    spend = obf_spending(np.array(all_sizes[: len(sizes)]) / planned, level)
    tests = {}
    for name, shift, side in (("directional", 0.0, "two-sided"),
                              ("lower", -sesoi, "greater"), ("upper", sesoi, "less")):
        observed, null = _statistics(a, b, draws, sizes, shift, assignment)
        null_p, p = _rank_p(null, observed, side)
        tests[name] = (p, boundaries(null_p, spend))
    means = np.cumsum(a - b)[np.asarray(sizes) - 1] / np.asarray(sizes)
    looks, decision, blocks_used = [], None, used
    for look, size in enumerate(sizes):
        p, bound = (tests["directional"][0][look], tests["directional"][1][look])
        p_eq = max(tests["lower"][0][look], tests["upper"][0][look])
        bound_eq = min(tests["lower"][1][look], tests["upper"][1][look])
        different = p <= bound
        equivalent = (tests["lower"][0][look] <= tests["lower"][1][look]
                      and tests["upper"][0][look] <= tests["upper"][1][look])
        favours_a = means[look] > 0 if higher_is_better else means[look] < 0
        label = ("negligible" if different and equivalent else "equivalent" if equivalent
                 else ("a_better" if favours_a else "b_better") if different else CONTINUE)
        looks.append({"blocks": int(size), "p": float(p), "boundary": float(bound),
                      "p_equiv": float(p_eq), "boundary_equiv": float(bound_eq),
                      "mean_diff": float(means[look]), "decision": label})
        if label != CONTINUE and decision is None:
            decision, blocks_used = label, int(size)
            break
    if decision is None:
        decision = "inconclusive" if used >= planned else CONTINUE
    return {"decision": decision, "blocks_used": blocks_used, "max_blocks": int(planned),
            "looks": looks}


def order_by_replicate(replicates: list) -> np.ndarray:
    """Positions that sort blocks by ascending replicate value (numbers numerically)."""
    try:
        keys = [float(r) for r in replicates]
    except (TypeError, ValueError):
        keys = [str(r) for r in replicates]
    return np.argsort(np.asarray(keys), kind="stable")
