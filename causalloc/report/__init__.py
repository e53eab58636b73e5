"""Reports from an analysis: report.md, a self-contained report.html, booktabs tables.tex and
paper figures (figures/*.pdf, figures/*.png at 300 dpi), from analysis.json plus, when found,
runs.csv and the mask files. Never imports torch.

A report is titled by its question (the analysis spec's ``question``, else built from the
comparisons) and opens with the answer (``causalloc.report.answer``: an ``**Answer:**``
paragraph counting the verdicts per pair, the families that cannot reject at their size,
then one table of verdicts, differences with their CI and blocks used, per comparison x cell
and primary metric), then the setup, the localization accuracy against V_tgt, the figures
and the other tables; every comparison's pasteable sentence is in the appendix.
``causalloc.report.index`` writes the index of a folder of reports (reports/README.md).

    >>> from causalloc.report import write_report
    >>> paths = write_report("runs/analysis")          # doctest: +SKIP
    >>> paths["report_html"]                             # doctest: +SKIP
    PosixPath('runs/analysis/report.html')

Each figure is also a function returning a matplotlib Figure (see ``causalloc.report.figures``).
"""

from __future__ import annotations

from pathlib import Path

from causalloc.report.figures import (
    dose_response,
    forest_plot,
    layerfit_residuals,
    mask_anatomy,
    null_distribution,
    paired_slopes,
    tradeoff_curves,
)
from causalloc.report.inputs import ReportInputs, load_inputs
from causalloc.report.render import render_report

__all__ = [
    "ReportInputs",
    "dose_response",
    "forest_plot",
    "layerfit_residuals",
    "load_inputs",
    "mask_anatomy",
    "null_distribution",
    "paired_slopes",
    "tradeoff_curves",
    "write_report",
]


def write_report(analysis_dir: str | Path, out_dir: str | Path | None = None,
                 command: str | None = None) -> dict:
    """Write the report of the analysis in ``analysis_dir`` (the folder holding analysis.json,
    or the file) into ``out_dir`` (default: that folder).

    Returns ``{"report_md", "report_html", "tables_tex": Path, "figures": [Path],
    "skipped_figures": {name: reason}}``. ``command`` is recorded in the reproducibility
    block (default: the equivalent ``causalloc report`` command line).
    """
    inputs = load_inputs(analysis_dir)
    out = Path(out_dir) if out_dir is not None else inputs.analysis_path.parent
    command = command or (f"causalloc report {inputs.analysis_path.parent}"
                          + (f" --out {out}" if out_dir is not None else ""))
    return render_report(inputs, out, command)
