"""open-unlearning run folders -> a causalloc run table (one row per run).

open-unlearning (locuslab/open-unlearning) writes each run to a folder with Hydra's
``.hydra/config.yaml``, ``evals/TOFU_SUMMARY.json`` (``{metric: value}``) and
``evals/TOFU_EVAL.json`` (``{metric: {"agg_value": value, ...}}``), and, when it evaluates
during training, ``checkpoint-<step>/evals/`` in the same format. It has no field for a mask
or a condition, so the condition comes from a config key or from a pattern on the run name
(``task_name``, else the folder name).

Columns written: ``run_id`` (the folder), ``run_name``, the block columns (default
``model`` = model.model_args.pretrained_model_name_or_path, ``forget_split``, ``trainer`` =
trainer.handler, ``seed`` = trainer.args.seed or seed; more with ``--block NAME=KEY``),
``condition``, ``status`` (``done``, or ``failed`` with ``error`` when a run has no summary:
such runs are kept so that their blocks count as unmatched), every numeric summary metric,
``log_forget_quality`` = ln(forget_quality) (causalloc's forget-quality scale) and, when
checkpoints were evaluated, ``checkpoint_trajectory`` (JSON list of ``{"step", metrics...}``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import yaml

from causalloc.errors import DataError, SpecError

#: block column -> config keys tried in order (dotted paths into .hydra/config.yaml)
DEFAULT_BLOCKS: dict[str, tuple[str, ...]] = {
    "model": ("model.model_args.pretrained_model_name_or_path",),
    "forget_split": ("forget_split",),
    "trainer": ("trainer.handler",),
    "seed": ("trainer.args.seed", "seed"),
}
CONFIG = Path(".hydra") / "config.yaml"
SUMMARY = Path("evals") / "TOFU_SUMMARY.json"
EVAL = Path("evals") / "TOFU_EVAL.json"
_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")
_MISSING = object()


def config_value(config: dict, key: str):
    """A dotted key of a Hydra config (``${a.b}`` interpolations followed); _MISSING if absent."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    if isinstance(value, str) and (match := _INTERPOLATION.match(value)):
        return config_value(config, match.group(1))
    return value


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders: each path that holds .hydra/config.yaml, or every such folder below it."""
    runs = []
    for path in map(Path, paths):
        if (path / CONFIG).is_file():
            runs.append(path)
            continue
        if not path.is_dir():
            raise DataError(f"{path}: no such folder")
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
        data = _json(summary)
    elif full.is_file():
        data = {k: v.get("agg_value") for k, v in _json(full).items() if isinstance(v, dict)}
    else:
        return None
    metrics = {k: float(v) for k, v in data.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if "forget_quality" in metrics:
        quality = metrics["forget_quality"]
        metrics["log_forget_quality"] = math.log(quality) if quality > 0 else -math.inf
    return metrics


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of metrics")
    return data


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


class ConditionRule:
    """The condition of a run from a config key (``key:A.B``) or a run-name regex
    (``regex:PATTERN``; group ``condition``, else group 1, else the whole match). Without a
    prefix: a key when every run's config has it, a regex when none has it."""

    def __init__(self, text: str, configs: list[dict]):
        kind, _, rest = text.partition(":")
        if kind in ("key", "regex") and rest:
            self.kind, self.text = kind, rest
        else:
            have = [config_value(c, text) is not _MISSING for c in configs]
            if all(have):
                self.kind, self.text = "key", text
            elif any(have):
                raise SpecError(f"--condition-from: config key {text!r} is set in only "
                                f"{sum(have)} of {len(have)} runs (use key: or regex:)")
            else:
                self.kind, self.text = "regex", text
        if self.kind == "regex":
            try:
                self.pattern = re.compile(self.text)
            except re.error as exc:
                raise SpecError(f"--condition-from: not a config key of the runs and not a "
                                f"valid regex {self.text!r} ({exc})") from exc

    def __call__(self, config: dict, run_name: str, run: Path) -> str:
        if self.kind == "key":
            value = config_value(config, self.text)
            if value is _MISSING:
                raise DataError(f"{run / CONFIG}: no config key {self.text!r} (--condition-from)")
            return str(value)
        match = self.pattern.search(run_name)
        if not match:
            raise DataError(f"{run}: run name {run_name!r} does not match --condition-from "
                            f"{self.text!r}")
        if "condition" in self.pattern.groupindex:
            return match.group("condition")
        return match.group(1) if self.pattern.groups else match.group(0)


