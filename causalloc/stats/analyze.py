"""Orchestration: run table -> comparisons, mixed models, dose-response -> analysis.json.

The per-comparison statistics are computed in batches of comparisons that share the
number of blocks n: one enumeration of the 2^n sign patterns, one set of bootstrap
resamples and vectorised t / Wilcoxon / TOST for the whole batch. Random draws come from
Generators seeded by ``numpy.random.default_rng([seed, purpose, n(, K)])`` with purpose
0 = bootstrap, 1 = sign-flip Monte Carlo, 2 = randomization test, so every number can
be reproduced from ``stats_seed`` alone, whatever else is in the table. The adaptive
Monte Carlo rounds (:func:`_stabilise_monte_carlo`) draw from
``default_rng([seed, purpose, n, K or 0, R])`` with R the round's number of resamples.

The verdict p (``verdict_test``) is the stratified randomization test when the baseline
has K >= 2 random masks per block (exact for any metric distribution) and the sign-flip
test otherwise (single-mask pairs); see reports/validation/calibration.md for why the
sign-flip test on (mask - mean of K draws) is not used there.
"""

from __future__ import annotations

import datetime
import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from causalloc import __version__
from causalloc.errors import SpecError, TableError
from causalloc.provenance import package_versions, source_commit
from causalloc.stats import table as table_module
from causalloc.stats.bayes import jzs_bf10
from causalloc.stats.classical import paired_t, wilcoxon_signed_rank
from causalloc.stats.effects import bootstrap_mean_ci, paired_effect_sizes, prob_improvement
from causalloc.stats.families import assign_families, describe_families
from causalloc.stats.tuning import selected_table
from causalloc.stats.mixed import (
    DOSE_COLUMNS,
    MIXED_COLUMNS,
    cluster_effects,
    dose_responses,
    mixed_model,
)
from causalloc.stats.multiplicity import MC_Z, adjust_pvalues, unstable_decisions
from causalloc.stats.permutation import INVERTED_COLUMNS, randomization_test, sign_flip_test
from causalloc.stats.power import blocks_needed, blocks_to_detect, p_floor, sd_interval
from causalloc.stats.sequential import CONTINUE, order_by_replicate, sequential_test
from causalloc.stats.spec import AnalysisSpec, Comparison
from causalloc.stats.table import RunTable
from causalloc.stats.verdict import verdicts
from causalloc.vocab import DEFAULT_SESOI, HIGHER_IS_BETTER, REFERENCE_KINDS, condition_kinds
from causalloc.vocab import cell_label as _cell_label

#: columns of the comparisons DataFrame and of comparisons.csv, in this order
COMPARISON_COLUMNS = [
    "id", "family", "a", "b", "metric", "cell", "n_blocks", "mean_a", "mean_b", "mean_diff",
    "ci95_lo", "ci95_hi", "ci95_method", "ci95_bca_lo", "ci95_bca_hi", "ci95_bca_method",
    "n_boot", "t_ci95_lo", "t_ci95_hi", "d_z", "g_av",
    "prob_improvement", "prob_improvement_ci95_lo", "prob_improvement_ci95_hi", "p_perm",
    "p_perm_exact", "n_resamples", "p_perm_mc_se", "p_rand", "p_rand_exact", "n_resamples_rand",
    "p_rand_mc_se", "k_random", "p_t", "p_wilcoxon", "verdict_test", "p_adj", "adj_method",
    "sesoi", "tost_p", "tost_p_adj", "tost_ci90_lo", "tost_ci90_hi", "tost_ci_level", "bf10", "diffs_constant",
    "verdict", "blocks_needed", "blocks_needed_detect", "blocks_needed_detect_lo",
    "blocks_needed_detect_hi", "blocks_needed_equivalence", "higher_is_better",
]
#: (p, Monte Carlo se, resamples) columns of each ``verdict_test``
_TEST_COLUMNS = {"sign_flip": ("p_perm", "p_perm_mc_se", "n_resamples"),
                 "randomization": ("p_rand", "p_rand_mc_se", "n_resamples_rand")}
#: the p-value column behind each ``verdict_test``
VERDICT_P = {test: columns[0] for test, columns in _TEST_COLUMNS.items()}
#: the random baseline's condition name
RANDOM = "random"
#: stats packages whose versions are recorded
#: the distributions the analysis' numbers depend on
STATS_PACKAGES = ("numpy", "scipy", "pandas", "statsmodels", "pingouin")


