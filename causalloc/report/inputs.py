"""What a report is made from: analysis.json, plus the run table and the masks when found.

``causalloc report DIR`` reads ``DIR/analysis.json`` (the contract is docs/analysis_json.md),
looks for ``runs.csv`` in DIR, its parent, or at the analysis' recorded input path, and for
mask files (``causalloc.masks.Mask.to_dict()`` JSON) in ``DIR/masks`` or ``DIR/../masks``;
``v_tgt.json`` there is the testbed's oracle region V_tgt (``causalloc demo`` saves it), the
reference of the localization-accuracy table, and is kept apart from the masks that were run.
Only analysis.json is required; figures whose data are absent are skipped with a note.
Masks are read as plain JSON (no import of causalloc.masks) so the report stays independent
of the model side of the package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from causalloc.errors import DataError
from causalloc.vocab import is_random_like

#: file name of the oracle region V_tgt among the mask files
TARGET_MASK_FILE = "v_tgt.json"
#: keys every comparison needs for the verdict table and the forest plot
REQUIRED_COMPARISON_KEYS = ("a", "b", "metric", "cell", "n_blocks", "mean_diff", "ci95", "verdict")
SUPPORTED_SCHEMA_VERSIONS = (1,)


@dataclass
class ReportInputs:
    """Everything a report is made from, with the paths they were read from."""

    analysis: dict
    analysis_path: Path
    runs: pd.DataFrame | None = None
    runs_path: Path | None = None
    masks: list[dict] = field(default_factory=list)
    mask_paths: list[Path] = field(default_factory=list)
    target_mask: dict | None = None
    target_mask_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def comparisons(self) -> list[dict]:
        return self.analysis["comparisons"]

    @property
    def input_spec(self) -> dict:
        return self.analysis.get("input") or {}

    @property
    def fingerprints(self) -> list[str]:
        """The sha256 fingerprints of the theta_o weights the analysed runs started from."""
        return list(self.input_spec.get("theta_o_fingerprints") or [])

    @property
    def replicate(self) -> str:
        return self.input_spec.get("replicate") or "seed"

    @property
    def condition_column(self) -> str:
        return self.input_spec.get("condition_column") or "condition"

    @property
    def draw_column(self) -> str | None:
        return self.input_spec.get("draw_column")

    @property
    def cell_columns(self) -> list[str]:
        """Block columns other than the replicate, in the order of the first comparison's cell
        (the analysis' own order), else of ``input.block_columns``."""
        if self.comparisons:
            return list(self.comparisons[0]["cell"])
        return [c for c in self.input_spec.get("block_columns", [])
                if c not in (self.replicate, self.input_spec.get("cluster"))]

    @property
    def metrics(self) -> list[str]:
        """Metrics that have comparisons, in the analysis' declared order."""
        compared = list(dict.fromkeys(c["metric"] for c in self.comparisons))
        declared = [m for m in self.input_spec.get("metrics", []) if m in compared]
        return declared + [m for m in compared if m not in declared]

    @property
    def headline_metric(self) -> str | None:
        """The first declared metric with comparisons (the analysis spec's primary outcome)."""
        return self.metrics[0] if self.metrics else None

    @property
    def random_conditions(self) -> set[str]:
        """Conditions that stand for K random masks: compared with a randomization test, or
        of kind random / layer_matched in the run table."""
        names = {c["b"] for c in self.comparisons if c.get("k_random")}
        runs = self.runs
        if runs is not None and "condition_kind" in runs and self.condition_column in runs:
            kinds = runs["condition_kind"].astype(str)
            names |= set(runs.loc[kinds.map(is_random_like),
                                  self.condition_column].astype(str))
        return names

    def done_runs(self) -> pd.DataFrame | None:
        """Run rows that finished (``status == done`` when the table has a status column); of a
        tuned design, the selected runs only (``tuning.selected_run_ids`` of analysis.json)."""
        if self.runs is None:
            return None
        runs = self.runs
        if "status" in runs:
            runs = runs[runs["status"].astype(str) == "done"]
        selected = (self.analysis.get("tuning") or {}).get("selected_run_ids")
        if selected and "run_id" in runs:
            runs = runs[runs["run_id"].isin(set(selected))]
        return runs


def load_inputs(path: str | Path) -> ReportInputs:
    """Read ``analysis.json`` from a folder (or the file itself) and whatever else is found.

    Raises DataError when analysis.json is missing, not JSON, of an unknown schema version, or
    lacks a key the report needs; a malformed run table is an error too, a malformed mask file
    is skipped with a note.
    """
    path = Path(path)
    analysis_path = path if path.is_file() else path / "analysis.json"
    if not analysis_path.is_file():
        raise DataError(f"{analysis_path}: not found (run `causalloc analyze` first, "
                        "or pass the folder that holds analysis.json)")
    analysis = _read_analysis(analysis_path)
    inputs = ReportInputs(analysis=analysis, analysis_path=analysis_path)
    folder = analysis_path.parent
    inputs.runs_path = _find_run_table(folder, analysis)
    if inputs.runs_path is not None:
        inputs.runs = _read_run_table(inputs.runs_path)
    for mask_dir in (folder / "masks", folder.parent / "masks"):
        if mask_dir.is_dir():
            _read_masks(mask_dir, inputs)
            break
    return inputs


def _read_analysis(path: Path) -> dict:
    try:
        analysis = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(analysis, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(analysis).__name__}")
    version = analysis.get("schema_version", 1)
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise DataError(f"{path}: schema_version {version!r} is not supported "
                        f"(this causalloc reads {SUPPORTED_SCHEMA_VERSIONS})")
    comparisons = analysis.get("comparisons")
    if not isinstance(comparisons, list):
        raise DataError(f"{path}: key 'comparisons' must be a list")
    for i, comparison in enumerate(comparisons):
        if not isinstance(comparison, dict):
            raise DataError(f"{path}: comparisons[{i}] must be an object")
        missing = [k for k in REQUIRED_COMPARISON_KEYS if k not in comparison]
        if missing:
            raise DataError(f"{path}: comparisons[{i}] lacks key(s) {', '.join(missing)}")
        if not isinstance(comparison["cell"], dict):
            raise DataError(f"{path}: comparisons[{i}].cell must be an object")
    for key in ("mixed_models", "dose_response", "dropped_blocks", "excluded_runs",
                "failed_runs", "warnings"):
        if not isinstance(analysis.get(key) or [], list):
            raise DataError(f"{path}: key {key!r} must be a list")
    return analysis


def _find_run_table(folder: Path, analysis: dict) -> Path | None:
    candidates = [folder / "runs.csv", folder.parent / "runs.csv"]
    source = (analysis.get("input") or {}).get("source")
    if isinstance(source, str) and source:
        source_path = Path(source)
        candidates.append(source_path / "runs.csv" if source_path.is_dir() else source_path)
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix == ".csv":
            return candidate
    return None


def _read_run_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the run table ({exc})") from None


def _read_masks(mask_dir: Path, inputs: ReportInputs) -> None:
    for mask_path in sorted(mask_dir.glob("*.json")):
        try:
            mask = json.loads(mask_path.read_text())
            signature = mask["signature"]
            n_layers, n_units = int(signature["n_layers"]), int(signature["n_units"])
            units = [[int(u) for u in layer] for layer in mask["units"]]
            if len(units) != n_layers:
                raise ValueError(f"{len(units)} unit lists for {n_layers} layers")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            inputs.notes.append(f"mask file {mask_path} skipped: {exc!r}")
            continue
        plain = {"name": str(mask.get("name") or mask_path.stem),
                 "signature": {"n_layers": n_layers, "n_units": n_units}, "units": units}
        if mask_path.name == TARGET_MASK_FILE:
            inputs.target_mask, inputs.target_mask_path = plain, mask_path
        else:
            inputs.masks.append(plain)
            inputs.mask_paths.append(mask_path)
