"""Mixed model vs statsmodels mixedlm, dose-response, multiplicity, power, verdicts."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from causalloc.stats import adjust_pvalues, blocks_needed, dose_response, mixed_model, verdicts
from causalloc.stats.power import min_blocks_sign_flip, power_tost_paired


def _blocks(seeds=8, data_levels=("d1",), effect=0.3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for data in data_levels:
        data_shift = rng.normal()
        for algorithm in ("ga", "npo"):
            for s in range(seeds):
                shift = rng.normal() + data_shift
                for condition, delta in (("random", 0.0), ("oracle", effect), ("attr", 0.1)):
                    rows.append({"data": data, "algorithm": algorithm, "seed": s,
                                 "condition": condition,
                                 "aues": shift + delta + 0.3 * (algorithm == "npo")
                                 + rng.normal(0, 0.2)})
    return pd.DataFrame(rows)


def test_mixed_model_equals_statsmodels_single_random_factor():
    frame = _blocks()
    ours = mixed_model(frame, metric="aues", condition="condition", reference="random",
                       replicate="seed", block_columns=["data", "algorithm", "seed"])
    ref = smf.mixedlm(
        "aues ~ C(condition, Treatment(reference='random')) + C(algorithm)", frame,
        groups=frame["seed"],
    ).fit(reml=True)
    term = "C(condition, Treatment(reference='random'))[T.oracle]"
    row = ours.set_index("term").loc[term]
    assert row["estimate"] == pytest.approx(ref.params[term], rel=1e-8)
    assert row["p"] == pytest.approx(ref.pvalues[term], rel=1e-6)
    assert row["ci95_lo"] == pytest.approx(ref.conf_int().loc[term, 0], rel=1e-8)
    assert row["contrast"] == "oracle - random" and row["n_obs"] == len(frame)
    assert row["estimate"] == pytest.approx(0.3, abs=0.1)
    assert set(ours["contrast"]) == {"oracle - random", "attr - random"}


def test_mixed_model_crossed_random_effects_equal_vc_formula_fit():
    frame = _blocks(data_levels=("d1", "d2", "d3"))
    ours = mixed_model(frame, metric="aues", condition="condition", reference="random",
                       replicate="seed", block_columns=["data", "algorithm", "seed"])
    assert "(1 | seed) + (1 | data)" in ours["formula"].iloc[0]
    ref = smf.mixedlm(
        "aues ~ C(condition, Treatment(reference='random')) + C(algorithm)",
        frame.assign(_all=1), groups="_all",
        vc_formula={"seed": "0 + C(seed)", "data": "0 + C(data)"}, re_formula="0",
    ).fit(reml=True)
    term = "C(condition, Treatment(reference='random'))[T.oracle]"
    assert ours.set_index("term").loc[term, "estimate"] == pytest.approx(ref.params[term], rel=1e-6)


def test_mixed_model_surfaces_convergence_warnings():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"seed": np.repeat(np.arange(6), 2),
                          "condition": ["random", "oracle"] * 6,
                          "aues": rng.normal(size=12)})  # no seed variance: boundary fit
    ours = mixed_model(frame, metric="aues", condition="condition", reference="random",
                       replicate="seed", block_columns=["seed"])
    assert any("ConvergenceWarning" in w for w in ours["warnings"].iloc[0])


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
