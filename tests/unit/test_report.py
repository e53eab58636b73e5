"""Acceptance tests of the report layer on a synthetic causalloc output folder (issues 5, 14):
the report opens with the answer table, whose every number matches analysis.json, coloured by
verdict in HTML; the verdict table and the sentences sit in the appendix; every figure is
written, the HTML is self-contained, a partial or failed design is reported plainly at the
top, and torch is never imported."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from causalloc.cli import main
from causalloc.errors import DataError
from causalloc.report import load_inputs, write_report
from causalloc.report.answer import VERDICT_LEGEND
from causalloc.report.figures import build_figures
from causalloc.report.text import (
    LOCALIZATION_COLUMNS,
    VERDICT_COLUMNS,
    caveats,
    comparison_sentence,
    design_status,
)
from causalloc.vocab import metric_label, varying_cell_labels
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


def split_row(line: str) -> list[str]:
    """Cells of a markdown table line, unescaping ``\\|``."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of ``text`` in order, as (header, rows)."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            block = [split_row(x) for x in itertools.takewhile(lambda x: x.startswith("|"),
                                                                lines[i:])]
            tables.append((block[0], block[2:]))
    return tables


def parse_verdict_table(markdown: str) -> list[dict]:
    """Rows of the markdown table under '### Verdict table' as dicts keyed by its header."""
    section = markdown.split("### Verdict table", 1)[1].split("\n## ", 1)[0]
    (header, rows), = markdown_tables(section)
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


#: an answer cell: ``**oracle better**: +0.1 [0.05, 0.2], n=8``, or, in a family that cannot
#: reject at its size, ``+0.1 [-0.05, 0.2], n=8 †`` (no verdict word, the mark); then
#: `` [3 flagged]`` when runs of the cell carry outcome flags
ANSWER_CELL = re.compile(r"(?:(?P<bold>\*\*)?(?P<word>[^\d+\-].*?)(?(bold)\*\*): )?(?P<diff>\S+) "
                         r"\[(?P<lo>\S+), (?P<hi>\S+)\], n=(?P<n>\d+)(?P<mark> †)?"
                         r"(?: \[(?P<flagged>\d+) flagged\])?")


def assert_rounded(text: str, expected, what: str) -> None:
    """``text`` is ``expected`` rounded to the decimals it shows (``n/a`` for null)."""
    if expected is None:
        assert text == "n/a", what
        return
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(float(text) - expected) <= 0.5 * 10 ** -decimals + 1e-12, f"{what}: {text}"


def check_answer_table(markdown: str, analysis: dict) -> tuple[list[str], list[list[str]]]:
    """The first table of the report (above the Setup) against analysis.json: every cell's
    verdict, difference, CI bounds and n, and that each compared metric's cell is there."""
    (header, rows), *_ = markdown_tables(markdown.split("## Setup", 1)[0])
    metrics = {column: m for m in {c["metric"] for c in analysis["comparisons"]}
               for column in header if column.split(" (a - b")[0] == metric_label(m)}
    assert header[:2] == ["comparison", "algorithm"] and len(metrics) == len(header) - 2
    found = set()
    for row in rows:
        pair, algorithm = row[0], row[1]
        for column, text in zip(header[2:], row[2:]):
            comparison = [c for c in analysis["comparisons"]
                          if f"{c['a']} vs {c['b']}" == pair and c["cell"]["algorithm"] == algorithm
                          and c["metric"] == metrics[column]]
            if not comparison:
                assert text == "not compared"
                continue
            (c,) = comparison
            found.add(c["id"])
            match = ANSWER_CELL.fullmatch(text)
            assert match, text
            word = {"a_better": f"{c['a']} better",
                    "b_better": f"{c['b']} better"}.get(c["verdict"], c["verdict"])
            assert match["word"] == word, c["id"]
            assert bool(match["bold"]) == (c["verdict"] != "inconclusive"), c["id"]
            assert_rounded(match["diff"], c["mean_diff"], c["id"] + " diff")
            assert_rounded(match["lo"], c["ci95"][0], c["id"] + " lo")
            assert_rounded(match["hi"], c["ci95"][1], c["id"] + " hi")
            assert int(match["n"]) == c["n_blocks"], c["id"]
    assert found == {c["id"] for c in analysis["comparisons"] if c["metric"] in metrics.values()}
    return header, rows


