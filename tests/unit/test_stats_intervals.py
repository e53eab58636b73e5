"""Intervals that belong to the verdict, equivalence under skew and the small fixes of
issue 21: inverted permutation tests, exact ties, mixed-model blocks, families' floors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from causalloc.cli import main
from causalloc.errors import TableError
from causalloc.stats import RunTable, analyze, compare_paired, load_runs, parse_spec
from causalloc.stats.families import min_p_adjusted
from causalloc.stats.permutation import randomization_test, sign_flip_test
from tests.unit.test_stats_analyze import _write_output_folder

FAST = {"n_boot": 200, "n_permutations": 999}


def test_an_exactly_balanced_sample_has_exact_p_one():
    # this order sums to -6.9e-18, not 0: ties must be judged on the data's scale
    diffs = np.array([[-0.7, 0.1, 0.2, 0.3, -0.1, -0.2, -0.3, 0.7]])
    assert sign_flip_test(diffs, rng=np.random.default_rng(0))["p_perm"].iloc[0] == 1.0
    draws = np.stack([diffs[0], -diffs[0]], axis=-1)[None]  # tested 0, draws symmetric
    assert randomization_test(np.zeros((1, 8)), draws,
                              rng=np.random.default_rng(0))["p_rand"].iloc[0] == 1.0


def _p_sign_flip(d, shift, **kw):
    return sign_flip_test(d[None] - shift, rng=np.random.default_rng(0), **kw)["p_perm"].iloc[0]


def _p_rand(a, draws, shift, **kw):
    return randomization_test(a[None] - shift, draws[None], rng=np.random.default_rng(0),
                              **kw)["p_rand"].iloc[0]


@pytest.mark.parametrize("exact", [True, False])
def test_the_interval_is_the_set_of_shifts_the_test_does_not_reject(exact):
    """At each end the shifted test's p is >= 1 - level, just outside it is below: the
    interval is the inverted test, for sign flips and for the randomization test."""
    rng = np.random.default_rng(4)
    kw = {} if exact else {"max_exact_patterns": 10, "n_resamples": 1999}
    d = rng.lognormal(size=(30, 9)) - 1.5
    result = sign_flip_test(d, rng=np.random.default_rng(0), **kw)
    for i in range(3):
        lo, hi = result["inv_ci_lo"][i], result["inv_ci_hi"][i]
        step = 1e-9 * (1 + abs(lo) + abs(hi))
        assert _p_sign_flip(d[i], lo, **kw) >= 0.05 > _p_sign_flip(d[i], lo - step, **kw)
        assert _p_sign_flip(d[i], hi, **kw) >= 0.05 > _p_sign_flip(d[i], hi + step, **kw)
    excludes_zero = (result["inv_ci_lo"] > 0) | (result["inv_ci_hi"] < 0)
    np.testing.assert_array_equal(excludes_zero, result["p_perm"] < 0.05)
    a, draws = rng.lognormal(size=(30, 8)), rng.lognormal(size=(30, 8, 2))
    result = randomization_test(a, draws, rng=np.random.default_rng(0), **kw)
    for i in range(3):
        lo, hi = result["inv_ci_lo"][i], result["inv_ci_hi"][i]
        step = 1e-9 * (1 + abs(lo) + abs(hi))
        assert _p_rand(a[i], draws[i], lo, **kw) >= 0.05 > _p_rand(a[i], draws[i], lo - step, **kw)
        assert _p_rand(a[i], draws[i], hi, **kw) >= 0.05 > _p_rand(a[i], draws[i], hi + step, **kw)
    excludes_zero = (result["inv_ci_lo"] > 0) | (result["inv_ci_hi"] < 0)
    np.testing.assert_array_equal(excludes_zero, result["p_rand"] < 0.05)


def test_tost_is_two_shifted_one_sided_tests_and_its_interval_has_level_one_minus_2_alpha():
    rng = np.random.default_rng(5)
    a, draws = rng.lognormal(size=(40, 8)), rng.lognormal(size=(40, 8, 2))
    for alpha in (0.05, 0.1):
        out = compare_paired(a, draws.mean(axis=2), draws=draws, sesoi=1.0, alpha=alpha,
                             n_boot=100)
        inside = (out["tost_ci90_lo"] > -1.0) & (out["tost_ci90_hi"] < 1.0)
        np.testing.assert_array_equal(out["tost_p"] < alpha, inside)
        np.testing.assert_allclose(out["tost_ci_level"], 1 - 2 * alpha)
        assert (out["ci95_method"] == "inverted randomization").all()
        # the (1 - 2 alpha) interval is the two-sided test inverted at level 2 alpha
        wider = randomization_test(a, draws, rng=np.random.default_rng(0), ci_level=1 - 2 * alpha)
        np.testing.assert_allclose(out["tost_ci90_lo"], wider["inv_ci_lo"])
    # one-sided p of H02 (Delta >= SESOI): the test of a shifted by +SESOI, one tail
    lower_tail = randomization_test(a - 1.0, draws, rng=np.random.default_rng(0))
    assert (out["tost_p"] >= lower_tail["p_rand"] / 2 - 1e-12).all()
    # the bootstrap is kept as the secondary interval
    assert out["ci95_bca_lo"].notna().all()


def test_ci95_agrees_with_the_verdict_in_analyze(tmp_path):
    _write_output_folder(tmp_path / "runs")
    result = analyze(load_runs(tmp_path / "runs"), parse_spec(FAST))
    frame = result.comparisons
    p = np.where(frame["verdict_test"] == "randomization", frame["p_rand"], frame["p_perm"])
    excludes_zero = (frame["ci95_lo"] > 0) | (frame["ci95_hi"] < 0)
    np.testing.assert_array_equal(excludes_zero, p < 0.05)
    doc = result.to_dict()
    entry = doc["comparisons"][0]
    assert entry["ci95_method"].startswith("inverted") and len(entry["ci95_bca"]) == 2
    for family in doc["families"]:
        assert {"name", "n_comparisons", "min_p_adj", "can_reject"} <= set(family)
        assert family["can_reject"] == (family["min_p_adj"] < 0.05)


def test_min_p_adjusted():
    assert min_p_adjusted([2 / 1024] * 40, "holm") == pytest.approx(0.078125)
    assert min_p_adjusted([2 / 1024] * 40, "fdr_bh") == pytest.approx(2 / 1024)
    assert min_p_adjusted([0.25, 0.01], "fdr_bh") == pytest.approx(0.02)


def test_the_mixed_model_drops_the_blocks_the_comparisons_drop(tmp_path):
    frame = _write_output_folder(tmp_path / "runs", k=3)
    row = frame.index[(frame["condition"] == "random") & (frame["seed"] == 2)
                      & (frame["algorithm"] == "ga") & (frame["mask_draw"] == 1)][0]
    frame.loc[row, "aues"] = np.inf
    frame.to_csv(tmp_path / "runs" / "runs.csv", index=False)
    result = analyze(load_runs(tmp_path / "runs"), parse_spec({**FAST, "nonfinite": "drop"}))
    comparisons = result.comparisons
    oracle = comparisons[(comparisons["a"] == "oracle") & (comparisons["metric"] == "aues")]
    assert oracle["n_blocks"].sum() == 15
    mixed = result.mixed_models
    pooled = mixed[(mixed["metric"] == "aues") & mixed["contrast"].str.contains("oracle")]
    assert pooled["n_blocks"].iloc[0] == 15
    assert any("mixed model for aues: random in block" in w for w in result.meta["warnings"])


def test_blocks_needed_answers_the_open_question(tmp_path):
    rng = np.random.default_rng(6)
    b = rng.normal(0, 1, size=(2, 6))
    a = b + np.array([[0.9], [0.05]]) + rng.normal(0, 1.0, size=(2, 6))
    rows = [{"algorithm": f"x{i}", "seed": s, "condition": c, "aues": v[i, s]}
            for i in range(2) for s in range(6) for c, v in (("attributed", a), ("random", b))]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    frame = analyze(load_runs(tmp_path / "t.csv", block="algorithm,seed", metric="aues"),
                    parse_spec({**FAST, "sesoi": {"aues": 0.5}})).comparisons
    for _, row in frame[frame["verdict"] == "inconclusive"].iterrows():
        expected = ("blocks_needed_equivalence" if abs(row["mean_diff"]) < 0.5
                    else "blocks_needed_detect")
        assert row["blocks_needed"] == row[expected]
        assert row["blocks_needed_detect_lo"] <= row["blocks_needed_detect"] \
            <= row["blocks_needed_detect_hi"]


def test_run_table_without_failed_and_cli_dash_for_null_p(tmp_path, capsys):
    runs = pd.DataFrame([{"seed": s, "condition": c, "aues": s * 0.1 + (c == "a") * 0.5,
                          "_row": 2 * s + (c == "a")}
                         for s in range(6) for c in ("a", "random")])
    table = RunTable(runs=runs, blocks=runs[["seed"]].drop_duplicates(), block_columns=["seed"],
                     condition_column="condition", replicate="seed", metrics=["aues"])
    assert analyze(table, parse_spec(FAST)).comparisons["verdict"].iloc[0] == "a_better"
    broken = RunTable(runs=runs, blocks=runs[["seed"]], block_columns=["seed"],
                      condition_column="condition", replicate="seed", metrics=["aues"],
                      failed=pd.DataFrame({"x": [1]}))
    with pytest.raises(TableError, match=r"RunTable.failed lacks column\(s\) \['seed', 'condition'\]"):
        analyze(broken, parse_spec(FAST))
    pd.DataFrame(runs).drop(columns="_row").to_csv(tmp_path / "r.csv", index=False)
    assert main(["analyze", str(tmp_path / "r.csv"), "--block", "seed", "--metric", "aues",
                 "--out", str(tmp_path / "o"), "--sesoi", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert " nan " not in printed
    doc = json.loads((tmp_path / "o" / "analysis.json").read_text())
    assert doc["comparisons"][0]["tost_ci_level"] == pytest.approx(0.9)


def test_row_numbers_in_messages_say_they_are_0_based(tmp_path):
    pd.DataFrame({"seed": [0, 1], "condition": ["a", "b"], "aues": ["x", 0.1]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(TableError, match=r"row 0 \(0-based\)"):
        load_runs(tmp_path / "bad.csv", block="seed", metric="aues")