def compare_paired(
    a: np.ndarray,
    b: np.ndarray,
    *,
    sesoi: float | np.ndarray,
    higher_is_better: bool | np.ndarray = True,
    draws: np.ndarray | None = None,
    alpha: float = 0.05,
    ci_level: float = 0.95,
    n_boot: int = 9999,
    n_permutations: int = 9999,
    max_exact_patterns: int = 2**16,
    seed: int = 0,
) -> pd.DataFrame:
    """All per-comparison statistics for rows of paired values a, b ([m, n], same n).

    ``draws`` ([m, n, K], optional) are the K random masks behind b (b = their mean) for
    the randomization test, which then gives the verdict p (``verdict_test``). Returns one
    row per comparison with the unadjusted statistics (``p_adj``/verdict need the family
    and are added by :func:`analyze`).

    ``ci95`` and the TOST (``tost_p``, ``tost_ci90`` at level 1 - 2 alpha) come from the
    verdict test inverted under a shift (:class:`causalloc.stats.permutation._ShiftInversion`),
    so "ci95 excludes 0" and "verdict p < 1 - ci_level" are the same statement and
    equivalence keeps its error under skew; the bootstrap BCa interval is the secondary
    ``ci95_bca``.

    Differences that are essentially constant (se <= 10 eps |mean|, R's t.test criterion
    "data are essentially constant") have no t, d_z, t CI or Bayes factor: those are
    NaN and ``diffs_constant`` is True; the permutation p's, interval and TOST still stand.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    n = a.shape[1]
    diffs = a - b
    sesoi = np.broadcast_to(np.asarray(sesoi, dtype=float), (len(a),))
    inversion = {"ci_level": ci_level, "alpha": alpha, "sesoi": sesoi}
    boot = bootstrap_mean_ci(
        diffs, rng=np.random.default_rng([seed, 0, n]), n_boot=n_boot, ci_level=ci_level
    )
    perm = sign_flip_test(
        diffs,
        rng=np.random.default_rng([seed, 1, n]),
        n_resamples=n_permutations,
        max_exact_patterns=max_exact_patterns,
        **inversion,
    )
    t_test = paired_t(diffs, ci_level)
    out = pd.DataFrame(
        {
            "n_blocks": n,
            "mean_a": a.mean(axis=1),
            "mean_b": b.mean(axis=1),
            "mean_diff": boot["mean_diff"],
            "ci95_bca_lo": boot["ci_lo"],
            "ci95_bca_hi": boot["ci_hi"],
            "ci95_bca_method": boot["ci_method"],
            "n_boot": boot["n_boot"],
            "t_ci95_lo": t_test["t_ci_lo"],
            "t_ci95_hi": t_test["t_ci_hi"],
            "sd_diff": diffs.std(axis=1, ddof=1),
            "t": t_test["t"],
            "p_t": t_test["p_t"],
            "p_wilcoxon": wilcoxon_signed_rank(diffs),
        }
    )
    out = pd.concat([out, paired_effect_sizes(a, b), perm.drop(columns=list(INVERTED_COLUMNS))],
                    axis=1)
    pi = prob_improvement(diffs, higher_is_better, ci_level)
    out["prob_improvement"] = pi["prob_improvement"]
    out["prob_improvement_ci95_lo"] = pi["prob_improvement_lo"]
    out["prob_improvement_ci95_hi"] = pi["prob_improvement_hi"]
    out["sesoi"] = sesoi
    out["tost_ci_level"] = 1 - 2 * alpha  # tost_ci90 is this (1 - 2 alpha) interval
    out["bf10"] = jzs_bf10(out["t"].to_numpy(), n)
    constant = out["sd_diff"].to_numpy() / math.sqrt(n) <= 10 * np.finfo(float).eps * np.abs(
        out["mean_diff"].to_numpy()
    )
    out["diffs_constant"] = constant
    not_defined = ["t", "p_t", "t_ci95_lo", "t_ci95_hi", "d_z", "bf10"]
    out.loc[constant, not_defined] = np.nan
    for column in ("p_rand", "p_rand_exact", "n_resamples_rand", "p_rand_mc_se", "k_random"):
        out[column] = np.nan
    out["verdict_test"] = "sign_flip" if draws is None else "randomization"
    verdict_result = perm
    if draws is not None:
        k = np.asarray(draws).shape[-1]
        verdict_result = randomization_test(
            a,
            draws,
            rng=np.random.default_rng([seed, 2, n, k]),
            n_resamples=n_permutations,
            max_exact_patterns=max_exact_patterns,
            **inversion,
        )
        for column in verdict_result.columns.difference(INVERTED_COLUMNS):
            out[column] = verdict_result[column].to_numpy()
    _set_inverted(out, slice(None), verdict_result, out["verdict_test"].iloc[0])
    return out


#: ``ci95_method`` of each verdict test
CI_METHODS = {"sign_flip": "inverted sign-flip", "randomization": "inverted randomization"}


def _set_inverted(frame: pd.DataFrame, rows, result: pd.DataFrame, test: str) -> None:
    """Copy the verdict test's inverted interval and shifted TOST into ``frame`` rows."""
    columns = {"inv_ci_lo": "ci95_lo", "inv_ci_hi": "ci95_hi", "inv_tost_p": "tost_p",
               "inv_tost_lo": "tost_ci90_lo", "inv_tost_hi": "tost_ci90_hi"}
    for source, target in columns.items():
        frame.loc[rows, target] = result[source].to_numpy()
    frame.loc[rows, "ci95_method"] = CI_METHODS[test]


