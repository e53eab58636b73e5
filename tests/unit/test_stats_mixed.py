"""The pooled mixed model against lmerTest (tests/reference), scipy and statsmodels."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from causalloc.stats import mixed_model
from causalloc.stats.mixed import dose_responses, random_intercept_mean

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
LMERTEST = pd.read_csv(REFERENCE / "mixed_lmertest.csv")
TABLES = pd.read_csv(REFERENCE / "mixed" / "tables.csv").set_index("table")
#: ours (column) -> lmerTest (column) in mixed_lmertest.csv
COMPARED = {"estimate": "estimate", "se": "se", "df": "df", "t": "t", "p": "p",
            "ci95_lo": "ci_lo", "ci95_hi": "ci_hi", "sd_replicate_condition": "sd_seed_condition",
            "sd_residual": "sd_residual", "n_blocks": "n_blocks"}


def _fit(table: str) -> pd.DataFrame:
    spec = TABLES.loc[table]
    frame = pd.read_csv(REFERENCE / "mixed" / f"{table}.csv")
    return mixed_model(frame, metric=spec["metric"], condition=spec["condition"],
                       reference=spec["reference"], replicate=spec["replicate"],
                       block_columns=[*spec["cells"].split(":"), spec["replicate"]])


@pytest.mark.parametrize("table", list(TABLES.index))
def test_mixed_model_agrees_with_lmertest(table):
    ours = _fit(table).set_index("contrast")
    expected = LMERTEST[(LMERTEST["table"] == table) & (LMERTEST["model"] == "package")]
    assert set(ours.index) == set(expected["contrast"])
    for reference in expected.to_dict("records"):
        row = ours.loc[reference["contrast"]]
        for key, ref_key in COMPARED.items():
            if pd.isna(reference[ref_key]):  # one cell: no seed:condition term
                assert row[key] is None and "seed:condition" not in row["formula"]
            else:
                assert row[key] == pytest.approx(reference[ref_key], rel=1e-4, abs=1e-9), key
        assert row["converged"] and bool(reference["singular"]) == bool(row["warnings"])
        assert row["formula"].replace("model:algorithm:budget", "cell").replace(
            "algorithm", "cell").replace("aues ~", "y ~") == reference["formula"]


def test_one_cell_six_seeds_is_the_paired_t_test():
    """The issue's case: lmerTest p = 0.041 (df 5) = the paired t, where a normal
    reference gave 0.006."""
    row = _fit("one_cell_six_seeds").iloc[0]
    frame = pd.read_csv(REFERENCE / "mixed" / "one_cell_six_seeds.csv")
    wide = frame.pivot(index="seed", columns="condition", values="aues")
    paired = stats.ttest_rel(wide["oracle"], wide["random"])
    assert row["p"] == pytest.approx(paired.pvalue, rel=1e-9) and row["df"] == 5
    assert f"{row['p']:.3g}" == "0.0415" and row["formula"] == "aues ~ condition + (1 | seed)"
    ci = paired.confidence_interval()
    assert (row["ci95_lo"], row["ci95_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_block_intercept_matters_and_matches_lme4():
    """Without seed:condition variance the model is the issue's lme4 model with the block
    intercept (1 | algorithm:seed); leaving the block out more than doubles the SE."""
    row = _fit("three_algorithms_boundary").iloc[0]
    lme4 = LMERTEST[LMERTEST["table"] == "three_algorithms_boundary"].set_index("model")
    assert row["se"] == pytest.approx(lme4.loc["block_only", "se"], rel=1e-4)
    assert row["p"] == pytest.approx(lme4.loc["block_only", "p"], rel=1e-4)
    assert lme4.loc["no_block", "se"] > 2 * row["se"]
    assert row["warnings"] == ["boundary (singular) fit: group variance estimated as 0"]


def _crossed(cells=40, seeds=8, sd_slope=0.5, seed=0, keep=1.0):
    rng = np.random.default_rng(seed)
    slope = rng.normal(0, sd_slope, seeds)
    rows = []
    for cell in range(cells):
        for s in range(seeds):
            shift = rng.normal(0, 1)
            for condition, effect in (("random", 0.0), ("oracle", 0.3 + slope[s])):
                rows.append({"cell": cell, "seed": s, "condition": condition,
                             "y": shift + effect + rng.normal(0, 1)})
    frame = pd.DataFrame(rows)
    blocks = rng.random(cells * seeds) < keep
    return frame[np.repeat(blocks, 2)].reset_index(drop=True)


def test_balanced_fit_is_the_t_test_on_seed_means_at_any_number_of_cells():
    """Balanced cells x seeds with an interior fit: Satterthwaite df = seeds - 1 and the
    SE is that of the seed means of the contrasts (the closed form of the ANOVA)."""
    frame = _crossed(cells=2000)
    row = mixed_model(frame, metric="y", condition="condition", reference="random",
                      replicate="seed", block_columns=["cell", "seed"]).iloc[0]
    wide = frame.pivot(index=["cell", "seed"], columns="condition", values="y")
    seed_means = (wide["oracle"] - wide["random"]).groupby(level="seed").mean()
    test = stats.ttest_1samp(seed_means, 0.0)
    assert row["df"] == pytest.approx(7, rel=1e-6) and row["n_obs"] == 2 * 2000 * 8
    assert row["p"] == pytest.approx(test.pvalue, rel=1e-5)
    assert row["se"] == pytest.approx(seed_means.std(ddof=1) / np.sqrt(8), rel=1e-6)


def test_unbalanced_fit_equals_statsmodels_mixedlm_on_the_contrasts():
    frame = _crossed(cells=30, keep=0.7, seed=1)
    wide = frame.pivot(index=["cell", "seed"], columns="condition", values="y").dropna()
    contrasts = pd.DataFrame({"d": wide["oracle"] - wide["random"],
                              "seed": wide.index.get_level_values("seed")})
    ours = random_intercept_mean(contrasts["d"], contrasts["seed"])
    ref = smf.mixedlm("d ~ 1", contrasts, groups="seed").fit(reml=True)
    assert ours["estimate"] == pytest.approx(ref.fe_params.iloc[0], rel=1e-6)
    assert ours["sd_residual"] == pytest.approx(np.sqrt(ref.scale), rel=1e-5)
    assert ours["sd_group"] == pytest.approx(np.sqrt(ref.cov_re.iloc[0, 0]), rel=1e-4)
    assert 7 - 1e-6 < ours["df"] < len(contrasts) - 1 and ours["converged"]


def test_constant_contrasts_give_no_test_and_say_why():
    frame = pd.DataFrame({"seed": np.repeat(np.arange(6), 2), "condition": ["random", "oracle"] * 6,
                          "y": np.tile([0.5, 0.6], 6)})
    row = mixed_model(frame, metric="y", condition="condition", reference="random",
                      replicate="seed", block_columns=["seed"]).iloc[0]
    assert row["estimate"] == pytest.approx(0.1) and np.isnan(row["p"]) and np.isnan(row["se"])
    assert "essentially constant" in row["warnings"][0]


def test_too_few_blocks_give_a_row_with_a_warning():
    frame = pd.DataFrame({"seed": [0, 0, 1], "condition": ["random", "oracle", "random"],
                          "y": [0.1, 0.2, 0.3]})
    row = mixed_model(frame, metric="y", condition="condition", reference="random",
                      replicate="seed", block_columns=["seed"]).iloc[0]
    assert np.isnan(row["estimate"]) and not row["converged"]
    assert row["warnings"] == ["1 block(s) with both conditions, need >= 2"]


def test_dose_responses_for_all_groups_equal_statsmodels_ols_per_group():
    rng = np.random.default_rng(4)
    rows = [{"algorithm": a, "seed": s, "condition": c, "budget": b,
             "y": 0.5 * b * (c == "oracle") + 0.1 * s + rng.normal(0, 0.05)}
            for a in ("ga", "npo", "rmu") for s in range(1 if a == "rmu" else 5)
            for c in ("random", "oracle") for b in (0.05, 0.1, 0.2, 0.4)]
    frame = pd.DataFrame(rows)
    frame.loc[3, "y"] = np.nan
    ours = dose_responses(frame, metric="y", predictor="budget", x_column="budget",
                          replicate="seed", by=["algorithm"], condition="condition")
    assert [(r["cell"]["algorithm"], r["condition"]) for r in ours] == [
        (a, c) for a in ("ga", "npo", "rmu") for c in ("random", "oracle")]
    for row in ours:
        group = frame[(frame["algorithm"] == row["cell"]["algorithm"])
                      & (frame["condition"] == row["condition"])].dropna()
        formula = "y ~ budget + C(seed)" if group["seed"].nunique() > 1 else "y ~ budget"
        ref = smf.ols(formula, group).fit()
        assert row["formula"] == formula
        assert row["slope"] == pytest.approx(ref.params["budget"], rel=1e-9)
        assert row["p"] == pytest.approx(ref.pvalues["budget"], rel=1e-7)
        assert row["ci95_lo"] == pytest.approx(ref.conf_int().loc["budget", 0], rel=1e-9)
        assert row["n"] == len(group) and [p["n"] for p in row["points"]] == (
            group.groupby("budget").size().tolist())
    constant = frame.assign(budget=0.1)
    assert dose_responses(constant, metric="y", predictor="budget", x_column="budget",
                          replicate="seed", by=["algorithm"]) == []
