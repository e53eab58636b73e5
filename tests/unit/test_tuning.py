"""Tuned and replicated designs: spec keys, design expansion, selection on held-out items,
steps_to_target, outcome flags and the per-testbed (cluster) effects."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from causalloc.errors import SpecError, TableError
from causalloc.flags import outcome_flags
from causalloc.frontier import steps_to_target
from causalloc.runs.design import block_columns, expand, manifest, train_settings
from causalloc.stats.mixed import cluster_effects, mixed_model, random_intercept_mean
from causalloc.stats.tuning import select_runs, selected_table, tuning_summary
from tests.runs_helpers import BASE, parse

TUNED = {**copy.deepcopy(BASE),
         "testbed": {"kind": "tiny", "seeds": [0, 1, 2]},
         "conditions": [{"strategy": "oracle"}, {"strategy": "random"},
                        {"strategy": "disjoint:oracle", "k": 1}],
         "algorithms": [{"name": "npo", "lr": [1e-3, 1e-2, 1e-1], "steps": 10}],
         "tuning": {"criterion": "aues", "selection_fraction": 0.5},
         "eval": {"every": 1, "retain_items": 50, "metrics": ["aues", "steps_to_target"]}}


def test_a_tuned_replicated_design_runs_every_grid_point_of_every_condition_and_draw():
    spec = parse(TUNED)
    runs = expand(spec)
    # 2 seeds x 3 testbeds x (oracle + 2 random + 1 disjoint) x 3 lr
    assert len(runs) == 2 * 3 * 4 * 3
    blocks = {r["block_id"] for r in runs}
    assert len(blocks) == 6
    for block in blocks:  # the grid points of a block share everything but lr
        members = [r for r in runs if r["block_id"] == block]
        assert sorted({train_settings(r)["lr"] for r in members}) == [1e-3, 1e-2, 1e-1]
        assert len({r["train"]["seed"] for r in members}) == 1
        assert len({repr(r["eval"]) for r in members}) == 1
    assert {r["testbed"]["seed"] for r in runs} == {0, 1, 2}
    assert all("seeds" not in r["testbed"] for r in runs)
    # the item split and the retain subset are drawn per testbed, the same for every seed
    by_testbed = {}
    for run in runs:
        by_testbed.setdefault(run["testbed"]["seed"], set()).add(repr(run["eval"]))
    assert all(len(v) == 1 for v in by_testbed.values()) and len(
        {next(iter(v)) for v in by_testbed.values()}) == 3
    assert block_columns(spec) == ("model", "data", "testbed", "algorithm", "budget", "seed")
    design = manifest(spec, "cmd", {})
    assert design["cluster"] == "testbed" and design["tuning"]["selection_column"] == "select_aues"
    assert design["tuning"]["grid"] == {"npo": {"lr": [1e-3, 1e-2, 1e-1]}}


def test_specs_without_the_new_keys_keep_their_run_ids():
    plain = expand(parse(BASE))
    explicit = copy.deepcopy(BASE)
    explicit["testbed"]["seed"] = 0
    assert [r["run_id"] for r in expand(parse(explicit))] == [r["run_id"] for r in plain]
    assert all("grid_point" not in r and "tuning" not in r for r in plain)
    assert all(set(r["eval"]) == {"every", "metrics"} for r in plain)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["testbed"].update(seed=0), "testbed.seeds: give either seed"),
    (lambda d: d["testbed"].update(seeds=[3]), "testbed.seeds: replicated testbeds need at least 2"),
    (lambda d: d["testbed"].update(seeds=[1, 1]), "testbed.seeds[1]: duplicate"),
    (lambda d: d["algorithms"][0].update(lr=[1e-3]), "algorithms[0].lr: a tuning grid needs at least 2"),
    (lambda d: d["algorithms"][0].update(lr=[1e-3, 1e-3]), "algorithms[0].lr: duplicate values"),
    (lambda d: d["algorithms"][0].update(lr=[1e-3, -1.0]), "algorithms[0].lr[1]"),
    (lambda d: d.pop("tuning"), "tuning: algorithms npo give a grid"),
    (lambda d: d["tuning"].update(criterion="mu95"), "tuning.criterion"),
    (lambda d: d["tuning"].update(selection_fraction=1.0), "tuning.selection_fraction"),
    (lambda d: d["eval"].update(metrics=["fs_final"]), "tuning.criterion: 'aues' must be one of eval.metrics"),
    (lambda d: d["eval"].update(retain_items=1), "eval.retain_items"),
    (lambda d: d["conditions"][0].update(k=2), "conditions[0].k: only random-type conditions"),
])
def test_bad_tuning_keys_name_the_key(change, message):
    data = copy.deepcopy(TUNED)
    change(data)
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(data)


def _grid_table(scores: dict) -> pd.DataFrame:
    """Runs of one block x condition x draw at three learning rates with given selection scores."""
    rows = []
    for (condition, draw), values in scores.items():
        for lr, (select, evaluated) in zip((1e-3, 1e-2, 1e-1), values):
            rows.append({"model": "tiny", "seed": 0, "condition": condition, "mask_draw": draw,
                         "algorithm": "npo", "lr": lr, "select_aues": select, "aues": evaluated,
                         "run_id": f"{condition}-{draw}-{lr}"})
    return pd.DataFrame(rows)


TUNING = {"criterion": "aues", "selection_column": "select_aues", "selection_fraction": 0.5,
          "grid": {"npo": {"lr": [1e-3, 1e-2, 1e-1]}}}


def test_selection_keeps_each_arms_best_setting_on_the_selection_items_and_reports_its_evaluation_score():
    runs = _grid_table({("oracle", 0): [(0.5, 0.9), (0.7, 0.6), (0.6, 0.99)],
                        ("random", 0): [(0.2, 0.1), (0.3, 0.2), (0.9, 0.3)],
                        ("random", 1): [(0.4, 0.4), (0.4, 0.5), (np.nan, 0.9)]})
    chosen = select_runs(runs, TUNING, block_columns=["model", "seed"], condition="condition",
                         draw="mask_draw")
    picked = dict(zip(zip(chosen["condition"], chosen["mask_draw"]), zip(chosen["lr"], chosen["aues"])))
    # the best select_aues, not the best aues (which would choose on the scored items);
    # a tie goes to the first grid point; a NaN criterion never wins
    assert picked == {("oracle", 0): (1e-2, 0.6), ("random", 0): (1e-1, 0.3), ("random", 1): (1e-3, 0.4)}
    summary = tuning_summary(runs, chosen, TUNING, condition="condition")
    random_row = next(r for r in summary["choices"] if r["condition"] == "random")
    assert (random_row["at_low_edge"], random_row["at_high_edge"], random_row["n"]) == (1, 1, 2)
    table = selected_table(chosen, ["aues"], TUNING)
    assert list(table.columns) == ["seed", "algorithm", "condition", "mask_draw", "lr", "select_aues",
                                   "aues", "run_id"]
    with pytest.raises(TableError, match="select_aues"):
        select_runs(runs.drop(columns="select_aues"), TUNING, block_columns=["model", "seed"],
                    condition="condition", draw="mask_draw")


def test_steps_to_target_interpolates_and_censors():
    steps, rs = [0, 2, 4, 6], [1.0, 0.99, 0.97, 0.9]
    # FS* = 0 + 0.5 * (0.8 - 0) = 0.4, crossed between step 2 (0.2) and step 4 (0.6)
    assert steps_to_target(steps, rs, [0.0, 0.2, 0.6, 0.9], 0.8, horizon=6) == pytest.approx(3.0)
    # reached only where RS < 0.95 RS_0: censored at twice the horizon
    assert steps_to_target(steps, rs, [0.0, 0.1, 0.2, 0.9], 0.8, horizon=6) == 12.0
    # the first checkpoint after an eligible one above the target is not interpolated
    assert steps_to_target(steps, [1.0, 0.9, 0.99, 0.99], [0.0, 0.5, 0.6, 0.6], 0.8, horizon=6) == 4.0


def test_outcome_flags_follow_their_thresholds():
    assert outcome_flags([1.0, 0.4], [0.0, 0.95], 0.85) == ["collapse", "over_forgetting"]
    assert outcome_flags([1.0, 0.6], [0.0, 0.5], 0.85) == ["no_forgetting"]
    assert outcome_flags([1.0, 0.9], [0.0, 0.84], 0.85) == []  # within the tolerance of FS_r
    assert outcome_flags([1.0, 0.9], [0.0, 0.84], 0.85, mu95=-3.0, lfq0=-3.0) == ["mu95_floor"]
    assert outcome_flags([1.0, 0.9], [0.0, 0.84], 0.85, mu95=-2.0, lfq0=-3.0) == []
    assert outcome_flags([1.0, 0.99], [0.0, 0.9], 0.85, diverged=True) == ["collapse"]


def test_cluster_effects_give_per_testbed_means_and_the_population_model():
    rng = np.random.default_rng(3)
    clusters = np.repeat([0, 1, 2, 3, 4], 6)
    diffs = 0.05 + np.repeat(rng.normal(0, 0.04, 5), 6) + rng.normal(0, 0.01, 30)
    by_cluster, model = cluster_effects(diffs, clusters.tolist())
    assert [c["n_blocks"] for c in by_cluster] == [6] * 5
    assert by_cluster[2]["mean_diff"] == pytest.approx(diffs[12:18].mean())
    fit = random_intercept_mean(diffs, clusters)
    assert model["estimate"] == pytest.approx(fit["estimate"]) and model["n_clusters"] == 5
    # between-testbed spread: far fewer df than blocks, a wider interval than the paired t
    assert model["df"] < 6
    assert model["ci95"][1] - model["ci95"][0] > 2 * 2.05 * diffs.std(ddof=1) / np.sqrt(30)
    assert cluster_effects(diffs, None) == (None, None)


def test_the_pooled_mixed_model_groups_contrasts_by_testbed():
    rng = np.random.default_rng(0)
    rows = []
    for testbed in range(4):
        shift = rng.normal(0, 0.05)
        for seed in range(3):
            for algorithm in ("ga", "npo"):
                base = rng.normal(0.5, 0.1)
                rows.append({"testbed": testbed, "seed": seed, "algorithm": algorithm,
                             "condition": "random", "aues": base})
                rows.append({"testbed": testbed, "seed": seed, "algorithm": algorithm,
                             "condition": "oracle", "aues": base + 0.1 + shift + rng.normal(0, 0.01)})
    data = pd.DataFrame(rows)
    fit = mixed_model(data, metric="aues", condition="condition", reference="random", replicate="seed",
                      block_columns=["testbed", "algorithm", "seed"], cluster="testbed")
    row = fit.iloc[0]
    assert row["formula"] == ("aues ~ condition + algorithm + (1 | testbed) + (1 | testbed:condition)"
                              " + (1 | algorithm:testbed:seed)")
    wide = data.pivot_table(index=["testbed", "algorithm", "seed"], columns="condition", values="aues")
    contrast = (wide["oracle"] - wide["random"]).to_numpy()
    groups = wide.index.get_level_values("testbed").to_numpy()
    assert row["estimate"] == pytest.approx(random_intercept_mean(contrast, groups)["estimate"])
    assert row["n_replicates"] == 4 and row["n_blocks"] == 24


def test_the_report_marks_flagged_verdicts_and_shows_every_testbed_and_the_tuning():
    from pathlib import Path

    from causalloc.report.inputs import ReportInputs
    from causalloc.report.render import robust_blocks
    from causalloc.report.robust import flag_mark, flag_note, testbed_rows

    comparison = {"a": "oracle", "b": "random", "metric": "aues", "cell": {"algorithm": "ga"},
                  "mean_diff": 0.05, "ci95": [0.01, 0.09], "verdict": "oracle better", "n_blocks": 6,
                  "flagged_runs": {"oracle": 2, "random": 1},
                  "by_cluster": [{"cluster": 0, "n_blocks": 3, "mean_diff": 0.08},
                                 {"cluster": 1, "n_blocks": 3, "mean_diff": -0.01}],
                  "cluster_model": {"estimate": 0.035, "ci95": [-0.3, 0.4], "df": 1.0, "p": 0.4,
                                    "n_clusters": 2}}
    analysis = {"comparisons": [comparison], "input": {"cluster": "testbed", "metrics": ["aues"]},
                "flags": [{"cell": {"algorithm": "ga"}, "condition": "oracle", "n_runs": 6,
                           "n_flagged": 2, "counts": {"collapse": 2}}],
                "tuning": {"rule": "best select_aues", "n_selected": 18, "n_runs": 54,
                           "selection_fraction": 0.5,
                           "choices": [{"algorithm": "ga", "condition": "oracle", "grid": [0.01, 0.1],
                                        "counts": {"0.01": 4, "0.1": 2}, "n": 6, "at_low_edge": 4,
                                        "at_high_edge": 2}]}}
    inputs = ReportInputs(analysis=analysis, analysis_path=Path("analysis.json"))
    assert flag_mark(comparison) == " [3 flagged]" and flag_mark({**comparison, "flagged_runs": {}}) == ""
    assert "collapse 2" in flag_note(inputs)
    (row,) = testbed_rows(inputs)
    assert row[5] == "1 of 2" and row[6] == "0: +0.080, 1: -0.010"
    headings = [b.text for b in robust_blocks(inputs) if b.kind == "heading"]
    assert headings == ["Tuning: each arm at its own setting", "Testbeds: per-testbed and population estimates"]
    assert "6 of 6 selections" in next(b.text for b in robust_blocks(inputs) if b.kind == "paragraph")


def test_the_item_split_and_retain_subset_are_disjoint_and_seeded():
    from causalloc.runs.worker import item_split, retain_subset

    subset = retain_subset(360, {"n": 120, "seed": 5})
    assert len(subset) == 120 and len(set(subset)) == 120
    assert (subset == retain_subset(360, {"n": 120, "seed": 5})).all()
    assert not (subset == retain_subset(360, {"n": 120, "seed": 6})).all()
    parts = item_split(40, 120, {"selection_fraction": 0.5, "seed": 1})
    for name, n in (("forget", 40), ("retain", 120)):
        sel, ev = set(parts[f"{name}_sel"]), set(parts[f"{name}_eval"])
        assert not sel & ev and len(sel) + len(ev) == n and len(sel) == n // 2
    with pytest.raises(SpecError, match="selection_fraction"):
        item_split(1, 10, {"selection_fraction": 0.5, "seed": 1})
    assert item_split(40, 120, None) is None


def test_widening_a_grid_keeps_the_ids_of_the_runs_already_made():
    narrow = {r["run_id"] for r in expand(parse(TUNED))}
    wide = copy.deepcopy(TUNED)
    wide["algorithms"][0]["lr"] = [1e-4, 1e-3, 1e-2, 1e-1]
    widened = expand(parse(wide))
    kept = {r["run_id"] for r in widened if r["grid_point"]["lr"] != 1e-4}
    assert narrow == kept and len(widened) == len(narrow) // 3 * 4


def test_an_unmatched_block_is_dropped_in_its_own_testbed_only(tmp_path):
    import json

    from causalloc.stats import AnalysisSpec, load_runs
    from causalloc.stats.analyze import analyze

    rng = np.random.default_rng(1)
    rows = []
    for testbed in range(3):
        for seed in range(4):
            for condition in ("oracle", "random"):
                if (testbed, seed, condition) == (1, 2, "random"):
                    continue  # the unmatched block: testbed 1, seed 2
                rows.append({"status": "done", "model": "tiny", "testbed": testbed, "algorithm": "ga",
                             "seed": seed, "condition": condition, "mask_draw": 0,
                             "aues": rng.normal(0.6 if condition == "oracle" else 0.5, 0.02),
                             "flags": "collapse" if seed == 0 else None})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "design.json").write_text(json.dumps({
        "block_columns": ["model", "testbed", "algorithm", "seed"], "condition_column": "condition",
        "replicate": "seed", "cluster": "testbed", "draw_column": "mask_draw", "metrics": ["aues"],
        "conditions": {"oracle": {"kind": "oracle"}, "random": {"kind": "random"}}}))
    table = load_runs(tmp_path)
    assert table.cell_columns == ["model", "algorithm"]
    result = analyze(table, AnalysisSpec(drop_unmatched=True, n_boot=199))
    (comparison,) = result.to_dict()["comparisons"]
    assert comparison["n_blocks"] == 11  # 12 blocks, one dropped, seed 2 of the others kept
    assert result.meta["dropped_blocks"][0]["block"] == {"testbed": 1, "seed": 2}
    assert [c["n_blocks"] for c in comparison["by_cluster"]] == [4, 3, 4]
    assert comparison["flagged_runs"] == {"oracle": 3, "random": 3}


def test_the_robust_reports_testbed_models_match_lmertest():
    """The committed selected_runs.csv refitted by lmerTest (tests/reference/make_robust_reference.R).
    Estimates agree everywhere; SE, df and p where lme4's fit is interior (a singular lme4 fit
    with the block variance at 0 pools block levels into the error, which the contrast
    formulation does not: 3 steps_to_target rows, e.g. df 344 against 179)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    reference = pd.read_csv(root / "tests" / "reference" / "robust_lmertest.csv")
    selected = pd.read_csv(root / "reports" / "oracle_vs_random_robust" / "selected_runs.csv")
    for row in reference.itertuples():
        level, base = row.contrast.split(" - ")
        rows = selected[selected["condition"].isin([level, base])]
        if row.scope != "pooled":
            rows = rows[rows["algorithm"] == row.scope]
        fit = mixed_model(rows, metric=row.metric, condition="condition", reference=base,
                          replicate="seed", block_columns=["testbed", "algorithm", "seed"],
                          cluster="testbed").set_index("contrast").loc[row.contrast]
        assert fit["estimate"] == pytest.approx(row.estimate, rel=1e-6, abs=1e-9)
        if row.singular and not fit["df"] == pytest.approx(row.df, rel=1e-2):
            continue
        assert fit["se"] == pytest.approx(row.se, rel=1e-3)
        assert fit["p"] == pytest.approx(row.p, rel=2e-2, abs=1e-6)
