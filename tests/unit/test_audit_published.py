"""Statistics from published figures, checked against scipy, statsmodels and pingouin on data
sets rebuilt with the published means and sds (t-tests depend on the data only through them)."""

from __future__ import annotations

import itertools

import numpy as np
import pingouin as pg
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import DescrStatsW, ttost_ind, ttost_paired

from causalloc.audit.claims import Claim, Group
from causalloc.audit.published import (
    audit_figures,
    mde80,
    paired_from_stats,
    paired_sd,
    sign_flip_grid,
    welch_from_stats,
)


def rebuilt(mean: float, sd: float, n: int, seed: int = 0) -> np.ndarray:
    """n values with exactly this mean and sample sd."""
    z = np.random.default_rng(seed).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


def make_claim(**changes) -> Claim:
    values = {
        "id": "c", "paper": "p", "table": "t", "text": "x", "kind": "equivalence",
        "a": "oracle", "b": "random", "metric": "aues", "direction": "higher",
        "evidence": "figures", "sesoi": 0.02, "sesoi_justification": "j", "resolution": 0.001,
        "group_a": Group(0.593, 0.016, "sd", 5), "group_b": Group(0.586, 0.020, "sd", 5),
        "abs_delta_mean": 0.018, "abs_delta_sd": 0.013, "reported_p": 0.61,
        "reported_p_resolution": 0.01,
    }
    return Claim(**(values | changes))


def test_abs_delta_identity_recovers_sd_of_signed_differences():
    rng = np.random.default_rng(1)
    for _ in range(20):
        d = rng.normal(0.01, 0.02, size=5)
        got = paired_sd(d.mean(), np.abs(d).mean(), np.abs(d).std(ddof=1), 5)
        assert got == pytest.approx(d.std(ddof=1), rel=1e-10)


def test_welch_matches_scipy_pingouin_and_statsmodels():
    a, b = rebuilt(0.593, 0.016, 5, 1), rebuilt(0.586, 0.020, 5, 2)
    out = welch_from_stats(0.593, 0.016, 5, 0.586, 0.020, 5, sesoi=0.02)
    assert float(out["p"]) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert float(out["p"]) == pytest.approx(pg.ttest(a, b, correction=True)["p_val"].iloc[0])
    tost_p, _, _ = ttost_ind(a, b, -0.02, 0.02, usevar="unequal")
    assert float(out["tost_p"]) == pytest.approx(tost_p)
    # at the smallest margin the TOST p is exactly alpha
    margin = float(out["tost_margin_min"])
    at_margin, _, _ = ttost_ind(a, b, -margin, margin, usevar="unequal")
    assert at_margin == pytest.approx(0.05, abs=1e-9)


def test_paired_matches_statsmodels_on_rebuilt_differences():
    d = rebuilt(0.007, 0.0226, 5, 3)
    out = paired_from_stats(0.007, 0.0226, 5, sesoi=0.02)
    assert float(out["p"]) == pytest.approx(DescrStatsW(d).ttest_mean(0)[1])
    assert float(out["p"]) == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    tost_p, _, _ = ttost_paired(d, np.zeros(5), -0.02, 0.02)
    assert float(out["tost_p"]) == pytest.approx(tost_p)
    assert float(out["tost_p"]) == pytest.approx(
        pg.tost(d, np.zeros(5), bound=0.02, paired=True)["pval"].iloc[0])


def test_mde80_has_80_percent_power():
    sd = 0.0151
    paired = mde80(5, 5, sd_diff=sd)
    assert TTestPower().power(paired / sd, nobs=5, alpha=0.05) == pytest.approx(0.8, abs=1e-6)
    unpaired = mde80(5, 5, sd_pooled=sd)
    assert TTestIndPower().power(unpaired / sd, nobs1=5, alpha=0.05) == pytest.approx(0.8, abs=1e-6)


def test_sign_flip_grid_holds_every_exact_sign_flip_p():
    grid = sign_flip_grid(5)
    assert grid[0] == pytest.approx(1 / 16) and len(grid) == 16
    rng = np.random.default_rng(4)
    for _ in range(10):
        d = rng.normal(0.3, 1.0, size=5)
        signs = np.array(list(itertools.product([-1, 1], repeat=5)))
        p = np.mean(np.abs((signs * d).sum(axis=1)) >= abs(d.sum()) - 1e-12)
        assert np.isclose(grid, p).any()


