"""The words of a report: design status, setup, one pasteable sentence per comparison, the
verdict table, caveats and the reproducibility block.

Everything here returns plain strings or rows of strings; ``render`` lays them out as
Markdown, HTML and LaTeX. Numbers in the verdict table carry 4 significant digits so that
they can be checked against analysis.json; sentences round estimates to the precision of
their confidence interval (2 significant digits of its width), as a paper would.
"""

from __future__ import annotations

import math
from collections import Counter

from causalloc.provenance import describe_environment
from causalloc.report.inputs import ReportInputs
from causalloc.vocab import cell_label, metric_label

#: the fixed columns of the verdict table (report.md, report.html, tables.tex)
VERDICT_COLUMNS = ("comparison", "cell", "metric", "family", "n", "mean_diff", "ci95", "d_z",
                   "verdict_test", "p_verdict", "p_adj", "tost_p_adj", "verdict", "blocks_needed")
MIXED_MODEL_COLUMNS = ("metric", "contrast", "estimate", "ci95", "p", "n_obs",
                       "signs across cells", "method", "converged", "formula")
DOSE_RESPONSE_COLUMNS = ("metric", "predictor", "condition", "cell", "slope", "ci95", "p", "n")
LOCALIZATION_COLUMNS = ("mask", "units", "in V_tgt", "precision", "recall", "Jaccard")
MISSING = "n/a"
#: how many failed / excluded runs the caveats list one by one before summarising the rest
MAX_LISTED = 20
ADJUSTMENT_NAMES = {"holm": "Holm", "fdr_bh": "BH", "bonferroni": "Bonferroni"}
#: the p-value key behind each verdict test (analysis.json ``verdict_test``)
_VERDICT_P = {"sign_flip": "p_perm", "randomization": "p_rand"}
_TEST_NAMES = {"sign_flip": "sign-flip", "randomization": "randomization"}


def verdict_test(comparison: dict) -> str:
    """The test behind ``p_adj``: ``sign_flip`` when analysis.json predates the column."""
    return comparison.get("verdict_test") or "sign_flip"