def test_answer_table_opens_the_report_and_matches_analysis_json(partial_report):
    analysis_dir, _, analysis = partial_report
    markdown = (analysis_dir / "report.md").read_text()
    header, rows = check_answer_table(markdown, analysis)
    assert header == ["comparison", "algorithm", "AUES (a - b)"]  # no declared primary metric
    assert [r[:2] for r in rows[:2]] == [["oracle vs random", "graddiff"],
                                         ["oracle vs random", "npo"]]
    assert rows[0][2] == "**oracle better**: +0.093 [0.083, 0.104], n=8"
    notes = markdown.split("\n\n## Setup", 1)[0].split("\n\n")[-2:]
    assert notes[0].endswith("Verdicts rest on the exact sign-flip permutation test of the "
                             "paired differences over blocks, at alpha = 0.05.")
    assert notes[1].startswith("Equivalent: TOST puts the difference inside +-SESOI (AUES "
                               "0.02). The p-values (and TOST p) are Holm-adjusted")


def test_answer_table_follows_the_declared_primary_metric_and_family(tmp_path):
    """policy.primary_metric first, then the primary family's metrics, then AUES / MU95,
    at most 3 columns; primary pairs first; a metric a pair lacks reads 'not compared'."""
    analysis_dir = build_output(tmp_path, partial=False)
    analysis = json.loads((analysis_dir / "analysis.json").read_text())
    extra = []
    for c in analysis["comparisons"]:
        if c["metric"] == "aues":
            extra.append({**c, "id": c["id"].replace("aues", "mu95"), "metric": "mu95"})
            if c["b"] == "random" and c["a"].startswith("attributed"):
                extra.append({**c, "id": c["id"].replace("aues", "relearn_es"),
                              "metric": "relearn_es", "family": "primary",
                              "higher_is_better": False, "mean_diff": -c["mean_diff"],
                              "ci95": [-c["ci95"][1], -c["ci95"][0]], "verdict": "a_better"})
    analysis["comparisons"] = [c for c in analysis["comparisons"] + extra
                               if c["id"] != "aues:npo:oracle-vs-random"]
    analysis["policy"]["primary_metric"] = "fs_final"
    analysis["families"] = [{"name": "primary", "role": "primary", "n_comparisons": 2,
                             "adjust": "holm", "controls": "family-wise error rate (Holm) "
                                                           "<= 0.05 within the family"}]
    (analysis_dir / "analysis.json").write_text(json.dumps(analysis))
    markdown = write_report(analysis_dir)["report_md"].read_text()
    header, rows = check_answer_table(markdown, analysis)
    assert header[2:] == ["final FS (a - b)", "relearning ES (a - b, lower is better)",
                          "AUES (a - b)"]
    assert [r[0] for r in rows[:2]] == ["attributed:activations vs random"] * 2
    assert rows[3][:2] == ["oracle vs random", "npo"] and rows[3][4] == "not compared"
    assert rows[3][3] == "not compared"  # relearning ES only for the primary pair
    assert ("the primary family (2 hypotheses: relearning ES of attributed:activations vs "
            "random) controls the family-wise error rate (Holm) <= 0.05 within the family; "
            "the other cells belong to secondary families") in markdown


def test_html_colours_each_answer_cell_by_its_verdict_with_a_legend(partial_report):
    _, written, analysis = partial_report
    page = written["report_html"].read_text()
    answer = page.split("<table>", 1)[1].split("</table>", 1)[0]
    shown = Counter(c["verdict"] for c in analysis["comparisons"] if c["metric"] == "aues")
    assert Counter(re.findall(r'<td class="verdict-(\w+)">', answer)) == shown
    assert '<td class="verdict-a_better"><strong>oracle better</strong>: +0.093' in answer
    colours = dict(re.findall(r"\.verdict-(\w+) \{ background: (#[0-9A-Fa-f]{6}); \}", page))
    assert set(colours) == set(VERDICT_LEGEND) and len(set(colours.values())) == 5
    legend = re.search(r'<p class="legend">(.*?)</p>', page).group(1)
    assert re.findall(r'class="swatch verdict-(\w+)"></span>([^<]+)', legend) == [
        (verdict, label + " ") for verdict, label in VERDICT_LEGEND.items()]
    assert page.index('class="legend"') < page.index("<h2>Setup</h2>")