@dataclass
class AnalysisResult:
    """Tidy results plus everything analysis.json records about input, policy and exclusions."""

    comparisons: pd.DataFrame
    mixed_models: pd.DataFrame
    dose_response: pd.DataFrame
    meta: dict = field(default_factory=dict)
    #: a tuned design's ``selected_runs.csv`` (:func:`causalloc.stats.tuning.selected_table`)
    selected: pd.DataFrame | None = None

    def to_dict(self) -> dict:
        """The analysis.json document (docs/analysis_json.md); non-finite numbers -> null."""
        comparisons = []
        for row in self.comparisons.to_dict("records"):
            entry = {k: row[k] for k in ("id", "family", "a", "b", "metric")}
            entry["cell"] = row["cell"]
            entry.update({k: row[k] for k in ("n_blocks", "diffs", "replicates")})
            entry.update({k: row[k] for k in ("mean_a", "mean_b", "mean_diff")})
            entry["ci95"] = [row["ci95_lo"], row["ci95_hi"]]
            entry["ci95_method"] = row["ci95_method"]
            entry["ci95_bca"] = [row["ci95_bca_lo"], row["ci95_bca_hi"]]
            entry.update({k: row[k] for k in ("ci95_bca_method", "n_boot")})
            entry["t_ci95"] = [row["t_ci95_lo"], row["t_ci95_hi"]]
            entry.update({k: row[k] for k in ("d_z", "g_av", "prob_improvement")})
            entry["prob_improvement_ci95"] = [
                row["prob_improvement_ci95_lo"], row["prob_improvement_ci95_hi"]
            ]
            for key in ("p_perm", "p_perm_exact", "n_resamples", "p_perm_mc_se", "p_rand",
                        "p_rand_exact", "n_resamples_rand", "p_rand_mc_se", "k_random", "p_t",
                        "p_wilcoxon", "verdict_test", "p_adj", "adj_method", "sesoi", "tost_p",
                        "tost_p_adj"):
                entry[key] = row[key]
            entry["tost_ci90"] = [row["tost_ci90_lo"], row["tost_ci90_hi"]]
            entry["tost_ci_level"] = row["tost_ci_level"]
            for key in ("bf10", "diffs_constant", "verdict", "blocks_needed",
                        "blocks_needed_detect"):
                entry[key] = row[key]
            entry["blocks_needed_detect_range"] = [
                _as_int(row["blocks_needed_detect_lo"]), _as_int(row["blocks_needed_detect_hi"])]
            for key in ("blocks_needed_equivalence", "higher_is_better"):
                entry[key] = row[key]
            if row.get("sequential") is not None:
                entry["sequential"] = row["sequential"]
            if row.get("clusters") is not None:
                entry.update({k: row[k] for k in ("clusters", "by_cluster", "cluster_model")})
            if isinstance(row.get("flagged_runs"), dict):
                entry["flagged_runs"] = row["flagged_runs"]
            for key in ("n_blocks", "n_boot", "n_resamples", "n_resamples_rand", "k_random",
                        "blocks_needed", "blocks_needed_detect", "blocks_needed_equivalence"):
                entry[key] = _as_int(entry[key])
            comparisons.append(entry)
        mixed = []
        for row in self.mixed_models.to_dict("records"):
            row["ci95"] = [row.pop("ci95_lo"), row.pop("ci95_hi")]
            mixed.append(row)
        dose = []
        for row in self.dose_response.to_dict("records"):
            row["ci95"] = [row.pop("ci95_lo"), row.pop("ci95_hi")]
            dose.append(row)
        document = {
            "schema_version": 1,
            "causalloc_version": __version__,
            **self.meta,
            "comparisons": comparisons,
            "mixed_models": mixed,
            "dose_response": dose,
        }
        document["warnings"] = document.pop("warnings", [])
        return _json_clean(document)

    def comparisons_csv(self) -> pd.DataFrame:
        """comparisons.csv: the fixed columns, the cell as 'col=value, ...'."""
        frame = self.comparisons[COMPARISON_COLUMNS].copy()
        frame["cell"] = frame["cell"].map(cell_label)
        return frame


