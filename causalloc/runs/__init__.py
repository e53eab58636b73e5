"""Matched-run execution: spec (TOML) -> design (blocks x conditions) -> store (SQLite)
-> backends (local processes or Ray) -> ``runs.csv``.

``execute_design(spec_or_path, out_dir, ...)`` is the one call behind ``causalloc run``.
"""

from causalloc.runs.backends import WorkerContext, execute_design
from causalloc.runs.design import BLOCK_COLUMNS, expand
from causalloc.runs.spec import ExperimentSpec, load_spec, parse_spec
from causalloc.runs.store import RunStore

__all__ = [
    "BLOCK_COLUMNS", "ExperimentSpec", "RunStore", "WorkerContext", "execute_design", "expand",
    "load_spec", "parse_spec",
]
