"""The parts of a report that a tuned, replicated or sequential design adds: how each arm's
setting was chosen (and where the choice sits at an edge of its grid), every testbed's
estimate beside the pooled one and the population-of-testbeds model, the looks of a
group-sequential analysis, and the runs behind a verdict that carry outcome flags
(:mod:`causalloc.flags`). Text and rows only; render.py lays them out."""

from __future__ import annotations

from causalloc.report.inputs import ReportInputs
from causalloc.report.text import fmt_interval, fmt_p, fmt_sig, plural
from causalloc.vocab import cell_label, is_primary_family, metric_label

TUNING_COLUMNS = ("objective", "condition", "grid", "chosen (count per value)", "at low edge",
                  "at high edge")
SEQUENTIAL_COLUMNS = ("comparison", "cell", "metric", "looks: blocks, p (boundary)", "decision",
                      "blocks used / planned", "blocks to detect the observed difference [sd 95% CI]")
TESTBED_COLUMNS = ("comparison", "cell", "metric", "blocks: mean [CI], verdict",
                   "testbeds: estimate [CI], df, p", "testbeds with this sign", "per-testbed means")


def flagged_total(comparison: dict) -> int:
    """Runs with an outcome flag among a comparison's two conditions in its cell."""
    return int(sum((comparison.get("flagged_runs") or {}).values()))


def flag_mark(comparison: dict | None) -> str:
    """`` [n flagged]`` after a verdict whose cell holds flagged runs, else empty."""
    n = flagged_total(comparison) if comparison else 0
    return f" [{n} flagged]" if n else ""


def flag_note(inputs: ReportInputs) -> str | None:
    """What ``[n flagged]`` means and how many runs carry each flag, when any does."""
    counts = inputs.analysis.get("flags") or []
    totals: dict[str, int] = {}
    for entry in counts:
        for flag, n in entry["counts"].items():
            totals[flag] = totals.get(flag, 0) + n
    if not totals:
        return None
    runs = sum(e["n_runs"] for e in counts)
    listing = ", ".join(f"{flag} {n}" for flag, n in sorted(totals.items()))
    return (f"[n flagged]: n runs of the two compared conditions in that cell carry an outcome flag "
            f"(of {runs} runs in all: {listing}; thresholds in docs/metrics.md: collapse = final "
            "RS below half of theta_o's, no_forgetting = FS never within 0.02 of theta_r's, "
            "over_forgetting = final FS above theta_r's by more than 0.02, mu95_floor = MU95 at "
            "theta_o's value). Such a verdict compares edge cases of the metric as much as masks.")


def tuning_paragraph(inputs: ReportInputs) -> str | None:
    """The selection rule and split of a tuned design (analysis.json ``tuning``)."""
    tuning = inputs.analysis.get("tuning")
    if not tuning:
        return None
    edges = [r for r in tuning["choices"] if r["at_low_edge"] + r["at_high_edge"]]
    edge_text = (f" The choice sits at an edge of the grid in {sum(r['at_low_edge'] + r['at_high_edge'] for r in edges)} "
                 f"of {sum(r['n'] for r in tuning['choices'])} selections (table): there the grid may not "
                 "bracket the arm's optimum." if edges else " No choice sits at an edge of its grid.")
    return (f"Each arm ran every point of its objective's grid. Rule: {tuning['rule']}. "
            f"{tuning['n_selected']} of {tuning['n_runs']} runs were kept. The forget and the retain "
            f"items of each testbed were split once ({tuning['selection_fraction']:g} of each for "
            "selection, the rest for evaluation); training used every item." + edge_text)


def tuning_rows(inputs: ReportInputs) -> list[list[str]]:
    """One row per objective x condition: the grid, how often each value was chosen, edges."""
    tuning = inputs.analysis.get("tuning") or {}
    return [[r["algorithm"], r["condition"], ", ".join(f"{v:g}" for v in r["grid"]),
             ", ".join(f"{v}: {n}" for v, n in r["counts"].items()),
             f"{r['at_low_edge']}/{r['n']}", f"{r['at_high_edge']}/{r['n']}"]
            for r in tuning.get("choices", [])]


