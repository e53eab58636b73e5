"""The committed reports say what their analysis.json says (issue 14 acceptance).

For every ``reports/<name>/`` holding ``report.md`` and ``analysis.json``: the answer table
the report opens with is read back and every cell's verdict, difference, CI bounds and block
count is checked against analysis.json (rounded as printed), and the Setup section carries
the testbed diagnostics (norm ratio, weight-norm precision) and the provenance of the runs.
A report left stale after its analysis changed, or hand-edited, fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from causalloc.report.answer import answer_metrics, answer_rows
from causalloc.report.inputs import load_inputs
from tests.unit.test_report import ANSWER_CELL, assert_rounded, markdown_tables

REPORTS = Path(__file__).resolve().parents[2] / "reports"
FOLDERS = sorted(p.parent for p in REPORTS.glob("*/analysis.json") if (p.parent / "report.md").is_file())


def test_there_are_committed_reports_to_check():
    assert {"demo", "regression"} <= {folder.name for folder in FOLDERS}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_the_answer_table_reads_back_as_analysis_json(folder):
    analysis = json.loads((folder / "analysis.json").read_text())
    markdown = (folder / "report.md").read_text()
    (header, rows), *_ = markdown_tables(markdown.split("## Setup", 1)[0])
    inputs = load_inputs(folder)
    expected = answer_rows(inputs, answer_metrics(inputs))
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
            word = {"a_better": f"{c['a']} better", "b_better": f"{c['b']} better"}.get(c["verdict"], c["verdict"])
            assert match["word"] == word, c["id"]
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
