"""open-unlearning run folders -> a causalloc run table (one row per run).

open-unlearning (locuslab/open-unlearning) writes each run to a folder with Hydra's
``.hydra/config.yaml``, ``evals/TOFU_SUMMARY.json`` (``{metric: value}``) and
``evals/TOFU_EVAL.json`` (``{metric: {"agg_value": value, ...}}``), and, when it evaluates
during training, ``checkpoint-<step>/evals/`` in the same format. It has no field for a mask
or a condition, so the condition comes from a config key or from a pattern on the run name
(``task_name``, else the folder name) or path (:class:`~causalloc.importers.common.FieldRule`).

Columns written: ``run_id`` (the folder), ``run_name``, the block columns (default
``model`` = model.model_args.pretrained_model_name_or_path, ``forget_split``, ``trainer`` =
trainer.handler, ``seed`` = trainer.args.seed or seed; more with ``--block NAME=KEY_OR_REGEX``),
``condition``, ``status`` (``done``, or ``failed`` with ``error`` when a run has no summary:
such runs are kept so that their blocks count as unmatched), ``truth_ratio_aggregator``
(config ``eval.tofu.metrics.forget_truth_ratio.aggregator``: open-unlearning PR #163 added
``prob_mean``, which also redefines the ratio as correct/(correct+wrong) instead of
wrong/correct, so ``forget_truth_ratio`` of different aggregators are different metrics with
opposite directions; a table mixing them is refused), ``framework_commit`` (when the config
has ``git_commit``, ``git_hash`` or ``commit``, e.g. from the Hydra override
``+git_commit=$(git rev-parse HEAD)``: open-unlearning itself records none), every numeric
summary metric, ``log_forget_quality`` = ln(forget_quality) (causalloc's forget-quality
scale), ``abs_privleak`` = |privleak| and, when checkpoints were evaluated,
``checkpoint_trajectory`` (JSON list of ``{"step", metrics...}``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from causalloc.errors import DataError
from causalloc.importers.common import (
    MISSING,
    ImportedRun,
    MetricFact,
    build_table,
    config_value,
    read_json,
)

#: block column -> config keys tried in order (dotted paths into .hydra/config.yaml)
DEFAULT_BLOCKS: dict[str, tuple[str, ...]] = {
    "model": ("key:model.model_args.pretrained_model_name_or_path",),
    "forget_split": ("key:forget_split",),
    "trainer": ("key:trainer.handler",),
    "seed": ("key:trainer.args.seed", "key:seed"),
}
CONFIG = Path(".hydra") / "config.yaml"
SUMMARY = Path("evals") / "TOFU_SUMMARY.json"
EVAL = Path("evals") / "TOFU_EVAL.json"
#: where a run's config names the forget Truth Ratio's aggregator
AGGREGATOR_KEY = "eval.tofu.metrics.forget_truth_ratio.aggregator"
#: config keys that may carry the framework's commit (open-unlearning writes none itself)
COMMIT_KEYS = ("git_commit", "git_hash", "commit")

_P01 = "[0, 1]"
#: facts of open-unlearning's TOFU metrics (src/evals/metrics/, configs/eval/tofu_metrics/)
FACTS: dict[str, MetricFact] = {
    "forget_quality": MetricFact(_P01, True, "KS-test p-value of forget vs retain-model "
                                 "truth ratios (TOFU, Maini et al. 2024)"),
    "log_forget_quality": MetricFact("(-inf, 0], natural log", True, "ln(forget_quality)"),
    "model_utility": MetricFact(_P01, True, "harmonic mean of 9 retain/real-author/world-fact "
                                "probabilities, ROUGE and truth ratios (TOFU)"),
    "forget_Q_A_Prob": MetricFact(_P01, False, "mean answer probability on the forget set"),
    "forget_Q_A_ROUGE": MetricFact(_P01, False, "mean ROUGE-L recall on the forget set"),
    "extraction_strength": MetricFact(_P01, False, "extraction strength on the forget set "
                                      "(Carlini et al. 2021 as in open-unlearning)"),
    "exact_memorization": MetricFact(_P01, False, "exact memorization on the forget set"),
    "privleak": MetricFact("percent, signed", None, "relative MIA AUC difference to the retain "
                           "model x100; best at 0 (see abs_privleak)"),
    "abs_privleak": MetricFact("percent, >= 0", False, "|privleak|: distance from the retain "
                               "model's MIA AUC"),
}
#: forget Truth Ratio's direction per aggregator (src/evals/metrics/memorization.py):
#: closer_to_1_better = mean min(r, 1/r) of r = wrong/correct, 1 = forgotten;
#: true_better = mean max(0, 1 - r), high = knowledge kept; prob_mean = mean of
#: correct/(correct+wrong), high = knowledge kept (PR #163)
TRUTH_RATIO_HIGHER_IS_BETTER = {"closer_to_1_better": True, "true_better": False,
                                "prob_mean": False}


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders: each path that holds .hydra/config.yaml, or every such folder below it."""
    runs = []
    for path in map(Path, paths):
        if (path / CONFIG).is_file():
            runs.append(path)
            continue
        if not path.is_dir():
            raise DataError(f"{path}: no such folder (expected an open-unlearning run folder "
                            f"with {CONFIG})")
        found = sorted(p.parent.parent for p in path.rglob("config.yaml")
                       if p.parent.name == ".hydra")
        if not found:
            raise DataError(f"{path}: no open-unlearning run folder (none has {CONFIG})")
        runs += found
    return list(dict.fromkeys(runs))


