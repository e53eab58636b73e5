"""What every importer shares: runs -> rows, condition/block rules, metric facts, writing.

An importer (one small module per framework) turns its files into :class:`ImportedRun`
records: where the run came from, its name, a mapping of metadata for ``KEY`` look-ups
(a Hydra config, a results file's header, a CSV row), its metrics and the facts about
them (:class:`MetricFact`). This module turns the records into a run table with the
condition and block columns the user asks for, and writes it with the files that
``causalloc analyze`` reads:

* ``runs.csv`` (or the ``--out FILE.csv``): one row per run;
* ``design.json`` (``--out DIR`` only): block/condition/replicate columns and the metrics
  to analyse, plus ``setup.imported_from`` and ``setup.metric_facts`` (scale, direction
  and meaning of every metric), which ``analyze`` copies into analysis.json;
* ``analysis.toml`` (``--out DIR``) or ``FILE.analysis.toml`` (``--out FILE.csv``): an
  analysis spec whose ``[higher_is_better]`` gives each metric's direction, read with
  ``causalloc analyze ... --spec``. It has no ``[sesoi]``: the smallest effect of interest
  is the researcher's choice (``--sesoi``), never an importer's guess.

``--condition-from`` and ``--block NAME=...`` take a rule (:class:`FieldRule`): a key of
the run's metadata (``key:A.B``) or a regex (``regex:PATTERN``) searched in the run's name,
then in its path (so a seed in a folder name is found); unprefixed, a key when every run
has it, a regex when none has it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from causalloc.errors import DataError, SpecError

_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")
#: a key absent from a run's metadata
MISSING = object()
#: columns every imported table has besides its blocks and metrics
RESERVED = ("run_id", "run_name", "condition", "status", "error")


@dataclass(frozen=True)
class MetricFact:
    """What a metric column means: its scale (range and unit as written in the table), its
    direction (True: higher is better for unlearning, False: lower is better, None: no
    direction, e.g. a standard error or a signed metric whose best value is 0) and a
    one-line description naming its source."""

    scale: str
    higher_is_better: bool | None
    about: str

    def as_dict(self) -> dict:
        return {"scale": self.scale, "higher_is_better": self.higher_is_better,
                "about": self.about}


@dataclass
class ImportedRun:
    """One run of another framework, before condition and block columns are chosen."""

    run_id: str                       #: the file or folder it came from
    name: str                         #: searched by regex rules (then run_id)
    fields: dict                      #: metadata for key rules (dotted keys)
    metrics: dict[str, float] | None  #: None: the run has no evaluation (status failed)
    source: str = ""                  #: the file key rules read (for error messages)
    extra: dict = field(default_factory=dict)  #: more columns (aggregator, commit, ...)
    error: str = ""                   #: why metrics is None


def config_value(config, key: str):
    """A dotted key of a nested mapping (Hydra ``${a.b}`` interpolations followed);
    MISSING if absent."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    if isinstance(value, str) and (match := _INTERPOLATION.match(value)):
        return config_value(config, match.group(1))
    return value


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; DataError naming the file and ``what`` it should be."""
    try:
        data = json.loads(Path(path).read_text())
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file (expected {what})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON (expected {what}): {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object ({what}), got {type(data).__name__}")
    return data


def _number(text: str):
    """Regex captures that are whole numbers become ints, so seeds sort numerically."""
    return int(text) if text.isdigit() else text


class FieldRule:
    """One column's value per run, from a metadata key or a regex.

    ``key:A.B`` reads the dotted key (several ``key:`` texts are tried in order);
    ``regex:PATTERN`` searches the run's name, then its path, and takes the group named
    like the column, else group 1, else the whole match (digits become an int). Without
    a prefix: a key when every run has it, a regex when none has it, an error when only
    some have it."""

    def __init__(self, column: str, texts: str | tuple[str, ...], runs: list[ImportedRun],
                 option: str):
        texts = (texts,) if isinstance(texts, str) else tuple(texts)
        self.column, self.option = column, option
        self.kind, self.keys, self.pattern = "key", [], None
        for text in texts:
            kind, _, rest = text.partition(":")
            if kind in ("key", "regex") and rest:
                self.kind = kind
                self.keys.append(rest)
                continue
            have = [config_value(r.fields, text) is not MISSING for r in runs]
            if have and all(have):
                self.keys.append(text)
            elif any(have):
                raise SpecError(f"{option}: key {text!r} is set in only {sum(have)} of "
                                f"{len(have)} runs (write key:{text} or regex:PATTERN)")
            else:
                self.kind = "regex"
                self.keys.append(text)
        if self.kind == "regex":
            if len(self.keys) != 1:
                raise SpecError(f"{option}: one regex per column, got {self.keys}")
            try:
                self.pattern = re.compile(self.keys[0])
            except re.error as exc:
                raise SpecError(f"{option}: not a key of the runs and not a valid regex "
                                f"{self.keys[0]!r} ({exc})") from exc

    def __call__(self, run: ImportedRun):
        if self.kind == "key":
            for key in self.keys:
                value = config_value(run.fields, key)
                if value is not MISSING and value is not None:
                    return value
            where = run.source or run.run_id
            if self.column == "condition":
                raise DataError(f"{where}: no key {self.keys[0]!r} ({self.option})")
            raise DataError(f"{where}: block column {self.column!r}: none of the keys "
                            f"{self.keys} is set (add --block {self.column}=KEY_OR_REGEX)")
        for text in (run.name, run.run_id):
            match = self.pattern.search(text)
            if match:
                break
        else:
            raise DataError(f"{run.run_id}: run name {run.name!r} (nor its path) does not "
                            f"match {self.option} {self.pattern.pattern!r}")
        if self.column in self.pattern.groupindex:
            value = match.group(self.column)
        else:
            value = match.group(1) if self.pattern.groups else match.group(0)
        return _number(value) if isinstance(value, str) else value


def parse_blocks(items: list[str] | None,
                 defaults: dict[str, tuple[str, ...]] | None = None) -> dict[str, tuple[str, ...]]:
    """The default block columns plus ``NAME=KEY_OR_REGEX`` items (or a bare ``A.B``: the
    last part of the key names the column). Commas separate items made of keys only
    (``a=x.y,b=z``); an item holding a regex is one block, commas included."""
    blocks = dict(defaults or {})
    for item in items or []:
        parts = item.split(",")
        if not all(re.fullmatch(r"\s*(\w+\s*=\s*)?[\w.:]+\s*", p) for p in parts if p.strip()):
            parts = [item]  # a regex: its commas are its own
        for part in filter(None, (p.strip() for p in parts)):
            name, sep, rule = part.partition("=")
            name, rule = (name.strip(), rule.strip()) if sep else (part.rsplit(".", 1)[-1], part)
            if not name or not rule or not re.fullmatch(r"\w+", name):
                raise SpecError(f"--block: expected NAME=KEY_OR_REGEX, got {part!r}")
            blocks[name] = (rule,)
    return blocks


def build_table(runs: list[ImportedRun], condition_from: str,
                blocks: dict[str, tuple[str, ...]], framework: str) -> pd.DataFrame:
    """The run table: ``run_id``, ``run_name``, block columns, ``condition``, ``status``
    (``done``, or ``failed`` with ``error``: kept so that its block counts as unmatched),
    the importer's extra columns and the metrics. Facts go to ``frame.attrs``."""
    if not runs:
        raise DataError(f"no {framework} run found")
    metric_names = {m for run in runs for m in (run.metrics or {})} | \
        {c for run in runs for c in run.extra}
    clash = [b for b in blocks if b in RESERVED or b in metric_names]
    if clash:
        raise SpecError(f"--block: column name(s) {clash} already name a column of the "
                        f"{framework} table (reserved: {list(RESERVED)} and its metrics)")
    condition = FieldRule("condition", condition_from, runs, "--condition-from")
    rules = {name: FieldRule(name, texts, runs, f"--block {name}")
             for name, texts in blocks.items()}
    rows = []
    for run in runs:
        row = {"run_id": run.run_id, "run_name": run.name}
        row.update({name: rule(run) for name, rule in rules.items()})
        row["condition"] = str(condition(run))
        row["status"] = "done" if run.metrics else "failed"
        row["error"] = "" if run.metrics else (run.error or "no metrics")
        row.update(run.extra)
        row.update(run.metrics or {})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["framework"] = framework
    return frame


