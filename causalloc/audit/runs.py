"""What matched runs say about each claim: ``causalloc analyze`` on the claim's contrast.

A claim names conditions a and b (``runs.conditions`` maps them onto the run table's
condition names when these differ), a metric (``runs.metric`` when the run table calls it
otherwise) and, in ``runs.match``, the cell of the run table that reproduces it (e.g.
``{algorithm: wga}``; compared case-insensitively as text). The run table is analysed with
:func:`causalloc.stats.analyze.analyze` (exact sign-flip tests, bootstrap CIs, TOST at the
claim's SESOI, blocks missing a condition dropped and listed) and each comparison's verdict
is read against the claim's kind:

=================  ===================================  =================  ============
claim kind         supported                            contradicted       otherwise
=================  ===================================  =================  ============
equivalence        equivalent, negligible               a_better, b_better not_determined
superiority        a_better                             b_better,          not_determined
                                                        equivalent,
                                                        negligible
non-inferiority    a_better, equivalent, negligible     b_better           not_determined
=================  ===================================  =================  ============

A claim that matches several cells (e.g. several budgets) is supported or contradicted only
when all of them agree. A claim the runs cannot test (metric or condition absent, no
matching cell, fewer than 2 matched blocks) gets verdict None and the reason.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from causalloc.audit.claims import Claim
from causalloc.errors import DataError, TableError
from causalloc.stats.analyze import analyze
from causalloc.stats.spec import AnalysisSpec, Comparison
from causalloc.stats.table import load_runs
from causalloc.vocab import cell_label

_SUPPORTS = {
    "equivalence": ({"equivalent", "negligible"}, {"a_better", "b_better"}),
    "superiority": ({"a_better"}, {"b_better", "equivalent", "negligible"}),
    "non-inferiority": ({"a_better", "equivalent", "negligible"}, {"b_better"}),
}


def claim_verdict(kind: str, analyze_verdict: str) -> str:
    """An ``analyze`` verdict read as supported / contradicted / not_determined for a claim."""
    supported, contradicted = _SUPPORTS[kind]
    if analyze_verdict in supported:
        return "supported"
    return "contradicted" if analyze_verdict in contradicted else "not_determined"


def _columns(source: Path) -> list[str]:
    csv_path = source / "runs.csv" if source.is_dir() else source
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: not found (--runs takes a causalloc run folder or a CSV)")
    return list(pd.read_csv(csv_path, nrows=0).columns)


def _matches(cell: dict, match: dict) -> bool:
    return all(str(cell.get(k, "")).lower() == str(v).lower() for k, v in match.items())


def audit_runs(claims: list[Claim], source: str | Path, *, block: str | None = None,
               condition: str | None = None, replicate: str | None = None, seed: int = 0,
               n_boot: int = 9999, n_permutations: int = 9999) -> dict[str, dict]:
    """Per claim id: ``verdict`` (or None when the runs cannot test it), ``reason`` and the
    matched ``comparisons`` of ``analyze`` (cell, n, mean difference, CIs, p, verdict)."""
    source = Path(source)
    columns = _columns(source)
    out: dict[str, dict] = {}
    groups: dict[tuple, list[Claim]] = {}
    for claim in claims:
        if claim.run_metric not in columns:
            out[claim.id] = _missing(f"the runs have no metric column {claim.run_metric!r}")
            continue
        key = (claim.run_metric, claim.sesoi, claim.higher_is_better)
        groups.setdefault(key, []).append(claim)
    for (metric, sesoi, higher), members in groups.items():
        table = load_runs(source, block=block, condition=condition, metric=metric,
                          replicate=replicate)
        conditions = set(table.runs[table.condition_column])
        usable = []
        for claim in members:
            absent = [c for c in (claim.run_a, claim.run_b) if c not in conditions]
            if absent:
                out[claim.id] = _missing(f"the runs have no condition {absent} "
                                         f"(conditions: {sorted(conditions)})")
            else:
                usable.append(claim)
        if not usable:
            continue
        pairs = list(dict.fromkeys(Comparison(c.run_a, c.run_b, (metric,)) for c in usable))
        spec = AnalysisSpec(metrics=[metric], sesoi={metric: sesoi},
                            higher_is_better={metric: higher}, comparisons=pairs,
                            drop_unmatched=True, mixed_model=False, dose_response=False,
                            seed=seed, n_boot=n_boot, n_permutations=n_permutations)
        try:
            result = analyze(table, spec, command="causalloc audit --runs")
        except TableError as exc:  # e.g. fewer than 2 matched blocks: these claims untested
            for claim in usable:
                out[claim.id] = _missing(f"analyze could not compare: {exc}")
            continue
        frame = result.comparisons
        dropped = len(result.meta.get("dropped_blocks", []))
        for claim in usable:
            rows = frame[(frame["a"] == claim.run_a) & (frame["b"] == claim.run_b)]
            rows = rows[[_matches(cell, claim.runs_match) for cell in rows["cell"]]]
            out[claim.id] = _from_rows(claim, rows, dropped)
    return out


def _missing(reason: str) -> dict:
    return {"verdict": None, "reason": reason, "comparisons": []}


def _from_rows(claim: Claim, rows: pd.DataFrame, dropped: int) -> dict:
    if rows.empty:
        return _missing(f"no analysed cell matches {claim.runs_match}")
    comparisons = []
    for row in rows.to_dict("records"):
        comparisons.append({
            "cell": row["cell"], "n_blocks": int(row["n_blocks"]),
            "mean_diff": float(row["mean_diff"]),
            "ci95": [float(row["ci95_lo"]), float(row["ci95_hi"])],
            "tost_ci90": [float(row["tost_ci90_lo"]), float(row["tost_ci90_hi"])],
            "p_perm": float(row["p_perm"]), "p_adj": float(row["p_adj"]),
            "tost_p": float(row["tost_p"]), "analyze_verdict": row["verdict"],
            "claim_verdict": claim_verdict(claim.kind, row["verdict"]),
        })
    labels = {c["claim_verdict"] for c in comparisons}
    verdict = labels.pop() if len(labels) == 1 else "not_determined"
    cells = "; ".join(f"{cell_label(c['cell'], named=True)}: {c['analyze_verdict']} (n = {c['n_blocks']}, "
                      f"mean diff {c['mean_diff']:+.4g}, 90% CI [{c['tost_ci90'][0]:.4g}, "
                      f"{c['tost_ci90'][1]:.4g}], SESOI {claim.sesoi:g})" for c in comparisons)
    mixed = " (the matched cells disagree)" if len(comparisons) > 1 and verdict == (
        "not_determined") and len({c["claim_verdict"] for c in comparisons}) > 1 else ""
    note = f"; {dropped} unmatched block(s) dropped" if dropped else ""
    return {"verdict": verdict, "reason": f"analyze: {cells}{mixed}{note}",
            "comparisons": comparisons}