def test_p_intervals_cover_every_point_of_the_rounding_box():
    claim = make_claim()
    out = audit_figures(claim)
    rng = np.random.default_rng(5)
    half = claim.resolution / 2
    lo, hi = out["welch"]["p_interval"]
    plo, phi = out["paired"]["p_interval"]
    for _ in range(300):
        ma, mb = 0.593 + rng.uniform(-half, half), 0.586 + rng.uniform(-half, half)
        sa, sb = 0.016 + rng.uniform(-half, half), 0.020 + rng.uniform(-half, half)
        scale = np.sqrt(5 / 4) if rng.random() < 0.5 else 1.0  # population sd convention
        p = stats.ttest_ind_from_stats(ma, sa * scale, 5, mb, sb * scale, 5, equal_var=False)[1]
        assert lo - 1e-3 <= p <= hi + 1e-3
        m_abs, s_abs = 0.018 + rng.uniform(-half, half), 0.013 + rng.uniform(-half, half)
        sd = paired_sd(ma - mb, m_abs, s_abs * scale, 5)
        p_paired = stats.ttest_1samp(rebuilt(ma - mb, float(sd), 5), 0).pvalue
        assert plo - 1e-3 <= p_paired <= phi + 1e-3
    assert lo < out["welch"]["p"] < hi and plo < out["paired"]["p"] < phi


def test_reported_p_consistency_per_test():
    claim = make_claim()
    welch_p = audit_figures(claim)["welch"]["p"]
    fits = audit_figures(make_claim(reported_p=round(welch_p, 2)))["reported"]["consistent_with"]
    assert "welch_t" in fits
    # 0.31 is 5/16 = 0.3125 rounded: an exact sign-flip p with 5 pairs
    flips = audit_figures(make_claim(reported_p=0.31))["reported"]
    assert "sign_flip_exact" in flips["consistent_with"]
    assert flips["by_test"]["sign_flip_exact"]["grid_values"] == [0.3125]
    assert "sign_flip_exact" not in audit_figures(make_claim(reported_p=0.61))["reported"][
        "consistent_with"]


def test_verdicts_equivalence_rounding_and_untestable():
    tight = make_claim(abs_delta_mean=0.004, abs_delta_sd=0.003,
                       group_a=Group(0.439, 0.020, "sd", 5), group_b=Group(0.437, 0.024, "sd", 5))
    out = audit_figures(tight)
    assert out["verdict"] == "supported" and out["paired"]["tost_margin_min"] < 0.02
    wide = audit_figures(make_claim())
    assert wide["verdict"] == "not_determined" and "absence of evidence" in wide["reason"]
    # SESOI between the smallest margins over the rounding box: rounding decides
    margins = audit_figures(tight)["paired"]["tost_margin_min_interval"]
    borderline = audit_figures(make_claim(
        abs_delta_mean=0.004, abs_delta_sd=0.003, group_a=Group(0.439, 0.020, "sd", 5),
        group_b=Group(0.437, 0.024, "sd", 5), sesoi=sum(margins) / 2))
    assert borderline["verdict"] == "not_determined" and "rounding" in borderline["reason"]
    big = audit_figures(make_claim(group_a=Group(0.70, 0.010, "sd", 5), abs_delta_mean=0.114,
                                   abs_delta_sd=0.01))
    assert big["verdict"] == "contradicted"
    means_only = audit_figures(make_claim(evidence="means_only", group_a=Group(0.52),
                                          group_b=Group(0.53)))
    assert means_only["testable"] is False and "means only" in means_only["reason"]


def test_se_spread_is_converted_to_sd():
    as_sd = audit_figures(make_claim())
    as_se = audit_figures(make_claim(group_a=Group(0.593, 0.016 / np.sqrt(5), "se", 5),
                                     group_b=Group(0.586, 0.020 / np.sqrt(5), "se", 5)))
    assert as_se["welch"]["p"] == pytest.approx(as_sd["welch"]["p"])


def test_abs_delta_below_mean_difference_within_rounding_uses_feasible_box():
    out = audit_figures(make_claim(abs_delta_mean=0.006, abs_delta_sd=0.0))
    assert np.isnan(out["paired"]["p"]) and out["paired"]["mde80"] is None
    lo, hi = out["paired"]["p_interval"]
    assert 0 <= lo < hi <= 1 and "feasible part of the rounding box" in out["reason"]
