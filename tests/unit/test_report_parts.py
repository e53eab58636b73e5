"""Fast checks of the report's parts: number formatting, the pasteable sentence, the answer
cell, labels, interval arithmetic, localization accuracy and the content of single figures
(no file rendering)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Polygon
from scipy import stats

from causalloc.errors import DataError
from causalloc.report.answer import answer_cell
from causalloc.report.figures import forest_plot, mask_anatomy, mean_ci, tradeoff_curves
from causalloc.report.localization import localization_accuracy
from causalloc.report.style import condition_styles
from causalloc.report.text import (
    cell_signs,
    comparison_sentence,
    describe_testbed,
    estimate_decimals,
    fmt_p,
    fmt_sig,
    mixed_model_row,
    sign_statement,
)
from causalloc.vocab import varying_cell_labels

EXAMPLE = {"a": "oracle", "b": "random", "metric": "aues", "cell": {"algorithm": "NPO"},
           "n_blocks": 10, "mean_diff": 0.006, "ci95": [-0.010, 0.022], "ci95_method": "BCa",
           "n_boot": 9999, "d_z": 0.21, "p_perm": 0.69, "p_perm_exact": True, "p_adj": 0.69,
           "adj_method": "holm", "sesoi": 0.02, "tost_p": 0.004, "verdict": "equivalent",
           "p_rand": None, "k_random": None, "higher_is_better": True}


def test_sentence_reproduces_the_issue_example():
    assert comparison_sentence(EXAMPLE) == (
        "NPO, oracle vs random: Delta AUES = 0.006, 95% CI [-0.010, 0.022] (BCa, 9,999 "
        "resamples), d_z = 0.21, exact sign-flip p = 0.69 (n = 10 blocks), Holm-adjusted "
        "p = 0.69; TOST (SESOI 0.02) p = 0.004 -> equivalent.")


def test_sentence_of_an_inconclusive_monte_carlo_lower_is_better_comparison():
    comparison = {**EXAMPLE, "metric": "relearn_es", "higher_is_better": False,
                  "p_perm_exact": False, "n_resamples": 9999, "p_rand": 0.0476, "k_random": 20,
                  "adj_method": "fdr_bh", "verdict": "inconclusive", "blocks_needed": 34,
                  "p_adj": 0.0004}
    sentence = comparison_sentence(comparison, cell_text="tiny")
    assert sentence.startswith("tiny, oracle vs random: Delta relearning ES (lower is better)")
    assert "Monte Carlo sign-flip p = 0.69 (n = 10 blocks, 9,999 resamples)" in sentence
    assert "randomization p = 0.048 against K = 20 random masks per block" in sentence
    assert "BH-adjusted p < 0.001" in sentence
    assert sentence.endswith("-> inconclusive, about 34 blocks needed.")


@pytest.mark.parametrize(("value", "text"), [(0.0123456, "0.01235"), (12345.6, "1.235e+04"),
                                             (3, "3"), (None, "n/a"), (float("nan"), "n/a")])
def test_table_numbers_keep_four_significant_digits(value, text):
    assert fmt_sig(value) == text


def test_prose_p_values_and_decimals_follow_the_interval():
    assert [fmt_p(p) for p in (0.69, 0.0312, 0.0004, None)] == \
        ["p = 0.69", "p = 0.031", "p < 0.001", "p = n/a"]
    assert estimate_decimals(0.006, -0.010, 0.022) == 3
    assert estimate_decimals(12.3, 10.1, 14.5) == 1
    assert estimate_decimals(5.0, 5.0) == 1


def test_mean_ci_is_the_t_interval():
    values = np.array([[0.1, 1.0], [0.4, 2.0], [0.2, np.nan], [0.5, 4.0]])
    mean, lo, hi = mean_ci(values)
    expected = stats.t.interval(0.95, 3, loc=values[:, 0].mean(), scale=stats.sem(values[:, 0]))
    assert (lo[0], hi[0]) == pytest.approx(expected)
    assert mean[1] == pytest.approx(7 / 3)  # NaN ignored, n = 3
    assert mean_ci(np.array([[1.0, 2.0]]))[1].tolist() == [1.0, 2.0]  # n = 1: no interval


def test_labels_and_styles_are_consistent():
    cells = [{"model": "tiny", "algorithm": "npo", "budget": 0.1},
             {"model": "tiny", "algorithm": "ga", "budget": 0.1}]
    assert varying_cell_labels(cells) == ["npo", "ga"]
    assert varying_cell_labels(cells[:1]) == ["tiny, npo, budget 0.1"]
    styles = condition_styles(["random", "attributed:a", "oracle", "layer_matched:x"])
    assert styles["oracle"]["color"] == "#000000"
    assert styles["random"]["color"] == styles["layer_matched:x"]["color"] == "#949494"
    assert styles == condition_styles(["oracle", "layer_matched:x", "attributed:a", "random"])


def test_forest_plot_rows_sesoi_band_and_pooled_diamond():
    other = {**EXAMPLE, "cell": {"algorithm": "GA"}, "mean_diff": 0.05, "ci95": [0.03, 0.07]}
    analysis = {"comparisons": [EXAMPLE, other],
                "mixed_models": [{"metric": "aues", "contrast": "oracle vs random",
                                  "estimate": 0.02, "ci95": [0.0, 0.04], "converged": False}]}
    ax = forest_plot(analysis).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["oracle vs random", "NPO (n=10)", "GA (n=10)",
                      "pooled: oracle vs random (not converged)"]
    band = next(p for p in ax.patches if p.get_label().startswith("+-SESOI"))
    assert band.get_x() == pytest.approx(-0.02) and band.get_width() == pytest.approx(0.04)
    diamond = next(p for p in ax.patches if p.get_label() != band.get_label()).get_xy()
    assert (diamond[:, 0].min(), diamond[:, 0].max()) == pytest.approx((0.0, 0.04))
    with pytest.raises(DataError, match="no comparison on metric 'fs'"):
        forest_plot(analysis, metric="fs")


def test_forest_plot_draws_no_diamond_over_cells_of_opposite_sign():
    """The pooled estimate of a contrast whose cells differ in sign is withheld and the
    split is said (issue 24: +0.046 pooled over +0.26 and -0.10)."""
    cells = [{**EXAMPLE, "cell": {"algorithm": name}, "mean_diff": diff, "ci95": [diff - 0.01, diff + 0.01]}
             for name, diff in (("rmu", 0.26), ("ga", -0.10), ("dpo", 0.13))]
    model = {"metric": "aues", "contrast": "oracle - random", "estimate": 0.046,
             "ci95": [0.01, 0.08], "converged": True}
    ax = forest_plot({"comparisons": cells, "mixed_models": [model]}).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-2:] == ["pooled: oracle - random", "none: signs differ (2 of 3 cells > 0)"]
    assert [p for p in ax.patches if isinstance(p, Polygon)] == []
    assert sign_statement(cell_signs(cells, model)) == "differ (2 of 3 positive)"
    # the reversed contrast counts the signs flipped; cells that agree keep the diamond
    assert cell_signs(cells, {**model, "contrast": "random - oracle"}) == (1, 3)
    agree = [{**c, "mean_diff": abs(c["mean_diff"]), "ci95": [0.0, 0.3]} for c in cells]
    ax = forest_plot({"comparisons": agree, "mixed_models": [model]}).axes[0]
    assert len([p for p in ax.patches if isinstance(p, Polygon)]) == 1
    assert mixed_model_row(model, agree)[6] == "agree (all 3 positive)"


def test_mask_anatomy_counts_and_jaccard():
    def mask(name, units):
        return {"name": name, "signature": {"n_layers": 2, "n_units": 4}, "units": units}

    masks = [mask("oracle", [[0, 1], [2]]), mask("attributed:x", [[1], [2, 3]]),
             mask("random_0", [[3], [0]]), mask("random_1", [[3], [1]])]
    fig = mask_anatomy(masks)
    counts_ax, heat_ax = fig.axes[:2]
    rows = [t.get_text() for t in counts_ax.get_yticklabels()]
    assert rows == ["1  oracle", "2  attributed:x", "3  random masks (n=2)"]
    counts = counts_ax.collections[0].get_array().reshape(3, 2)
    assert counts.tolist() == [[2, 1], [1, 2], [1, 1]]
    # the overlap panel's rows and columns are numbered like the rows of the counts panel
    assert [t.get_text() for t in heat_ax.get_xticklabels()] == ["1", "2", "3"]
    jaccard = heat_ax.collections[0].get_array().reshape(3, 3)
    # oracle & attributed share 2 of 4 distinct units; the random pair shares 1 of 3
    assert jaccard[0, 1] == pytest.approx(0.5) and jaccard[2, 2] == pytest.approx(1 / 3)
    with pytest.raises(DataError, match="masks/"):
        mask_anatomy([])


def test_nulls_and_nans_in_analysis_json_do_not_crash(tmp_path):
    """analysis.json may hold null / NaN where a statistic was undefined (n = 1, zero sd)."""
    from causalloc.report import write_report

    degenerate = {**EXAMPLE, "ci95": [None, None], "d_z": float("nan"), "tost_p": None,
                  "p_adj": float("nan"), "n_blocks": 1, "verdict": "inconclusive",
                  "blocks_needed": None}
    (tmp_path / "analysis.json").write_text(json.dumps({
        "comparisons": [degenerate],
        "mixed_models": [{"metric": "aues", "estimate": None, "ci95": None, "converged": False,
                          "warnings": ["singular"], "formula": "aues ~ C(condition)"}],
        "dose_response": [{"metric": "aues", "predictor": "budget", "cell": {}, "slope": None,
                           "ci95": None, "p": None, "n": 2,
                           "points": [{"x": 0.1, "mean": 0.2, "lo": 0.1, "hi": 0.3, "n": 1}]}]}))
    written = write_report(tmp_path)
    markdown = written["report_md"].read_text()
    assert ("|  | 1 | 0.006 | [n/a, n/a] | n/a | sign_flip | 0.69 | n/a | n/a | inconclusive "
            "| n/a |") in markdown
    assert "95% CI [n/a, n/a]" in markdown and "blocks needed not computed" in markdown
    assert {"forest_aues", "dose_response_budget"} <= {p.stem for p in written["figures"]}


def test_report_names_each_verdicts_family_and_the_error_rate_it_controls(tmp_path):
    from causalloc.report import write_report

    primary = {**EXAMPLE, "family": "primary", "verdict_test": "randomization", "p_rand": 0.0123,
               "p_rand_mc_se": 0.0004, "k_random": 2, "p_adj": 0.0246, "tost_p_adj": 0.008,
               "verdict": "a_better"}
    control = {**EXAMPLE, "a": "disjoint:oracle", "family": "controls | aues",
               "verdict_test": "sign_flip", "tost_p_adj": 0.008}
    families = [{"name": "primary", "role": "primary", "n_comparisons": 1, "adjust": "holm",
                 "controls": "family-wise error rate (Holm) <= 0.05 within the family"},
                {"name": "controls | aues", "role": "secondary", "n_comparisons": 1,
                 "adjust": "holm",
                 "controls": "family-wise error rate (Holm) <= 0.05 within the family"}]
    (tmp_path / "analysis.json").write_text(json.dumps(
        {"comparisons": [primary, control], "families": families}))
    markdown = write_report(tmp_path)["report_md"].read_text()
    assert "## Families of hypotheses" in markdown
    assert ("- primary (the primary hypotheses; 1 comparison): controls the family-wise error "
            "rate (Holm) <= 0.05 within the family") in markdown
    assert "- controls | aues (secondary: not adjusted against the primary family" in markdown
    assert ("randomization p = 0.012 against K = 2 random masks per block, Monte Carlo se "
            "0.0004, Holm-adjusted randomization p = 0.025 in family primary") in markdown
    assert "| primary | 10 | 0.006 | [-0.01, 0.022] | 0.21 | randomization | 0.0123 | 0.0246 |" \
        in markdown


def test_testbed_line_prints_the_norm_diagnostics_when_recorded():
    testbed = {"kind": "tiny", "injection": "norm_matched", "es_forget_theta_r": 0.121,
               "es_forget_theta_o": 0.934, "es_retain_theta_r": 0.971, "es_retain_theta_o": 0.968,
               "norm_ratio_vtgt": 1.004, "weight_norm_precision": 0.093, "budget": 0.1}
    assert describe_testbed(testbed) == (
        "tiny, norm_matched injection; ES forget theta_r 0.12 -> theta_o 0.93; ES retain theta_r "
        "0.97 -> theta_o 0.97; norm ratio V_tgt / rest 1.00; weight-norm precision 0.09 "
        "(chance 0.10)")
    older = {k: v for k, v in testbed.items() if k not in ("norm_ratio_vtgt", "weight_norm_precision")}
    assert "norm ratio" not in describe_testbed(older) and "weight-norm" not in describe_testbed(older)


def _tradeoff_runs() -> tuple[pd.DataFrame, dict]:
    """Two blocks of npo runs: oracle once per block, random twice in block 0 and once in
    block 1, so that averaging within blocks first differs from averaging the runs."""
    def run(seed, condition, draw, rs, fs):
        points = [{"step": s, "rs": r, "fs": f} for s, r, f in zip((0, 10, 20), rs, fs)]
        return {"status": "done", "algorithm": "npo", "seed": seed, "condition": condition,
                "mask_draw": draw, "trajectory": json.dumps(points)}

    runs = pd.DataFrame([
        run(0, "oracle", 0, (0.98, 0.90, 0.50), (0.0, 0.60, 0.90)),
        run(1, "oracle", 0, (0.96, 0.80, 0.70), (0.0, 0.70, 0.80)),
        run(0, "random", 0, (0.98, 0.94, 0.60), (0.0, 0.30, 0.50)),
        run(0, "random", 1, (0.98, 0.90, 0.40), (0.0, 0.50, 0.70)),
        run(1, "random", 0, (0.96, 0.70, 0.92), (0.0, 0.20, 0.40))])
    analysis = {"comparisons": [{**EXAMPLE, "cell": {"algorithm": "npo"}}],
                "input": {"replicate": "seed", "condition_column": "condition"}}
    return runs, analysis


def test_tradeoff_draws_each_mean_trajectory_and_its_frontier():
    from causalloc.frontier import aues

    runs, analysis = _tradeoff_runs()
    ax = tradeoff_curves(runs, analysis).axes[0]
    lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
    block_means = {"oracle": [[(0.98, 0.90, 0.50), (0.0, 0.60, 0.90)],
                              [(0.96, 0.80, 0.70), (0.0, 0.70, 0.80)]],
                   "random": [[(0.98, 0.92, 0.50), (0.0, 0.40, 0.60)],  # the two draws of block 0
                              [(0.96, 0.70, 0.92), (0.0, 0.20, 0.40)]]}
    for condition, blocks in block_means.items():
        rs, fs = np.mean(np.array(blocks), axis=0)
        trajectory = lines[f"trajectory:{condition}"]
        assert trajectory.get_xdata() == pytest.approx(rs)
        assert trajectory.get_ydata() == pytest.approx(fs)
        step = lines[f"frontier:{condition}"]
        assert step.get_drawstyle() == "steps-pre" and step.get_linewidth() > 1
        edges = np.array(step.get_xdata())
        values = np.array(step.get_ydata())[1:]  # value on (edges[i-1], edges[i]]
        assert edges.tolist() == pytest.approx([0.0, *sorted(rs)])
        # F(r) = max FS_t over checkpoints with RS_t >= r, checked point by point
        assert values.tolist() == pytest.approx([fs[rs >= r].max() for r in edges[1:]])
        assert np.sum(np.diff(edges) * values) == pytest.approx(aues(rs, fs))
    assert ax.get_ylim() == pytest.approx((-0.03, 1.03))
    assert ax.get_xticks().tolist() == pytest.approx([0.4, 0.6, 0.8, 1.0])
    assert ax.get_xlabel() == "retain score RS (ES on retain)"
    assert ax.get_ylabel() == "forget score FS (1 - ES on forget)"
    legend = ax.figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:2] == ["oracle", "random"]


def test_tradeoff_panels_wrap_at_four_per_row():
    runs, analysis = _tradeoff_runs()
    cells = [f"alg{i}" for i in range(5)]
    runs = pd.concat([runs.assign(algorithm=cell) for cell in cells], ignore_index=True)
    analysis["comparisons"] = [{**EXAMPLE, "cell": {"algorithm": cell}} for cell in cells]
    axes = [ax for ax in tradeoff_curves(runs, analysis).axes if ax.get_visible()]
    assert len(axes) == 5
    assert len({round(ax.get_position().y0, 3) for ax in axes}) == 2  # rows of 4 and 1
    assert len({round(ax.get_position().x0, 3) for ax in axes}) == 4


def test_localization_accuracy_equals_the_attribution_helper():
    """The report's torch-free copy agrees with causalloc.attribution.accuracy."""
    from causalloc.attribution.accuracy import mask_accuracy
    from causalloc.masks import Mask
    from causalloc.models.units import ModelSignature

    def plain(name, units):
        return {"name": name, "signature": {"n_layers": 3, "n_units": 5}, "units": units}

    target = plain("oracle", [[0, 1], [2], []])
    masks = [plain("attributed:x", [[1], [2, 3], [4]]), plain("random", [[], [], [0, 1, 2]]),
             plain("empty", [[], [], []])]
    signature = ModelSignature("tiny", 3, 5, 8)
    expected = mask_accuracy({m["name"]: Mask(tuple(m["units"]), signature) for m in masks},
                             Mask(tuple(target["units"]), signature))
    got = localization_accuracy(masks + [{**masks[0], "signature": {"n_layers": 2,
                                                                    "n_units": 5}}], target)
    pd.testing.assert_frame_equal(got, expected[got.columns.tolist()], check_dtype=False)


def test_answer_cell_rounds_to_the_interval_and_says_the_verdict():
    assert answer_cell(EXAMPLE) == "equivalent: +0.006 [-0.010, 0.022], n=10"
    assert answer_cell({**EXAMPLE, "verdict": "b_better", "mean_diff": -12.34,
                        "ci95": [-14.5, -10.1]}) == "random better: -12.3 [-14.5, -10.1], n=10"
    assert answer_cell({**EXAMPLE, "ci95": None, "mean_diff": None}) == \
        "equivalent: n/a [n/a, n/a], n=10"
    assert answer_cell(None) == "not compared"
