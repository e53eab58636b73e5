"""The question a report is titled by and the answer it opens with.

The question is analysis.json's ``question`` (the analysis spec's) or is built from the
headline comparisons (the primary family's, on the first answer metric): ``Does oracle beat
random on AUES? (ga, graddiff; tiny model, generated data)``. The ``**Answer:**`` paragraph
counts their verdicts per pair over the cells (``oracle beats random for 4 of 6 objectives
(dpo, npo, rmu, wga), random beats oracle for 2 (ga, graddiff)``), or per cell when many
conditions face one baseline. A family that cannot reject at its size (analysis.json
``families[].can_reject`` false) is said once under it, with the blocks its comparisons
would need; its inconclusive cells then show the estimate and CI with a mark instead of the
word "inconclusive".

Then one table and the two sentences under it.

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
from causalloc.vocab import condition_prefix, is_primary_family, metric_label, varying_cell_labels

#: most metric columns of the answer table
MAX_ANSWER_METRICS = 3
#: metrics shown after the declared primary ones when compared: the two the seed paper's
#: results table reports (Lee et al. 2025: AUES and MU95)
SEED_PAPER_METRICS = ("aues", "mu95")
#: verdicts the data decided (bold in Markdown); ``inconclusive`` is the only other one
DECIDED_VERDICTS = ("a_better", "b_better", "equivalent", "negligible")
NOT_COMPARED = "not compared"
#: marks an answer cell whose family cannot reject at its size (said once, above the table)
CANNOT_REJECT_MARK = "†"
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


def estimate_text(comparison: dict) -> str:
    """``+0.199 [0.162, 0.247]``: the mean difference and its 95% CI, rounded to 2
    significant digits of the CI width."""
    c = comparison
    lo, hi = (list(c["ci95"] or []) + [None, None])[:2]
    decimals = estimate_decimals(lo, hi, c["mean_diff"])
    estimate = (f"{c['mean_diff']:+.{decimals}f}" if is_number(c["mean_diff"])
                else fmt_fixed(None, decimals))
    return f"{estimate} [{fmt_fixed(lo, decimals)}, {fmt_fixed(hi, decimals)}]"


def answer_cell_parts(comparison: dict | None, undecidable: bool = False) -> tuple[str, str]:
    """(verdict words, the rest) of an answer cell: ``("oracle better",
    ": +0.199 [0.162, 0.247], n=8")``; ``("", "not compared")`` for None. An inconclusive
    comparison of a family that cannot reject at its size (``undecidable``) gets no verdict
    word but the mark: ``("", "-0.214 [-0.248, -0.178], n=8 †")``."""
    if comparison is None:
        return "", NOT_COMPARED
    c = comparison
    rest = f"{estimate_text(c)}, n={c['n_blocks']}"
    if undecidable and c["verdict"] == "inconclusive":
        return "", f"{rest} {CANNOT_REJECT_MARK}"
    return verdict_word(c), f": {rest}"


def answer_cell(comparison: dict | None, undecidable: bool = False) -> str:
    """``oracle better: +0.199 [0.162, 0.247], n=8`` (``not compared`` for None)."""
    return "".join(answer_cell_parts(comparison, undecidable))


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
        cells = [answer_cell(keyed[label][(pair, cell)],
                             undecidable(labelled[label], keyed[label][(pair, cell)]))
                 for label in labelled]
        lines.append("| " + " | ".join([pair, *([cell] if cell else []), *cells]) + " |")
    return "\n".join(lines) + "\n"


# --- the question and the answer the report opens with (issue 24) -------------------------


def families_by_name(inputs: ReportInputs) -> dict[str, dict]:
    return {f.get("name"): f for f in inputs.analysis.get("families") or []
            if isinstance(f, dict)}


def undecidable(inputs: ReportInputs, comparison: dict | None) -> bool:
    """Whether ``comparison``'s family cannot reject at its size (``families[].can_reject``
    false in analysis.json: its smallest reachable adjusted p exceeds alpha)."""
    if comparison is None:
        return False
    family = families_by_name(inputs).get(comparison.get("family"))
    return bool(family) and family.get("can_reject") is False


def headline_comparisons(inputs: ReportInputs) -> list[dict]:
    """The comparisons the question and the answer are about: those of the first answer
    metric in the declared primary families; else in families named ``primary...``; else
    every comparison of that metric outside the ``controls`` families."""
    metrics = answer_metrics(inputs)
    if not metrics:
        return []
    shown = [c for c in inputs.comparisons if c["metric"] == metrics[0]]
    families = primary_families(inputs)
    for keep in (lambda c: c.get("family") in families,
                 lambda c: is_primary_family(c.get("family") or ""),
                 lambda c: not str(c.get("family") or "").startswith("controls")):
        chosen = [c for c in shown if keep(c)]
        if chosen:
            return chosen
    return shown


def _varying(cells: list[dict]) -> list[str]:
    """Cell columns whose value differs between ``cells``."""
    return [k for k in dict.fromkeys(k for cell in cells for k in cell)
            if len({repr(cell.get(k)) for cell in cells}) > 1]


def _names(conditions: list[str], joiner: str = "and") -> str:
    """``oracle``, ``oracle and random``; four or more of one kind are summarised:
    ``5 attributed conditions (activations, memflex, ...)``."""
    kinds = {condition_prefix(c) for c in conditions}
    if len(conditions) > 3 and len(kinds) == 1:
        kind = kinds.pop()
        rest = [c.split(":", 1)[1] if ":" in c else c for c in conditions]
        return f"{len(conditions)} {kind} conditions ({', '.join(rest)})"
    if len(conditions) <= 2:
        return f" {joiner} ".join(conditions)
    return f"{', '.join(conditions[:-1])} {joiner} {conditions[-1]}"


def _context(inputs: ReportInputs, comparisons: list[dict]) -> str:
    """``graddiff, rmu; tiny model, generated data``: what the cells span, and the setup."""
    cells = [c["cell"] for c in comparisons]
    parts = []
    for key in _varying(cells):
        values = ", ".join(str(v) for v in dict.fromkeys(cell.get(key) for cell in cells))
        parts.append(values if key == "algorithm" else f"{key} {values}")
    setup = inputs.analysis.get("setup") or {}
    what = ", ".join(f"{setup[key]} {key}" for key in ("model", "data")
                     if isinstance(setup.get(key), str) and setup[key])
    injection = (setup.get("testbed") or {}).get("injection")
    if what and isinstance(injection, str) and injection:
        what += f", {injection.replace('_', '-')} injection"
    if not what:
        what = str(inputs.input_spec.get("source") or "").rstrip("/").rsplit("/", 1)[-1]
    return "; ".join(p for p in ("; ".join(parts), what) if p)


def report_question(inputs: ReportInputs) -> str:
    """The report's title: analysis.json's ``question`` (the analysis spec's), else one built
    from the headline comparisons, e.g. ``Does oracle beat random and disjoint:oracle on
    AUES? (ga, graddiff; tiny model, generated data)``."""
    question = inputs.analysis.get("question")
    if isinstance(question, str) and question.strip():
        return " ".join(question.split())
    chosen = headline_comparisons(inputs)
    context = _context(inputs, chosen or inputs.comparisons)
    suffix = f" ({context})" if context else ""
    if not chosen:
        return f"What does this analysis show?{suffix}"
    metric = metric_label(chosen[0]["metric"])
    against: dict[str, list[str]] = {}
    for c in chosen:
        against.setdefault(c["a"], [])
        if c["b"] not in against[c["a"]]:
            against[c["a"]].append(c["b"])
    baselines = {tuple(bs) for bs in against.values()}
    if len(baselines) == 1:  # every condition against the same baselines: one clause
        a_names, b_names = list(against), list(baselines.pop())
        verb = "Does" if len(a_names) == 1 and "conditions (" not in _names(a_names) else "Do"
        return f"{verb} {_names(a_names)} beat {_names(b_names, 'or')} on {metric}?{suffix}"
    clauses = [f"{a} beat {_names(bs, 'or')}" for a, bs in against.items()]
    return (f"Does {', and does '.join(clauses)}, on {metric}?{suffix}")


def _members(items: list[tuple[str, dict]], with_estimates: bool) -> str:
    """The cells of one verdict group, each with its estimate when asked; ``; `` between
    labels that hold commas themselves."""
    texts = [f"{label} {estimate_text(c)}".strip() if with_estimates else label
             for label, c in items]
    return ("; " if any("," in label for label, _ in items) else ", ").join(t for t in texts if t)


def _tally(items: list[tuple[str, dict]], a: str, b: str, unit: str,
           with_estimates: bool) -> str:
    """``oracle beats random for 4 of 6 objectives (dpo, npo, rmu, wga), random beats oracle
    for 2 (ga, graddiff)``: one pair's verdicts over its cells, largest count first; a group
    spanning every cell is not listed (``for all 6 objectives``) unless estimates are shown."""
    groups = {v: [(label, c) for label, c in items if c["verdict"] == v]
              for v in ("a_better", "b_better", "equivalent", "negligible", "inconclusive")}
    phrases = {"a_better": f"{a} beats {b}", "b_better": f"{b} beats {a}",
               "equivalent": "equivalent (inside +-SESOI)",
               "negligible": "different but negligible (inside +-SESOI)",
               "inconclusive": "undecided"}
    order = sorted((v for v in groups if groups[v]), key=lambda v: -len(groups[v]))
    parts = []
    for i, verdict in enumerate(order):
        members = groups[verdict]
        every = len(members) == len(items)
        if i == 0:
            count = (("both " if len(items) == 2 else f"all {len(items)} ") + unit
                     if every and len(items) > 1 else f"{len(members)} of {len(items)} {unit}")
        else:
            count = str(len(members))
        labels = _members(members, with_estimates) if with_estimates or not every else ""
        where = f" ({labels})" if labels else ""
        if verdict in ("a_better", "b_better"):
            parts.append(f"{phrases[verdict]} for {count}{where}")
        elif i == 0:
            parts.append(f"{a} vs {b}: {phrases[verdict]} for {count}{where}")
        else:
            parts.append(f"{count} {phrases[verdict]}{where}")
    return ", ".join(parts)


def _tally_conditions(items: list[tuple[str, dict]], b: str) -> str:
    """``4 of 5 conditions beat random (activations, ...), random beats 1 (weight_norm)``:
    several conditions against one baseline ``b`` in one cell, largest count first."""
    phrases = {"a_better": f"beat {b}", "b_better": f"{b} beats", "equivalent": "equivalent",
               "negligible": "different but negligible", "inconclusive": "undecided"}
    groups = {v: [label for label, c in items if c["verdict"] == v] for v in phrases}
    order = sorted((v for v in groups if groups[v]), key=lambda v: -len(groups[v]))
    parts = []
    for i, verdict in enumerate(order):
        every = len(groups[verdict]) == len(items) > 1
        count = (("both" if len(items) == 2 else f"all {len(items)}") + " conditions" if every
                 else f"{len(groups[verdict])} of {len(items)} conditions" if i == 0
                 else str(len(groups[verdict])))
        members = f" ({', '.join(groups[verdict])})"
        parts.append(f"{b} beats {count}{members}" if verdict == "b_better"
                     else f"{count} {phrases[verdict]}{members}")
    return ", ".join(parts)


def answer_paragraph(inputs: ReportInputs) -> str:
    """``**Answer:** ...``: the headline comparisons' verdicts counted per pair over the
    cells (objectives), with the cells named, estimates when a pair has at most 3 cells,
    and the equivalence bound; built from the verdicts, never written by hand."""
    chosen = headline_comparisons(inputs)
    if not chosen:
        return "**Answer:** none: the analysis holds no comparison."
    metric = metric_label(chosen[0]["metric"])
    if chosen[0].get("higher_is_better") is False:
        metric += " (lower is better)"
    varying = _varying([c["cell"] for c in chosen])
    unit = "objectives" if varying == ["algorithm"] else "cells"
    labels = varying_cell_labels([c["cell"] for c in chosen]) if varying else [""] * len(chosen)
    pairs = list(dict.fromkeys((c["a"], c["b"]) for c in chosen))
    cells = list(dict.fromkeys(labels))
    sentences = []
    if len(pairs) > len(cells) > 1 and len({b for _, b in pairs}) == 1:
        # many conditions against one baseline: count the conditions per cell instead
        b = pairs[0][1]
        names = [a for a, _ in pairs]
        kinds = {condition_prefix(a) for a in names}
        short = {a: a.split(":", 1)[1] if len(kinds) == 1 and ":" in a else a for a in names}
        for cell in cells:
            items = [(short[c["a"]], c) for c, label in zip(chosen, labels) if label == cell]
            sentences.append(f"under {cell}, {_tally_conditions(items, b)}")
        text = f"On {metric} against {b}: " + "; ".join(sentences) + "."
    else:
        for a, b in pairs:
            items = [(label, c) for c, label in zip(chosen, labels) if (c["a"], c["b"]) == (a, b)]
            sentences.append(_tally(items, a, b, unit, len(items) <= 3))
        text = f"On {metric}, " + "; ".join(sentences) + "."
    sesoi = next((c["sesoi"] for c in chosen if is_number(c.get("sesoi"))), None)
    if sesoi is not None and not any(c["verdict"] in ("equivalent", "negligible") for c in chosen):
        text += f" No equivalence at SESOI {sesoi:g}."
    if all(undecidable(inputs, c) for c in chosen):
        text += " No verdict is possible at this size (below)."
    return f"**Answer:** {text}"


def family_limits(inputs: ReportInputs) -> list[str]:
    """One paragraph on the families that cannot reject at their size (analysis.json
    ``families[].can_reject`` false, with ``min_p_adj``, the smallest adjusted p reachable):
    said once here, so that their cells show the estimate and CI without repeating
    "inconclusive"; with the blocks the comparisons would need (``blocks_needed``)."""
    alpha = (inputs.analysis.get("policy") or {}).get("alpha", 0.05)
    limited = [f for f in families_by_name(inputs).values() if f.get("can_reject") is False]
    if not limited:
        return []
    shown = {c.get("family") for c in headline_comparisons(inputs)}
    main = [f for f in limited if f.get("name") in shown] or limited[:1]
    lines = []
    for family in main:
        members = [c for c in inputs.comparisons if c.get("family") == family.get("name")]
        blocks = sorted({c["n_blocks"] for c in members if is_number(c.get("n_blocks"))})
        needed = sorted(c["blocks_needed"] for c in members if is_number(c.get("blocks_needed")))
        size = plural(family.get("n_comparisons", len(members)), "hypothesis", "hypotheses")
        at = f" at {'-'.join(map(str, blocks[::max(1, len(blocks) - 1)]))} blocks" if blocks else ""
        reach = (f": its smallest reachable adjusted p is {family['min_p_adj']:.2g} > alpha = "
                 f"{alpha:g}" if is_number(family.get("min_p_adj")) else "")
        need = ""
        if needed:
            span = f"{needed[0]}" if needed[0] == needed[-1] else f"{needed[0]} to {needed[-1]}"
            need = f" A verdict would need about {span} blocks per comparison (blocks_needed)."
        lines.append(f"{CANNOT_REJECT_MARK} The family {family.get('name')} ({size}{at}) "
                     f"cannot reject at its size{reach}; its cells show the estimate and 95% "
                     f"CI without a verdict.{need}")
    others = [f.get("name") for f in limited if f not in main]
    if others:
        lines.append(f"Also unable to reject at their size: {', '.join(map(str, others))} "
                     "(their comparisons are listed in the appendix).")
    return lines
