"""Booktabs LaTeX tables (``tables.tex``): verdicts, pooled mixed-model estimates and
dose-response slopes, written with pandas' Styler (``\\toprule``/``\\midrule``/``\\bottomrule``
need ``\\usepackage{booktabs}``); cell text is LaTeX-escaped by pandas."""

from __future__ import annotations

import pandas as pd

from causalloc.report.inputs import ReportInputs
from causalloc.report.text import dose_response_row, mixed_model_row, verdict_row

#: LaTeX headers of the verdict table, one per ``text.VERDICT_COLUMNS`` entry
VERDICT_HEADERS = ("Comparison", "Cell", "Metric", "Family", "$n$", r"$\bar{\Delta}$",
                   r"95\% CI", "$d_z$", "Test", "$p$", r"$p_\mathrm{adj}$",
                   r"$p_\mathrm{TOST,adj}$", "Verdict", "Blocks needed")


def latex_table(rows: list[list[str]], headers: list[str] | tuple[str, ...], caption: str,
                label: str, align: str, wide: bool = False) -> str:
    """A floating booktabs table; ``headers`` are LaTeX already, ``rows`` plain text."""
    frame = pd.DataFrame(rows, columns=list(headers))
    tabular = (frame.style.hide(axis="index").format(escape="latex")
               .to_latex(hrules=True, column_format=align))
    environment = "table*" if wide else "table"
    return (f"\\begin{{{environment}}}\n\\centering\n\\small\n\\caption{{{caption}}}\n"
            f"\\label{{{label}}}\n{tabular}\\end{{{environment}}}\n")


def verdict_table(inputs: ReportInputs) -> str:
    rows = [verdict_row(c) for c in inputs.comparisons]
    return latex_table(rows, VERDICT_HEADERS,
                       "Paired comparisons: mean difference (a $-$ b) over blocks with 95\\% CI, "
                       "effect size $d_z$, the verdict test's $p$ (randomization against the "
                       "$K$ random masks, else sign-flip), its $p$ and the TOST $p$ against "
                       "the SESOI adjusted within the family, and the verdict.",
                       "tab:verdicts", "llllrrlrlrrrlr", wide=True)


def mixed_model_table(inputs: ReportInputs) -> str | None:
    models = inputs.analysis.get("mixed_models") or []
    if not models:
        return None
    return latex_table([mixed_model_row(m) for m in models],
                       ["Metric", "Contrast", "Estimate", r"95\% CI", "$p$", "$n$", "Fit",
                        "Converged", "Formula"],
                       "Pooled condition effects from linear mixed models.",
                       "tab:mixed", "llrlrrlll", wide=True)


def dose_response_table(inputs: ReportInputs) -> str | None:
    entries = inputs.analysis.get("dose_response") or []
    if not entries:
        return None
    return latex_table([dose_response_row(d) for d in entries],
                       ["Metric", "Predictor", "Cell", "Slope", r"95\% CI", "$p$", "$n$"],
                       "Dose-response slopes (metric per unit of budget or overlap).",
                       "tab:dose", "lllrlrr")


def tables_tex(inputs: ReportInputs) -> str:
    """The content of tables.tex: every table of the report, ready to ``\\input``."""
    parts = ["% causalloc report tables; needs \\usepackage{booktabs}\n", verdict_table(inputs)]
    parts += [t for t in (mixed_model_table(inputs), dose_response_table(inputs)) if t]
    return "\n".join(parts)
