"""lm-evaluation-harness results (e.g. WMDP) -> a causalloc run table (one row per file).

Two formats are read, told apart by their keys:

* lm-evaluation-harness (EleutherAI) ``results_<date>.json``, written under
  ``--output_path/<model_name_sanitized>/``: ``results`` = ``{task: {"<metric>,<filter>":
  value, "<metric>_stderr,<filter>": se, "alias": ...}}`` (group tasks may also sit in
  ``groups``), ``higher_is_better`` = ``{task: {metric: bool}}``, ``config`` (model_args,
  seeds of the evaluation), ``git_hash``, ``model_name``;
* open-unlearning's ``LMEval_SUMMARY.json`` (src/evals/lm_eval.py): ``{"<task>/<metric>":
  value}`` with lm-eval's ``,<filter>`` suffix removed, in a run's ``evals/`` folder next
  to ``.hydra/config.yaml``.

Metric columns are ``<task>_<metric>`` (``wmdp_bio_acc``, ``wmdp_bio_acc_stderr``,
``mmlu_acc_norm``); a filter other than ``none`` is appended (``gsm8k_exact_match_strict_match``);
characters other than letters, digits and ``_`` become ``_``. Direction: tasks matching
FORGET_TASKS (WMDP, Li et al. 2024: the hazardous knowledge to remove) are lower-is-better;
other tasks take the file's ``higher_is_better``, else the metric's usual direction
(accuracy-like higher, perplexity-like lower); standard errors have none. Accuracies stay
in [0, 1], as lm-eval writes them.

The run's name is ``model_name`` (harness; it holds the evaluated checkpoint's path), or
the run folder's ``task_name`` (open-unlearning), else the folder's name; ``KEY`` rules read
the harness JSON (``config.model_args``) or the run's Hydra config. ``framework_commit`` is
the harness's ``git_hash`` (lm-evaluation-harness's commit), or a commit key of the Hydra
config (open-unlearning's).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from causalloc.errors import DataError
from causalloc.importers import open_unlearning
from causalloc.importers.common import ImportedRun, MetricFact, build_table, find_files, read_json

#: tasks whose metric is knowledge to forget (lower is better)
FORGET_TASKS = re.compile(r"^wmdp")
#: metric names (without filter) and their usual direction when the file gives none
HIGHER = {"acc", "acc_norm", "exact_match", "f1", "mcc", "bleu", "rouge1", "rouge2", "rougeL"}
LOWER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}
SUMMARY_NAME = "LMEval_SUMMARY.json"
WHAT = ("an lm-eval results JSON: a 'results' object {task: {'acc,none': value}} "
        "(lm-evaluation-harness) or '<task>/acc' keys (open-unlearning LMEval_SUMMARY.json)")


def _column(task: str, metric: str, filt: str = "none") -> str:
    name = f"{task}_{metric}" + ("" if filt in ("none", "") else f"_{filt}")
    return re.sub(r"\W", "_", name)


def _fact(task: str, metric: str, declared: dict) -> MetricFact:
    base = metric.removesuffix("_stderr")
    if metric.endswith("_stderr"):
        return MetricFact("standard error, units of " + base, None,
                          f"lm-eval's standard error of {task} {base}")
    if FORGET_TASKS.search(task):
        direction = False
    elif isinstance(declared.get(task, {}).get(metric), bool):
        direction = declared[task][metric]
    else:
        direction = True if metric in HIGHER else False if metric in LOWER else None
    scale = "> 0" if metric in LOWER else "[0, 1]" if metric in HIGHER else "as lm-eval writes"
    role = "forget task: lower is better" if FORGET_TASKS.search(task) else "lm-eval task"
    return MetricFact(scale, direction, f"{task} {metric} ({role})")


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse(path: Path, data: dict) -> tuple[dict[str, float], dict[str, MetricFact], str]:
    """(metrics, facts, format) of one file's JSON; DataError naming the file if neither
    format fits."""
    metrics, facts = {}, {}
    if isinstance(data.get("results"), dict):
        declared = data.get("higher_is_better") if isinstance(
            data.get("higher_is_better"), dict) else {}
        tables = {**(data.get("groups") or {}), **data["results"]}
        for task, values in tables.items():
            if not isinstance(values, dict):
                continue
            for key, value in values.items():
                metric, sep, filt = key.partition(",")
                if sep and _numeric(value):
                    column = _column(task, metric, filt)
                    metrics[column] = float(value)
                    facts[column] = _fact(task, metric, declared)
        kind = "harness"
    else:
        for key, value in data.items():
            task, sep, metric = key.rpartition("/")
            if sep and task and metric and _numeric(value):
                column = _column(task, metric)
                metrics[column] = float(value)
                facts[column] = _fact(task, metric, {})
        kind = "summary"
    if not metrics:
        keys = list(data)[:8]
        raise DataError(f"{path}: not {WHAT}; no numeric task metric found (top-level keys: "
                        f"{keys}{' ...' if len(data) > 8 else ''})")
    return metrics, facts, kind


def read_file(path: Path) -> tuple[ImportedRun, dict[str, MetricFact]]:
    """One results file as an ImportedRun and its metrics' facts."""
    if path.suffix.lower() == ".csv":
        raise DataError(f"{path}: a CSV file, not {WHAT} (a MUSE CSV goes to "
                        "`causalloc import muse`)")
    data = read_json(path, WHAT)
    metrics, facts, kind = parse(path, data)
    folder = path.parent.parent if path.parent.name == "evals" else path.parent
    fields, source, extra = data, str(path), {}
    if kind == "harness":
        name = str(data.get("model_name") or folder.name)
        if data.get("git_hash"):
            extra["framework_commit"] = str(data["git_hash"])
    elif (folder / open_unlearning.CONFIG).is_file():
        fields = open_unlearning.read_config(folder)
        source = str(folder / open_unlearning.CONFIG)
        name = str(fields.get("task_name") or folder.name)
        commit = open_unlearning.framework_commit(fields)
        if commit:
            extra["framework_commit"] = commit
    else:
        name = folder.name
    return ImportedRun(run_id=str(path), name=name, fields=fields, metrics=metrics,
                       source=source, extra=extra), facts


def _is_results(path: Path) -> bool:
    return path.name == SUMMARY_NAME or (path.name.startswith("results")
                                         and path.suffix == ".json")


def import_runs(paths: list[str | Path], condition_from: str,
                blocks: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """The run table of the lm-eval results files in ``paths`` (files, or folders searched
    for ``results*.json`` and ``LMEval_SUMMARY.json``); ``frame.attrs["facts"]``."""
    files = find_files(paths, _is_results, f"lm-eval results file (results*.json or "
                       f"{SUMMARY_NAME})")
    runs, facts = [], {}
    for path in files:
        run, run_facts = read_file(path)
        runs.append(run)
        facts.update(run_facts)
    frame = build_table(runs, condition_from, blocks or {}, "lm-eval")
    frame.attrs["facts"] = facts
    frame.attrs["warnings"] = []
    return frame
