"""The answer a report opens with: one table and the two sentences under it.

Rows are comparison x cell (``oracle vs random | graddiff``: the cell part names only the
block columns that differ between rows), columns the primary metrics; each cell holds the
verdict, the mean difference a - b with its 95% CI and the number of blocks used, e.g.
``oracle better: +0.199 [0.162, 0.247], n=8``. Estimates are rounded as in the sentences
(2 significant digits of the CI width). The sentences under the table name the test each
verdict rests on, the SESOI of the equivalence test and the family adjustment.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from causalloc.errors import DataError
from causalloc.report.inputs import ReportInputs
from causalloc.report.text import (
    ADJUSTMENT_NAMES,
    estimate_decimals,
    fmt_fixed,
    is_number,
    plural,
    verdict_test,
    verdict_word,
)
from causalloc.vocab import metric_label, varying_cell_labels

#: most metric columns of the answer table
MAX_ANSWER_METRICS = 3
#: metrics shown after the declared primary ones when compared: the two the seed paper's
#: results table reports (Lee et al. 2025: AUES and MU95)
SEED_PAPER_METRICS = ("aues", "mu95")
#: verdicts the data decided (bold in Markdown); ``inconclusive`` is the only other one
DECIDED_VERDICTS = ("a_better", "b_better", "equivalent", "negligible")
NOT_COMPARED = "not compared"
#: the HTML legend of the verdict colours (``style.VERDICT_COLORS``)
VERDICT_LEGEND = {
    "a_better": "a better (the first condition of the row)",
    "b_better": "b better (the second)",
    "equivalent": "equivalent (inside +-SESOI)",
    "negligible": "different but negligible",
    "inconclusive": "inconclusive",
}


@dataclass
class AnswerRow:
    """One row of the answer table: the pair, the cell (only the block columns that differ
    between rows; empty when all rows share one cell) and the comparison behind each metric
    column (None where that metric was not compared)."""

    pair: str
    cell: str
    comparisons: list[dict | None]


def primary_families(inputs: ReportInputs) -> set[str]:
    """Names of the families analysis.json declares primary (``families[].role``)."""
    return {f.get("name") for f in inputs.analysis.get("families") or []
            if f.get("role") == "primary"}


def answer_metrics(inputs: ReportInputs) -> list[str]:
    """The metric columns: ``policy.primary_metric`` (else the headline metric), the metrics
    of the declared primary family, then AUES and MU95 when compared; at most
    MAX_ANSWER_METRICS, only metrics with comparisons."""
    primary = (inputs.analysis.get("policy") or {}).get("primary_metric")
    families = primary_families(inputs)
    candidates = [primary or inputs.headline_metric]
    candidates += [c["metric"] for c in inputs.comparisons if c.get("family") in families]
    candidates += SEED_PAPER_METRICS
    compared = set(inputs.metrics)
    return [m for m in dict.fromkeys(candidates) if m in compared][:MAX_ANSWER_METRICS]


def _key(comparison: dict) -> tuple[str, str, str]:
    return comparison["a"], comparison["b"], json.dumps(comparison["cell"], sort_keys=True,
                                                        default=str)


def answer_rows(inputs: ReportInputs, metrics: list[str]) -> list[AnswerRow]:
    """One row per (a, b, cell) compared on any of ``metrics``: pairs holding a primary-family
    hypothesis first, otherwise in the analysis' order, cells in order within a pair."""
    shown = [c for c in inputs.comparisons if c["metric"] in metrics]
    by_key: dict[tuple, dict[str, dict]] = {}
    for c in shown:
        by_key.setdefault(_key(c), {}).setdefault(c["metric"], c)
    families = primary_families(inputs)
    primary_pairs = {(c["a"], c["b"]) for c in shown if c.get("family") in families}
    pairs = list(dict.fromkeys((a, b) for a, b, _ in by_key))
    pairs.sort(key=lambda pair: pair not in primary_pairs)
    keys = [key for pair in pairs for key in by_key if key[:2] == pair]
    cells = [next(iter(by_key[key].values()))["cell"] for key in keys]
    labels = varying_cell_labels(cells) if len({key[2] for key in keys}) > 1 else [""] * len(keys)
    return [AnswerRow(f"{a} vs {b}", label, [by_key[(a, b, cell)].get(m) for m in metrics])
            for (a, b, cell), label in zip(keys, labels)]


