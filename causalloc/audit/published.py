"""What the published figures of a claim can support: tests from summary statistics only.

For two groups with published mean, sd and n (a = e.g. Oracle, b = Random, d = a - b):

* **Welch t-test** from the summary statistics, ``scipy.stats.ttest_ind_from_stats(...,
  equal_var=False)``; its TOST (Schuirmann 1987) is the same function on means shifted by
  -+ the margin with one-sided alternatives. The Welch-Satterthwaite df,
  (va + vb)^2 / (va^2/(na-1) + vb^2/(nb-1)) with v = sd^2/n, is written out because scipy
  does not return it; it is only needed for intervals and the smallest margin.
* **Paired t-test implied by the per-seed |Delta|** (mean m_|d| and sd s_|d| of |d_i|):
  because |d_i|^2 = d_i^2, sum d_i^2 = (n-1) s_|d|^2 + n m_|d|^2, so the sd of the signed
  differences is s_d^2 = (sum d_i^2 - n mean_d^2) / (n-1) with mean_d = mean_a - mean_b.
  The paired t = mean_d / (s_d / sqrt n) on n - 1 df is evaluated with ``scipy.stats.t``
  (no library computes a one-sample t from a mean and an sd); tests check it against
  statsmodels on a data set rebuilt with that mean and sd.
* **TOST at the SESOI** and the **smallest equivalence margin** at alpha: TOST p < alpha iff
  the (1 - 2 alpha) CI lies inside [-margin, margin], so the smallest margin is the CI bound
  farthest from 0, |mean_d| + t_{1-alpha, df} se.
* **Minimal detectable effect at 80% power** for the published n, from statsmodels'
  ``TTestIndPower`` (two-sample; Student df, the usual planning approximation of Welch)
  and ``TTestPower`` (paired, d_z), converted to metric units with the pooled sd and s_d.
* **Which tests could have produced the reported p**: Welch t, Student t (pooled), paired t,
  and the exact sign-flip test, whose two-sided p with n pairs can only be a multiple of
  2 / 2^n (1/16 for n = 5; the exact Wilcoxon signed-rank test has the same grid).

Rounding: the published figures are rounded to ``resolution`` (e.g. 0.001), so each is only
known to +- resolution / 2. Every statistic is evaluated on a grid over that box (9 points per
coordinate, corners included, plus mean_d = 0 when the box contains it; the t-statistics
are monotone in |mean_d| and in each sd, so the extremes lie on the grid), and reported as
an interval. Whether the papers' sds are sample (n - 1) or population (n) sds is not stated:
both conventions are evaluated (population sd -> sample sd x sqrt(n / (n - 1))) and the
intervals cover both. A reported p, itself rounded to ``reported_p_resolution``, is
consistent with a test when the two intervals overlap.

Verdict on the figures (primary test: paired when |Delta| is given, the design then being
seed-paired; Welch otherwise), with f = the difference oriented so that f > 0 favours a:

* equivalence: supported if TOST p < alpha; contradicted if the (1 - 2 alpha) CI lies
  wholly outside [-SESOI, SESOI];
* superiority: supported if the (1 - alpha) CI of f lies above 0; contradicted if the
  (1 - 2 alpha) CI of f lies below SESOI (a is not better by a meaningful amount);
* non-inferiority: supported if the (1 - 2 alpha) CI of f lies above -SESOI; contradicted
  if it lies below -SESOI.

A decision holds only if it holds on the whole rounding box under both sd conventions;
otherwise the verdict is ``not_determined`` and says that rounding decides.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from causalloc.audit.claims import Claim

SD_CONVENTIONS = ("sample", "population")
#: grid points per coordinate of the rounding box
GRID_POINTS = 9
TESTS = ("welch_t", "student_t", "paired_t", "sign_flip_exact")


def _as_sample_sd(sd, n: int, convention: str):
    """A published sd as the sample (n - 1) sd under the given convention."""
    return sd * math.sqrt(n / (n - 1)) if convention == "population" else sd


def welch_df(sd_a, n_a, sd_b, n_b):
    """Welch-Satterthwaite degrees of freedom (Welch 1947)."""
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    return (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))


def welch_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, *, sesoi: float,
                     alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Welch t, p, CIs, TOST p and the smallest TOST margin; arrays broadcast."""
    mean_a, sd_a, mean_b, sd_b = np.broadcast_arrays(*map(np.asarray, (mean_a, sd_a, mean_b, sd_b)))
    t, p = stats.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=False)
    p_low = stats.ttest_ind_from_stats(mean_a + sesoi, sd_a, n_a, mean_b, sd_b, n_b,
                                       equal_var=False, alternative="greater").pvalue
    p_high = stats.ttest_ind_from_stats(mean_a - sesoi, sd_a, n_a, mean_b, sd_b, n_b,
                                        equal_var=False, alternative="less").pvalue
    se = np.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)
    return _intervals(mean_a - mean_b, se, welch_df(sd_a, n_a, sd_b, n_b), alpha) | {
        "t": t, "p": p, "tost_p": np.maximum(p_low, p_high),
    }


