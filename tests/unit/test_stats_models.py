"""Dose-response, multiplicity, power, verdicts (the mixed model: test_stats_mixed.py)."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from causalloc.stats import adjust_pvalues, blocks_needed, dose_response, verdicts
from causalloc.stats.power import min_blocks_sign_flip, power_tost_paired


def test_dose_response_slope_within_seeds():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"budget": np.tile([0.05, 0.1, 0.2], 10),
                          "seed": np.repeat(np.arange(10), 3)})
    frame["aues"] = 2.0 * frame["budget"] + frame["seed"] * 0.5 + rng.normal(0, 0.01, 30)
    row = dose_response(frame, metric="aues", predictor="budget", x_column="budget",
                        replicate="seed")
    assert row["slope"] == pytest.approx(2.0, abs=0.1) and row["ci95_lo"] < 2.0 < row["ci95_hi"]
    assert row["formula"] == "aues ~ budget + C(seed)" and len(row["points"]) == 3
    assert row["points"][0]["n"] == 10
    assert dose_response(frame.assign(budget=0.1), metric="aues", predictor="budget",
                         x_column="budget", replicate="seed") is None


def test_adjustment_within_families_equals_multipletests():
    p = pd.Series([0.01, 0.04, 0.03, 0.2, 0.001, np.nan])
    families = pd.Series(["x", "x", "x", "y", "y", "y"])
    holm = adjust_pvalues(p, families, "holm")
    np.testing.assert_allclose(holm[:3], multipletests(p[:3], method="holm")[1])
    np.testing.assert_allclose(holm[3:5], multipletests(p[3:5], method="holm")[1])
    assert np.isnan(holm[5])
    bh = adjust_pvalues(p, families, "fdr_bh")
    np.testing.assert_allclose(bh[:3], multipletests(p[:3], method="fdr_bh")[1])
    rng = np.random.default_rng(0)  # many families of unequal sizes, with ties
    p = pd.Series(rng.uniform(0, 0.2, 60))
    p[5] = p[6]
    families = pd.Series(rng.integers(0, 7, 60))
    for method in ("holm", "fdr_bh"):
        adjusted = adjust_pvalues(p, families, method)
        for family in families.unique():
            members = families == family
            expected = multipletests(p[members], method=method)[1]
            np.testing.assert_allclose(adjusted[members], expected, rtol=1e-12)


def test_blocks_needed_matches_known_sample_sizes():
    detect, equivalence = blocks_needed(np.array([1.0, 1.25, 2.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(detect, [10, 15, 34])  # statistics notes: d_z 1, 0.8, 0.5
    np.testing.assert_array_equal(equivalence, [11, 15, 36])
    for effect, n in ((1.0, 10), (0.5, 34)):
        assert TTestPower().power(effect, n, 0.05) >= 0.8 > TTestPower().power(effect, n - 1, 0.05)
    assert min_blocks_sign_flip(0.05) == 6
    tiny, _ = blocks_needed(np.array([0.01]), np.array([1.0]))
    assert tiny[0] == 6  # the exact sign-flip floor


def test_tost_power_agrees_with_simulation():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0, 1, size=(20000, 11))
    t_crit = 1.8124611228107335  # t_{0.95, 10}
    mean, se = diffs.mean(axis=1), diffs.std(axis=1, ddof=1) / np.sqrt(11)
    simulated = np.mean(((mean + 1) / se > t_crit) & ((mean - 1) / se < -t_crit))
    assert power_tost_paired(1.0, 11) == pytest.approx(simulated, abs=0.01)


def test_verdict_rule_is_direction_aware():
    labels = verdicts(
        mean_diff=np.array([0.5, 0.5, -0.5, 0.01, 0.01, 0.5, 0.5]),
        p_adj=np.array([0.01, 0.01, 0.01, 0.5, 0.01, 0.3, np.nan]),
        tost_p=np.array([0.5, 0.5, 0.5, 0.01, 0.01, 0.3, 0.3]),
        higher_is_better=np.array([True, False, True, True, True, True, True]),
    )
    assert labels.tolist() == ["a_better", "b_better", "b_better", "equivalent", "negligible",
                               "inconclusive", "inconclusive"]


def test_blocks_needed_accounts_for_the_family_under_holm():
    """With k comparisons in a family the exact sign-flip floor 2 / 2^n must clear alpha / k:
    8 blocks for k = 5 (2/256 * 5 < 0.05), 6 for k = 1; detection also plans at alpha / k."""
    from causalloc.stats.power import blocks_needed

    detect, _ = blocks_needed(np.array([0.001, 0.001, 0.02, 0.02]), np.array([0.02] * 4), 0.05, 0.8,
                              np.array([1, 5, 1, 5]))
    assert detect[0] == 6 and detect[1] == 8
    assert detect[2] == 10 and detect[3] > detect[2]
