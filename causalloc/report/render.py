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
from dataclasses import dataclass, field
from pathlib import Path

from causalloc.report.figures import ReportFigure, build_figures
from causalloc.report.inputs import ReportInputs
from causalloc.report.style import PNG_DPI, metric_label, paper_style, varying_cell_labels
from causalloc.report.tables import tables_tex
from causalloc.report.text import (
    DOSE_RESPONSE_COLUMNS,
    MIXED_MODEL_COLUMNS,
    VERDICT_COLUMNS,
    caveats,
    comparison_sentence,
    design_status,
    dose_response_row,
    family_lines,
    mixed_model_row,
    reproducibility_lines,
    setup_items,
    verdict_row,
    verdict_summary,
)


@dataclass
class Block:
    """One piece of the report: kind is heading, status, paragraph, list, table, code or
    figure; ``items`` holds list items, table rows or, for a figure, its ReportFigure."""

    kind: str
    text: str = ""
    level: int = 2
    items: list = field(default_factory=list)
    columns: tuple = ()


def report_blocks(inputs: ReportInputs, figures: list[ReportFigure], skipped: dict[str, str],
                  report_command: str) -> list[Block]:
    """The report in reading order; the design status comes first, never buried."""
    status, status_text = design_status(inputs)
    blocks = [Block("heading", "causalloc report", level=1),
              Block("status", status_text, level={"complete": 0}.get(status, 1))]
    if inputs.comparisons:
        blocks.append(Block("paragraph", verdict_summary(inputs)))
    by_name = {f.name: f for f in figures}
    headline = by_name.get(f"forest_{inputs.headline_metric}")
    if headline:
        blocks += [Block("heading", "Headline"), Block("figure", items=[headline])]
    blocks += [Block("heading", "Setup"),
               Block("list", items=[f"{label}: {value}" for label, value in setup_items(inputs)])]
    blocks.append(Block("heading", "Results"))
    cell_texts = varying_cell_labels([c["cell"] for c in inputs.comparisons])
    for metric in inputs.metrics:
        blocks += [Block("heading", metric_label(metric), level=3),
                   Block("list", items=[comparison_sentence(c, cell_text)
                                        for c, cell_text in zip(inputs.comparisons, cell_texts)
                                        if c["metric"] == metric])]
    if not inputs.comparisons:
        blocks.append(Block("paragraph", "No comparison was made."))
    families = family_lines(inputs)
    if families:
        blocks += [Block("heading", "Families of hypotheses"),
                   Block("paragraph", "Each verdict's p (and TOST p) is adjusted within its "
                                      "family; the verdict table names the family."),
                   Block("list", items=families)]
    blocks += [Block("heading", "Verdict table"),
               Block("table", columns=VERDICT_COLUMNS,
                     items=[verdict_row(c) for c in inputs.comparisons])]
    models = inputs.analysis.get("mixed_models") or []
    if models:
        blocks += [Block("heading", "Pooled estimates (mixed models)"),
                   Block("table", columns=MIXED_MODEL_COLUMNS,
                         items=[mixed_model_row(m) for m in models])]
    entries = inputs.analysis.get("dose_response") or []
    if entries:
        blocks += [Block("heading", "Dose-response slopes"),
                   Block("table", columns=DOSE_RESPONSE_COLUMNS,
                         items=[dose_response_row(d) for d in entries])]
    others = [f for f in figures if f is not headline]
    if others:
        blocks.append(Block("heading", "Figures"))
        for figure in others:
            blocks += [Block("heading", figure.title, level=3), Block("figure", items=[figure])]
    notes = caveats(inputs, skipped)
    blocks += [Block("heading", "Caveats"),
               Block("list", items=notes) if notes else
               Block("paragraph", "None: every run finished, no block was dropped, no run "
                                  "was excluded, every mixed model converged and no "
                                  "comparison is inconclusive.")]
    blocks += [Block("heading", "Reproducibility"),
               Block("code", "\n".join(reproducibility_lines(inputs, report_command)))]
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


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
            lines = ["| " + " | ".join(block.columns) + " |",
                     "|" + "|".join("---" for _ in block.columns) + "|"]
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.items]
            out.append("\n".join(lines))
        elif block.kind == "code":
            out.append(f"```\n{block.text}\n```")
        elif block.kind == "figure":
            figure = block.items[0]
            out.append(f"![{figure.title}](figures/{figure.name}.png)\n\n"
                       f"*{figure.caption}* (PDF: `figures/{figure.name}.pdf`)")
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
"""


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
            out.append(f"<p>{esc(block.text)}</p>")
        elif block.kind == "list":
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif block.kind == "table":
            head = "".join(f"<th>{esc(c)}</th>" for c in block.columns)
            body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>"
                           for row in block.items)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
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