def sequential_paragraph(inputs: ReportInputs) -> str | None:
    """How the looks were planned and read (analysis.json ``policy.sequential``)."""
    policy = (inputs.analysis.get("policy") or {}).get("sequential")
    if not policy:
        return None
    planned = (f"at most {policy['max_blocks']} blocks" if policy.get("max_blocks")
               else "the blocks in the table as the whole design")
    return (f"Group-sequential analysis: a look every {policy['look_every']} blocks, {planned}, "
            f"blocks in {policy['order']}; {policy['method']}; {policy['multiplicity']}. A "
            "verdict is the decision at a comparison's first look whose p crosses its boundary; "
            "'continue' means no boundary was crossed before the planned last look (the verdict "
            "is then inconclusive), so the last column gives the blocks the observed difference "
            "would need at 80% power, with its range over the sd's 95% chi-square interval.")


def sequential_rows(inputs: ReportInputs) -> list[list[str]]:
    """One row per primary comparison of a sequential analysis: each look's p and boundary,
    the decision, blocks used of those planned, and blocks needed at the observed difference."""
    rows = []
    for c in inputs.comparisons:
        sequential = c.get("sequential")
        if not sequential or not is_primary_family(c.get("family") or ""):
            continue
        looks = "; ".join(f"{look['blocks']}: {fmt_p(look['p'])} ({fmt_sig(look['boundary'], 2)})"
                          for look in sequential["looks"])
        low, high = c.get("blocks_needed_detect_range") or (None, None)
        rows.append([f"{c['a']} vs {c['b']}", cell_label(c["cell"]), metric_label(c["metric"]),
                     looks, sequential["decision"],
                     f"{sequential['blocks_used']} / {sequential['max_blocks']}",
                     f"{fmt_sig(c.get('blocks_needed_detect'))} [{fmt_sig(low)}, {fmt_sig(high)}]"])
    return rows


def testbed_rows(inputs: ReportInputs, metrics: list[str] | None = None) -> list[list[str]]:
    """Per comparison of ``metrics`` (default: the headline metric) in a replicated design:
    the blocks' estimate and verdict, the population-of-testbeds model, how many testbeds'
    mean differences share the pooled sign, and each testbed's mean difference."""
    metrics = metrics or [inputs.headline_metric]
    rows = []
    for c in inputs.comparisons:
        model = c.get("cluster_model")
        if c["metric"] not in metrics or not model:
            continue
        by = c["by_cluster"]
        sign = 1 if c["mean_diff"] > 0 else -1
        same = sum(1 for t in by if t["mean_diff"] * sign > 0)
        rows.append([
            f"{c['a']} vs {c['b']}", cell_label(c["cell"]), metric_label(c["metric"]),
            f"{c['mean_diff']:+.3f} {fmt_interval(c['ci95'])}, {c['verdict']}",
            f"{model['estimate']:+.3f} {fmt_interval(model['ci95'])}, df "
            f"{fmt_sig(model['df'], 3)}, {fmt_p(model['p'])}",
            f"{same} of {len(by)}",
            ", ".join(f"{t['cluster']}: {t['mean_diff']:+.3f}" for t in by),
        ])
    return rows


def testbed_paragraph(inputs: ReportInputs) -> str | None:
    """How to read the per-testbed table, when the design has replicated testbeds."""
    cluster = inputs.input_spec.get("cluster")
    if not cluster or not any(c.get("cluster_model") for c in inputs.comparisons):
        return None
    n = max(c["cluster_model"]["n_clusters"] for c in inputs.comparisons if c.get("cluster_model"))
    return (f"Blocks nest in {plural(n, cluster)}. The verdicts above test the blocks' contrasts "
            f"(conditional on these {n} {cluster}s); the population estimate refits the "
            f"contrasts as diff ~ 1 + (1 | {cluster}), i.e. metric ~ condition + (1 | {cluster}) + "
            f"(1 | {cluster}:condition) + (1 | {cluster}:seed) on the block values (REML, "
            f"Satterthwaite df), so its interval widens with the spread of the effect between "
            f"{cluster}s. A verdict whose per-{cluster} means disagree in sign holds in some "
            f"{cluster}s only.")
