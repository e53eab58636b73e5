"""Bootstrap BCa, effect sizes, t, Wilcoxon, TOST, Bayes factor vs scipy/pingouin/statsmodels."""

import numpy as np
import pingouin
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttost_paired

from causalloc.stats import (
    bootstrap_mean_ci,
    jzs_bf10,
    paired_effect_sizes,
    paired_t,
    prob_improvement,
    tost_paired,
    wilcoxon_signed_rank,
)


def test_bca_equals_scipy_bootstrap_row_by_row():
    rng = np.random.default_rng(0)
    # skewed, so BCa differs from percentile; n = 15 makes resamples that tie with the
    # estimate (permutations of the data, where scipy's count depends on rounding) unlikely
    diffs = rng.gamma(2.0, 1.0, size=(6, 15)) - 1.5
    ours = bootstrap_mean_ci(diffs, rng=np.random.default_rng(42), n_boot=2999)
    assert (ours["ci_method"] == "BCa").all() and (ours["n_boot"] == 2999).all()
    for i, d in enumerate(diffs):
        ref = stats.bootstrap(
            (d,), np.mean, n_resamples=2999, method="BCa", rng=np.random.default_rng(42)
        ).confidence_interval
        assert ours["ci_lo"].iloc[i] == pytest.approx(ref.low, rel=1e-9)
        assert ours["ci_hi"].iloc[i] == pytest.approx(ref.high, rel=1e-9)
    # paired=True form of scipy on (a, b) with statistic mean(a - b): the same interval
    a, b = diffs[0] + 5, np.full(15, 5.0)
    ref = stats.bootstrap(
        (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True,
        n_resamples=2999, method="BCa", rng=np.random.default_rng(42),
    ).confidence_interval
    assert ours["ci_lo"].iloc[0] == pytest.approx(ref.low, rel=1e-9)


def test_bootstrap_fallbacks():
    constant = bootstrap_mean_ci(np.full((1, 8), 0.3), rng=np.random.default_rng(0), n_boot=999)
    assert constant["ci_method"].iloc[0] == "percentile"
    assert constant["ci_lo"].iloc[0] == pytest.approx(0.3)
    two = bootstrap_mean_ci(np.array([[1.0, 2.0]]), rng=np.random.default_rng(0))
    assert two["ci_method"].iloc[0] == "t" and two["ci_lo"].iloc[0] < 1.5 < two["ci_hi"].iloc[0]


def test_effect_sizes_d_z_and_g_av():
    rng = np.random.default_rng(1)
    a = rng.normal(1, 1, size=(3, 12))
    b = a * 0.5 + rng.normal(0, 1, size=(3, 12))
    ours = paired_effect_sizes(a, b)
    for i in range(3):
        d = a[i] - b[i]
        assert ours["d_z"].iloc[i] == pytest.approx(d.mean() / d.std(ddof=1))
        g = pingouin.compute_effsize(a[i], b[i], paired=True, eftype="hedges")
        assert ours["g_av"].iloc[i] == pytest.approx(g, rel=1e-10)
        d_z = pingouin.compute_effsize(a[i], b[i], paired=True, eftype="cohen_dz")
        assert ours["d_z"].iloc[i] == pytest.approx(d_z, rel=1e-10)


def test_t_and_wilcoxon_equal_scipy_and_tost_equals_statsmodels_and_pingouin():
    rng = np.random.default_rng(2)
    a = rng.normal(0.2, 1, size=(5, 9))
    b = rng.normal(0, 1, size=(5, 9))
    diffs = a - b
    t = paired_t(diffs)
    w = wilcoxon_signed_rank(diffs)
    tost = tost_paired(diffs, sesoi=0.8)
    for i in range(5):
        ref = stats.ttest_rel(a[i], b[i])
        assert t["p_t"].iloc[i] == pytest.approx(ref.pvalue, rel=1e-10)
        ci = ref.confidence_interval()
        assert t["t_ci_lo"].iloc[i] == pytest.approx(ci.low)
        assert w.iloc[i] == pytest.approx(stats.wilcoxon(a[i], b[i]).pvalue, rel=1e-10)
        p_sm = ttost_paired(a[i], b[i], -0.8, 0.8)[0]
        assert tost["tost_p"].iloc[i] == pytest.approx(p_sm, rel=1e-10)
        p_pg = pingouin.tost(a[i], b[i], bound=0.8, paired=True)["pval"].iloc[0]
        assert tost["tost_p"].iloc[i] == pytest.approx(p_pg, rel=1e-10)
        ci90 = stats.ttest_1samp(diffs[i], 0).confidence_interval(0.90)
        assert tost["tost_ci90_lo"].iloc[i] == pytest.approx(ci90.low)
        assert tost["tost_ci90_hi"].iloc[i] == pytest.approx(ci90.high)


def test_tost_equivalent_iff_ci90_inside_bounds():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0, 0.5, size=(200, 10))
    tost = tost_paired(diffs, sesoi=0.4)
    inside = (tost["tost_ci90_lo"] > -0.4) & (tost["tost_ci90_hi"] < 0.4)
    np.testing.assert_array_equal(tost["tost_p"] < 0.05, inside)


def test_bayes_factor_equals_pingouin_ttest():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.5, 1, size=(3, 10)), rng.normal(0, 1, size=(3, 10))
    t = paired_t(a - b)["t"].to_numpy()
    bf = jzs_bf10(t, 10)
    for i in range(3):
        ref = pingouin.ttest(a[i], b[i], paired=True)
        assert t[i] == pytest.approx(ref["T"].iloc[0])
        exact = pingouin.bayesfactor_ttest(ref["T"].iloc[0], 10, paired=True)
        assert bf[i] == pytest.approx(exact, rel=1e-10)
        assert bf[i] == pytest.approx(float(ref["BF10"].iloc[0]), rel=5e-3)  # printed rounded
    assert np.isnan(jzs_bf10(np.array([np.nan]), 10)[0])


def test_prob_improvement_direction_ties_and_wilson_ci():
    diffs = np.array([[1.0, 2, 3, 0, -1, 4, 5, 6, 7, 8]])
    up = prob_improvement(diffs, True)
    assert up["prob_improvement"].iloc[0] == pytest.approx(8.5 / 10)
    down = prob_improvement(diffs, False)
    assert down["prob_improvement"].iloc[0] == pytest.approx(1.5 / 10)
    every = prob_improvement(np.ones((1, 10)), True)
    assert every["prob_improvement_hi"].iloc[0] == pytest.approx(1.0)
    assert every["prob_improvement_lo"].iloc[0] == pytest.approx(0.7225, abs=1e-4)  # Wilson
