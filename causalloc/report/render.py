"""Lay the report out once as a list of blocks, then write it as Markdown and as one
self-contained HTML file (figures embedded as base64 PNG, styles inline, no external
reference), next to tables.tex and figures/*.pdf + figures/*.png.

The block list is written by hand rather than converting Markdown to HTML because no
Markdown converter is among the package's dependencies; both renderers read the same blocks,
so the two files cannot disagree.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from causalloc.report.answer import (
    VERDICT_LEGEND,
    answer_cell_parts,
    answer_metrics,
    answer_notes,
    answer_paragraph,
    answer_rows,
    family_limits,
    headline_comparisons,
    is_decided,
    label_columns,
    metric_header,
    report_question,
    undecidable,
)
from causalloc.report.figures import ReportFigure, build_figures
from causalloc.report.inputs import ReportInputs
from causalloc.report.localization import flat_units, signature, target_accuracy
from causalloc.report.robust import (
    SEQUENTIAL_COLUMNS,
    TESTBED_COLUMNS,
    TUNING_COLUMNS,
    flag_mark,
    flag_note,
    sequential_paragraph,
    sequential_rows,
    testbed_paragraph,
    testbed_rows,
    tuning_paragraph,
    tuning_rows,
)
from causalloc.report.style import (
    PNG_DPI,
    VERDICT_COLORS,
    paper_style,
)
from causalloc.report.tables import tables_tex
from causalloc.report.text import (
    DOSE_RESPONSE_COLUMNS,
    LOCALIZATION_COLUMNS,
    MIXED_MODEL_COLUMNS,
    VERDICT_COLUMNS,
    caveats,
    comparison_sentence,
    design_status,
    dose_response_row,
    family_lines,
    localization_row,
    mixed_model_row,
    plural,
    reproducibility_lines,
    setup_items,
    verdict_row,
    verdict_summary,
)
from causalloc.vocab import metric_label, varying_cell_labels


@dataclass
class Block:
    """One piece of the report: kind is heading, status, paragraph, list, table, legend, code
    or figure; ``items`` holds list items, table rows (strings or Cells), legend entries
    ``(css class, label)`` or, for a figure, its ReportFigure."""

    kind: str
    text: str = ""
    level: int = 2
    items: list = field(default_factory=list)
    columns: tuple = ()


@dataclass(frozen=True)
class Cell:
    """A table cell whose ``bold`` part comes first in bold, and whose HTML ``<td>`` gets
    ``css_class`` (e.g. a verdict's background colour)."""

    text: str
    bold: str = ""
    css_class: str = ""


#: an answer table longer than this is split: the rows of the headline comparisons (those the
#: answer paragraph counts) first, the other comparisons in a second table right after
MAX_ANSWER_ROWS = 12


def verdict_class(verdict: str) -> str:
    return f"verdict-{verdict}"


def answer_blocks(inputs: ReportInputs) -> list[Block]:
    """Under the ``**Answer:**`` paragraph: the families that cannot reject at their size
    (said once), the answer table, its colour legend (HTML) and the sentences under it."""
    blocks = [Block("paragraph", line) for line in family_limits(inputs)]
    metrics = answer_metrics(inputs)
    rows = answer_rows(inputs, metrics)
    if not rows:
        return blocks
    labels = label_columns(rows)
    columns = (*labels, *(metric_header(m, inputs.comparisons) for m in metrics))
    items = []
    for row in rows:
        cells = []
        for comparison in row.comparisons:
            word, rest = answer_cell_parts(comparison, undecidable(inputs, comparison))
            rest += flag_mark(comparison)
            css = verdict_class(comparison["verdict"]) if comparison else ""
            cells.append(Cell(rest, bold=word, css_class=css) if is_decided(comparison)
                         else Cell(word + rest, css_class=css))
        items.append([row.pair, row.cell][:len(labels)] + cells)
    legend = [(verdict_class(v), label) for v, label in VERDICT_LEGEND.items()]
    flags = flag_note(inputs)
    notes = [Block("paragraph", note) for note in [*answer_notes(inputs, rows), *([flags] if flags else [])]]
    headline = {f"{c['a']} vs {c['b']}" for c in headline_comparisons(inputs)}
    first = [i for i, row in enumerate(rows) if row.pair in headline]
    if len(rows) <= MAX_ANSWER_ROWS or not 0 < len(first) < len(rows):
        return blocks + [Block("table", columns=columns, items=items),
                         Block("legend", items=legend), *notes]
    # a long table: the rows the answer is about first, the other comparisons right after
    rest = [i for i in range(len(rows)) if i not in first]
    return blocks + [Block("table", columns=columns, items=[items[i] for i in first]),
                     Block("legend", items=legend), *notes,
                     Block("paragraph", f"The other {plural(len(rest), 'row')} of comparisons "
                                        "on the same metrics (controls and secondary "
                                        "contrasts), read the same way:"),
                     Block("table", columns=columns, items=[items[i] for i in rest])]


def robust_blocks(inputs: ReportInputs) -> list[Block]:
    """A tuned design's selection (rule, grid, edges) and a replicated design's per-testbed
    estimates beside the pooled ones (:mod:`causalloc.report.robust`)."""
    blocks = []
    tuning = tuning_paragraph(inputs)
    if tuning:
        blocks += [Block("heading", "Tuning: each arm at its own setting"), Block("paragraph", tuning),
                   Block("table", columns=TUNING_COLUMNS, items=tuning_rows(inputs))]
    sequential = sequential_paragraph(inputs)
    if sequential:
        blocks += [Block("heading", "Sequential looks"), Block("paragraph", sequential),
                   Block("table", columns=SEQUENTIAL_COLUMNS, items=sequential_rows(inputs))]
    testbeds = testbed_paragraph(inputs)
    if testbeds:
        blocks += [Block("heading", "Testbeds: per-testbed and population estimates"),
                   Block("paragraph", testbeds),
                   Block("table", columns=TESTBED_COLUMNS, items=testbed_rows(inputs))]
    return blocks


def localization_blocks(inputs: ReportInputs) -> list[Block]:
    """The localization-accuracy table against V_tgt, when masks/v_tgt.json was found."""
    table = target_accuracy(inputs)
    if table is None:
        return []
    n_layers, n_units = signature(inputs.target_mask)
    size = flat_units(inputs.target_mask).size
    left_out = len(inputs.masks) - len(table)
    note = (f"Against V_tgt, the oracle region of the testbed ({size} of {n_layers * n_units} "
            f"units, {inputs.target_mask_path.name}): precision = share of the mask inside "
            "V_tgt, recall = share of V_tgt inside the mask, Jaccard = units in both / units "
            f"in either. A uniformly random mask has expected precision "
            f"{size / (n_layers * n_units):.3f}."
            + (f" {plural(left_out, 'mask')} made for another model left out."
               if left_out else ""))
    return [Block("heading", "Localization accuracy"), Block("paragraph", note),
            Block("table", columns=LOCALIZATION_COLUMNS,
                  items=[localization_row(row) for row in table.to_dict("records")])]


def figure_blocks(figures: list[ReportFigure]) -> list[Block]:
    """Each figure under its own level-3 heading."""
    return [block for figure in figures
            for block in (Block("heading", figure.title, level=3),
                          Block("figure", items=[figure]))]


def report_blocks(inputs: ReportInputs, figures: list[ReportFigure], skipped: dict[str, str],
                  report_command: str) -> list[Block]:
    """The report in reading order: the question as title, the ``**Answer:**`` paragraph,
    the design status when the design is partial or failed (never buried), the answer
    table, then the setup, the
    localization accuracy, the figures, the pooled and dose-response tables, caveats and
    reproducibility; every comparison's sentence, grouped by metric, in the appendix."""
    status, status_text = design_status(inputs)
    status_block = Block("status", status_text, level={"complete": 0}.get(status, 1))
    blocks = [Block("heading", report_question(inputs), level=1),
              Block("paragraph", answer_paragraph(inputs))]
    if status != "complete":
        blocks.append(status_block)
    blocks += answer_blocks(inputs)
    if status == "complete":
        blocks.append(status_block)
    blocks += [Block("heading", "Setup"),
               Block("list", items=[f"{label}: {value}" for label, value in setup_items(inputs)])]
    blocks += robust_blocks(inputs)
    blocks += localization_blocks(inputs)
    answer_forests = [f"forest_{metric}" for metric in answer_metrics(inputs)]
    by_name = {f.name: f for f in figures}
    main = [by_name[name] for name in answer_forests if name in by_name]
    main += [f for f in figures if not f.name.startswith("forest")]
    if main:
        blocks += [Block("heading", "Figures"),
                   Block("paragraph", "Each figure is also written as a vector PDF next to its "
                                      "PNG by `causalloc report` (committed report folders "
                                      "keep the PNGs only)."),
                   *figure_blocks(main)]
    models = inputs.analysis.get("mixed_models") or []
    if models:
        blocks += [Block("heading", "Pooled estimates (mixed models)"),
                   Block("paragraph", "A pooled estimate averages the contrast over the cells; "
                                      "where the cells' effects differ in sign (column "
                                      "'signs across cells') it describes no cell, and the "
                                      "forest plot draws no diamond for it."),
                   Block("table", columns=MIXED_MODEL_COLUMNS,
                         items=[mixed_model_row(m, inputs.comparisons) for m in models])]
    entries = inputs.analysis.get("dose_response") or []
    if entries:
        blocks += [Block("heading", "Dose-response slopes"),
                   Block("table", columns=DOSE_RESPONSE_COLUMNS,
                         items=[dose_response_row(d) for d in entries])]
    notes = caveats(inputs, skipped)
    blocks += [Block("heading", "Caveats"),
               Block("list", items=notes) if notes else
               Block("paragraph", "None: every run finished, no block was dropped, no run "
                                  "was excluded, every mixed model converged and no "
                                  "comparison is inconclusive.")]
    blocks += [Block("heading", "Reproducibility"),
               Block("code", "\n".join(reproducibility_lines(inputs, report_command)))]
    return blocks + appendix_blocks(inputs, [f for f in figures if f not in main])


def appendix_blocks(inputs: ReportInputs, figures: list[ReportFigure]) -> list[Block]:
    """Every comparison: the verdict count, the families, one sentence per comparison under
    its metric (with the metric's forest plot when it is not in the Figures section), and
    the full verdict table with 4 significant digits."""
    blocks = [Block("heading", "Appendix: every comparison")]
    if not inputs.comparisons:
        return blocks + [Block("paragraph", "No comparison was made."),
                         *figure_blocks(figures)]
    blocks.append(Block("paragraph", verdict_summary(inputs)))
    families = family_lines(inputs)
    if families:
        blocks += [Block("heading", "Families of hypotheses", level=3),
                   Block("paragraph", "Each verdict's p (and TOST p) is adjusted within its "
                                      "family; the verdict table names the family."),
                   Block("list", items=families)]
    by_name = {f.name: f for f in figures}
    cell_texts = varying_cell_labels([c["cell"] for c in inputs.comparisons])
    for metric in inputs.metrics:
        blocks += [Block("heading", metric_label(metric), level=3),
                   Block("list", items=[comparison_sentence(c, cell_text)
                                        for c, cell_text in zip(inputs.comparisons, cell_texts)
                                        if c["metric"] == metric])]
        forest = by_name.pop(f"forest_{metric}", None)
        if forest:
            blocks.append(Block("figure", items=[forest]))
    blocks += figure_blocks(list(by_name.values()))
    blocks += [Block("heading", "Verdict table", level=3),
               Block("table", columns=VERDICT_COLUMNS,
                     items=[verdict_row(c) for c in inputs.comparisons])]
    return blocks


def _md_cell(value) -> str:
    if isinstance(value, Cell):
        value = f"**{value.bold}**{value.text}" if value.bold else value.text
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for block in blocks:
        if block.kind == "heading":
            out.append(f"{'#' * block.level} {block.text}")
        elif block.kind == "status":
            out.append(f"> **{block.text}**" if block.level else f"> {block.text}")
        elif block.kind == "paragraph":
            out.append(block.text)
        elif block.kind == "list":
            out.append("\n".join(f"- {item}" for item in block.items))
        elif block.kind == "table":
            lines = ["| " + " | ".join(_md_cell(c) for c in block.columns) + " |",
                     "|" + "|".join("---" for _ in block.columns) + "|"]
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.items]
            out.append("\n".join(lines))
        elif block.kind == "legend":  # colours only in HTML; the verdict words say it all
            continue
        elif block.kind == "code":
            out.append(f"```\n{block.text}\n```")
        elif block.kind == "figure":
            figure = block.items[0]
            out.append(f"![{figure.title}](figures/{figure.name}.png)\n\n*{figure.caption}*")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border-top: 1px solid #bbb; border-bottom: 1px solid #bbb; padding: 0.2em 0.5em;
         text-align: left; }
