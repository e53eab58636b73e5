"""Reports open with the question and the answer (issue 24): line 1 is ``# <question>``
(the analysis spec's ``question``, recorded in analysis.json, else built from the
comparisons); the first paragraph is ``**Answer:**`` with the verdicts counted per pair; a
family that cannot reject at its size is said once at the top, its cells carry a mark
instead of "inconclusive"; seeds in numeric order; the dose slope table keeps the condition
column; report.md links only files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from causalloc.errors import SpecError
from causalloc.report import write_report
from causalloc.report.answer import (
    CANNOT_REJECT_MARK,
    answer_cell,
    answer_paragraph,
    family_limits,
    report_question,
)
from causalloc.report.inputs import ReportInputs
from causalloc.report.text import (
    DOSE_RESPONSE_COLUMNS,
    caveats,
    dose_response_row,
    numeric_order,
    setup_items,
)
from causalloc.stats import analyze, load_runs, parse_spec, write_analysis

ROOT = Path(__file__).resolve().parents[2]
#: oracle_vs_random's AUES verdicts (analysis.json of 2026-12-02): 4 oracle, 2 random
VERDICTS = {"dpo": "a_better", "ga": "b_better", "graddiff": "b_better", "npo": "a_better",
            "rmu": "a_better", "wga": "a_better"}


def comparison(algorithm: str, verdict: str, a: str = "oracle", b: str = "random",
               family: str = "primary", diff: float = 0.1, **extra) -> dict:
    diff = -abs(diff) if verdict == "b_better" else diff
    return {"id": f"{a}-{b}-{algorithm}", "a": a, "b": b, "metric": "aues", "family": family,
            "cell": {"model": "tiny", "data": "generated", "algorithm": algorithm, "budget": 0.1},
            "n_blocks": 8, "mean_diff": diff, "ci95": [diff - 0.05, diff + 0.05],
            "verdict": verdict, "sesoi": 0.02, "higher_is_better": True, **extra}


def inputs_of(comparisons: list[dict], families: list[dict] | None = None, **analysis) -> ReportInputs:
    body = {"comparisons": comparisons, "setup": {"model": "tiny", "data": "generated"},
            "policy": {"alpha": 0.05, "primary_metric": "aues"},
            "families": families if families is not None else
            [{"name": "primary", "role": "primary", "n_comparisons": len(comparisons)}],
            **analysis}
    return ReportInputs(analysis=body, analysis_path=Path("analysis.json"))


def test_the_answer_counts_the_verdicts_per_objective():
    inputs = inputs_of([comparison(alg, v) for alg, v in VERDICTS.items()])
    assert report_question(inputs) == ("Does oracle beat random on AUES? (dpo, ga, graddiff, "
                                       "npo, rmu, wga; tiny model, generated data)")
    assert answer_paragraph(inputs) == (
        "**Answer:** On AUES, oracle beats random for 4 of 6 objectives (dpo, npo, rmu, wga), "
        "random beats oracle for 2 (ga, graddiff). No equivalence at SESOI 0.02.")
    # a verdict that changes in analysis.json changes the count (nothing is written by hand)
    flipped = inputs_of([comparison(alg, "b_better" if alg == "dpo" else v)
                         for alg, v in VERDICTS.items()])
    assert "oracle beats random for 3 of 6 objectives (npo, rmu, wga)" in answer_paragraph(flipped)


def test_the_question_of_the_spec_is_the_title():
    inputs = inputs_of([comparison("ga", "a_better")], question="  Does V_tgt\n matter? ")
    assert report_question(inputs) == "Does V_tgt matter?"


def test_many_conditions_against_one_baseline_are_counted_per_objective():
    methods = ["activations", "memflex", "wagle", "grad_x_weight", "weight_norm"]
    rows = [comparison(alg, "b_better" if alg == "graddiff" and m != "weight_norm" else
                       "inconclusive" if alg == "graddiff" else "a_better", a=f"attributed:{m}")
            for m in methods for alg in ("graddiff", "rmu")]
    inputs = inputs_of(rows)
    assert report_question(inputs).startswith(
        "Do 5 attributed conditions (activations, memflex, wagle, grad_x_weight, weight_norm) "
        "beat random on AUES?")
    assert answer_paragraph(inputs) == (
        "**Answer:** On AUES against random: under graddiff, random beats 4 of 5 conditions "
        "(activations, memflex, wagle, grad_x_weight), 1 undecided (weight_norm); under rmu, "
        "all 5 conditions beat random (activations, memflex, wagle, grad_x_weight, "
        "weight_norm). No equivalence at SESOI 0.02.")


CONTROLS = "family-wise error rate (Holm) <= 0.05 within the family"
FAMILY = {"name": "primary", "role": "primary", "n_comparisons": 4, "can_reject": False,
          "min_p_adj": 0.0781, "adjust": "holm", "controls": CONTROLS}


def limited_inputs() -> ReportInputs:
    rows = [comparison(alg, "inconclusive", diff=-0.214, blocks_needed=needed)
            for alg, needed in (("ga", 12), ("graddiff", 30), ("npo", 18), ("rmu", 25))]
    rows += [comparison("ga", "a_better", family="controls", a="oracle", b="disjoint:oracle")]
    return inputs_of(rows, [FAMILY, {"name": "controls", "role": "secondary", "n_comparisons": 1,
                                     "can_reject": True, "min_p_adj": 0.004, "adjust": "holm",
                                     "controls": CONTROLS}])


def test_a_family_that_cannot_reject_is_said_once_and_its_cells_carry_the_mark():
    inputs = limited_inputs()
    limits = family_limits(inputs)
    assert limits == [(f"{CANNOT_REJECT_MARK} The family primary (4 hypotheses at 8 blocks) cannot "
                       "reject at its size: its smallest reachable adjusted p is 0.078 > alpha = "
                       "0.05; its cells show the estimate and 95% CI without a verdict. A verdict "
                       "would need about 12 to 30 blocks per comparison (blocks_needed).")]
    undecided = inputs.comparisons[0]
    assert answer_cell(undecided, True) == f"-0.21 [-0.26, -0.16], n=8 {CANNOT_REJECT_MARK}"
    assert answer_cell(undecided) == "inconclusive: -0.21 [-0.26, -0.16], n=8"
    assert "No verdict is possible at this size" in answer_paragraph(inputs)
    notes = caveats(inputs)
    assert not any(n.startswith("Inconclusive:") for n in notes)
    assert "4 inconclusive comparisons of families that cannot reject" in notes[0]


def test_the_rendered_report_opens_with_question_answer_and_the_family_note(tmp_path):
    inputs = limited_inputs()
    analysis = {**inputs.analysis, "schema_version": 1,
                "reproducibility": {"seeds": [0, 1, 10, 11, 2, 3]},
                "dose_response": [
                    {"metric": "aues", "predictor": "budget", "condition": condition,
                     "cell": {"algorithm": "ga"}, "slope": slope, "ci95": [0, 1], "p": 0.1,
                     "n": 40} for condition, slope in (("oracle", -0.16), ("random", 1.6))]}
    (tmp_path / "analysis.json").write_text(json.dumps(analysis))
    markdown = write_report(tmp_path)["report_md"].read_text()
    lines = markdown.splitlines()
    assert lines[0] == f"# {report_question(inputs)}" and not lines[0].startswith("# causalloc")
    assert lines[2].startswith("**Answer:** On AUES, oracle vs random: undecided for all 4 ")
    assert lines[4].startswith(f"{CANNOT_REJECT_MARK} The family primary")
    top = markdown.split("## Setup", 1)[0]
    assert top.count("cannot reject at its size") == 1
    assert top.count(f"n=8 {CANNOT_REJECT_MARK}") == 4 and "inconclusive" not in top
    assert "- Seeds: 0, 1, 2, 3, 10, 11 (6 seeds)" in markdown
    assert ("- primary (the primary hypotheses; 4 comparisons): controls the family-wise error "
            "rate (Holm) <= 0.05 within the family; cannot reject at its size (smallest "
            "reachable adjusted p 0.078)") in markdown
    assert "seeds: 0, 1, 2, 3, 10, 11" in markdown
    assert "| aues | budget | oracle | ga | -0.16 |" in markdown
    assert "| aues | budget | random | ga | 1.6 |" in markdown
    for target in re.findall(r"\]\(([^)]+)\)", markdown):
        assert (tmp_path / target).is_file(), target
    assert ".pdf" not in markdown.split("## Reproducibility", 1)[0].replace(
        "vector PDF", "")
    page = (tmp_path / "report.html").read_text()
    assert "<p><strong>Answer:</strong> On AUES" in page


def test_seeds_sort_as_numbers_and_the_dose_table_names_the_condition():
    assert numeric_order([0, 1, 10, 11, 2, "3", "b", "a"]) == [0, 1, 2, "3", 10, 11, "a", "b"]
    inputs = inputs_of([comparison("ga", "a_better")],
                       reproducibility={"seeds": [0, 1, 10, 2]})
    assert dict(setup_items(inputs))["Seeds"] == "0, 1, 2, 10 (4 seeds)"
    row = dose_response_row({"metric": "aues", "predictor": "overlap", "cell": {"algorithm": "ga"},
                             "slope": 0.5, "ci95": [0.4, 0.6], "p": 0.01, "n": 16})
    assert dict(zip(DOSE_RESPONSE_COLUMNS, row))["condition"] == "all (pooled)"


def test_the_spec_question_is_checked_and_recorded_in_analysis_json(tmp_path):
    with pytest.raises(SpecError, match=r"question: .*str.* \(in x\.toml\)"):
        parse_spec({"question": 3}, "x.toml")
    with pytest.raises(SpecError, match=r"question: must be a non-empty string .*\(in x\.toml\)"):
        parse_spec({"question": "  "}, "x.toml")
    spec = parse_spec({"question": "Does the oracle beat random?", "n_boot": 200,
                       "n_permutations": 200, "mixed_model": False, "dose_response": False})
    result = analyze(load_runs(ROOT / "reports" / "regression"), spec)
    doc = json.loads(write_analysis(result, tmp_path)["analysis"].read_text())
    assert doc["question"] == "Does the oracle beat random?"
    assert json.loads(write_analysis(analyze(load_runs(ROOT / "reports" / "regression"),
                                             parse_spec({"n_boot": 200, "n_permutations": 200,
                                                         "mixed_model": False,
                                                         "dose_response": False})),
                                     tmp_path / "b")["analysis"].read_text())["question"] is None


def test_a_long_answer_table_puts_the_headline_rows_first():
    """localization_methods opened with a 50-row table: past MAX_ANSWER_ROWS rows the rows
    the answer counts come first, the other comparisons in a second table right after."""
    from causalloc.report.render import MAX_ANSWER_ROWS, answer_blocks

    methods = ["activations", "memflex", "wagle", "grad_x_weight", "weight_norm"]
    headline = [comparison(alg, "a_better", a=f"attributed:{m}") for m in methods
                for alg in ("graddiff", "rmu")]
    controls = [comparison(alg, "a_better", a=f"layer_matched:attributed:{m}", family="controls")
                for m in methods for alg in ("graddiff", "rmu")]
    families = [{"name": "primary", "role": "primary", "n_comparisons": 10},
                {"name": "controls", "role": "secondary", "n_comparisons": 10}]
    tables = [b for b in answer_blocks(inputs_of(controls + headline, families))
              if b.kind == "table"]
    assert len(controls + headline) > MAX_ANSWER_ROWS
    assert [len(t.items) for t in tables] == [10, 10]
    assert {row[0] for row in tables[0].items} == {f"attributed:{m} vs random" for m in methods}
    short = [b for b in answer_blocks(inputs_of(headline[:6], families[:1])) if b.kind == "table"]
    assert [len(t.items) for t in short] == [6]