def label_columns(rows: list[AnswerRow]) -> tuple[str, ...]:
    """``("comparison", "algorithm")``: the second names the block columns that differ
    between the rows' cells, and is absent when every row has the same cell."""
    if not any(row.cell for row in rows):
        return ("comparison",)
    cells = [c["cell"] for row in rows for c in row.comparisons if c]
    varying = [k for k in dict.fromkeys(k for cell in cells for k in cell)
               if len({repr(cell.get(k)) for cell in cells}) > 1]
    return ("comparison", ", ".join(varying))


def metric_header(metric: str, comparisons: list[dict]) -> str:
    """``AUES (a - b)``, with ``lower is better`` where the analysis says so."""
    lower = any(c.get("higher_is_better") is False for c in comparisons
                if c["metric"] == metric)
    return f"{metric_label(metric)} (a - b{', lower is better' if lower else ''})"


def answer_cell_parts(comparison: dict | None) -> tuple[str, str]:
    """(verdict words, the rest) of an answer cell: ``("oracle better",
    ": +0.199 [0.162, 0.247], n=8")``; ``("", "not compared")`` for None."""
    if comparison is None:
        return "", NOT_COMPARED
    c = comparison
    lo, hi = (list(c["ci95"] or []) + [None, None])[:2]
    decimals = estimate_decimals(lo, hi, c["mean_diff"])
    estimate = (f"{c['mean_diff']:+.{decimals}f}" if is_number(c["mean_diff"])
                else fmt_fixed(None, decimals))
    return verdict_word(c), (f": {estimate} [{fmt_fixed(lo, decimals)}, "
                             f"{fmt_fixed(hi, decimals)}], n={c['n_blocks']}")


def answer_cell(comparison: dict | None) -> str:
    """``oracle better: +0.199 [0.162, 0.247], n=8`` (``not compared`` for None)."""
    return "".join(answer_cell_parts(comparison))


def is_decided(comparison: dict | None) -> bool:
    return comparison is not None and comparison["verdict"] in DECIDED_VERDICTS


def _test_phrase(test: str, comparisons: list[dict]) -> str:
    if test == "randomization":
        k_values = sorted({c["k_random"] for c in comparisons if is_number(c.get("k_random"))})
        k = " or ".join(map(str, k_values)) or "K"
        return (f"the randomization test of a against the K = {k} random draws of b's mask in "
                "each block (stratified by block)")
    exact = all(c.get("p_perm_exact") for c in comparisons)
    return (f"the {'exact ' if exact else ''}sign-flip permutation test of the paired "
            "differences over blocks")


def answer_notes(inputs: ReportInputs, rows: list[AnswerRow]) -> list[str]:
    """The sentences under the answer table: what a cell shows and the test behind its
    verdict; the SESOI of the equivalence test; the family adjustment."""
    shown = [c for row in rows for c in row.comparisons if c]
    policy = inputs.analysis.get("policy") or {}
    alpha = policy.get("alpha", 0.05)
    by_test: dict[str, list[dict]] = {}
    for c in shown:
        by_test.setdefault(verdict_test(c), []).append(c)
    if len(by_test) == 1:
        (test, members), = by_test.items()
        tests = _test_phrase(test, members)
    else:
        tests = "; ".join(f"{_test_phrase(t, m)} for {plural(len(m), 'cell')}"
                          for t, m in by_test.items())
    methods = Counter(c.get("ci95_method") for c in shown if c.get("ci95_method"))
    interval = f"{methods.most_common(1)[0][0]} " if methods else ""
    first = (f"Each cell: the verdict (bold when decided), the mean difference a - b over "
             f"blocks with its 95% {interval}CI, and n, the number of blocks. Verdicts rest on "
             f"{tests}, at alpha = {alpha:g}.")
    sesoi = {}
    for c in shown:
        if is_number(c.get("sesoi")):
            sesoi.setdefault(c["metric"], c["sesoi"])
    equivalence = ("Equivalent: TOST puts the difference inside +-SESOI ("
                   + ", ".join(f"{metric_label(m)} {v:g}" for m, v in sesoi.items())
                   + ")." if sesoi else
                   "No SESOI was set, so no cell can be judged equivalent.")
    return [first, f"{equivalence} {_family_sentence(inputs, shown)}"]


