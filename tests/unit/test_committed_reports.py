"""The committed reports say what their analysis.json says (issues 14 and 24).

For every ``reports/<name>/`` holding ``report.md`` and ``analysis.json``: the report opens
with its question (line 1, ``# <question>``) and the ``**Answer:**`` paragraph built from the
verdicts of its analysis.json; the answer table is read back and every cell's verdict,
difference, CI bounds and block count is checked against analysis.json (rounded as printed;
a cell of a family that cannot reject carries the mark instead of a verdict word); the Setup
section carries the testbed diagnostics and the provenance of the runs, seeds in numeric
order; every image and link of report.md resolves inside the committed folder. A report left
stale after its analysis changed, or hand-edited, fails here: after an analysis changes,
re-render with ``causalloc report`` (see reports/regenerate.sh).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from causalloc.report.answer import (
    CANNOT_REJECT_MARK,
    answer_metrics,
    answer_paragraph,
    answer_rows,
    headline_comparisons,
    report_question,
    undecidable,
)
from causalloc.report.inputs import load_inputs
from tests.unit.test_report import ANSWER_CELL, assert_rounded, markdown_tables

REPORTS = Path(__file__).resolve().parents[2] / "reports"
FOLDERS = sorted(p.parent for p in REPORTS.glob("*/analysis.json") if (p.parent / "report.md").is_file())


def test_there_are_committed_reports_to_check():
    assert {"demo", "regression"} <= {folder.name for folder in FOLDERS}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_the_report_opens_with_its_question_and_answer(folder):
    lines = (folder / "report.md").read_text().splitlines()
    inputs = load_inputs(folder)
    assert lines[0] == f"# {report_question(inputs)}"
    assert lines[1] == "" and lines[2].startswith("**Answer:** ")
    assert lines[2] == answer_paragraph(inputs)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_the_answer_table_reads_back_as_analysis_json(folder):
    analysis = json.loads((folder / "analysis.json").read_text())
    markdown = (folder / "report.md").read_text()
    tables = markdown_tables(markdown.split("## Setup", 1)[0])
    (header, _), *_ = tables
    # one answer table, or the headline rows then the other rows (render.MAX_ANSWER_ROWS)
    assert all(other == header for other, _ in tables)
    rows = [row for _, table_rows in tables for row in table_rows]
    inputs = load_inputs(folder)
    expected = answer_rows(inputs, answer_metrics(inputs))
    headline = {f"{c['a']} vs {c['b']}" for c in headline_comparisons(inputs)}
    if len(tables) == 2:
        expected = ([r for r in expected if r.pair in headline]
                    + [r for r in expected if r.pair not in headline])
    assert len(rows) == len(expected) > 0
    by_id = {c["id"]: c for c in analysis["comparisons"]}
    for row, want in zip(rows, expected):
        label = [want.pair, *([want.cell] if want.cell else [])]
        assert row[:len(label)] == label
        for text, comparison in zip(row[len(label):], want.comparisons, strict=True):
            if comparison is None:
                assert text == "not compared"
                continue
            c = by_id[comparison["id"]]
            match = ANSWER_CELL.fullmatch(text)
            assert match, text
            assert int(match["flagged"] or 0) == sum((c.get("flagged_runs") or {}).values()), text
            if undecidable(inputs, c) and c["verdict"] == "inconclusive":
                assert match["word"] is None and match["mark"] == f" {CANNOT_REJECT_MARK}", text
            else:
                word = {"a_better": f"{c['a']} better", "b_better": f"{c['b']} better"}.get(c["verdict"], c["verdict"])
                assert match["word"] == word and match["mark"] is None, c["id"]
            assert_rounded(match["diff"], c["mean_diff"], f"{c['id']} diff")
            assert_rounded(match["lo"], c["ci95"][0], f"{c['id']} lo")
            assert_rounded(match["hi"], c["ci95"][1], f"{c['id']} hi")
            assert int(match["n"]) == c["n_blocks"], c["id"]
    assert len(header) == len(label) + len(want.comparisons)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_the_setup_names_the_testbed_diagnostics_and_the_provenance(folder):
    setup = (folder / "report.md").read_text().split("## Setup", 1)[1].split("\n## ", 1)[0]
    assert "norm ratio V_tgt / rest" in setup and "weight-norm precision" in setup
    runs_line = next(line for line in setup.splitlines() if line.startswith("- Runs made with"))
    assert "not recorded" not in runs_line and "torch" in runs_line and "thread" in runs_line
    assert "- Testbed fingerprint: sha256 " in setup
    seeds = next(line for line in setup.splitlines() if line.startswith("- Seeds: "))
    values = [float(v) for v in seeds.removeprefix("- Seeds: ").split(" (")[0].split(", ")]
    assert values == sorted(values), seeds


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_every_link_of_the_report_resolves_in_the_committed_folder(folder):
    markdown = (folder / "report.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)\)", markdown)
    assert targets, "report.md links no figure"
    missing = [t for t in targets if "://" not in t and not (folder / t).exists()]
    assert missing == []
    # files named in code spans (e.g. `figures/x.pdf`) must exist too
    named = re.findall(r"`(figures/[^`\s]+)`", markdown)
    assert [n for n in named if not (folder / n).exists()] == []
