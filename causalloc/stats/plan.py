"""Planning before any run: can each family reject at all, and how many blocks are needed.

From the design alone (the runs a spec expands to, no metric values) the comparisons and
their families are made exactly as :func:`causalloc.stats.analyze.analyze` would make
them; each verdict test has a smallest attainable p (:func:`causalloc.stats.power.p_floor`)
and each family a smallest attainable adjusted p
(:func:`causalloc.stats.families.min_p_adjusted`): a family whose ``min_p_adj`` is not
below alpha cannot reject anything, whatever the data. With a pilot run table, the sd of
each comparison's differences gives the blocks needed (with the range over the sd's 95%
chi-square interval) for a stated effect (``effects``), else the pilot's observed
difference, else the SESOI.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from causalloc.errors import TableError
from causalloc.stats.analyze import (
    RANDOM,
    _collect,
    _resolve_metrics,
    _resolve_pairs,
    analyze,
    cell_label,
    condition_kinds,
)
from causalloc.stats.families import assign_families, min_p_adjusted
from causalloc.stats.power import blocks_needed, blocks_to_detect, p_floor, sd_interval
from causalloc.stats.spec import AnalysisSpec
from causalloc.stats.table import RunTable
from causalloc.vocab import is_primary_family


def design_table(runs: list[dict], *, block_columns: list[str], metrics: list[str],
                 design: dict) -> RunTable:
    """A RunTable of the design's runs (every run 'done', metrics 0): structure only. Of a
    tuned design, one run per block x condition x draw (what the selection keeps); ``testbed``
    is the seed of a run's testbed table."""
    columns = [*block_columns, "condition", "mask_draw"]
    frame = pd.DataFrame([{c: run["testbed"]["seed"] if c == "testbed" else run[c] for c in columns}
                          for run in runs]).drop_duplicates(columns).reset_index(drop=True)
    for metric in metrics:
        frame[metric] = 0.0
    frame["_row"] = np.arange(len(frame))
    return RunTable(runs=frame, blocks=frame[block_columns].drop_duplicates(),
                    block_columns=list(block_columns), condition_column="condition",
                    replicate="seed", metrics=list(metrics), draw_column="mask_draw",
                    source="design", kind="design", n_rows=len(frame), design=design,
                    cluster=design.get("cluster"))


def _design_records(table: RunTable, spec: AnalysisSpec):
    """The comparisons (records with family) analyze would make on this table."""
    warnings: list[str] = []
    metrics, primary_metric, sesoi, _ = _resolve_metrics(
        table, spec, warnings)
    conditions, pairs = _resolve_pairs(table, spec, metrics)
    records = _collect(table, pairs, metrics, [], warnings, spec)
    if not records:
        raise TableError(f"{table.source}: no comparison has 2 or more matched blocks")
    families = assign_families(
        records, condition_kinds(conditions, table.design),
        baseline=RANDOM, primary_metric=primary_metric,
        declared_primary=spec.primary, split=spec.family_split)
    for record, family in zip(records, families):
        record["family"] = family
    return records, sesoi


def _pilot_sd(pilot: RunTable | None, spec: AnalysisSpec) -> dict:
    """(a, b, metric, cell label) -> (sd of the differences, n, observed mean) in the pilot."""
    if pilot is None:
        return {}
    result = analyze(pilot, spec)
    out = {}
    for row in result.comparisons.to_dict("records"):
        diffs = np.asarray(row["diffs"], dtype=float)
        key = (row["a"], row["b"], row["metric"], cell_label(row["cell"]))
        out[key] = (float(diffs.std(ddof=1)), len(diffs), float(diffs.mean()))
    return out