def _family_sentence(inputs: ReportInputs, shown: list[dict]) -> str:
    """How the p-values of the cells shown were adjusted for multiplicity."""
    adjust = ", ".join(dict.fromkeys(ADJUSTMENT_NAMES.get(c["adj_method"], str(c["adj_method"]))
                                     for c in shown if c.get("adj_method")))
    if not adjust:
        return "The p-values are not adjusted for multiplicity."
    families = {f.get("name"): f for f in inputs.analysis.get("families") or []}
    primary = [c for c in shown if c.get("family") in primary_families(inputs)]
    if not families or not primary:
        n_families = len({c.get("family") for c in shown})
        return (f"The p-values (and TOST p) are {adjust}-adjusted within each comparison's "
                f"family ({plural(n_families, 'family', 'families')} among the cells shown).")
    names = list(dict.fromkeys(c["family"] for c in primary))
    against: dict[str, list[str]] = {}
    for c in primary:
        against.setdefault(c["b"], []).append(c["a"])
    pairs = "; ".join(f"{', '.join(dict.fromkeys(a))} vs {b}" for b, a in against.items())
    metrics = ", ".join(dict.fromkeys(metric_label(c["metric"]) for c in primary))
    total = sum(families[name].get("n_comparisons", 0) for name in names if name in families)
    controls = families[names[0]].get("controls", "family-wise error rate")
    content = f"{plural(total, 'hypothesis', 'hypotheses')}: {metrics} of {pairs}"
    which = (f"the primary family ({content}) controls" if len(names) == 1 else
             f"the primary families {', '.join(names)} ({content} in all) each control")
    sentence = (f"The p-values (and TOST p) are {adjust}-adjusted within declared families: "
                f"{which} the {controls}")
    others = list(dict.fromkeys(c.get("family") for c in shown if c.get("family") not in names))
    if others:
        sentence += (f"; the other cells belong to secondary families "
                     f"({', '.join(map(str, others))}), adjusted apart from the primary one")
    return sentence + "."


def side_by_side(labelled: dict[str, ReportInputs], metric: str) -> str:
    """Markdown: analyses of one design (e.g. on two testbeds) side by side on ``metric``.

    One header line per analysis with its testbed diagnostics (whether V_tgt can be read off
    the weights), then one row per comparison x cell that every analysis compared on the
    metric and one column per analysis, each cell as in the reports' answer table.
    """
    from causalloc.report.text import describe_testbed

    if len(labelled) < 2:
        raise DataError(f"side by side: needs at least two analyses, got {len(labelled)}")
    rows = {label: answer_rows(inputs, [metric]) for label, inputs in labelled.items()}
    keyed = {label: {(row.pair, row.cell): row.comparisons[0] for row in r} for label, r in rows.items()}
    first = next(iter(rows.values()))
    keys = [(row.pair, row.cell) for row in first if all((row.pair, row.cell) in k for k in keyed.values())]
    if not keys:
        raise DataError(f"side by side: no comparison on {metric!r} is in every analysis "
                        f"({', '.join(labelled)})")
    header = [*label_columns(first), *(f"{label}: {metric_label(metric)} (a - b)" for label in labelled)]
    lines = [f"- {label}: {describe_testbed((inputs.analysis.get('setup') or {}).get('testbed') or {})}"
             for label, inputs in labelled.items()]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair, cell in keys:
        cells = [answer_cell(keyed[label][(pair, cell)]) for label in labelled]
        lines.append("| " + " | ".join([pair, *([cell] if cell else []), *cells]) + " |")
    return "\n".join(lines) + "\n"
