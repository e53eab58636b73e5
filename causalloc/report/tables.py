"""Booktabs LaTeX tables (``tables.tex``): the answer table (decided verdicts in bold), the
localization accuracy, verdicts, pooled mixed-model estimates and dose-response slopes,
written with pandas' Styler (``\\toprule``/``\\midrule``/``\\bottomrule``
need ``\\usepackage{booktabs}``); cell text is LaTeX-escaped by pandas."""

from __future__ import annotations

import pandas as pd

from causalloc.report.answer import (
    CANNOT_REJECT_MARK,
    answer_cell,
    answer_metrics,
    answer_rows,
    is_decided,
    label_columns,
    metric_header,
    undecidable,
)
from causalloc.report.inputs import ReportInputs
from causalloc.report.localization import target_accuracy
from causalloc.report.text import (
    LOCALIZATION_COLUMNS,
    dose_response_row,
    localization_row,
    mixed_model_row,
    verdict_row,
)

#: LaTeX headers of the verdict table, one per ``text.VERDICT_COLUMNS`` entry
VERDICT_HEADERS = ("Comparison", "Cell", "Metric", "Family", "$n$", r"$\bar{\Delta}$",
                   r"95\% CI", "$d_z$", "Test", "$p$", r"$p_\mathrm{adj}$",
                   r"$p_\mathrm{TOST,adj}$", "Verdict", "Blocks needed")


def latex_table(rows: list[list[str]], headers: list[str] | tuple[str, ...], caption: str,
                label: str, align: str, wide: bool = False, bold: list[list[bool]] | None = None,
                escape_headers: bool = False) -> str:
    """A floating booktabs table of plain-text ``rows``; ``headers`` are LaTeX already unless
    ``escape_headers``; cells where ``bold`` is true are set in ``\\textbf``."""
    frame = pd.DataFrame(rows, columns=list(headers))
    styler = frame.style.hide(axis="index").format(escape="latex")
    if escape_headers:
        styler = styler.format_index(escape="latex", axis=1)
    if bold is not None:
        css = pd.DataFrame([["textbf: --rwrap;" if b else "" for b in row] for row in bold],
                           index=frame.index, columns=frame.columns)
        styler = styler.apply(lambda _: css, axis=None)
    # the answer table's mark of a family that cannot reject: a dagger pdflatex can set
    tabular = styler.to_latex(hrules=True, column_format=align).replace(CANNOT_REJECT_MARK,
                                                                         r"$^\dagger$")
    environment = "table*" if wide else "table"
    return (f"\\begin{{{environment}}}\n\\centering\n\\small\n\\caption{{{caption}}}\n"
            f"\\label{{{label}}}\n{tabular}\\end{{{environment}}}\n")


def answer_table(inputs: ReportInputs) -> str | None:
    """The answer table of the report's opening, one column per primary metric."""
    metrics = answer_metrics(inputs)
    rows = answer_rows(inputs, metrics)
    if not rows:
        return None
    labels = label_columns(rows)
    cells = [[row.pair, row.cell][:len(labels)]
             + [answer_cell(c, undecidable(inputs, c)) for c in row.comparisons]
             for row in rows]
    bold = [[False] * len(labels) + [is_decided(c) for c in row.comparisons] for row in rows]
    return latex_table(cells, [*labels, *(metric_header(m, inputs.comparisons) for m in metrics)],
                       "Verdicts (bold: decided), mean difference $a - b$ over blocks with its "
                       "95\\% CI, and the number of blocks $n$; the report names the test, "
                       "SESOI and family behind each verdict.",
                       "tab:answer", "l" * (len(labels) + len(metrics)), wide=True, bold=bold,
                       escape_headers=True)


def localization_table(inputs: ReportInputs) -> str | None:
    table = target_accuracy(inputs)
    if table is None:
        return None
    return latex_table([localization_row(row) for row in table.to_dict("records")],
                       LOCALIZATION_COLUMNS,
                       "Localization accuracy against the testbed's oracle region V\\_tgt: "
                       "precision, recall and Jaccard overlap of each mask.",
                       "tab:localization", "lrrrrr", escape_headers=True)


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
    return latex_table([mixed_model_row(m, inputs.comparisons) for m in models],
                       ["Metric", "Contrast", "Estimate", r"95\% CI", "$p$", "$n$",
                        "Signs across cells", "Fit", "Converged", "Formula"],
                       "Pooled condition effects from linear mixed models.",
                       "tab:mixed", "llrlrrllll", wide=True)


def dose_response_table(inputs: ReportInputs) -> str | None:
    entries = inputs.analysis.get("dose_response") or []
    if not entries:
        return None
    return latex_table([dose_response_row(d) for d in entries],
                       ["Metric", "Predictor", "Condition", "Cell", "Slope", r"95\% CI", "$p$",
                        "$n$"],
                       "Dose-response slopes (metric per unit of budget or overlap).",
                       "tab:dose", "llllrlrr")


def tables_tex(inputs: ReportInputs) -> str:
    """The content of tables.tex: every table of the report, ready to ``\\input``."""
    parts = ["% causalloc report tables; needs \\usepackage{booktabs}\n"]
    parts += [t for t in (answer_table(inputs), localization_table(inputs), verdict_table(inputs),
                          mixed_model_table(inputs), dose_response_table(inputs)) if t]
    return "\n".join(parts)
