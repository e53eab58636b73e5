"""The run table: loading, column checks, non-finite policy and block matching.

A run table is tidy: one row per run, block columns (everything held fixed across
conditions; one of them is the replicate, ``seed`` by default), a condition column,
optionally a draw column (index of the random-mask draw for conditions with K draws per
block) and numeric metric columns. Matching is checked, never assumed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from causalloc.errors import DataError, TableError

#: how many offending rows/blocks an error message lists before summarising
_LIST_LIMIT = 10


@dataclass
class RunTable:
    """A checked run table and where it came from.

    ``runs`` holds the rows with status done (all rows when there is no status column),
    with a ``_row`` column giving the 0-based data row in the source file; ``blocks`` lists
    every block seen in the source, failed runs included, so that a block whose run failed
    counts as unmatched.
    """

    runs: pd.DataFrame
    blocks: pd.DataFrame
    block_columns: list[str]
    condition_column: str
    replicate: str
    metrics: list[str]
    draw_column: str | None = None
    source: str = ""
    kind: str = "csv"
    sha256: str = ""
    n_rows: int = 0
    failed_runs: list[dict] = field(default_factory=list)
    failed: pd.DataFrame = field(default_factory=pd.DataFrame)
    design: dict = field(default_factory=dict)
    #: the block column blocks nest in (``testbed`` for replicated testbeds): not a cell
    #: column, so a cell pools its clusters; None when blocks are not nested
    cluster: str | None = None
    #: a tuned design: what :func:`causalloc.stats.tuning.select_runs` kept (``runs`` then
    #: holds the selected runs only) and the selection summary; None otherwise
    tuning: dict | None = None

    @property
    def cell_columns(self) -> list[str]:
        """Block columns other than the replicate (and the cluster): comparisons are made
        within each cell."""
        return [c for c in self.block_columns if c not in (self.replicate, self.cluster)]


def _split(value: str | list[str] | None) -> list[str] | None:
    """'a, b,a' -> ['a', 'b'] (order kept, duplicates once)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(value))


def structural_columns(table: RunTable) -> list[str]:
    """Columns that identify a run (block, condition, draw): never outcomes."""
    return [*table.block_columns, table.condition_column] + (
        [table.draw_column] if table.draw_column else []
    )


def check_not_structural(metrics: list[str], structural: list[str], source) -> None:
    clash = [m for m in metrics if m in structural]
    if clash:
        raise TableError(
            f"{source}: metric(s) {clash} are block/condition/draw columns ({structural}), "
            "not outcomes; choose metric columns with --metric"
        )


def load_runs(
    path: str | Path,
    *,
    block: str | list[str] | None = None,
    condition: str | None = None,
    metric: str | list[str] | None = None,
    replicate: str | None = None,
    draw: str | None = None,
) -> RunTable:
    """Load a run table from a causalloc output folder or any CSV.

    Folder: ``DIR/runs.csv`` + ``DIR/design.json`` (block columns, condition, replicate,
    draw column and metrics come from design.json; arguments given here override them).
    CSV: ``block`` and ``metric`` are required, ``condition`` defaults to ``condition``,
    ``replicate`` to ``seed``, ``draw`` to ``mask_draw`` when that column exists.
    Rows with a ``status`` column other than ``done`` are listed in ``failed_runs``.
    Row numbers in messages are 0-based data rows (the header not counted).
    """
    path = Path(path)
    csv_path, design, kind = _locate(path)
    raw = csv_path.read_bytes()
    frame = _read_csv(csv_path)
    columns = _resolve_columns(csv_path, frame, design, block=block, condition=condition,
                               metric=metric, replicate=replicate, draw=draw)
    block_columns, condition_column, replicate, metrics, draw = columns
    frame = _normalise(csv_path, frame, block_columns, condition_column, draw)
    runs, failed, failed_runs = _split_failed(csv_path, frame, condition_column)
    for column in metrics:
        runs[column] = _numeric(runs[column], column, csv_path)
    tuning = None
    if design.get("tuning"):
        from causalloc.stats.tuning import select_runs, tuning_summary

        selected = select_runs(runs, design["tuning"], block_columns=block_columns,
                               condition=condition_column, draw=draw, source=str(csv_path))
        tuning = tuning_summary(runs, selected, design["tuning"], condition=condition_column)
        runs = selected
    cluster = design.get("cluster")
    if cluster is not None and cluster not in block_columns:
        raise TableError(f"{csv_path}: design.json cluster {cluster!r} is not a block column ({block_columns})")
    _check_unique(csv_path, runs, [*block_columns, condition_column] + ([draw] if draw else []),
                  bool(draw))
    check_fingerprints(runs, block_columns, csv_path)
    return RunTable(
        runs=runs.reset_index(drop=True),
        blocks=frame[block_columns].drop_duplicates().reset_index(drop=True),
        block_columns=list(block_columns),
        condition_column=condition_column,
        replicate=replicate,
        metrics=list(metrics),
        draw_column=draw,
        source=str(path),
        kind=kind,
        sha256=hashlib.sha256(raw).hexdigest(),
        n_rows=len(frame),
        failed_runs=failed_runs,
        failed=failed,
        design=design,
        cluster=cluster,
        tuning=tuning,
    )


