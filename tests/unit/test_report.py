"""Acceptance tests of the report layer on a synthetic causalloc output folder (issue 5):
the verdict table matches analysis.json, every figure is written, the HTML is self-contained,
a partial or failed design is reported plainly at the top, and torch is never imported."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from causalloc.cli import main
from causalloc.errors import DataError
from causalloc.report import load_inputs, write_report
from causalloc.report.figures import build_figures
from causalloc.report.text import VERDICT_COLUMNS, caveats, design_status
from tests.fixtures.report.synthetic import build_output

EXPECTED_FIGURES = {"forest_aues", "forest_fs_final", "tradeoff", "paired_slopes",
                    "null_distribution", "dose_response_budget", "dose_response_overlap",
                    "mask_anatomy"}
RUN_TABLE_FIGURES = {"tradeoff", "paired_slopes", "null_distribution"}


@pytest.fixture(scope="module")
def partial_report(tmp_path_factory):
    """One rendered report of the partial synthetic design, shared by the tests below."""
    analysis_dir = build_output(tmp_path_factory.mktemp("partial"))
    written = write_report(analysis_dir)
    analysis = json.loads((analysis_dir / "analysis.json").read_text())
    return analysis_dir, written, analysis


def parse_verdict_table(markdown: str) -> list[dict]:
    """Rows of the markdown table under '## Verdict table' as dicts keyed by its header."""
    section = markdown.split("## Verdict table", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    split = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
             for line in lines]
    header, rows = split[0], split[2:]
    assert tuple(header) == VERDICT_COLUMNS
    return [dict(zip(header, row)) for row in rows]


def assert_number(text: str, expected, what: str) -> None:
    if expected is None or (isinstance(expected, float) and not math.isfinite(expected)):
        assert text == "n/a", what
        return
    assert float(text) == pytest.approx(expected, rel=5e-4, abs=1e-12), what


def test_verdict_table_matches_analysis_json(partial_report):
    analysis_dir, _, analysis = partial_report
    rows = parse_verdict_table((analysis_dir / "report.md").read_text())
    comparisons = analysis["comparisons"]
    assert len(rows) == len(comparisons) == 12
    for row, c in zip(rows, comparisons):
        what = c["id"]
        assert row["comparison"] == f"{c['a']} vs {c['b']}", what
        assert row["cell"] == ", ".join(
            f"{k} {v}" if isinstance(v, (int, float)) else str(v) for k, v in c["cell"].items())
        assert row["metric"] == c["metric"]
        assert int(row["n"]) == c["n_blocks"]
        lo, hi = row["ci95"].strip("[]").split(", ")
        assert_number(lo, c["ci95"][0], what + " ci lo")
        assert_number(hi, c["ci95"][1], what + " ci hi")
        for column in ("mean_diff", "d_z", "p_adj", "blocks_needed"):
            assert_number(row[column], c[column], f"{what} {column}")
        # the fixture is an analysis.json written before families and verdict tests existed:
        # the report falls back to the sign-flip p and the unadjusted TOST p
        assert_number(row["tost_p_adj"], c.get("tost_p_adj", c["tost_p"]), what + " tost")
        assert row["family"] == c.get("family", "")
        assert row["verdict_test"] == c.get("verdict_test", "sign_flip")
        verdict_p = {"sign_flip": "p_perm", "randomization": "p_rand"}[row["verdict_test"]]
        assert_number(row["p_verdict"], c[verdict_p], f"{what} p_verdict")
        assert row["verdict"] == c["verdict"]
    assert {r["verdict"] for r in rows} >= {"a_better", "equivalent", "inconclusive"}


def test_every_figure_written_as_pdf_and_300dpi_png(partial_report):
    analysis_dir, written, _ = partial_report
    assert written["skipped_figures"] == {}
    figures = analysis_dir / "figures"
    assert {p.stem for p in figures.iterdir()} == EXPECTED_FIGURES
    assert sorted(written["figures"]) == sorted(figures.iterdir())
    for name in EXPECTED_FIGURES:
        pdf, png = figures / f"{name}.pdf", figures / f"{name}.png"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000, name
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 300, name
            assert image.info["dpi"][0] == pytest.approx(300, abs=1), name


def test_html_is_self_contained(partial_report):
    _, written, _ = partial_report
    page = written["report_html"].read_text()
    external = r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:|[^"'\s>]+\.(png|pdf|css|js))"""
    assert not re.search(external, page, re.IGNORECASE)
    assert not re.search(r"<link\b|<script\b[^>]*\bsrc|@import|url\(", page, re.IGNORECASE)
    assert page.count('src="data:image/png;base64,') == len(EXPECTED_FIGURES)
    assert "Verdict table" in page and "Reproducibility" in page


def test_partial_design_is_reported_plainly_at_the_top(partial_report):
    analysis_dir, _, analysis = partial_report
    markdown = (analysis_dir / "report.md").read_text()
    top = markdown.split("## Headline", 1)[0]
    assert "PARTIAL design" in top
    assert "2 of 112 runs failed" in top and "1 block dropped" in top
    assert "1 run excluded" in top and "did not converge" in top
    caveats = markdown.split("## Caveats", 1)[1].split("\n## ", 1)[0]
    for run in analysis["failed_runs"]:
        assert f"Failed run {run['run_id']}" in caveats
    assert "algorithm = npo, seed = 5" in caveats and "did NOT converge" in caveats
    inconclusive = [c for c in analysis["comparisons"] if c["verdict"] == "inconclusive"]
    assert caveats.count("Inconclusive:") == len(inconclusive) > 0
    assert f"about {inconclusive[0]['blocks_needed']} blocks needed" in caveats