def student_p(mean_a, sd_a, n_a, mean_b, sd_b, n_b) -> np.ndarray:
    """Two-sample Student t-test (pooled variance) p from summary statistics (scipy)."""
    return stats.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=True).pvalue


def paired_sd(mean_diff, abs_mean, abs_sd, n: int) -> np.ndarray:
    """Sample sd of the signed differences from the mean and sample sd of |d_i| (NaN if < 0).

    sum d_i^2 = (n-1) s_|d|^2 + n m_|d|^2 and s_d^2 = (sum d_i^2 - n mean_d^2) / (n - 1).
    """
    sum_sq = (n - 1) * np.asarray(abs_sd) ** 2 + n * np.asarray(abs_mean) ** 2
    var = (sum_sq - n * np.asarray(mean_diff) ** 2) / (n - 1)
    return np.sqrt(np.where(var > 0, var, np.nan))


def paired_from_stats(mean_diff, sd_diff, n: int, *, sesoi: float,
                      alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Paired (one-sample) t, p, CIs, TOST p and smallest TOST margin from mean_d and s_d."""
    mean_diff, sd_diff = np.broadcast_arrays(np.asarray(mean_diff, float), np.asarray(sd_diff))
    se = sd_diff / math.sqrt(n)
    df = n - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean_diff / se
        tost_p = np.maximum(stats.t.sf((mean_diff + sesoi) / se, df),
                            stats.t.cdf((mean_diff - sesoi) / se, df))
    return _intervals(mean_diff, se, np.full(mean_diff.shape, float(df)), alpha) | {
        "t": t, "p": 2 * stats.t.sf(np.abs(t), df), "tost_p": tost_p, "sd_diff": sd_diff,
    }


def _intervals(mean_diff, se, df, alpha: float) -> dict[str, np.ndarray]:
    """The 1 - alpha and 1 - 2 alpha t intervals and the smallest TOST margin."""
    half95 = stats.t.ppf(1 - alpha / 2, df) * se
    half90 = stats.t.ppf(1 - alpha, df) * se
    return {
        "mean_diff": mean_diff, "se": se, "df": df,
        "ci95_lo": mean_diff - half95, "ci95_hi": mean_diff + half95,
        "ci90_lo": mean_diff - half90, "ci90_hi": mean_diff + half90,
        "tost_margin_min": np.abs(mean_diff) + half90,
    }


def mde80(n_a: int, n_b: int, sd_pooled: float | None = None, sd_diff: float | None = None,
          alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest true difference detected with ``power`` by a two-sided test (statsmodels).

    Two-sample (``sd_pooled``): TTestIndPower effect size x pooled sd; paired (``sd_diff``):
    TTestPower d_z x s_d.
    """
    if sd_diff is not None:
        if not np.isfinite(sd_diff):
            return None
        d = TTestPower().solve_power(nobs=n_a, alpha=alpha, power=power)
        return float(d * sd_diff)
    d = TTestIndPower().solve_power(nobs1=n_a, ratio=n_b / n_a, alpha=alpha, power=power)
    return float(d * sd_pooled)


def sign_flip_grid(n: int) -> np.ndarray:
    """Every two-sided p an exact sign-flip test over n pairs can give: k * 2 / 2^n."""
    step = 2.0 / 2**n
    return np.arange(1, 2 ** (n - 1) + 1) * step


def _axis(center: float, half: float, low: float = 0.0, include_zero: bool = False) -> np.ndarray:
    """Grid over [center - half, center + half] (clipped below at ``low``)."""
    lo, hi = max(center - half, low), max(center + half, low)
    points = np.linspace(lo, hi, GRID_POINTS)
    if include_zero and lo < 0 < hi:
        points = np.sort(np.append(points, 0.0))
    return points


def _box(*axes: np.ndarray) -> list[np.ndarray]:
    return [a.ravel() for a in np.meshgrid(*axes, indexing="ij")]


def _range(values) -> list[float] | None:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return [float(values.min()), float(values.max())]


def _decisions(kind: str, stats_: dict, sesoi: float, sign: float, alpha: float) -> np.ndarray:
    """Decision of the figures at every grid point (see the module docstring)."""
    lo90, hi90 = sign * stats_["ci90_lo"], sign * stats_["ci90_hi"]
    lo95 = np.minimum(sign * stats_["ci95_lo"], sign * stats_["ci95_hi"])
    lo90, hi90 = np.minimum(lo90, hi90), np.maximum(lo90, hi90)
    if kind == "equivalence":
        supported = stats_["tost_p"] < alpha
        contradicted = (lo90 > sesoi) | (hi90 < -sesoi)
    elif kind == "superiority":
        supported, contradicted = lo95 > 0, hi90 < sesoi
    else:  # non-inferiority
        supported, contradicted = lo90 > -sesoi, hi90 < -sesoi
    return np.select([supported, contradicted], ["supported", "contradicted"], "not_determined")


def audit_figures(claim: Claim, alpha: float = 0.05) -> dict:
    """Every statistic of the published figures of one claim, with rounding intervals."""
    if claim.evidence != "figures":
        return _untestable(claim)
    a, b = claim.group_a, claim.group_b
    half = claim.resolution / 2
    sign = 1.0 if claim.higher_is_better else -1.0
    diff = a.mean - b.mean
    out: dict = {"testable": True, "mean_diff": diff, "sd_conventions": list(SD_CONVENTIONS)}
    welch_point = welch_from_stats(a.mean, a.sd, a.n, b.mean, b.sd, b.n, sesoi=claim.sesoi,
                                   alpha=alpha)
    pooled = math.sqrt(((a.n - 1) * a.sd**2 + (b.n - 1) * b.sd**2) / (a.n + b.n - 2))
    out["welch"] = _point(welch_point) | {
        "mde80": mde80(a.n, b.n, sd_pooled=pooled, alpha=alpha),
        "student_p": float(student_p(a.mean, a.sd, a.n, b.mean, b.sd, b.n)),
    }
    ranges: dict[str, dict] = {"welch_t": {}, "student_t": {}}
    decisions: dict[str, set] = {"welch": set(), "paired": set()}
    margin_ranges: dict[str, list] = {"welch": [], "paired": []}
    se_factor = math.sqrt(a.n) if a.spread_kind == "se" else 1.0
    sdb_factor = math.sqrt(b.n) if b.spread_kind == "se" else 1.0
    for convention in SD_CONVENTIONS:
        d, sa, sb = _box(
            _axis(diff, 2 * half, low=-math.inf, include_zero=True),
            _axis(a.spread, half) * se_factor,
            _axis(b.spread, half) * sdb_factor,
        )
        sa, sb = _as_sample_sd(sa, a.n, convention), _as_sample_sd(sb, b.n, convention)
        sa, sb = np.maximum(sa, 1e-12), np.maximum(sb, 1e-12)
        grid = welch_from_stats(d, sa, a.n, np.zeros_like(d), sb, b.n, sesoi=claim.sesoi,
                                alpha=alpha)
        ranges["welch_t"][convention] = _range(grid["p"])
        ranges["student_t"][convention] = _range(student_p(d, sa, a.n, 0.0, sb, b.n))
        decisions["welch"] |= set(_decisions(claim.kind, grid, claim.sesoi, sign, alpha))
        margin_ranges["welch"] += _range(grid["tost_margin_min"])
    out["welch"]["p_interval"] = _union(ranges["welch_t"])
    out["welch"]["tost_margin_min_interval"] = _span(margin_ranges["welch"])
    out["paired"] = None
    if claim.abs_delta_mean is not None:
        n = a.n
        sd_d = float(paired_sd(diff, claim.abs_delta_mean, claim.abs_delta_sd, n))
        point = paired_from_stats(diff, sd_d, n, sesoi=claim.sesoi, alpha=alpha)
        out["paired"] = _point(point) | {
            "sd_diff": sd_d, "sum_sq_diff": (n - 1) * claim.abs_delta_sd**2
            + n * claim.abs_delta_mean**2, "mde80": mde80(n, n, sd_diff=sd_d, alpha=alpha),
        }
        ranges["paired_t"] = {}
        for convention in SD_CONVENTIONS:
            d, m_abs, s_abs = _box(
                _axis(diff, 2 * half, low=-math.inf, include_zero=True),
                _axis(claim.abs_delta_mean, half),
                _axis(claim.abs_delta_sd, half),
            )
            sd_grid = paired_sd(d, m_abs, _as_sample_sd(s_abs, n, convention), n)
            grid = paired_from_stats(d, sd_grid, n, sesoi=claim.sesoi, alpha=alpha)
            feasible = np.isfinite(sd_grid)
            ranges["paired_t"][convention] = _range(grid["p"])
            decisions["paired"] |= set(
                _decisions(claim.kind, {k: v[feasible] for k, v in grid.items()},
                           claim.sesoi, sign, alpha))
            margin_ranges["paired"] += _range(grid["tost_margin_min"]) or []
        out["paired"]["p_interval"] = _union(ranges["paired_t"])
        out["paired"]["tost_margin_min_interval"] = _span(margin_ranges["paired"])
    out["p_intervals"] = ranges
    out["reported"] = _reported(claim, ranges)
    primary = "paired" if out["paired"] else "welch"
    out["primary_test"] = primary
    out["mde80"] = out[primary]["mde80"]
    out["verdict"], out["reason"] = _verdict(claim, out, primary, decisions[primary], alpha)
    return out


def _point(values: dict) -> dict:
    """Scalar entries of a statistics dict computed at the published figures."""
    keys = ("t", "df", "p", "mean_diff", "se", "tost_p", "tost_margin_min")
    point = {k: float(values[k]) for k in keys}
    point["ci95"] = [float(values["ci95_lo"]), float(values["ci95_hi"])]
    point["ci90"] = [float(values["ci90_lo"]), float(values["ci90_hi"])]
    return point


def _union(by_convention: dict[str, list | None]) -> list[float] | None:
    return _span([v for r in by_convention.values() if r for v in r])


def _span(values: list[float]) -> list[float] | None:
    return [min(values), max(values)] if values else None


def _reported(claim: Claim, ranges: dict[str, dict]) -> dict:
    """Which tests could give the reported p, allowing for every figure's rounding."""
    if claim.reported_p is None:
        return {"p": None, "interval": None, "consistent_with": [], "by_test": {}}
    half = claim.reported_p_resolution / 2
    lo, hi = claim.reported_p - half, claim.reported_p + half
    by_test: dict[str, dict] = {}
    for test, by_convention in ranges.items():
        by_test[test] = {
            convention: bool(r and r[0] <= hi and r[1] >= lo)
            for convention, r in by_convention.items()
        }
    if claim.abs_delta_mean is not None:  # the sign-flip test needs the pairs
        grid = sign_flip_grid(claim.group_a.n)
        hits = [float(g) for g in grid if lo - 1e-12 <= g <= hi + 1e-12]
        by_test["sign_flip_exact"] = {"any": bool(hits), "grid_values": hits,
                                      "grid_step": float(grid[0])}
    consistent = [t for t in TESTS if t in by_test and any(
        v for k, v in by_test[t].items() if isinstance(v, bool))]
    return {"p": claim.reported_p, "interval": [lo, hi], "consistent_with": consistent,
            "by_test": by_test}


def _verdict(claim: Claim, out: dict, primary: str, labels: set,
             alpha: float) -> tuple[str, str]:
    """The figures' verdict and the reason in words."""
    stats_ = out[primary]
    name = "paired t (rebuilt from |Delta|)" if primary == "paired" else "Welch t"
    margin = stats_["tost_margin_min_interval"] or [math.nan] * 2
    detail = (f"{name}: mean difference {out['mean_diff']:+.4g}, p = {_g(stats_['p'])}; "
              f"smallest equivalence margin at alpha {alpha:g} = {_g(stats_['tost_margin_min'])} "
              f"(rounding interval {_g(margin[0])} to {_g(margin[1])}) vs SESOI "
              f"{claim.sesoi:g}; MDE at 80% power = {_g(out['mde80'])}")
    if primary == "paired" and not math.isfinite(stats_["p"]):
        detail += ("; at the published figures |Delta| is too small for the mean difference "
                   "(possible only within rounding), so only the feasible part of the rounding box is used")
    if not labels:
        return "not_determined", f"no figures within rounding are possible; {detail}"
    if len(labels) > 1:
        return "not_determined", (f"the rounding of the published figures or the unstated sd "
                                  f"convention decides ({', '.join(sorted(labels))}); {detail}")
    label = labels.pop()
    if (claim.kind, label) == ("equivalence", "not_determined") and stats_["p"] < alpha:
        return label, ("not shown equivalent: the 90% CI reaches beyond +-SESOI, and at the "
                       f"published figures the difference is significant (p < {alpha:g}) "
                       f"without being shown larger than the SESOI; {detail}")
    reason = {
        ("equivalence", "supported"): "equivalent: the 90% CI lies inside +-SESOI",
        ("equivalence", "contradicted"): "the 90% CI lies outside +-SESOI: a real difference",
        ("equivalence", "not_determined"): "not shown equivalent: the 90% CI reaches beyond "
        "+-SESOI, and a p above 0.05 is absence of evidence, not evidence of no difference",
        ("superiority", "supported"): "the 95% CI of the advantage of a excludes 0",
        ("superiority", "contradicted"): "the 90% CI of the advantage of a lies below the SESOI",
        ("superiority", "not_determined"): "neither a significant advantage nor one excluded",
        ("non-inferiority", "supported"): "the 90% CI lies above -SESOI",
        ("non-inferiority", "contradicted"): "the 90% CI lies below -SESOI",
        ("non-inferiority", "not_determined"): "the 90% CI reaches below -SESOI",
    }[(claim.kind, label)]
    return label, f"{reason}; {detail}"


def _g(value) -> str:
    """3 significant digits; n/a for a missing or non-finite value."""
    return f"{value:.3g}" if value is not None and math.isfinite(value) else "n/a"


def _untestable(claim: Claim) -> dict:
    what = ("the paper gives means only (no spread, no n)" if claim.evidence == "means_only"
            else "the claim is qualitative (no published figures to test)")
    out = {"testable": False, "mean_diff": None, "welch": None, "paired": None, "mde80": None,
           "reported": {"p": None, "interval": None, "consistent_with": [], "by_test": {}},
           "primary_test": None, "verdict": "not_determined",
           "reason": f"not testable from the figures: {what}; only matched runs can test it"}
    if claim.evidence == "means_only":
        out["mean_diff"] = claim.group_a.mean - claim.group_b.mean
    return out


__all__ = [
    "audit_figures",
    "mde80",
    "paired_from_stats",
    "paired_sd",
    "sign_flip_grid",
    "welch_from_stats",
]