th { border-top: 2px solid #222; border-bottom: 1px solid #222; }
.status { padding: 0.6em 1em; border-left: 6px solid #029e73; background: #eef7f3; }
.status.problem { border-color: #d55e00; background: #fbeee6; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; }
pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.legend { font-size: 0.85em; }
.swatch { display: inline-block; width: 1.1em; height: 0.9em; margin: 0 0.3em 0 0.8em;
          vertical-align: middle; border: 1px solid #888; }
.swatch:first-child { margin-left: 0; }
""" + "".join(f".{verdict_class(v)} {{ background: {color}; }}\n"
              for v, color in VERDICT_COLORS.items())


def _html_cell(value) -> str:
    if not isinstance(value, Cell):
        return f"<td>{html.escape(str(value))}</td>"
    css = f' class="{html.escape(value.css_class)}"' if value.css_class else ""
    bold = f"<strong>{html.escape(value.bold)}</strong>" if value.bold else ""
    return f"<td{css}>{bold}{html.escape(value.text)}</td>"


def _inline_html(text: str) -> str:
    """Escaped ``text`` with Markdown's ``**bold**`` (the only inline markup the blocks use)
    as ``<strong>``."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def to_html(blocks: list[Block], png: dict[str, bytes]) -> str:
    """One HTML file with the PNGs inlined as data URIs and the styles inline."""
    esc = html.escape
    out = []
    for block in blocks:
        if block.kind == "heading":
            out.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif block.kind == "status":
            kind = "status problem" if block.level else "status"
            out.append(f'<p class="{kind}">{esc(block.text)}</p>')
        elif block.kind == "paragraph":
            out.append(f"<p>{_inline_html(block.text)}</p>")
        elif block.kind == "list":
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif block.kind == "table":
            head = "".join(f"<th>{esc(c)}</th>" for c in block.columns)
            body = "".join("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>"
                           for row in block.items)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif block.kind == "legend":
            out.append('<p class="legend">' + "".join(
                f'<span class="swatch {esc(css)}"></span>{esc(label)} '
                for css, label in block.items) + "</p>")
        elif block.kind == "code":
            out.append(f"<pre>{esc(block.text)}</pre>")
        elif block.kind == "figure":
            figure = block.items[0]
            data = base64.b64encode(png[figure.name]).decode("ascii")
            out.append(f'<figure><img alt="{esc(figure.title)}" '
                       f'src="data:image/png;base64,{data}">'
                       f"<figcaption>{esc(figure.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>causalloc report</title><style>" + _CSS + "</style></head><body>\n"
            + "\n".join(out) + "\n</body></html>\n")


def save_figure(figure: ReportFigure, folder: Path) -> tuple[Path, Path, bytes]:
    """Write figures/<name>.pdf and .png (PNG_DPI); return both paths and the PNG bytes.

    The PDF carries no creation date, so re-running a report gives identical files."""
    pdf_path, png_path = folder / f"{figure.name}.pdf", folder / f"{figure.name}.png"
    buffer = io.BytesIO()
    with paper_style():  # font embedding and tight bounding boxes are read at save time
        figure.figure.savefig(pdf_path, format="pdf", metadata={"CreationDate": None})
        figure.figure.savefig(buffer, format="png", dpi=PNG_DPI)
    png_path.write_bytes(buffer.getvalue())
    return pdf_path, png_path, buffer.getvalue()


def render_report(inputs: ReportInputs, out_dir: Path, report_command: str) -> dict:
    """Draw, lay out and write everything into ``out_dir``; return the written paths and the
    figures that were skipped with their reasons."""
    out_dir = Path(out_dir)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures, skipped = build_figures(inputs)
    figure_paths, png = [], {}
    for figure in figures:
        pdf_path, png_path, png[figure.name] = save_figure(figure, figure_dir)
        figure_paths += [pdf_path, png_path]
    blocks = report_blocks(inputs, figures, skipped, report_command)
    written = {"report_md": out_dir / "report.md", "report_html": out_dir / "report.html",
               "tables_tex": out_dir / "tables.tex"}
    written["report_md"].write_text(to_markdown(blocks), encoding="utf-8")
    written["report_html"].write_text(to_html(blocks, png), encoding="utf-8")
    written["tables_tex"].write_text(tables_tex(inputs), encoding="utf-8")
    return {**written, "figures": figure_paths, "skipped_figures": skipped}