def read_metrics(evals: Path) -> dict[str, float] | None:
    """Numeric metrics of an evals/ folder: TOFU_SUMMARY.json, else TOFU_EVAL.json agg_values."""
    summary, full = evals / SUMMARY.name, evals / EVAL.name
    if summary.is_file():
        data = read_json(summary, "open-unlearning's {metric: value} summary")
    elif full.is_file():
        data = {k: v.get("agg_value") for k, v in
                read_json(full, "open-unlearning's {metric: {agg_value}} log").items()
                if isinstance(v, dict)}
    else:
        return None
    metrics = {k: float(v) for k, v in data.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if "forget_quality" in metrics:
        quality = metrics["forget_quality"]
        metrics["log_forget_quality"] = math.log(quality) if quality > 0 else -math.inf
    if "privleak" in metrics:
        metrics["abs_privleak"] = abs(metrics["privleak"])
    return metrics


def _trajectory(run: Path) -> str | None:
    points = []
    for folder in run.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        metrics = read_metrics(folder / "evals") if step.isdigit() else None
        if metrics:
            points.append({"step": int(step), **metrics})
    if not points:
        return None
    return json.dumps(sorted(points, key=lambda p: p["step"]), allow_nan=True)


def read_config(run: Path) -> dict:
    """A run folder's .hydra/config.yaml as a mapping (DataError naming the file if not)."""
    try:
        config = yaml.safe_load((run / CONFIG).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{run / CONFIG}: not readable YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise DataError(f"{run / CONFIG}: expected a mapping")
    return config


def framework_commit(config: dict) -> str:
    """The first of COMMIT_KEYS set in a config, else ''."""
    commits = [v for v in (config_value(config, k) for k in COMMIT_KEYS)
               if v is not MISSING and v]
    return str(commits[0]) if commits else ""


def read_run(run: Path) -> ImportedRun:
    """One run folder as an :class:`ImportedRun` (config, metrics, aggregator, commit)."""
    config = read_config(run)
    metrics = read_metrics(run / "evals")
    extra = {}
    aggregator = config_value(config, AGGREGATOR_KEY)
    extra["truth_ratio_aggregator"] = "" if aggregator is MISSING else str(aggregator)
    commit = framework_commit(config)
    if commit:
        extra["framework_commit"] = commit
    trajectory = _trajectory(run)
    if trajectory:
        extra["checkpoint_trajectory"] = trajectory
    return ImportedRun(run_id=str(run), name=str(config.get("task_name") or run.name),
                       fields=config, metrics=metrics, source=str(run / CONFIG), extra=extra,
                       error="" if metrics else f"no {SUMMARY} or {EVAL}")


def check_aggregators(frame: pd.DataFrame) -> list[str]:
    """DataError when the runs' forget Truth Ratios come from different aggregators (their
    numbers are not comparable); warnings when some runs do not name theirs."""
    if "forget_truth_ratio" not in frame or "truth_ratio_aggregator" not in frame:
        return []
    named = frame.loc[frame["truth_ratio_aggregator"] != "", "truth_ratio_aggregator"]
    kinds = sorted(named.unique())
    if len(kinds) > 1:
        examples = {k: frame.loc[frame["truth_ratio_aggregator"] == k, "run_id"].iloc[0]
                    for k in kinds}
        raise DataError(f"forget_truth_ratio: the runs use different Truth Ratio aggregators "
                        f"{kinds} (e.g. {examples}; {AGGREGATOR_KEY}); their values are not "
                        "comparable: import each aggregator's runs separately")
    unnamed = int((frame["truth_ratio_aggregator"] == "").sum())
    if unnamed and kinds:
        return [(f"forget_truth_ratio: {unnamed} run(s) do not name their aggregator "
                 f"({AGGREGATOR_KEY}); the others use {kinds[0]!r}")]
    return []


def metric_facts(frame: pd.DataFrame) -> dict[str, MetricFact]:
    """FACTS for the table's columns, with forget_truth_ratio's direction from its
    aggregator (no direction when the aggregator is unknown)."""
    facts = {m: f for m, f in FACTS.items() if m in frame}
    if "forget_truth_ratio" in frame:
        named = [a for a in frame.get("truth_ratio_aggregator", pd.Series(dtype=str)) if a]
        aggregator = named[0] if named else "unknown"
        facts["forget_truth_ratio"] = MetricFact(
            _P01, TRUTH_RATIO_HIGHER_IS_BETTER.get(aggregator),
            f"forget-set Truth Ratio, aggregator {aggregator} (TOFU; open-unlearning PR #163)")
    return facts


def import_runs(paths: list[str | Path], condition_from: str,
                blocks: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """The run table of the open-unlearning runs under ``paths`` (module docstring);
    ``frame.attrs`` holds ``facts`` and ``warnings``."""
    runs = [read_run(run) for run in find_runs(paths)]
    frame = build_table(runs, condition_from, blocks or dict(DEFAULT_BLOCKS), "open-unlearning")
    frame.attrs["warnings"] = check_aggregators(frame)
    frame.attrs["facts"] = metric_facts(frame)
    return frame