def plan(table: RunTable, spec: AnalysisSpec | None = None, *, pilot: RunTable | None = None,
         effects: dict | None = None, n_runs: int | None = None,
         seconds_per_run: float | None = None) -> dict:
    """The plan document (``causalloc plan --json``): families and comparisons."""
    spec = spec or AnalysisSpec()
    effects = effects or {}
    records, sesoi = _design_records(table, spec)
    n_blocks = np.array([len(r["a_values"]) for r in records])
    k = np.array([None if r["draws"] is None else r["draws"].shape[1] for r in records],
                 dtype=object)
    floors = p_floor(n_blocks, k, spec.max_exact_patterns, spec.max_resamples)
    family_of = pd.Series([r["family"] for r in records])
    sizes = family_of.map(family_of.value_counts()).to_numpy()
    pilot_sd = _pilot_sd(pilot, spec)
    comparisons = []
    for i, record in enumerate(records):
        metric = record["metric"]
        key = (record["a"], record["b"], metric, cell_label(record["cell"]))
        entry = {"id": record["id"], "family": record["family"], "metric": metric,
                 "n_blocks": int(n_blocks[i]), "k_random": None if k[i] is None else int(k[i]),
                 "p_floor": float(floors[i]), "sesoi": sesoi[metric]}
        found = pilot_sd.get(key)
        if metric in effects:
            effect, source = effects[metric], "stated (--effect)"
        elif found is not None:
            effect, source = found[2], "pilot observed difference"
        else:
            effect, source = sesoi[metric], "SESOI"
        entry.update(effect=effect, effect_source=source)
        if found is None:
            entry.update(sd=None, sd_ci95=None, blocks_needed_detect=None,
                         blocks_needed_detect_range=None, blocks_needed_equivalence=None)
        else:
            sd, n_pilot, _ = found
            detect, equivalence = blocks_needed([sd], [sesoi[metric]], spec.alpha, spec.power,
                                                [sizes[i]], effect=[effect])
            lo, hi = sd_interval([sd], n_pilot)
            ends = [blocks_to_detect(end, [effect], spec.alpha, spec.power, [sizes[i]])[0]
                    for end in (lo, hi)]
            entry.update(sd=sd, sd_ci95=[float(lo[0]), float(hi[0])], pilot_blocks=n_pilot,
                         blocks_needed_detect=_int(detect[0]),
                         blocks_needed_detect_range=[_int(ends[0]), _int(ends[1])],
                         blocks_needed_equivalence=_int(equivalence[0]))
        comparisons.append(entry)
    families = []
    names = sorted(dict.fromkeys(family_of), key=lambda n: not is_primary_family(n))
    for name in names:
        members = [c for c in comparisons if c["family"] == name]
        min_p = min_p_adjusted([c["p_floor"] for c in members], spec.adjust)
        families.append({
            "name": name, "n_comparisons": len(members), "adjust": spec.adjust,
            "min_p_adj": min_p, "can_reject": bool(min_p < spec.alpha),
            "min_blocks_to_reject": _min_blocks_to_reject(members, spec),
            "blocks_needed_detect": _largest(members, "blocks_needed_detect"),
            "blocks_needed_equivalence": _largest(members, "blocks_needed_equivalence"),
        })
    cpu = None if seconds_per_run is None or n_runs is None else seconds_per_run * n_runs
    return {"alpha": spec.alpha, "adjust": spec.adjust, "power": spec.power,
            "n_runs": n_runs, "seconds_per_run": seconds_per_run, "cpu_seconds": cpu,
            "families": families, "comparisons": comparisons}


def _min_blocks_to_reject(members: list[dict], spec: AnalysisSpec) -> int | None:
    """Fewest blocks per comparison at which the family's min_p_adj falls below alpha."""
    for n in range(2, 200):
        floors = [float(p_floor(n, m["k_random"], spec.max_exact_patterns, spec.max_resamples))
                  for m in members]
        if min_p_adjusted(floors, spec.adjust) < spec.alpha:
            return n
    return None


def _largest(members: list[dict], key: str):
    values = [m[key] for m in members if m[key] is not None]
    return max(values) if values else None


def _int(value):
    return None if value is None or not math.isfinite(value) else int(value)