def test_sentences_and_setup_and_reproducibility(partial_report):
    analysis_dir, _, analysis = partial_report
    markdown = (analysis_dir / "report.md").read_text()
    first = analysis["comparisons"][0]
    assert (f"- graddiff, oracle vs random: Delta AUES = {first['mean_diff']:.3f}, 95% CI "
            f"[{first['ci95'][0]:.3f}, {first['ci95'][1]:.3f}] (BCa, 9,999 resamples)") in markdown
    assert "randomization p = " in markdown and "Holm-adjusted p = " in markdown
    assert "- Seeds: 0, 1, 2, 3, 4, 5, 6, 7 (8 seeds)" in markdown
    assert "- Random masks per block (K): 4" in markdown
    assert f"spec hash: {analysis['reproducibility']['spec_hash']}" in markdown
    assert "analysis command: causalloc analyze runs/ --out runs/analysis" in markdown
    tex = (analysis_dir / "tables.tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 3
    assert r"fs\_final" in tex and "fs_final" not in tex.replace(r"fs\_final", "")


def test_complete_design_has_no_alarm(tmp_path):
    inputs = load_inputs(build_output(tmp_path, partial=False))
    status, sentence = design_status(inputs)
    assert status == "complete"
    assert sentence == "Complete design: all 112 runs finished, no block dropped, no run excluded."


def test_failed_design_and_missing_run_table(tmp_path):
    analysis_dir = tmp_path / "analysis"
    analysis_dir.mkdir()
    (analysis_dir / "analysis.json").write_text(json.dumps({
        "schema_version": 1, "comparisons": [],
        "failed_runs": [{"run_id": "r1", "condition": "oracle", "error": "diverged"}]}))
    written = write_report(analysis_dir)
    markdown = written["report_md"].read_text()
    assert markdown.splitlines()[2].startswith("> **This design FAILED: no comparison")
    assert "1 run failed" in markdown.splitlines()[2]
    assert "Failed run r1 (oracle): diverged" in markdown
    assert written["figures"] == [] and "forest" in written["skipped_figures"]


def test_without_run_table_the_run_figures_are_skipped_with_a_note(tmp_path):
    analysis_dir = build_output(tmp_path)
    (tmp_path / "runs.csv").unlink()
    inputs = load_inputs(analysis_dir)
    figures, skipped = build_figures(inputs)
    assert set(skipped) == RUN_TABLE_FIGURES
    assert {f.name for f in figures} == EXPECTED_FIGURES - RUN_TABLE_FIGURES
    assert ("Figure 'tradeoff' not drawn: the trade-off figure needs runs.csv, which was not "
            "found") in caveats(inputs, skipped)


def test_analysis_of_an_external_csv(tmp_path):
    """A minimal analysis of a plain CSV (other block columns, no setup, policy or extras)."""
    (tmp_path / "runs.csv").write_text(
        "task,rep,arm,score\n" + "".join(f"t1,{r},new,{0.5 + r / 10}\nt1,{r},old,{0.4}\n"
                                         for r in range(4)))
    comparison = {"a": "new", "b": "old", "metric": "score", "cell": {"task": "t1"},
                  "n_blocks": 4, "mean_diff": 0.25, "ci95": [0.1, 0.4], "verdict": "a_better",
                  "p_perm": 0.125, "p_perm_exact": True}
    (tmp_path / "analysis.json").write_text(json.dumps({
        "schema_version": 1, "comparisons": [comparison],
        "input": {"source": str(tmp_path / "runs.csv"), "kind": "csv",
                  "block_columns": ["task", "rep"], "condition_column": "arm",
                  "replicate": "rep", "draw_column": None, "metrics": ["score"]}}))
    written = write_report(tmp_path)
    markdown = written["report_md"].read_text()
    assert "- Model: not recorded" in markdown
    assert ("t1, new vs old: Delta score = 0.25, 95% CI [0.10, 0.40], exact sign-flip "
            "p = 0.12 (n = 4 blocks) -> new better.") in markdown
    assert "paired_slopes" not in written["skipped_figures"]
    assert "null_distribution" in written["skipped_figures"]


def test_bad_analysis_json_names_the_file_and_key(tmp_path):
    with pytest.raises(DataError, match="analysis.json: not found"):
        write_report(tmp_path)
    (tmp_path / "analysis.json").write_text(json.dumps(
        {"comparisons": [{"a": "x", "b": "y", "metric": "m", "cell": {}}]}))
    with pytest.raises(DataError, match=r"comparisons\[0\] lacks key\(s\) n_blocks"):
        write_report(tmp_path)
    (tmp_path / "analysis.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        write_report(tmp_path)


def test_cli_json_output_and_error_exit(tmp_path, capsys):
    (tmp_path / "analysis.json").write_text(json.dumps({"schema_version": 1, "comparisons": []}))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"report_md", "report_html", "tables_tex", "figures",
                            "skipped_figures"}
    assert Path(printed["report_html"]).parent == tmp_path / "out"
    assert all(Path(printed[k]).stat().st_size > 0 for k in ("report_md", "tables_tex"))
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "analysis.json: not found" in capsys.readouterr().err


def test_report_never_imports_torch():
    code = ("import sys, causalloc.report, causalloc.cli.report; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