def test_appendix_holds_every_comparison_sentence(partial_report):
    analysis_dir, _, analysis = partial_report
    body, appendix = (analysis_dir / "report.md").read_text().split(
        "\n## Appendix: every comparison\n", 1)
    labels = varying_cell_labels([c["cell"] for c in analysis["comparisons"]])
    for c, label in zip(analysis["comparisons"], labels):
        sentence = comparison_sentence(c, label)
        assert f"- {sentence}" in appendix, c["id"]
        assert sentence.removeprefix(f"{label}, ") not in body, c["id"]  # whatever the label
    assert appendix.index("### AUES") < appendix.index("### final FS") < appendix.index(
        "### Verdict table")
    assert "figures/forest_aues.png" in body and "figures/forest_fs_final.png" in appendix
    assert body.index("## Figures") < body.index("## Caveats") < body.index("## Reproducibility")


def test_localization_accuracy_against_v_tgt(partial_report):
    analysis_dir, _, _ = partial_report
    markdown = (analysis_dir / "report.md").read_text()
    section = markdown.split("## Localization accuracy", 1)[1].split("\n## ", 1)[0]
    assert "(6 of 64 units, v_tgt.json)" in section and "expected precision 0.094" in section
    (header, rows), = markdown_tables(section)
    assert tuple(header) == LOCALIZATION_COLUMNS
    table = {row[0]: row[1:] for row in rows}
    assert table["oracle"] == ["6", "6", "1.000", "1.000", "1.000"]
    assert table["attributed:activations"] == ["6", "4", "0.667", "0.667", "0.500"]
    assert table["disjoint:oracle"][1:] == ["0", "0.000", "0.000", "0.000"]
    assert list(table)[-4:] == [f"random_{k}" for k in range(4)]
    assert markdown.index("## Setup") < markdown.index("## Localization accuracy") < \
        markdown.index("## Figures")
    inputs = load_inputs(analysis_dir)
    assert inputs.target_mask_path.name == "v_tgt.json"
    assert "v_tgt.json" not in {p.name for p in inputs.mask_paths}  # not drawn as a run mask


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
    assert page.index("<table>") < page.index("<h2>Setup</h2>")


def test_partial_design_is_reported_plainly_at_the_top(partial_report):
    analysis_dir, _, analysis = partial_report
    markdown = (analysis_dir / "report.md").read_text()
    top = markdown.split("\n|", 1)[0]  # everything above the answer table
    lines = markdown.splitlines()
    assert lines[0] == ("# Does oracle beat random, and does attributed:activations beat random "
                        "or disjoint:oracle, on AUES? (graddiff, npo; tiny model, forget01 data)")
    assert lines[2].startswith("**Answer:** On AUES, ") and lines[4].startswith("> **PARTIAL")
    assert "PARTIAL design" in top
    assert "2 of 112 runs failed" in top and "1 block dropped" in top
    assert "1 run excluded" in top
    pooled = markdown.split("## Pooled estimates (mixed models)", 1)[1].split("\n## ", 1)[0]
    assert "| disjoint:oracle vs random | -0.05 | [-0.06, -0.04] |" in pooled
    assert "| NO | aues ~ C(condition) + C(algorithm) |" in pooled
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
    # answer, localization, verdict, mixed-model and dose-response tables
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 5
    assert r"\label{tab:answer}" in tex and r"\textbf{oracle better: +0.093" in tex
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
    assert markdown.splitlines()[2] == "**Answer:** none: the analysis holds no comparison."
    assert markdown.splitlines()[4].startswith("> **This design FAILED: no comparison")
    assert "1 run failed" in markdown.splitlines()[4]
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


def test_compare_puts_two_analyses_side_by_side(tmp_path, capsys):
    from causalloc.cli import main
    from causalloc.report.answer import answer_cell, answer_rows

    first = build_output(tmp_path / "a", partial=False, seed=0)
    second = build_output(tmp_path / "b", partial=False, seed=1)
    assert main(["compare", f"one={first}", f"two={second}", "--metric", "aues"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert table[0].endswith("| one: AUES (a - b) | two: AUES (a - b) |")
    expected = {}
    for folder in (first, second):
        for row in answer_rows(load_inputs(folder), ["aues"]):
            expected.setdefault((row.pair, row.cell), []).append(answer_cell(row.comparisons[0]))
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]]
    assert len(body) == len(expected) > 0
    for cells in body:
        assert cells[-2:] == expected[(cells[0], cells[1] if len(cells) == 4 else "")]
    assert main(["compare", f"one={first}"]) == 2  # one analysis: nothing to put beside it
    assert main(["compare", f"one={first}", f"two={second}", "--metric", "nope"]) == 2