def analysis_spec_text(facts: dict[str, MetricFact], framework: str) -> str:
    """The sidecar analysis spec: ``[higher_is_better]`` of every directed metric, with
    each metric's scale and meaning as comments."""
    lines = [f"# written by causalloc import {framework}: directions of the imported metrics.",
             "# Use: causalloc analyze ... --spec THIS_FILE --sesoi METRIC=VALUE,...",
             "# (no [sesoi] here: the smallest effect of interest is the researcher's choice)",
             "", "[higher_is_better]"]
    for name, fact in sorted(facts.items()):
        if fact.higher_is_better is not None:
            lines.append(f"{name} = {str(fact.higher_is_better).lower()}"
                         f"  # {fact.scale}; {fact.about}")
    undirected = [n for n, f in sorted(facts.items()) if f.higher_is_better is None]
    if undirected:
        lines += ["", "# no direction (not for verdicts as they stand):"]
        lines += [f"#   {n}: {facts[n].scale}; {facts[n].about}" for n in undirected]
    return "\n".join(lines) + "\n"


def sidecar_paths(out: str | Path) -> tuple[Path, Path, Path | None]:
    """(runs CSV, analysis spec, design.json or None) for an ``--out`` FILE.csv or DIR."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        return out, out.with_name(out.stem + ".analysis.toml"), None
    return out / "runs.csv", out / "analysis.toml", out / "design.json"


def write_table(frame: pd.DataFrame, out: str | Path, force: bool = False,
                design: dict | None = None, facts: dict[str, MetricFact] | None = None) -> Path:
    """Write the run table: ``out`` ending in .csv is the CSV itself; any other ``out`` is a
    folder that gets runs.csv and, with ``design``, the design.json that ``causalloc
    analyze DIR`` reads (so it needs no --block/--condition/--metric). With ``facts``, the
    analysis spec of the metrics' directions goes next to it (module docstring). Existing
    files are kept unless ``force``. Returns the CSV path."""
    csv_path, spec_path, design_path = sidecar_paths(out)
    written = [csv_path] + ([spec_path] if facts else []) \
        + ([design_path] if design and design_path else [])
    existing = [str(p) for p in written if p.exists()]
    if existing and not force:
        raise DataError(f"{existing[0]}: exists; pass --force to replace it")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv_path, index=False)
    if facts:
        spec_path.write_text(analysis_spec_text(facts, frame.attrs.get("framework", "")))
    if design and design_path:
        design_path.write_text(json.dumps(design, indent=1) + "\n")
    return csv_path


def design_manifest(frame: pd.DataFrame, blocks: dict, metrics: list[str] | None,
                    command: str = "", facts: dict[str, MetricFact] | None = None) -> dict:
    """design.json for an imported table: block columns, condition, replicate (``seed``
    when it is a block column, else the last block column) and the metrics to analyse:
    ``metrics``, else those with a default SESOI in causalloc, else those with a direction
    in ``facts``. ``setup`` records the framework and every metric's facts."""
    from causalloc.vocab import DEFAULT_SESOI

    facts = facts or {}
    if not blocks:
        raise SpecError("--block: no block column; give the columns that pair runs, e.g. "
                        "--block 'seed=seed(\\d+)'")
    numeric = [c for c in frame.columns if c not in (*blocks, "condition")
               and pd.api.types.is_numeric_dtype(frame[c])]
    chosen = metrics or [m for m in numeric if m in DEFAULT_SESOI] \
        or [m for m in numeric if m in facts and facts[m].higher_is_better is not None]
    missing = [m for m in chosen if m not in frame.columns]
    if missing:
        raise SpecError(f"--metric: {missing} not among the imported metrics {numeric}")
    if not chosen:
        raise SpecError(f"--metric: no metric with a default SESOI or a known direction "
                        f"among {numeric}; name them")
    return {"block_columns": list(blocks), "condition_column": "condition",
            "replicate": "seed" if "seed" in blocks else list(blocks)[-1],
            "draw_column": None, "metrics": chosen, "command": command,
            "setup": {"imported_from": frame.attrs.get("framework", ""),
                      "metric_facts": {m: f.as_dict() for m, f in facts.items()
                                       if m in frame.columns}}}


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


def find_files(paths: list[str | Path], accept, what: str) -> list[Path]:
    """Each file in ``paths``, and below each folder every file for which ``accept(path)``
    is true (sorted); DataError naming a path that is neither or holds none."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(p for p in path.rglob("*") if p.is_file() and accept(p))
            if not below:
                raise DataError(f"{path}: no {what} below this folder")
            found += below
        else:
            raise DataError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))
