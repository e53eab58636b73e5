"""MUSE result CSVs -> a causalloc run table (one row per CSV row).

MUSE (swj0419/muse_bench, Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation")
writes, from ``eval.py --out_file``, a CSV with one row per evaluated model: ``name`` (the
``--names`` given) and the ``--metrics`` asked for, among ``verbmem_f``, ``privleak``,
``knowmem_f``, ``knowmem_r``, each multiplied by 100 in ``eval.py``:

* ``verbmem_f``: mean ROUGE-L F1 of 128-token continuations of forget-set text (VerbMem);
* ``knowmem_f`` / ``knowmem_r``: mean ROUGE-L of answers to forget / retain QA (KnowMem);
* ``privleak``: (AUC - AUC_retrain) / AUC_retrain x 100 of the Min-K% (K = 40) membership
  attack, forget vs holdout; 0 is the retrained model, negative is under-, positive
  over-unlearning.

Scale: the three ROUGE metrics are divided by 100 back to [0, 1] (the scale of
open-unlearning's MUSE metrics and of causalloc's); ``privleak`` stays in percent, as both
MUSE and open-unlearning write it. Direction: ``verbmem_f``, ``knowmem_f`` lower is better,
``knowmem_r`` higher is better; ``privleak`` has its best at 0, so it gets no direction and
``abs_privleak`` = |privleak| (lower is better) is the column to test.

The run's name is the ``name`` column; ``KEY`` rules read the CSV's other columns.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from causalloc.errors import DataError
from causalloc.importers.common import ImportedRun, MetricFact, build_table, find_files

#: MUSE's metric columns (muse_bench constants.SUPPORTED_METRICS)
COLUMNS = ("verbmem_f", "privleak", "knowmem_f", "knowmem_r")
#: the ROUGE columns MUSE multiplies by 100 (divided back here)
PERCENT_ROUGE = ("verbmem_f", "knowmem_f", "knowmem_r")
FACTS: dict[str, MetricFact] = {
    "verbmem_f": MetricFact("[0, 1] (MUSE's value / 100)", False,
                            "VerbMem on the forget set: ROUGE-L F1 of continuations (MUSE)"),
    "knowmem_f": MetricFact("[0, 1] (MUSE's value / 100)", False,
                            "KnowMem on the forget set: ROUGE-L of QA answers (MUSE)"),
    "knowmem_r": MetricFact("[0, 1] (MUSE's value / 100)", True,
                            "KnowMem on the retain set (utility): ROUGE-L of QA answers (MUSE)"),
    "privleak": MetricFact("percent, signed (as MUSE writes it)", None,
                           "relative Min-40% MIA AUC difference to the retrained model; best 0"),
    "abs_privleak": MetricFact("percent, >= 0", False, "|privleak| (MUSE)"),
}


def read_csv(path: Path) -> list[ImportedRun]:
    """The runs of one MUSE CSV; DataError naming the file when it is not one."""
    if path.suffix.lower() == ".json":
        raise DataError(f"{path}: a JSON file, not a MUSE results CSV (columns name, "
                        f"{', '.join(COLUMNS)}); for lm-eval or RWKU JSON use "
                        "`causalloc import lm-eval` / `causalloc import rwku`")
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot be read as a MUSE results CSV ({exc})") from exc
    present = [c for c in COLUMNS if c in frame.columns]
    lacks = (["column 'name'"] if "name" not in frame.columns else []) \
        + ([f"a metric column (any of {list(COLUMNS)})"] if not present else [])
    if lacks:
        raise DataError(f"{path}: not a MUSE results CSV: lacks {' and '.join(lacks)} "
                        f"(columns: {list(frame.columns)})")
    runs = []
    for index, row in frame.iterrows():
        values = {}
        for column in present:
            value = pd.to_numeric(row[column], errors="coerce")
            if pd.isna(value) and not pd.isna(row[column]):
                raise DataError(f"{path}: row {index + 2}, column {column!r}: not a number "
                                f"({row[column]!r})")
            values[column] = round(float(value) / 100, 12) if column in PERCENT_ROUGE \
                else float(value)
        if "privleak" in values:
            values["abs_privleak"] = abs(values["privleak"])
        complete = {k: v for k, v in values.items() if not pd.isna(v)}
        fields = {k: v for k, v in row.items() if k not in COLUMNS and not pd.isna(v)}
        runs.append(ImportedRun(run_id=f"{path}:{row['name']}", name=str(row["name"]),
                                fields=fields, metrics=complete or None, source=str(path),
                                error="" if complete else "no MUSE metric value"))
    return runs


def import_runs(paths: list[str | Path], condition_from: str,
                blocks: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """The run table of the MUSE CSVs in ``paths`` (files, or folders searched for
    ``*.csv``); ``frame.attrs["facts"]`` holds the metrics' facts."""
    files = find_files(paths, lambda p: p.suffix.lower() == ".csv", "MUSE results CSV (*.csv)")
    runs = [run for path in files for run in read_csv(path)]
    frame = build_table(runs, condition_from, blocks or {}, "muse")
    frame.attrs["facts"] = {m: f for m, f in FACTS.items() if m in frame}
    frame.attrs["warnings"] = []
    return frame