def parse_blocks(items: list[str] | None) -> dict[str, tuple[str, ...]]:
    """The default block columns plus ``NAME=KEY`` (or ``KEY``: the last part names it)."""
    blocks = dict(DEFAULT_BLOCKS)
    for item in items or []:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, key = part.partition("=")
            name, key = (name, key) if sep else (part.rsplit(".", 1)[-1], part)
            if not name or not key:
                raise SpecError(f"--block: expected NAME=CONFIG.KEY, got {part!r}")
            blocks[name.strip()] = (key.strip(),)
    return blocks


def import_runs(paths: list[str | Path], condition_from: str,
                blocks: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """The run table of the open-unlearning runs under ``paths`` (module docstring)."""
    blocks = blocks or dict(DEFAULT_BLOCKS)
    runs = find_runs(paths)
    configs = []
    for run in runs:
        try:
            config = yaml.safe_load((run / CONFIG).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"{run / CONFIG}: not readable YAML ({exc})") from exc
        if not isinstance(config, dict):
            raise DataError(f"{run / CONFIG}: expected a mapping")
        configs.append(config)
    condition = ConditionRule(condition_from, configs)
    rows = []
    for run, config in zip(runs, configs):
        name = config.get("task_name") or run.name
        row = {"run_id": str(run), "run_name": str(name)}
        for column, keys in blocks.items():
            values = [v for v in (config_value(config, k) for k in keys) if v is not _MISSING]
            if not values or values[0] is None:
                raise DataError(f"{run / CONFIG}: block column {column!r}: none of the config "
                                f"keys {list(keys)} is set (add --block {column}=KEY)")
            row[column] = values[0]
        row["condition"] = condition(config, str(name), run)
        metrics = read_metrics(run / "evals")
        row["status"] = "done" if metrics else "failed"
        row["error"] = "" if metrics else f"no {SUMMARY} or {EVAL}"
        row.update(metrics or {})
        trajectory = _trajectory(run)
        if trajectory:
            row["checkpoint_trajectory"] = trajectory
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(frame: pd.DataFrame, out: str | Path, force: bool = False,
                design: dict | None = None) -> Path:
    """Write the run table: ``out`` ending in .csv is the CSV itself; any other ``out`` is a
    folder that gets runs.csv and, with ``design``, the design.json that ``causalloc
    analyze DIR`` reads (so it needs no --block/--condition/--metric). Existing files are kept
    unless ``force``. Returns the CSV path."""
    out = Path(out)
    csv_path = out if out.suffix.lower() == ".csv" else out / "runs.csv"
    written = [csv_path] + ([out / "design.json"] if design and csv_path != out else [])
    existing = [str(p) for p in written if p.exists()]
    if existing and not force:
        raise DataError(f"{existing[0]}: exists; pass --force to replace it")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv_path, index=False)
    if len(written) > 1:
        written[1].write_text(json.dumps(design, indent=1) + "\n")
    return csv_path


def design_manifest(frame: pd.DataFrame, blocks: dict, metrics: list[str] | None,
                    command: str = "") -> dict:
    """design.json for an imported table: block columns, condition, replicate ``seed`` and the
    metrics to analyse (``metrics``, else those with a default SESOI in causalloc)."""
    from causalloc.vocab import DEFAULT_SESOI

    numeric = [c for c in frame.columns if c not in (*blocks, "condition")
               and pd.api.types.is_numeric_dtype(frame[c])]
    chosen = metrics or [m for m in numeric if m in DEFAULT_SESOI]
    missing = [m for m in chosen if m not in frame.columns]
    if missing:
        raise SpecError(f"--metric: {missing} not among the imported metrics {numeric}")
    if not chosen:
        raise SpecError(f"--metric: no metric with a default SESOI among {numeric}; name them")
    return {"block_columns": list(blocks), "condition_column": "condition", "replicate": "seed",
            "draw_column": None, "metrics": chosen, "command": command,
            "setup": {"imported_from": "open-unlearning"}}


def map_columns(source: str | Path, mapping: dict[str, str]) -> pd.DataFrame:
    """Another framework's CSV with columns renamed ``{new: old}`` (block, condition, metrics)."""
    source = Path(source)
    try:
        frame = pd.read_csv(source)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{source}: cannot be read as CSV ({exc})") from exc
    missing = [old for old in mapping.values() if old not in frame.columns]
    if missing:
        raise DataError(f"{source}: --map names column(s) {missing} that the file lacks "
                        f"(columns: {list(frame.columns)})")
    return frame.rename(columns={old: new for new, old in mapping.items()})