def _as_int(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return int(value)


def _json_clean(value):
    """Replace NaN/inf by None and numpy scalars/arrays by Python values, recursively."""
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cell_label(cell: dict) -> str:
    """The analysis' cell text, 'algorithm=ga, budget=0.1' (comparisons.csv, messages):
    :func:`causalloc.vocab.cell_label` with every column named."""
    return _cell_label(cell, named=True)


def default_pairs(conditions: list[str], design: dict) -> list[Comparison]:
    """The comparisons made when no spec lists them.

    Each condition vs ``random`` (random = the mean of its K draws per block; this
    includes oracle vs random); each condition that ``disjoint:*`` or ``layer_matched:*``
    conditions reference (e.g. attributed:activations) vs those controls. Without a
    ``random`` condition and with exactly two conditions: the first vs the second.
    """
    kinds = condition_kinds(conditions, design)
    present = set(conditions)
    pairs = []
    if RANDOM in conditions:
        pairs += [Comparison(c, RANDOM) for c in conditions if c != RANDOM]
    for control, (kind, reference) in kinds.items():
        if kind in REFERENCE_KINDS and reference in present - {RANDOM}:
            pairs.append(Comparison(reference, control))
    if not pairs and len(conditions) == 2:
        pairs = [Comparison(conditions[0], conditions[1])]
    if not pairs:
        raise SpecError(
            f"comparisons: no default comparison for conditions {conditions} (no 'random' "
            "condition); list them in an analysis spec under [[comparisons]]"
        )
    return list(dict.fromkeys(pairs))


def analyze(table: RunTable, spec: AnalysisSpec | None = None, *, command: str = "",
            sequential: dict | None = None) -> AnalysisResult:
    """Run the whole analysis of a loaded run table (modifies ``table.runs`` by its policies).

    ``sequential`` ({"look_every": N, "max_blocks": M or None}) adds the group-sequential
    analysis of :mod:`causalloc.stats.sequential` to every comparison.
    """
    spec = spec or AnalysisSpec()
    warnings_out: list[str] = []
    metrics, primary_metric, sesoi, direction = _resolve_metrics(table, spec, warnings_out)
    conditions, pairs = _resolve_pairs(table, spec, metrics)
    involved = list(dict.fromkeys(c for p in pairs for c in (p.a, p.b)))
    excluded = table_module.apply_nonfinite_policy(table, spec.nonfinite, metrics)
    dropped = table_module.check_matching(table, involved, spec.drop_unmatched)
    records = _collect(table, pairs, metrics, dropped, warnings_out, spec)
    if not records:
        raise TableError(f"{table.source}: no comparison has 2 or more matched blocks")
    families = assign_families(
        records, condition_kinds(conditions, table.design), baseline=RANDOM,
        primary_metric=primary_metric, declared_primary=spec.primary, split=spec.family_split,
    )
    for record, family in zip(records, families):
        record["family"] = family
    comparisons = _statistics(records, sesoi, direction, spec, warnings_out)
    if sequential:
        _sequential_verdicts(comparisons, records, spec, sequential)
    mixed, dose = _models(table, pairs, metrics, spec, warnings_out)
    meta = _meta(table, spec, command, metrics, primary_metric, sesoi, direction, comparisons)
    meta.update({"dropped_blocks": dropped, "excluded_runs": excluded,
                 "failed_runs": table.failed_runs, "warnings": warnings_out})
    if table.tuning is not None:
        meta["tuning"] = {**table.tuning, "selected_run_ids": table.runs["run_id"].astype(str).tolist()
                          if "run_id" in table.runs else []}
    if "flags" in table.runs:
        meta["flags"] = flag_counts(table)
        comparisons["flagged_runs"] = [_flagged(meta["flags"], cell, a, b) for cell, a, b in
                                       zip(comparisons["cell"], comparisons["a"], comparisons["b"])]
    if sequential:
        meta["policy"]["sequential"] = sequential_policy(sequential, spec)
    selected = None
    if table.tuning is not None:
        selected = selected_table(table.runs, list(dict.fromkeys([*table.metrics, *metrics])),
                                  table.design["tuning"])
    return AnalysisResult(comparisons, mixed, dose, meta, selected)


def flag_counts(table: RunTable) -> list[dict]:
    """Per cell and condition: runs, runs with any outcome flag, and each flag's count
    (``flags`` column, ``;``-joined names; :mod:`causalloc.flags` defines them). Of a tuned
    design, the selected runs."""
    runs = table.runs
    cells = table.cell_columns
    names = runs["flags"].fillna("").astype(str).str.split(";")
    out = []
    for key, rows in runs.groupby([*cells, table.condition_column], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        cell = {c: table_module._clean(v) for c, v in zip(cells, key[:-1])}
        flags = [f for f in names[rows.index] if f != [""]]
        counts: dict[str, int] = {}
        for run_flags in flags:
            for flag in run_flags:
                if flag:
                    counts[flag] = counts.get(flag, 0) + 1
        out.append({"cell": cell, "condition": key[-1], "n_runs": int(len(rows)),
                    "n_flagged": int(sum(1 for f in flags if any(f))), "counts": counts})
    return out


def _flagged(counts: list[dict], cell: dict, a: str, b: str) -> dict:
    """Flagged runs of a comparison's two conditions in its cell: {condition: n_flagged}."""
    return {entry["condition"]: entry["n_flagged"] for entry in counts
            if entry["cell"] == cell and entry["condition"] in (a, b)}


def _sequential_verdicts(frame: pd.DataFrame, records: list[dict], spec: AnalysisSpec,
                         options: dict) -> None:
    """Add ``sequential`` to every comparison and make its decision the ``verdict``.

    Blocks in ascending replicate order; the resamples of comparison i come from
    ``default_rng([stats_seed, 3, i])``; each hypothesis spends alpha / m (m = its family's
    size). ``continue`` (fewer blocks than planned, none conclusive) is verdict
    ``inconclusive``. See :mod:`causalloc.stats.sequential`.
    """
    sizes = frame.groupby("family")["family"].transform("size")
    results = []
    for i, record in enumerate(records):
        order = order_by_replicate(record["replicates"])
        draws = None if record["draws"] is None else record["draws"][order]
        results.append(sequential_test(
            record["a_values"][order], record["b_values"][order], draws,
            sesoi=float(frame.at[i, "sesoi"]), higher_is_better=bool(frame.at[i, "higher_is_better"]),
            look_every=options["look_every"], max_blocks=options.get("max_blocks"),
            alpha=spec.alpha, family_size=int(sizes[i]),
            rng=np.random.default_rng([spec.seed, 3, i]), n_resamples=spec.n_permutations))
    frame["sequential"] = results
    frame["verdict"] = [r["decision"] if r["decision"] != CONTINUE else "inconclusive"
                        for r in results]


def sequential_policy(options: dict, spec: AnalysisSpec) -> dict:
    """analysis.json ``policy.sequential``: the design of the looks and how alpha is spent."""
    return {"look_every": options["look_every"], "max_blocks": options.get("max_blocks"),
            "order": "ascending replicate value",
            "method": "group-sequential permutation test (one set of resamples for all looks), "
                      "Lan-DeMets O'Brien-Fleming spending; equivalence by two one-sided "
                      "shifted tests with their own spending",
            "multiplicity": "Bonferroni: each hypothesis of a family of m spends alpha / m",
            "n_resamples": spec.n_permutations,
            "verdict": "the sequential decision (stop at the first conclusive look)"}


def _resolve_metrics(table: RunTable, spec: AnalysisSpec, warnings_out: list[str]):
    """(metrics, primary metric, SESOI per metric, higher-is-better per metric), checked."""
    metrics = spec.metrics or table.metrics
    if len(set(metrics)) < len(metrics):
        warnings_out.append(f"metrics {metrics}: duplicates analysed once")
        metrics = list(dict.fromkeys(metrics))
    table_module.check_not_structural(metrics, table_module.structural_columns(table),
                                       table.source)
    primary_metric = spec.primary_metric or metrics[0]
    if primary_metric not in metrics:
        raise SpecError(f"primary_metric: {primary_metric!r} is not an analysed metric {metrics}")
    unknown_split = [c for c in spec.family_split if c not in table.cell_columns]
    if unknown_split:
        raise SpecError(
            f"family_split: {unknown_split} are not cell columns ({table.cell_columns})"
        )
    unknown = [m for m in metrics if m not in table.runs.columns]
    if unknown:
        raise TableError(f"{table.source}: metric column(s) {unknown} not in the table")
    for metric in metrics:
        if metric not in table.metrics:
            table.runs[metric] = table_module._numeric(table.runs[metric], metric, table.source)
    sesoi = {m: spec.sesoi.get(m, DEFAULT_SESOI.get(m)) for m in metrics}
    missing_sesoi = [m for m, v in sesoi.items() if v is None]
    if missing_sesoi:
        raise SpecError(
            f"sesoi: no SESOI for metric(s) {missing_sesoi} (no default): pass "
            f"--sesoi {missing_sesoi[0]}=VALUE or set [sesoi] in the spec, in metric units"
        )
    direction = {}
    for metric in metrics:
        if metric in spec.higher_is_better:
            direction[metric] = spec.higher_is_better[metric]
        else:
            direction[metric] = HIGHER_IS_BETTER.get(metric, True)
            if metric not in HIGHER_IS_BETTER:
                warnings_out.append(
                    f"metric {metric!r}: direction unknown, assumed higher is better "
                    "(set [higher_is_better] in the spec)"
                )

    return metrics, primary_metric, sesoi, direction


def _resolve_pairs(table: RunTable, spec: AnalysisSpec, metrics: list[str]):
    """(conditions with a done run, the comparisons to make), checked against the table."""
    cond = table.condition_column
    conditions = list(dict.fromkeys(table.runs[cond]))
    pairs = list(dict.fromkeys(spec.comparisons or default_pairs(conditions, table.design)))
    for i, pair in enumerate(pairs):
        for side in ("a", "b"):
            name = getattr(pair, side)
            if name not in conditions:
                raise SpecError(
                    f"comparisons[{i}].{side}: condition {name!r} has no done run in the table "
                    f"(conditions: {conditions})"
                )
        for metric in pair.metrics or ():
            if metric not in metrics:
                raise SpecError(f"comparisons[{i}].metrics: {metric!r} is not an analysed metric")

    return conditions, pairs


def _meta(table, spec, command, metrics, primary_metric, sesoi, direction, comparisons) -> dict:
    """analysis.json's input, setup, reproducibility, policy and families."""
    replicates = sorted(table.runs[table.replicate].unique().tolist(), key=str)
    meta = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "question": spec.question,
        "input": {
            "source": table.source,
            "kind": table.kind,
            "sha256": table.sha256,
            "block_columns": table.block_columns,
            "condition_column": table.condition_column,
            "replicate": table.replicate,
            "cluster": table.cluster,
            "draw_column": table.draw_column,
            "metrics": metrics,
            "n_rows": table.n_rows,
            "theta_o_fingerprints": sorted(table.runs[table_module.FINGERPRINT_COLUMN].dropna().astype(str).unique())
            if table_module.FINGERPRINT_COLUMN in table.runs else [],
        },
        "setup": table.design.get("setup", {}),
        "reproducibility": {
            "command": command,
            "spec_hash": table.design.get("spec_hash"),
            "analysis_spec_hash": spec.spec_hash,
            "design_command": table.design.get("command"),
            "seeds": replicates,
            "stats_seed": spec.seed,
            "package_versions": package_versions(STATS_PACKAGES),
            "commit": source_commit(),
            "run_environments": table.design.get("environments", []),
        },
        "policy": {
            "drop_unmatched": spec.drop_unmatched,
            "nonfinite": spec.nonfinite,
            "alpha": spec.alpha,
            "ci_level": spec.ci_level,
            "n_resamples": spec.n_boot,
            "n_permutations": spec.n_permutations,
            "max_exact_patterns": spec.max_exact_patterns,
            "max_resamples": spec.max_resamples,
            "monte_carlo_z": MC_Z,
            "adjust": spec.adjust,
            "primary_metric": primary_metric,
            "family_split": spec.family_split,
            "power": spec.power,
            "sesoi": sesoi,
            "higher_is_better": direction,
            "verdict_p": "p_adj: the verdict_test's p (randomization test against K >= 2 "
            "random draws per block, else sign-flip) adjusted within its family; equivalence "
            "on tost_p_adj, adjusted the same way; ci95 and the TOST (tost_p, tost_ci90 at "
            "level 1 - 2 alpha) are that same test inverted under a shift",
        },
        "families": describe_families(comparisons["family"], spec.adjust, spec.alpha,
                                      _p_floors(comparisons, spec)),
    }
    return meta


def _block_values(table: RunTable, metric: str):
    """Per (block, condition): mean over draws, the draws themselves as [blocks, K], and the
    number of finite draws."""
    key = table.block_columns
    cond = table.condition_column
    runs = table.runs
    if table.draw_column:
        runs = runs.sort_values(table.draw_column, kind="stable")
    draw_index = runs.groupby([*key, cond], sort=False).cumcount()
    # groupby + unstack keeps only the blocks that exist (pivot_table(dropna=False) would
    # add every combination of block-column levels)
    wide = runs.groupby([*key, cond], sort=True)[metric].mean().unstack(cond)
    draws = runs.assign(_draw=draw_index).groupby([*key, cond, "_draw"])[metric].mean()
    draws = draws.unstack("_draw")
    counts = runs.groupby([*key, cond], sort=True)[metric].count().unstack(cond)
    return wide, draws, counts.reindex(wide.index).to_dict("series")


def _collect(table, pairs, metrics, dropped, warnings_out, spec) -> list[dict]:
    """One record per (pair, metric, cell): per-block a, b and b's draws.

    A block where a condition has fewer finite draws than its K (a draw run failed or its
    metric was excluded) would compare against a baseline of fewer masks: it is left out of
    that comparison and listed in ``dropped_blocks`` (with --drop-unmatched or --nonfinite
    drop), else an error.
    """
    records = []
    cells = table.cell_columns
    for metric in metrics:
        wide, draws, counts = _block_values(table, metric)
        index = wide.index.to_frame(index=False)
        groups = index.groupby(cells, sort=False).indices if cells else {(): np.arange(len(index))}
        for pair in pairs:
            if pair.metrics and metric not in pair.metrics:
                continue
            a_all = wide[pair.a].to_numpy()
            b_all = wide[pair.b].to_numpy()
            draw_rows = draws.xs(pair.b, level=table.condition_column)
            draw_rows = draw_rows.reindex(wide.index).dropna(axis=1, how="all")
            multi = draw_rows.shape[1] > 1
            for cell_key, positions in groups.items():
                cell_values = cell_key if isinstance(cell_key, tuple) else (cell_key,)
                cell = {c: table_module._clean(v) for c, v in zip(cells, cell_values)}
                ok = np.isfinite(a_all[positions]) & np.isfinite(b_all[positions])
                replicate_ids = index[table.replicate].to_numpy()
                block_of = _block_identity(table, index)
                short = _short_draws(counts, [pair.a, pair.b], positions)
                for bad, condition, found, k in short:
                    reason = (f"{condition}: {found} of {k} {metric} draws finite (a draw run "
                              f"failed or was excluded); block left out of {pair.a} vs "
                              f"{pair.b} rather than a baseline of fewer draws")
                    where = (f"{metric} | {cell_label(cell)} | {table.replicate}="
                             f"{table_module._clean(replicate_ids[bad])}: {reason}")
                    if not (spec.drop_unmatched or spec.nonfinite == "drop"):
                        raise TableError(f"{table.source}: {where}; pass --drop-unmatched to "
                                         "leave such blocks out")
                    warnings_out.append(where)
                    dropped.append({"cell": cell, "block": block_of(bad),
                                    "missing": [condition], "reason": reason})
                for bad in positions[~ok]:
                    dropped.append(
                        {
                            "cell": cell,
                            "block": block_of(bad),
                            "missing": [pair.a, pair.b],
                            "reason": f"non-finite {metric} excluded (nonfinite=drop); "
                            f"block left out of {pair.a} vs {pair.b} only",
                        }
                    )
                use = positions[ok & ~np.isin(positions, [bad for bad, *_ in short])]
                label = f"{pair.a} vs {pair.b} | {metric} | {cell_label(cell)}"
                if len(use) < 2:
                    message = f"{label}: {len(use)} matched block(s), need >= 2"
                    if spec.drop_unmatched or spec.nonfinite == "drop":
                        warnings_out.append(f"skipped {message}")
                        continue
                    raise TableError(f"{table.source}: {message}")
                records.append(
                    {
                        "id": label,
                        "family": pair.family,
                        "a": pair.a,
                        "b": pair.b,
                        "metric": metric,
                        "cell": cell,
                        "a_values": a_all[use],
                        "b_values": b_all[use],
                        "draws": draw_rows.to_numpy()[use] if multi else None,
                        "replicates": [table_module._clean(r) for r in replicate_ids[use]],
                        "clusters": None if not table.cluster else
                        [table_module._clean(c) for c in index[table.cluster].to_numpy()[use]],
                    }
                )
    return records


def _block_identity(table: RunTable, index: pd.DataFrame):
    """Position -> the block's identity within its cell: {cluster, replicate} values."""
    columns = [c for c in (table.cluster, table.replicate) if c]
    return lambda position: {c: table_module._clean(index[c].iloc[position]) for c in columns}


def _short_draws(counts: dict, conditions: list[str], positions: np.ndarray):
    """(position, condition, finite draws, K) of the blocks where a condition has some but
    fewer finite draws than its K (the most it has in any block)."""
    out = []
    for condition in conditions:
        found = counts[condition].to_numpy()[positions]
        k = counts[condition].max()
        out += [(pos, condition, int(n), int(k))
                for pos, n in zip(positions, found) if 0 < n < k]
    return out


def _statistics(records, sesoi, direction, spec: AnalysisSpec, warnings_out) -> pd.DataFrame:
    """Batch the records by (n, K) and compute every statistic; then adjust and decide."""
    batches: dict[tuple, list[int]] = {}
    for i, record in enumerate(records):
        k = None if record["draws"] is None else record["draws"].shape[1]
        batches.setdefault((len(record["a_values"]), k), []).append(i)
    parts = []
    for (_, k), members in batches.items():
        a = np.stack([records[i]["a_values"] for i in members])
        b = np.stack([records[i]["b_values"] for i in members])
        draws = None if k is None else np.stack([records[i]["draws"] for i in members])
        metrics = [records[i]["metric"] for i in members]
        part = compare_paired(
            a,
            b,
            sesoi=np.array([sesoi[m] for m in metrics]),
            higher_is_better=np.array([direction[m] for m in metrics]),
            draws=draws,
            alpha=spec.alpha,
            ci_level=spec.ci_level,
            n_boot=spec.n_boot,
            n_permutations=spec.n_permutations,
            max_exact_patterns=spec.max_exact_patterns,
            seed=spec.seed,
        )
        part.index = members
        parts.append(part)
    stats_frame = pd.concat(parts).sort_index()
    info = pd.DataFrame(
        [
            {key: r[key] for key in ("id", "family", "a", "b", "metric", "cell", "replicates", "clusters")}
            | {"diffs": (r["a_values"] - r["b_values"]).tolist()}
            for r in records
        ]
    )
    frame = pd.concat([info, stats_frame], axis=1)
    frame["higher_is_better"] = frame["metric"].map(direction)
    frame["adj_method"] = spec.adjust
    _stabilise_monte_carlo(frame, records, spec, warnings_out)
    frame["p_adj"] = adjust_pvalues(_verdict_columns(frame)[0], frame["family"], spec.adjust)
    frame["tost_p_adj"] = adjust_pvalues(frame["tost_p"], frame["family"], spec.adjust)
    frame["verdict"] = verdicts(
        frame["mean_diff"], frame["p_adj"], frame["tost_p_adj"], frame["higher_is_better"],
        spec.alpha,
    ).to_numpy()
    for row in frame[frame["diffs_constant"]].itertuples():
        warnings_out.append(
            f"{row.id}: the differences are essentially constant (mean {row.mean_diff:.6g}, "
            f"sd {row.sd_diff:.3g}; R: 'data are essentially constant'): t, d_z and "
            "Bayes factor not computed; the verdict, interval and TOST rest on the permutation "
            "test alone"
        )
    _planning_numbers(frame, spec)
    frame["p_perm_exact"] = frame["p_perm_exact"].astype(bool)
    frame["p_rand_exact"] = [None if pd.isna(v) else bool(v) for v in frame["p_rand_exact"]]
    frame["diffs_constant"] = frame["diffs_constant"].astype(bool)
    frame["sequential"] = None
    frame["by_cluster"], frame["cluster_model"] = zip(*(
        cluster_effects(np.asarray(d), c, spec.ci_level) for d, c in zip(frame["diffs"], frame["clusters"])))
    return frame[[*COMPARISON_COLUMNS, "diffs", "replicates", "clusters", "by_cluster",
                  "cluster_model", "sequential"]]


def _p_floors(frame: pd.DataFrame, spec: AnalysisSpec) -> pd.Series:
    """Smallest p each comparison's verdict test can reach (:func:`p_floor`)."""
    k = frame["k_random"].where(frame["verdict_test"] == "randomization")
    return pd.Series(p_floor(frame["n_blocks"].to_numpy(), k.to_numpy(dtype=object),
                             spec.max_exact_patterns, spec.max_resamples), index=frame.index)


def _planning_numbers(frame: pd.DataFrame, spec: AnalysisSpec) -> None:
    """``blocks_needed_detect`` / ``_equivalence`` and the ``blocks_needed`` of inconclusive rows.

    detect: blocks to detect the OBSERVED difference (d_z = |mean_diff| / sd_diff) at the
    family-adjusted alpha with ``power``; ``blocks_needed_detect_range`` gives the same
    number at the ends of the sd's 95% chi-square interval (:func:`sd_interval`), because
    an sd from 8 blocks is uncertain by a factor 2. equivalence: blocks for TOST to show
    equivalence when the true difference is 0. ``blocks_needed`` (inconclusive rows only)
    answers the open question: equivalence when |mean_diff| < SESOI (the data point to "no
    effect that matters"), else detection of the observed difference.
    """
    family_size = frame.groupby("family")["family"].transform("size").to_numpy()
    sd = frame["sd_diff"].to_numpy()
    sesoi = frame["sesoi"].to_numpy()
    observed = frame["mean_diff"].to_numpy()
    detect, equivalence = blocks_needed(sd, sesoi, spec.alpha, spec.power, family_size,
                                        effect=observed)
    sd_lo, sd_hi = sd_interval(sd, frame["n_blocks"].to_numpy())
    ends = [blocks_to_detect(end, observed, spec.alpha, spec.power, family_size)
            for end in (sd_lo, sd_hi)]
    frame["blocks_needed_detect"] = detect
    frame["blocks_needed_detect_lo"], frame["blocks_needed_detect_hi"] = ends
    frame["blocks_needed_equivalence"] = equivalence
    needed = np.where(np.abs(observed) < sesoi, equivalence, detect)
    frame["blocks_needed"] = np.where(frame["verdict"] == "inconclusive", needed, np.nan)


def _verdict_columns(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The verdict test's p, Monte Carlo se and resamples of every row."""
    picked = []
    for position in range(3):
        values = pd.Series(np.nan, index=frame.index)
        for test, columns in _TEST_COLUMNS.items():
            rows = frame["verdict_test"] == test
            values[rows] = frame.loc[rows, columns[position]].astype(float)
        picked.append(values)
    return tuple(picked)


def _stabilise_monte_carlo(frame: pd.DataFrame, records: list[dict], spec: AnalysisSpec,
                           warnings_out: list[str]) -> None:
    """Resample the verdict p of every comparison whose decision could flip on MC noise.

    A decision (p_adj < alpha after the family's adjustment) is unstable when it differs
    between the two ends of the 99% Monte Carlo intervals p -+ 2.576 se
    (:func:`causalloc.stats.multiplicity.unstable_decisions`). Those comparisons are tested
    again with 4 (R + 1) - 1 fresh resamples (9,999 -> 39,999 -> 159,999 -> 639,999 ->
    ``max_resamples``), which replace the old ones, until every decision is stable or the
    cap is reached (then a warning names the comparison). Exact p's have se = 0 and are
    never resampled. The final p is an ordinary Monte Carlo p of its R resamples.
    """
    while True:
        p, se, used = _verdict_columns(frame)
        unstable = unstable_decisions(p, se, frame["family"], spec.adjust, spec.alpha)
        unstable = unstable & (se > 0).to_numpy()
        open_rows = np.flatnonzero(unstable & (used < spec.max_resamples).to_numpy())
        if not len(open_rows):
            break
        groups: dict[tuple, list[int]] = {}
        for i in open_rows:
            k = 0 if records[i]["draws"] is None else records[i]["draws"].shape[1]
            key = (frame.at[i, "verdict_test"], len(records[i]["a_values"]), k, int(used[i]))
            groups.setdefault(key, []).append(int(i))
        for (test, n, k, resamples), members in groups.items():
            resamples = min(4 * (resamples + 1) - 1, spec.max_resamples)
            purpose = 1 if test == "sign_flip" else 2
            options = {"rng": np.random.default_rng([spec.seed, purpose, n, k, resamples]),
                       "n_resamples": resamples, "max_exact_patterns": spec.max_exact_patterns,
                       "ci_level": spec.ci_level, "alpha": spec.alpha,
                       "sesoi": frame.loc[members, "sesoi"].to_numpy(dtype=float)}
            a = np.stack([records[i]["a_values"] for i in members])
            if test == "sign_flip":
                b = np.stack([records[i]["b_values"] for i in members])
                result = sign_flip_test(a - b, **options)
            else:
                draws = np.stack([records[i]["draws"] for i in members])
                result = randomization_test(a, draws, **options)
            for column in _TEST_COLUMNS[test]:
                frame.loc[members, column] = result[column].to_numpy()
            _set_inverted(frame, members, result, test)
    for i in np.flatnonzero(unstable):
        warnings_out.append(
            f"{frame.at[i, 'id']}: the {frame.at[i, 'verdict_test']} p = {p[i]:.4g} "
            f"(Monte Carlo se {se[i]:.2g}, {int(used[i]):,} resamples, the cap "
            "max_resamples) is too close to the decision threshold for a stable verdict"
        )


def _mixed_model_rows(table: RunTable, metric: str, involved: list[str],
                      warnings_out: list[str]) -> pd.DataFrame:
    """Per (block, condition) means for the models, on exactly the comparisons' blocks.

    A (block, condition) with fewer finite draws than the condition's K (a draw run failed
    or was excluded by --nonfinite drop) is left out, as :func:`_collect` leaves that block
    out of every comparison, and each one is listed in ``warnings_out``.
    """
    key, cond = table.block_columns, table.condition_column
    grouped = table.runs[table.runs[cond].isin(involved)].groupby([*key, cond], sort=True)[metric]
    rows = pd.concat({"mean": grouped.mean(), "finite": grouped.count()}, axis=1).reset_index()
    k = rows.groupby(cond)["finite"].transform("max")
    short = rows["finite"] < k
    for row in rows[short].to_dict("records"):
        block = {c: table_module._clean(row[c]) for c in key}
        warnings_out.append(
            f"mixed model for {metric}: {row[cond]} in block {block} left out ({row['finite']} "
            f"of {int(k.max())} draws finite), as in the comparisons")
    return rows[~short].drop(columns="finite").rename(columns={"mean": metric})


def _models(table: RunTable, pairs, metrics, spec: AnalysisSpec, warnings_out):
    """Mixed models per metric and dose-response regressions per cell."""
    mixed_parts, dose_rows = [], []
    cond = table.condition_column
    key = table.block_columns
    for metric in metrics:
        metric_pairs = [p for p in pairs if not p.metrics or metric in p.metrics]
        involved = list(dict.fromkeys(c for p in metric_pairs for c in (p.a, p.b)))
        reference = RANDOM if RANDOM in involved else metric_pairs[0].b
        block_means = _mixed_model_rows(table, metric, involved, warnings_out)
        if spec.mixed_model and len(involved) > 1:
            try:
                mixed_parts.append(
                    mixed_model(
                        block_means,
                        metric=metric,
                        condition=cond,
                        reference=reference,
                        replicate=table.replicate,
                        block_columns=key,
                        ci_level=spec.ci_level,
                        cluster=table.cluster,
                    )
                )
            except (ValueError, np.linalg.LinAlgError) as exc:
                warnings_out.append(f"mixed model for {metric} failed: {type(exc).__name__}: {exc}")
        if not spec.dose_response:
            continue
        if "budget" in table.cell_columns and block_means["budget"].nunique() > 1:
            dose_rows += dose_responses(
                block_means, metric=metric, predictor="budget", x_column="budget",
                replicate=table.replicate, ci_level=spec.ci_level,
                by=[c for c in table.cell_columns if c != "budget"], condition=cond,
            )
        overlap = "overlap_with_oracle"
        if overlap in table.runs and table.runs[overlap].notna().any():
            dose_rows += dose_responses(
                table.runs, metric=metric, predictor="overlap", x_column=overlap,
                replicate=table.replicate, ci_level=spec.ci_level, by=table.cell_columns,
            )
    mixed = pd.concat(mixed_parts, ignore_index=True) if mixed_parts else pd.DataFrame(
        columns=MIXED_COLUMNS
    )
    for metric, rows in mixed.groupby("metric", sort=False):
        converged = bool(rows["converged"].all())
        messages = list(dict.fromkeys(w for ws in rows["warnings"] for w in ws))
        if not converged or messages:
            warnings_out.append(
                f"mixed model for {metric}: converged={converged}; " + "; ".join(messages)
            )
    return mixed, pd.DataFrame(dose_rows, columns=DOSE_COLUMNS)


def write_analysis(result: AnalysisResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``analysis.json`` and ``comparisons.csv`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"analysis": out / "analysis.json", "comparisons": out / "comparisons.csv"}
    paths["analysis"].write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n")
    result.comparisons_csv().to_csv(paths["comparisons"], index=False)
    if result.selected is not None:
        paths["selected_runs"] = out / "selected_runs.csv"
        result.selected.to_csv(paths["selected_runs"], index=False)
    return paths


def command_line(argv: list[str] | None = None) -> str:
    """The command that produced the analysis, shell-quoted, for the reproducibility block."""
    return shlex.join(["causalloc", *(argv if argv is not None else sys.argv[1:])])


__all__ = [
    "COMPARISON_COLUMNS", "AnalysisResult", "analyze", "compare_paired", "default_pairs",
    "write_analysis",
]