def _locate(path: Path) -> tuple[Path, dict, str]:
    """(runs.csv path, design.json contents or {}, 'causalloc' | 'csv') of a folder or CSV."""
    if path.is_file():
        return path, {}, "csv"
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    csv_path, design_path = path / "runs.csv", path / "design.json"
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: not found (expected a causalloc output folder)")
    design = {}
    if design_path.is_file():
        try:
            design = json.loads(design_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{design_path}: not valid JSON ({exc})") from exc
    return csv_path, design, "causalloc"


def _read_csv(csv_path: Path) -> pd.DataFrame:
    """The CSV as a DataFrame; a DataError / TableError when unreadable or empty."""
    try:
        frame = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot be read as CSV ({exc})") from exc
    if frame.empty:
        raise TableError(f"{csv_path}: the table has no rows")
    return frame


def _resolve_columns(csv_path, frame, design, *, block, condition, metric, replicate, draw):
    """(block columns, condition, replicate, metrics, draw) from the arguments, else
    design.json, else the defaults; checked against the table's columns."""
    block_columns = _split(block) or design.get("block_columns")
    condition_column = condition or design.get("condition_column") or "condition"
    replicate = replicate or design.get("replicate") or "seed"
    metrics = _split(metric) or design.get("metrics")
    if draw is None:
        draw = design.get("draw_column", "mask_draw" if "mask_draw" in frame else None)
    if not block_columns:
        raise TableError(f"{csv_path}: no block columns: pass --block col1,col2,...")
    if not metrics:
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        raise TableError(
            f"{csv_path}: no metric columns: pass --metric m1,m2 (numeric columns: {numeric})"
        )
    if replicate not in block_columns:
        raise TableError(
            f"{csv_path}: replicate column {replicate!r} is not among the block columns "
            f"{block_columns} (set --replicate)"
        )
    check_not_structural(metrics, [*block_columns, condition_column] + ([draw] if draw else []),
                          csv_path)
    needed = [*block_columns, condition_column, *metrics] + ([draw] if draw else [])
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise TableError(
            f"{csv_path}: missing column(s) {missing} (columns present: {list(frame.columns)})"
        )
    return block_columns, condition_column, replicate, metrics, draw


def _normalise(csv_path, frame, block_columns, condition_column, draw) -> pd.DataFrame:
    """Refuse empty identity values; add ``_row``; conditions as text; missing draw = 0."""
    for column in [*block_columns, condition_column]:
        empty = frame.index[frame[column].isna()].tolist()
        if empty:
            raise TableError(f"{csv_path}: column {column!r} has empty values in rows "
                             f"{empty[:_LIST_LIMIT]} (0-based data rows)")
    frame = frame.assign(_row=np.arange(len(frame)))
    frame[condition_column] = frame[condition_column].astype(str)
    if draw:
        frame[draw] = frame[draw].fillna(0)
    return frame


def _split_failed(csv_path, frame, condition_column):
    """(done runs, failed rows, failed_runs entries) by the ``status`` column, if any."""
    if "status" not in frame.columns:
        return frame.copy(), frame.iloc[0:0], []
    done = frame["status"].astype(str) == "done"
    failed_runs = [
        {
            "run_id": _clean(row.get("run_id", f"row {row['_row']} (0-based)")),
            "condition": row[condition_column],
            "error": _clean(row.get("error", "")) or f"status {row['status']}",
        }
        for _, row in frame[~done].iterrows()
    ]
    if not done.any():
        raise TableError(f"{csv_path}: no run has status 'done' ({len(frame)} rows, all failed)")
    return frame[done].copy(), frame[~done], failed_runs


def _check_unique(csv_path, runs, identity, has_draw: bool) -> None:
    """TableError naming the rows of runs that share block, condition (and draw)."""
    duplicated = runs.duplicated(identity, keep=False)
    if duplicated.any():
        rows = runs.loc[duplicated, "_row"].tolist()
        raise TableError(
            f"{csv_path}: {int(duplicated.sum())} runs share block, condition"
            f"{' and draw' if has_draw else ''} with another run (rows {rows[:_LIST_LIMIT]}, "
            "0-based): is a block column missing from --block, or the draw column from --draw?"
        )


#: column of runs.csv holding the fingerprint of the theta_o weights a run started from
FINGERPRINT_COLUMN = "theta_o_fingerprint"


def check_fingerprints(runs: pd.DataFrame, block_columns: list[str], source) -> None:
    """TableError if the runs of a block started from different theta_o weights (different
    values in ``theta_o_fingerprint``): the conditions of a block must differ only in the
    mask. Names each such block and its fingerprints. Tables without the column, and runs
    with it empty, are not checked."""
    if FINGERPRINT_COLUMN not in runs.columns:
        return
    known = runs[runs[FINGERPRINT_COLUMN].notna()]
    used = known.groupby(block_columns, sort=False, dropna=False)[FINGERPRINT_COLUMN].agg(
        lambda values: sorted(set(map(str, values))))
    mixed = used[used.map(len) > 1]
    if mixed.empty:
        return
    blocks = [dict(zip(block_columns, key if isinstance(key, tuple) else (key,)))
              for key in mixed.index]
    listed = _listing([f"{ {k: _clean(v) for k, v in block.items()} } used {fingerprints}"
                       for block, fingerprints in zip(blocks, mixed)])
    raise TableError(
        f"{source}: {len(mixed)} block(s) whose runs started from different theta_o weights "
        f"(column {FINGERPRINT_COLUMN!r}): {listed}; the runs of a block must share theta_o "
        "(rerun them from one testbed)"
    )


def _failed_rows(table: RunTable) -> pd.DataFrame:
    """The failed runs' block and condition columns. A RunTable built without ``failed=``
    has none; failed rows lacking those columns are a TableError naming them."""
    needed = [*table.block_columns, table.condition_column]
    if table.failed.empty and not len(table.failed.columns):
        return pd.DataFrame(columns=needed)
    missing = [c for c in needed if c not in table.failed.columns]
    if missing:
        raise TableError(f"{table.source}: RunTable.failed lacks column(s) {missing} (it needs "
                         f"the block and condition columns {needed})")
    return table.failed[needed]


def _clean(value):
    """A JSON-friendly scalar: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _numeric(column: pd.Series, name: str, source: Path | str) -> pd.Series:
    """The column as floats; a TableError naming the rows whose values are not numbers."""
    values = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & values.isna()
    if bad.any():
        examples = [f"row {i} (0-based): {column[i]!r}" for i in column.index[bad][:_LIST_LIMIT]]
        raise TableError(f"{source}: metric column {name!r} is not numeric ({', '.join(examples)})")
    return values.astype(float)


def apply_nonfinite_policy(table: RunTable, policy: str, metrics: list[str]) -> list[dict]:
    """Mark NaN / infinite metric values (diverged runs) under an explicit policy.

    ``error``: raise a TableError listing them. ``drop``: the value is excluded from every
    analysis of that metric (set to NaN in ``table.runs``) and listed in the returned
    ``excluded_runs`` entries; a block left without a value for a compared condition is
    then dropped from that comparison and reported.
    """
    if policy not in ("error", "drop"):
        raise TableError(f"nonfinite: unknown policy {policy!r} (known: error, drop)")
    excluded = []
    for metric in metrics:
        values = table.runs[metric]
        bad = ~np.isfinite(values.to_numpy())
        for index in table.runs.index[bad]:
            row = table.runs.loc[index]
            run_id = row["run_id"] if "run_id" in table.runs else None
            excluded.append(
                {
                    "run_id": _clean(run_id),
                    "row": int(row["_row"]),
                    "condition": row[table.condition_column],
                    "metric": metric,
                    "reason": f"non-finite value {values[index]!r} (nonfinite={policy})",
                }
            )
        table.runs.loc[bad, metric] = np.nan
    if excluded and policy == "error":
        listed = _listing([f"row {e['row']} (0-based; {e['condition']}, {e['metric']})"
                           for e in excluded])
        raise TableError(
            f"{table.source}: {len(excluded)} non-finite metric value(s): {listed}; "
            "pass --nonfinite drop to exclude them (the report will list them)"
        )
    return excluded


def check_matching(
    table: RunTable, conditions: list[str], drop_unmatched: bool
) -> list[dict]:
    """Check that every block has a done run of every compared condition.

    Blocks are all combinations of block columns seen in the source (failed runs
    included). Blocks lacking a condition raise a TableError listing them, unless
    ``drop_unmatched``: then they are removed from ``table.runs`` and returned as
    ``dropped_blocks`` entries.
    """
    key = table.block_columns
    grouped = (
        table.runs[table.runs[table.condition_column].isin(conditions)]
        .groupby(key, sort=False)[table.condition_column]
        .agg(set)
    )
    present = dict(zip(grouped.index, grouped.to_numpy()))
    failed = {
        (tuple(_clean(v) for v in row[:-1]), row[-1])
        for row in _failed_rows(table).itertuples(index=False)
    }
    dropped = []
    for block in table.blocks.itertuples(index=False):
        values = tuple(block)
        index = values if len(key) > 1 else values[0]
        have = present.get(index, set())
        missing = [c for c in conditions if c not in have]
        if missing:
            as_dict = {k: _clean(v) for k, v in zip(key, values)}
            block_key = tuple(as_dict.values())
            failed_here = [c for c in missing if (block_key, c) in failed]
            reason = (
                f"run(s) failed: {failed_here}" if failed_here else "no run of the condition(s)"
            )
            dropped.append(
                {
                    "cell": {k: as_dict[k] for k in table.cell_columns},
                    "block": {c: as_dict[c] for c in (table.cluster, table.replicate) if c},
                    "missing": missing,
                    "reason": reason,
                }
            )
    if dropped and not drop_unmatched:
        listed = _listing([f"{ {**d['cell'], **d['block']} } missing {d['missing']}" for d in dropped])
        raise TableError(
            f"{table.source}: {len(dropped)} unmatched block(s): {listed}; "
            "pass --drop-unmatched to drop them (the report will list them)"
        )
    if dropped:
        drop_keys = {
            tuple({**d["cell"], **d["block"]}[k] for k in key) for d in dropped
        }
        keep = [
            tuple(_clean(v) for v in row) not in drop_keys
            for row in table.runs[key].itertuples(index=False)
        ]
        table.runs = table.runs[keep].reset_index(drop=True)
    return dropped


def _listing(items: list[str]) -> str:
    """The first ``_LIST_LIMIT`` items joined by "; ", then how many more there are."""
    more = f" and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    return "; ".join(items[:_LIST_LIMIT]) + more