def _mc_note(comparison: dict, key: str) -> str:
    se = comparison.get(f"{key}_mc_se")
    return f", Monte Carlo se {se:.2g}" if is_number(se) and se > 0 else ""


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt_sig(value, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits (``n/a`` for null or non-finite)."""
    if isinstance(value, bool) or not is_number(value):
        return MISSING
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def fmt_p(p) -> str:
    """A p-value for prose: ``p = 0.69``, ``p = 0.004``, ``p < 0.001``."""
    if not is_number(p):
        return f"p = {MISSING}"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def estimate_decimals(*values) -> int:
    """Decimals that give 2 significant digits of the spread of ``values`` (a CI's width), or
    of the largest magnitude when the spread is zero; between 0 and 6."""
    finite = [abs(v) for v in values if is_number(v)]
    if not finite:
        return 3
    nums = [v for v in values if is_number(v)]
    scale = (max(nums) - min(nums)) or max(finite)
    if scale == 0:
        return 3
    return int(min(6, max(0, 1 - math.floor(math.log10(scale)))))


def fmt_fixed(value, decimals: int) -> str:
    return f"{value:.{decimals}f}" if is_number(value) else MISSING


def comparison_label(comparison: dict, cell_text: str | None = None) -> str:
    """``<cell>, <a> vs <b>`` (the subject of a pasteable sentence); ``cell_text`` replaces
    the full cell label, e.g. with only what differs between cells."""
    cell_text = cell_label(comparison["cell"]) if cell_text is None else cell_text
    return f"{cell_text}, {comparison['a']} vs {comparison['b']}"


def verdict_word(comparison: dict) -> str:
    """The verdict in one or two words: ``oracle better``, ``equivalent``, ``inconclusive``."""
    verdict = comparison["verdict"]
    if verdict in ("a_better", "b_better"):
        return f"{comparison[verdict[0]]} better"
    return str(verdict)


def verdict_phrase(comparison: dict) -> str:
    """The verdict in words; an inconclusive one says how many blocks would settle it."""
    verdict = comparison["verdict"]
    if verdict == "negligible":
        return "different but negligible (inside the SESOI)"
    if verdict == "inconclusive":
        needed = comparison.get("blocks_needed")
        return ("inconclusive" + (f", about {needed} blocks needed" if is_number(needed) else ""))
    return verdict_word(comparison)


def comparison_sentence(comparison: dict, cell_text: str | None = None) -> str:
    """One sentence a reader can paste, e.g.

    ``tiny, npo, oracle vs random: Delta AUES = 0.006, 95% CI [-0.010, 0.022] (BCa, 9,999
    resamples), d_z = 0.21, exact sign-flip p = 0.69 (n = 10 blocks), Holm-adjusted p = 0.69;
    TOST (SESOI 0.02) p = 0.004 -> equivalent.``
    """
    c = comparison
    lo, hi = (list(c["ci95"] or []) + [None, None])[:2]
    decimals = estimate_decimals(lo, hi, c["mean_diff"])
    metric = metric_label(c["metric"])
    if c.get("higher_is_better") is False:
        metric += " (lower is better)"
    method = c.get("ci95_method")
    how = ""
    if method in ("BCa", "percentile") and is_number(c.get("n_boot")):
        how = f" ({method}, {c['n_boot']:,} resamples)"
    elif method == "t":
        how = " (t interval)"
    estimate = fmt_fixed(c["mean_diff"], decimals)
    parts = [(f"{comparison_label(c, cell_text)}: Delta {metric} = {estimate}, "
              f"95% CI [{fmt_fixed(lo, decimals)}, {fmt_fixed(hi, decimals)}]{how}")]
    if is_number(c.get("d_z")):
        parts.append(f"d_z = {c['d_z']:.2f}")
    if "p_perm" in c:
        if c.get("p_perm_exact"):
            parts.append(f"exact sign-flip {fmt_p(c['p_perm'])} (n = {c['n_blocks']} blocks)")
        else:
            resamples = c.get("n_resamples")
            extra = f", {resamples:,} resamples" if is_number(resamples) else ""
            parts.append(f"Monte Carlo sign-flip {fmt_p(c['p_perm'])} "
                         f"(n = {c['n_blocks']} blocks{extra}{_mc_note(c, 'p_perm')})")
    else:
        parts.append(f"n = {c['n_blocks']} blocks")
    if is_number(c.get("p_rand")) and is_number(c.get("k_random")):
        parts.append(f"randomization {fmt_p(c['p_rand'])} against K = {c['k_random']} "
                     f"random masks per block{_mc_note(c, 'p_rand')}")
    if "p_adj" in c:
        adjust = ADJUSTMENT_NAMES.get(c.get("adj_method"), c.get("adj_method") or "adjusted")
        test = f" {_TEST_NAMES[verdict_test(c)]}" if c.get("verdict_test") else ""
        family = f" in family {c['family']}" if c.get("family") else ""
        parts.append(f"{adjust}-adjusted{test} {fmt_p(c['p_adj'])}{family}")
    sentence = ", ".join(parts)
    if "tost_p" in c and is_number(c.get("sesoi")):
        sentence += f"; TOST (SESOI {c['sesoi']:g}) {fmt_p(c['tost_p'])}"
        if is_number(c.get("tost_p_adj")):
            sentence += f", adjusted {fmt_p(c['tost_p_adj'])}"
    return f"{sentence} -> {verdict_phrase(c)}."


def fmt_interval(interval) -> str:
    """``[lo, hi]`` with 4 significant digits each."""
    lo, hi = (list(interval or []) + [None, None])[:2]
    return f"[{fmt_sig(lo)}, {fmt_sig(hi)}]"


def verdict_row(comparison: dict) -> list[str]:
    """One row of the verdict table, in the order of ``VERDICT_COLUMNS``."""
    c = comparison
    test = verdict_test(c)
    return [f"{c['a']} vs {c['b']}", cell_label(c["cell"]), c["metric"], str(c.get("family", "")),
            fmt_sig(c["n_blocks"]), fmt_sig(c["mean_diff"]), fmt_interval(c["ci95"]),
            fmt_sig(c.get("d_z")), test, fmt_sig(c.get(_VERDICT_P[test])),
            fmt_sig(c.get("p_adj")), fmt_sig(c.get("tost_p_adj", c.get("tost_p"))),
            str(c["verdict"]), fmt_sig(c.get("blocks_needed"))]


def family_lines(inputs: ReportInputs) -> list[str]:
    """One line per family of analysis.json: its role, size and the error rate it controls,
    and whether it can reject at its size (``can_reject``, ``min_p_adj``) when recorded."""
    lines = []
    for family in inputs.analysis.get("families") or []:
        role = ("the primary hypotheses" if family.get("role") == "primary"
                else "secondary: not adjusted against the primary family")
        limit = ""
        if family.get("can_reject") is False:
            reach = (f" (smallest reachable adjusted p {family['min_p_adj']:.2g})"
                     if is_number(family.get("min_p_adj")) else "")
            limit = f"; cannot reject at its size{reach}"
        lines.append(f"{family['name']} ({role}; {plural(family['n_comparisons'], 'comparison')}"
                     f"): controls the {family['controls']}{limit}")
    return lines


def cell_signs(comparisons: list[dict], model: dict) -> tuple[int, int] | None:
    """(cells where a - b > 0, cells) for the contrast ``a - b`` a pooled mixed model
    estimates, from the per-cell comparisons of its metric (b - a ones counted with their
    sign flipped); None when no comparison matches the contrast.

    A pooled estimate over cells whose effects differ in sign averages opposite effects
    (e.g. +0.046 from +0.26 and -0.10): the report then withholds it (the forest plot's
    diamond) or states the split next to it (the pooled-estimate table)."""
    contrast = str(model.get("contrast") or "")
    if " - " not in contrast:
        return None
    a, b = contrast.split(" - ", 1)
    diffs = [c["mean_diff"] if (c["a"], c["b"]) == (a, b) else -c["mean_diff"]
             for c in comparisons
             if c["metric"] == model.get("metric") and {c["a"], c["b"]} == {a, b}
             and (c["a"], c["b"]) in ((a, b), (b, a)) and is_number(c.get("mean_diff"))]
    if not diffs:
        return None
    return sum(d > 0 for d in diffs), len(diffs)


def signs_differ(signs: tuple[int, int] | None) -> bool:
    """Whether per-cell effects point both ways (some > 0, some <= 0 and not all zero)."""
    return signs is not None and 0 < signs[0] < signs[1]


def sign_statement(signs: tuple[int, int] | None) -> str:
    """``differ (2 of 6 positive)`` / ``agree (all 6 positive)`` / ``n/a``."""
    if signs is None:
        return MISSING
    positive, n = signs
    if signs_differ(signs):
        return f"differ ({positive} of {n} positive)"
    return f"agree (all {n} {'positive' if positive else 'negative or zero'})"


def mixed_model_row(model: dict, comparisons: list[dict] | None = None) -> list[str]:
    """One row of the pooled-estimate table, in the order of ``MIXED_MODEL_COLUMNS``; the
    ``signs across cells`` column states the heterogeneity the pooled estimate averages
    over (``cell_signs``)."""
    return [model.get("metric", ""), str(model.get("contrast") or model.get("term")),
            fmt_sig(model.get("estimate")), fmt_interval(model.get("ci95")),
            fmt_sig(model.get("p")), fmt_sig(model.get("n_obs")),
            sign_statement(cell_signs(comparisons or [], model)), str(model.get("method", "")),
            "yes" if model.get("converged") else "NO", str(model.get("formula", ""))]


def dose_response_row(entry: dict) -> list[str]:
    """One row of the dose-response table, in the order of ``DOSE_RESPONSE_COLUMNS``."""
    return [entry.get("metric", ""), str(entry.get("predictor")),
            str(entry.get("condition") or "all (pooled)"), cell_label(entry.get("cell") or {}), fmt_sig(entry.get("slope")),
            fmt_interval(entry.get("ci95")), fmt_sig(entry.get("p")), fmt_sig(entry.get("n"))]


def localization_row(row: dict) -> list[str]:
    """One row of the localization-accuracy table (``localization.localization_accuracy``),
    in the order of ``LOCALIZATION_COLUMNS``."""
    return [row["mask"], fmt_sig(row["size"]), fmt_sig(row["hits"]),
            *(fmt_fixed(row[key], 3) for key in ("precision", "recall", "jaccard"))]


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 run``, ``2 runs``; ``plural_form`` for irregular nouns (``hypotheses``)."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def failed_runs(inputs: ReportInputs) -> list[dict]:
    """Failed runs from analysis.json, plus failed rows of the run table it does not list."""
    listed = list(inputs.analysis.get("failed_runs") or [])
    runs = inputs.runs
    if runs is not None and "status" in runs:
        known = {str(r.get("run_id")) for r in listed}
        failed = runs[runs["status"].astype(str) == "failed"]
        for _, row in failed.iterrows():
            run_id = str(row.get("run_id", ""))
            if run_id not in known:
                listed.append({"run_id": run_id,
                               "condition": str(row.get(inputs.condition_column, "")),
                               "error": str(row.get("error", ""))})
    return listed


def design_status(inputs: ReportInputs) -> tuple[str, str]:
    """(``complete`` | ``partial`` | ``failed``, a plain sentence for the top of the report)."""
    analysis = inputs.analysis
    n_failed = len(failed_runs(inputs))
    n_dropped = len(analysis.get("dropped_blocks") or [])
    n_excluded = len(analysis.get("excluded_runs") or [])
    problems = []
    if n_failed:
        problems.append(f"{plural(n_failed, 'run')} failed")
    if n_dropped:
        problems.append(f"{plural(n_dropped, 'block')} dropped for missing conditions")
    if n_excluded:
        problems.append(f"{plural(n_excluded, 'run')} excluded (non-finite metrics)")
    total = len(inputs.runs) if inputs.runs is not None else None
    of_total = f" of {total}" if total else ""
    if not inputs.comparisons:
        detail = "; ".join(problems) if problems else "the analysis holds no comparison"
        return "failed", (f"This design FAILED: no comparison could be made ({detail}). "
                          "Nothing below supports a conclusion.")
    if problems:
        text = "; ".join(problems)
        if n_failed and of_total:
            text = text.replace(f"{plural(n_failed, 'run')} failed",
                                f"{n_failed}{of_total} runs failed", 1)
        return "partial", (f"PARTIAL design: {text}. The comparisons use only the complete "
                           "blocks that remain, so they have less power than planned; "
                           "see Caveats.")
    runs_text = f"all {total} runs finished" if total else "no run failed"
    return "complete", f"Complete design: {runs_text}, no block dropped, no run excluded."


def verdict_summary(inputs: ReportInputs) -> str:
    """``12 comparisons: 3 equivalent, 2 oracle better, 7 inconclusive.`` plus model warnings."""
    counts = Counter(verdict_phrase(c).split(",")[0] for c in inputs.comparisons)
    text = (f"{plural(len(inputs.comparisons), 'comparison')}: "
            + ", ".join(f"{n} {v}" for v, n in counts.most_common()) + ".")
    unconverged = [m for m in inputs.analysis.get("mixed_models") or []
                   if m.get("converged") is False]
    if unconverged:
        text += (f" {plural(len(unconverged), 'mixed model')} did not converge "
                 "(pooled estimates are unreliable; see Caveats).")
    return text


def numeric_order(values) -> list:
    """``values`` sorted as numbers where they are numbers or numeric text (0, 1, 2, ..., 10,
    not 0, 1, 10, 2), the rest after them in text order."""
    def key(value):
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(value))
    return sorted(values, key=key)


def _distinct(values) -> str:
    values = list(dict.fromkeys(str(v) for v in values))
    return ", ".join(values) if values else "not recorded"


def setup_items(inputs: ReportInputs) -> list[tuple[str, str]]:
    """(label, value) pairs describing model, data, budgets, seeds, K, methods and versions,
    from the design's setup when recorded, else from the analysed table itself."""
    analysis, setup = inputs.analysis, inputs.analysis.get("setup") or {}
    repro = analysis.get("reproducibility") or {}
    policy = analysis.get("policy") or {}
    cells = [c["cell"] for c in inputs.comparisons]

    def recorded(key: str, column: str) -> str:
        value = setup.get(key)
        if value not in (None, "", []):
            return _distinct(value) if isinstance(value, list) else str(value)
        return _distinct(cell[column] for cell in cells if column in cell)

    seeds = numeric_order(repro.get("seeds") or setup.get("seeds") or
                          {r for c in inputs.comparisons for r in c.get("replicates") or []})
    k_values = {c.get("k_random") for c in inputs.comparisons if is_number(c.get("k_random"))}
    k_random = setup.get("k_random") or (_distinct(sorted(k_values)) if k_values else "none")
    conditions = list(dict.fromkeys(x for c in inputs.comparisons for x in (c["a"], c["b"])))
    source = inputs.input_spec
    sesoi = policy.get("sesoi") or {}
    versions = repro.get("package_versions") or setup.get("package_versions") or {}
    testbed = [("Testbed", describe_testbed(setup["testbed"]))] if setup.get("testbed") else []
    replicates = (setup.get("testbed") or {}).get("replicates") or []
    if replicates:
        testbed = [("Testbeds", f"{len(replicates)} independent builds of one config (testbed seeds "
                                f"{_distinct(r['seed'] for r in replicates)}; blocks nest in them); "
                                f"first: {describe_testbed(replicates[0])}")]
    return [
        ("Model", recorded("model", "model")),
        *testbed,
        ("Data", recorded("data", "data")),
        ("Algorithms", recorded("algorithms", "algorithm")),
        ("Budgets", recorded("budgets", "budget")),
        ("Seeds", f"{_distinct(seeds)} ({len(seeds)} seeds)"),
        ("Random masks per block (K)", str(k_random)),
        ("Conditions", _distinct(conditions)),
        ("Metrics", _distinct(metric_label(m) for m in inputs.metrics)),
        ("Input", (f"{source.get('source', 'not recorded')} ({source.get('kind', '?')}, "
                  f"{source.get('n_rows', '?')} rows)")),
        ("Statistics", f"alpha = {policy.get('alpha', 0.05)}, CI level "
                       f"{policy.get('ci_level', 0.95)}, {policy.get('n_resamples', '?')} "
                       f"resamples, multiplicity: "
                       f"{_distinct(c.get('adj_method') for c in inputs.comparisons)}, SESOI: "
                       + (", ".join(f"{metric_label(m)} {v:g}" for m, v in sesoi.items()
                                    if is_number(v)) or "not recorded")),
        ("Runs made with", "; ".join(f"{describe_environment(env)} ({env.get('runs', '?')} runs)"
                                     for env in repro.get("run_environments") or []) or "not recorded"),
        ("Testbed fingerprint", _distinct(f"sha256 {f[:16]}" for f in inputs.fingerprints) if inputs.fingerprints else "not recorded"),
        ("Testbed file", pinned_statement(setup.get("testbed") or {})),
        ("Analysis made with", describe_environment({"causalloc": versions.get("causalloc"),
                                                     "commit": repro.get("commit", "unknown")})),
        ("Package versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
         or "not recorded"),
    ]


def pinned_statement(testbed: dict) -> str:
    """How a reader gets the testbed the runs started from (docs/testbeds.md)."""
    if testbed.get("pinned_file"):
        return (f"pinned: `{testbed['pinned_file']}` (`causalloc testbed import {testbed['pinned_file']}`); "
                "reruns start from exactly these weights")
    return ("not pinned: the runs' testbed was built from its config; a rebuild reproduces it only where "
            "the fingerprint matches (another processor gives another instance, whose conclusions, not "
            "digits, should agree: docs/testbeds.md)")


def describe_testbed(testbed: dict) -> str:
    """One line on the controlled testbed: injection, ES before / after injection and whether
    V_tgt can be read off the weights (norm ratio V_tgt / rest, weight-norm precision)."""

    def number(key: str) -> str:
        value = testbed.get(key)
        return f"{value:.2f}" if is_number(value) else "not recorded"

    parts = [f"{testbed.get('kind', '?')}, {testbed.get('injection', 'not recorded')} injection",
             f"ES forget theta_r {number('es_forget_theta_r')} -> theta_o {number('es_forget_theta_o')}",
             f"ES retain theta_r {number('es_retain_theta_r')} -> theta_o {number('es_retain_theta_o')}"]
    if "norm_ratio_vtgt" in testbed:
        parts.append(f"norm ratio V_tgt / rest {number('norm_ratio_vtgt')}")
    if "weight_norm_precision" in testbed:
        chance = f" (chance {number('budget')})" if is_number(testbed.get("budget")) else ""
        parts.append(f"weight-norm precision {number('weight_norm_precision')}{chance}")
    return "; ".join(parts)


def caveats(inputs: ReportInputs, skipped_figures: dict[str, str] | None = None) -> list[str]:
    """Everything a reader must know before trusting the numbers, one item each."""
    analysis = inputs.analysis
    items: list[str] = []
    for block in analysis.get("dropped_blocks") or []:
        where = ", ".join(f"{k} = {v}" for k, v in {**(block.get("cell") or {}),
                                                     **(block.get("block") or {})}.items())
        reason = f"; {block['reason']}" if block.get("reason") else ""
        items.append(f"Dropped block ({where}): missing "
                     f"{_distinct(block.get('missing') or [])}{reason}")
    failed = failed_runs(inputs)
    for run in failed[:MAX_LISTED]:
        items.append(f"Failed run {run.get('run_id')} ({run.get('condition')}): "
                     f"{run.get('error') or 'no error message recorded'}")
    if len(failed) > MAX_LISTED:
        items.append(f"... and {len(failed) - MAX_LISTED} more failed runs (see analysis.json)")
    excluded = analysis.get("excluded_runs") or []
    for run in excluded[:MAX_LISTED]:
        items.append(f"Excluded run {run.get('run_id')} (row {run.get('row')}, "
                     f"{run.get('condition')}, {run.get('metric')}): {run.get('reason')}")
    if len(excluded) > MAX_LISTED:
        items.append(f"... and {len(excluded) - MAX_LISTED} more excluded runs "
                     "(see analysis.json)")
    for model in analysis.get("mixed_models") or []:
        if model.get("converged") is False or model.get("warnings"):
            state = "did NOT converge" if model.get("converged") is False else "converged"
            warnings = "; ".join(model.get("warnings") or []) or "no warning text"
            items.append(f"Mixed model {model.get('formula')} ({model.get('contrast')}) "
                         f"{state}: {warnings}")
    limited = {f.get("name") for f in analysis.get("families") or []
               if isinstance(f, dict) and f.get("can_reject") is False}
    unlisted = [c for c in inputs.comparisons
                if c["verdict"] == "inconclusive" and c.get("family") in limited]
    if unlisted:
        items.append(f"{plural(len(unlisted), 'inconclusive comparison')} of families that "
                     "cannot reject at their size (said at the top: "
                     f"{', '.join(sorted(limited))}) are not listed one by one.")
    for c in inputs.comparisons:
        if c["verdict"] == "inconclusive" and c.get("family") not in limited:
            needs = [f"{k} {c[f'blocks_needed_{k}']}" for k in ("detect", "equivalence")
                     if is_number(c.get(f"blocks_needed_{k}"))]
            needed = (f"about {c['blocks_needed']} blocks needed"
                      if is_number(c.get("blocks_needed")) else "blocks needed not computed")
            items.append(f"Inconclusive: {comparison_label(c)} on {metric_label(c['metric'])} "
                         f"with n = {c['n_blocks']} blocks; {needed}"
                         + (f" ({', '.join(needs)})" if needs else ""))
    items.extend(f"Analysis warning: {w}" for w in analysis.get("warnings") or [])
    items.extend(inputs.notes)
    items.extend(f"Figure '{name}' not drawn: {why}"
                 for name, why in (skipped_figures or {}).items())
    return items


def reproducibility_lines(inputs: ReportInputs, report_command: str) -> list[str]:
    """``key: value`` lines that let a reader regenerate every number and figure."""
    analysis = inputs.analysis
    repro = analysis.get("reproducibility") or {}
    source = inputs.input_spec
    versions = repro.get("package_versions") or {}
    lines = [
        f"causalloc version: {analysis.get('causalloc_version', 'not recorded')}",
        f"analysis created: {analysis.get('created', 'not recorded')}",
        f"spec hash: {repro.get('spec_hash') or 'none (no spec)'}",
        f"analysis command: {repro.get('command') or 'not recorded'}",
        f"report command: {report_command}",
        (f"input: {source.get('source', 'not recorded')} (sha256 "
        f"{source.get('sha256', 'not recorded')})"),
        f"seeds: {_distinct(numeric_order(repro.get('seeds') or []))}",
        f"statistics seed: {repro.get('stats_seed', 'not recorded')}",
    ]
    lines += [f"{name}: {version}" for name, version in sorted(versions.items())]
    return lines
