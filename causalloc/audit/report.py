"""The audit: per claim, the figures' verdict, the runs' verdict and a combined verdict,
written as audit.json, audit.md, a self-contained audit.html and a forest plot.

Combined verdict: ``contradicted`` when either source contradicts the claim; ``consistent``
when at least one supports it and none contradicts it; ``inconclusive`` otherwise (neither
the figures nor the runs decide, or there are no runs). The Markdown and HTML are laid out
once as blocks and written by the renderers of :mod:`causalloc.report.render`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from causalloc import __version__
from causalloc.audit.claims import Claim
from causalloc.audit.published import audit_figures
from causalloc.provenance import package_versions
from causalloc.report.figures import ReportFigure
from causalloc.report.render import Block, save_figure, to_html, to_markdown
from causalloc.report.style import DOUBLE_COLUMN, paper_style
from causalloc.stats.analyze import STATS_PACKAGES, _json_clean
from causalloc.vocab import metric_label

VERDICTS = ("consistent", "contradicted", "inconclusive")


def combined_verdict(published: str, runs: str | None) -> str:
    """consistent / contradicted / inconclusive from the two sources (module docstring)."""
    labels = {published, runs} - {None}
    if "contradicted" in labels:
        return "contradicted"
    return "consistent" if "supported" in labels else "inconclusive"


def claim_entry(claim: Claim, runs: dict | None, alpha: float = 0.05) -> dict:
    """The audit.json entry of one claim."""
    figures = audit_figures(claim, alpha)
    welch, paired = figures["welch"] or {}, figures["paired"] or {}
    run = runs.get(claim.id) if runs is not None else None
    verdict_runs = run["verdict"] if run else None
    reason_runs = run["reason"] if run else "no --runs given"
    combined = combined_verdict(figures["verdict"], verdict_runs)
    sources = [f"figures: {figures['verdict']}", f"runs: {verdict_runs or 'none'}"]
    return {
        "id": claim.id, "paper": claim.paper, "table": claim.table, "claim": claim.text,
        "kind": claim.kind, "a": claim.a, "b": claim.b, "metric": claim.metric,
        "direction": claim.direction, "cell": claim.cell, "evidence": claim.evidence,
        "testable_from_figures": figures["testable"], "sesoi": claim.sesoi,
        "sesoi_justification": claim.sesoi_justification, "spec": claim.spec,
        "mean_diff": figures["mean_diff"],
        "welch_p": welch.get("p"), "welch_p_interval": welch.get("p_interval"),
        "welch_tost_p": welch.get("tost_p"), "welch_ci95": welch.get("ci95"),
        "paired_p": paired.get("p"), "paired_p_interval": paired.get("p_interval"),
        "paired_tost_p": paired.get("tost_p"), "paired_ci95": paired.get("ci95"),
        "paired_sd_diff": paired.get("sd_diff"),
        "tost_margin_min_welch": welch.get("tost_margin_min"),
        "tost_margin_min_welch_interval": welch.get("tost_margin_min_interval"),
        "tost_margin_min_paired": paired.get("tost_margin_min"),
        "tost_margin_min_paired_interval": paired.get("tost_margin_min_interval"),
        "mde80": figures["mde80"], "mde80_welch": welch.get("mde80"),
        "mde80_paired": paired.get("mde80"), "primary_test": figures["primary_test"],
        "reported_p": claim.reported_p, "reported_test": claim.reported_test,
        "reported_p_consistent_with": figures["reported"]["consistent_with"],
        "reported_p_by_test": figures["reported"]["by_test"],
        "verdict_published": figures["verdict"], "reason_published": figures["reason"],
        "verdict_runs": verdict_runs, "reason_runs": reason_runs,
        "runs_comparisons": run["comparisons"] if run else [],
        "verdict": combined, "reason": "; ".join(sources),
        "published": figures,
    }


def summary(entries: list[dict]) -> dict:
    """Counts for the closing note: equivalence under each test, at the published figures and
    on the whole rounding box, and which tests the reported p fits, row by row."""
    equivalence = [e for e in entries if e["kind"] == "equivalence" and e["testable_from_figures"]]
    out: dict = {"n_claims": len(entries),
                 "n_testable_from_figures": sum(e["testable_from_figures"] for e in entries),
                 "verdicts": {v: sum(e["verdict"] == v for e in entries) for v in VERDICTS}}
    for test in ("welch", "paired"):
        rows = [e for e in equivalence if e[f"tost_margin_min_{test}"] is not None]
        out[f"equivalent_{test}"] = {
            "of": len(rows),
            "at_published_figures": sum(e[f"tost_margin_min_{test}"] < e["sesoi"] for e in rows),
            "on_whole_rounding_box": sum(
                (e[f"tost_margin_min_{test}_interval"] or [math.inf] * 2)[1] < e["sesoi"]
                for e in rows),
            "ids": [e["id"] for e in rows if e[f"tost_margin_min_{test}"] < e["sesoi"]],
        }
    reported = [e for e in entries if e["reported_p"] is not None]
    out["reported_p"] = {
        "n": len(reported),
        "consistent_rows_by_test": {
            t: [e["id"] for e in reported if t in e["reported_p_consistent_with"]]
            for t in ("welch_t", "student_t", "paired_t", "sign_flip_exact")},
        "consistent_with_no_test": [e["id"] for e in reported
                                    if not e["reported_p_consistent_with"]],
    }
    return out


def forest_plots(entries: list[dict]) -> list[ReportFigure]:
    """Per metric: published difference (primary test's 95% CI) and reproduced differences
    (analyze's bootstrap 95% CI) per claim, with the +-SESOI band and a line at 0."""
    figures = []
    for metric in dict.fromkeys(e["metric"] for e in entries):
        rows = [e for e in entries if e["metric"] == metric
                and (e["mean_diff"] is not None or e["runs_comparisons"])]
        if not rows:
            continue
        with paper_style():
            fig = Figure(figsize=(DOUBLE_COLUMN, 0.9 + 0.32 * len(rows)))
            ax = fig.subplots()
            for y, entry in enumerate(rows):
                ax.fill_betweenx([y - 0.4, y + 0.4], -entry["sesoi"], entry["sesoi"],
                                 color="#029e73", alpha=0.12, linewidth=0)
                ci = entry["paired_ci95"] or entry["welch_ci95"]
                if entry["mean_diff"] is not None:
                    marker = "o" if ci else "x"
                    ax.plot(entry["mean_diff"], y + 0.12, marker, color="#000000", markersize=4,
                            label="published" if y == 0 else None)
                    if ci:
                        ax.plot(ci, [y + 0.12] * 2, color="#000000", linewidth=1)
                for k, comparison in enumerate(entry["runs_comparisons"]):
                    offset = -0.12 - 0.08 * k
                    ax.plot(comparison["mean_diff"], y + offset, "s", color="#d55e00",
                            markersize=4)
                    ax.plot(comparison["ci95"], [y + offset] * 2, color="#d55e00", linewidth=1)
            ax.plot([], [], "o-", color="#000000", markersize=4, label="published (95% CI)")
            if any(e["runs_comparisons"] for e in rows):
                ax.plot([], [], "s-", color="#d55e00", markersize=4, label="reproduced (95% CI)")
            if any(e["mean_diff"] is not None and not e["testable_from_figures"] for e in rows):
                ax.plot([], [], "x", color="#000000", label="published, means only")
            ax.axvline(0, color="#555555", linewidth=0.6)
            ax.set_yticks(np.arange(len(rows)), [e["id"] for e in rows])
            ax.invert_yaxis()
            ax.set_xlabel(f"difference a - b in {metric_label(metric)} (band: +-SESOI)")
            handles, labels = ax.get_legend_handles_labels()
            keep = [i for i, label in enumerate(labels) if label != "published"]
            ax.legend([handles[i] for i in keep], [labels[i] for i in keep], loc="best",
                      fontsize=6)
        figures.append(ReportFigure(
            name=f"forest_{metric}", title=f"Published vs reproduced: {metric_label(metric)}",
            caption=(f"{metric_label(metric)}: published difference a - b with the 95% CI of "
                     "its primary test (paired t rebuilt from |Delta| where given, else Welch), "
                     "reproduced differences with analyze's bootstrap 95% CI; shaded: +-SESOI."),
            figure=fig))
    return figures


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return f"[{_fmt(value[0], digits)}, {_fmt(value[1], digits)}]"
    return f"{value:.{digits}g}"


def report_blocks(document: dict, figures: list[ReportFigure]) -> list[Block]:
    """The audit report in reading order."""
    s = document["summary"]
    counts = ", ".join(f"{v} {k}" for k, v in s["verdicts"].items())
    blocks = [Block("heading", "causalloc audit", level=1),
              Block("paragraph", f"Claims file {document['claims_file']}: {s['n_claims']} "
                    f"claims, {s['n_testable_from_figures']} testable from the published "
                    f"figures; runs: {document['runs']['source'] if document['runs'] else 'none'}."
                    f" Combined verdicts: {counts}.")]
    for test, name in (("paired", "paired t rebuilt from |Delta|"), ("welch", "Welch t")):
        eq = s[f"equivalent_{test}"]
        if eq["of"]:
            blocks.append(Block("paragraph", (
                f"Equivalence at the SESOI, {name}: {eq['at_published_figures']} of {eq['of']} "
                f"equivalence claims at the published figures, {eq['on_whole_rounding_box']} on "
                "the whole rounding box of the figures under both sd conventions.")))
    if s["reported_p"]["n"]:
        fits = "; ".join(f"{t}: {len(ids)} row(s)" for t, ids in
                         s["reported_p"]["consistent_rows_by_test"].items())
        blocks.append(Block("paragraph", (
            f"Reported p-values ({s['reported_p']['n']}) consistent, allowing for rounding, "
            f"with: {fits}; with no test: {len(s['reported_p']['consistent_with_no_test'])} "
            "row(s).")))
    for figure in figures:
        blocks.append(Block("figure", items=[figure]))
    blocks.append(Block("heading", "Claims", level=2))
    columns = ("claim", "kind", "diff", "Welch p", "paired p", "min margin W / P", "SESOI",
               "MDE80", "reported p fits", "figures", "runs", "verdict")
    rows = [[e["id"], e["kind"], _fmt(e["mean_diff"]),
             f"{_fmt(e['welch_p'])} {_fmt(e['welch_p_interval'])}" if e["welch_p"] else "-",
             f"{_fmt(e['paired_p'])} {_fmt(e['paired_p_interval'])}" if e["paired_p"] else "-",
             f"{_fmt(e['tost_margin_min_welch'])} / {_fmt(e['tost_margin_min_paired'])}",
             _fmt(e["sesoi"]), _fmt(e["mde80"]),
             ", ".join(e["reported_p_consistent_with"]) or ("none" if e["reported_p"] else "-"),
             e["verdict_published"], e["verdict_runs"] or "-", e["verdict"]]
            for e in document["claims"]]
    blocks.append(Block("table", items=rows, columns=columns))
    blocks.append(Block("heading", "Reasons", level=2))
    for e in document["claims"]:
        blocks.append(Block("heading", e["id"], level=3))
        blocks.append(Block("list", items=[
            f"Claim ({e['table']}): {e['claim']}",
            f"SESOI {e['sesoi']:g} {metric_label(e['metric'])}: {e['sesoi_justification']}",
            f"Figures: {e['verdict_published']}: {e['reason_published']}",
            f"Runs: {e['verdict_runs'] or 'none'}: {e['reason_runs']}",
            f"Reproduce: causalloc run {e['spec']}" if e["spec"] else "No reproduction spec.",
        ]))
    blocks.append(Block("heading", "Method", level=2))
    blocks.append(Block("paragraph", (
        "Welch and Student t from the summary statistics (scipy.stats.ttest_ind_from_stats); "
        "the paired t rebuilt from the per-seed |Delta| (sum d^2 = (n-1) sd_|d|^2 + n "
        "mean_|d|^2); TOST and the smallest equivalence margin at alpha 0.05 (the 90% CI bound "
        "farthest from 0); MDE at 80% power from statsmodels; each figure known to +- half its "
        "last digit and the sd taken as sample or population sd: intervals cover every "
        "combination. The exact sign-flip test can only give multiples of 2/2^n. "
        "Details: docs/claims.md.")))
    blocks.append(Block("code", document["command"]))
    return blocks


def write_audit(claims: list[Claim], claims_path: str | Path, out_dir: str | Path, *,
                runs: dict | None = None, runs_source: str | None = None,
                command: str = "", alpha: float = 0.05) -> dict[str, Path]:
    """Audit every claim and write audit.json, audit.md, audit.html and figures/."""
    out = Path(out_dir)
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    entries = [claim_entry(claim, runs, alpha) for claim in claims]
    raw = Path(claims_path).read_bytes()
    document = {
        "schema_version": 1, "causalloc_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "claims_file": str(claims_path),
        "claims_sha256": hashlib.sha256(raw).hexdigest(), "alpha": alpha,
        "runs": {"source": str(runs_source)} if runs_source else None,
        "package_versions": package_versions(STATS_PACKAGES),
        "summary": summary(entries), "claims": entries,
    }
    figures = forest_plots(entries)
    paths = {"json": out / "audit.json", "md": out / "audit.md", "html": out / "audit.html"}
    png = {}
    for figure in figures:
        pdf_path, png_path, png[figure.name] = save_figure(figure, figure_dir)
        paths[f"{figure.name}_pdf"], paths[f"{figure.name}_png"] = pdf_path, png_path
    document["figures"] = [f"figures/{f.name}.png" for f in figures]
    paths["json"].write_text(json.dumps(_json_clean(document), indent=1, allow_nan=False) + "\n")
    blocks = report_blocks(document, figures)
    paths["md"].write_text(to_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(to_html(blocks, png).replace(
        "<title>causalloc report</title>", "<title>causalloc audit</title>"), encoding="utf-8")
    return paths
