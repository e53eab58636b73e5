"""Analysis spec (TOML): which comparisons, families, SESOIs and settings.

Every key is optional; unknown keys are a SpecError naming the dotted key path::

    question = "Does the oracle region beat random regions of equal size?"
                                # the report's title (recorded in analysis.json); default:
                                # built from the comparisons
    alpha = 0.05                # significance level of every test and of TOST
    ci_level = 0.95             # bootstrap / t interval level
    adjust = "holm"             # multiplicity within families: "holm" or "fdr_bh"
    n_boot = 9999               # bootstrap resamples (BCa)
    n_permutations = 9999       # Monte Carlo sign patterns when 2^n > max_exact_patterns
    max_exact_patterns = 65536  # enumerate sign patterns exactly up to this count (2^16)
    max_resamples = 1048576     # cap of the adaptive Monte Carlo resampling near alpha (2^20)
    power = 0.8                 # target power of the blocks-needed planning numbers
    seed = 0                    # seed of every resampling Generator (recorded)
    metrics = ["aues"]          # metrics to analyse (default: all of the table's metrics)
    drop_unmatched = false      # drop blocks missing a condition (listed) instead of failing
    nonfinite = "error"         # "error" or "drop" NaN / inf metric values (listed)
    mixed_model = true          # fit the pooled mixed model per metric
    dose_response = true        # fit budget / overlap regressions when those vary
    primary_metric = "aues"     # metric of the primary family (default: the first metric)
    primary = ["attributed:activations"]  # conditions whose comparisons vs random are
                                # primary (default: the attributed ones); see
                                # causalloc.stats.families
    family_split = ["model"]    # cell columns that split every family (default none)

    [sesoi]                     # smallest effect size of interest, metric units
    aues = 0.02
    [sequential]                # group-sequential analysis (as --sequential): blocks in
    look_every = 4              # replicate order, a look every 4 blocks, planned at most
    max_blocks = 24             # 24 (optional; default: the blocks in the table); the
                                # plan `causalloc run --until-conclusive` ran the design under
    [higher_is_better]          # direction of each metric
    relearn_es = false

    [[comparisons]]             # default: see causalloc.stats.analyze.default_pairs
    a = "attributed:activations"
    b = "random"
    metrics = ["aues"]          # optional: default all analysed metrics
    family = "primary"          # optional: comparisons sharing a family name are
                                # adjusted together across metrics and cells; default:
                                # primary / controls | metric / secondary | metric;
                                # "primary" or "primary: <label>" (several primary
                                # families, each adjusted on its own) is primary
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from causalloc.errors import SpecError
from causalloc.schema import Checker
from causalloc.stats.multiplicity import ADJUST_METHODS


@dataclass(frozen=True)
class Comparison:
    """One requested comparison a - b (b is the baseline)."""

    a: str
    b: str
    metrics: tuple[str, ...] | None = None
    family: str | None = None


@dataclass
class AnalysisSpec:
    """Settings of one analysis; see the module docstring for the TOML keys."""

    alpha: float = 0.05
    ci_level: float = 0.95
    adjust: str = "holm"
    n_boot: int = 9999
    n_permutations: int = 9999
    max_exact_patterns: int = 2**16
    max_resamples: int = 2**20
    power: float = 0.8
    seed: int = 0
    metrics: list[str] | None = None
    drop_unmatched: bool = False
    nonfinite: str = "error"
    mixed_model: bool = True
    dose_response: bool = True
    sesoi: dict[str, float] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    comparisons: list[Comparison] | None = None
    primary_metric: str | None = None
    primary: list[str] | None = None
    family_split: list[str] = field(default_factory=list)
    question: str | None = None
    #: ``{"look_every": N, "max_blocks": M or None}`` or None (fixed-sample analysis)
    sequential: dict | None = None
    spec_hash: str | None = None


_TYPES = {
    "alpha": float, "ci_level": float, "adjust": str, "n_boot": int, "n_permutations": int,
    "max_exact_patterns": int, "power": float, "seed": int, "metrics": list,
    "drop_unmatched": bool, "nonfinite": str, "mixed_model": bool, "dose_response": bool,
    "sesoi": dict, "higher_is_better": dict, "comparisons": list, "max_resamples": int,
    "primary_metric": str, "primary": list, "family_split": list, "question": str,
    "sequential": dict,
}
_COMPARISON_KEYS = {"a": str, "b": str, "metrics": list, "family": str}


def parse_spec(data: dict, source: str = "spec") -> AnalysisSpec:
    """Validate a spec mapping (parsed TOML) into an AnalysisSpec; SpecError on any problem,
    naming the dotted key and ``source`` (:class:`causalloc.schema.Checker`)."""
    check = Checker(source)
    known = sorted({f.name for f in fields(AnalysisSpec)} - {"spec_hash"})
    values = {}
    for key, value in data.items():  # in file order: the first problem is reported
        check.keys({key: value}, "", known)
        values[key] = check.of_type(value, key, _TYPES[key])
    if "question" in values and not values["question"].strip():
        check.fail("question", "must be a non-empty string (the question the report answers, its title)")
    for key in ("metrics", "primary", "family_split"):
        if key in values:
            values[key] = check.string_list(values[key], key)
    for key, kind in (("sesoi", float), ("higher_is_better", bool)):
        table = {}
        for metric, value in values.get(key, {}).items():
            table[metric] = check.of_type(value, f"{key}.{metric}", kind)
            if kind is float and not table[metric] > 0:
                check.fail(f"{key}.{metric}", f"must be > 0, got {table[metric]}")
        if key in values:
            values[key] = table
    if "comparisons" in values:
        values["comparisons"] = [_comparison(check, entry, f"comparisons[{i}]")
                                 for i, entry in enumerate(values["comparisons"])]
    if "sequential" in values:
        values["sequential"] = _sequential(check, values["sequential"])
    spec = AnalysisSpec(**values)
    _check_ranges(check, spec)
    return spec


def _comparison(check: Checker, entry, path: str) -> Comparison:
    if not isinstance(entry, dict):
        check.fail(path, "expected a table with keys a, b")
    for key, value in entry.items():
        check.keys({key: value}, path, tuple(_COMPARISON_KEYS))
        check.of_type(value, f"{path}.{key}", _COMPARISON_KEYS[key])
    for key in ("a", "b"):
        if key not in entry:
            check.fail(f"{path}.{key}", "missing (the condition to compare)")
    if entry["a"] == entry["b"]:
        check.fail(path, f"a and b are the same condition {entry['a']!r}")
    metrics = entry.get("metrics")
    if metrics:
        metrics = tuple(check.string_list(metrics, f"{path}.metrics"))
    return Comparison(a=entry["a"], b=entry["b"], metrics=metrics or None, family=entry.get("family"))


def _sequential(check: Checker, table: dict) -> dict:
    """``[sequential]``: ``look_every`` (required, >= 1) and ``max_blocks`` (>= look_every)."""
    check.keys(table, "sequential", ("look_every", "max_blocks"))
    if "look_every" not in table:
        check.fail("sequential.look_every", "missing (blocks between looks)")
    look_every = check.of_type(table["look_every"], "sequential.look_every", int)
    if look_every < 1:
        check.fail("sequential.look_every", f"must be >= 1, got {look_every}")
    max_blocks = table.get("max_blocks")
    if max_blocks is not None:
        max_blocks = check.of_type(max_blocks, "sequential.max_blocks", int)
        if max_blocks < look_every:
            check.fail("sequential.max_blocks", f"must be >= look_every ({look_every}), got {max_blocks}")
    return {"look_every": look_every, "max_blocks": max_blocks}


def _check_ranges(check: Checker, spec: AnalysisSpec) -> None:
    if not 0 < spec.alpha < 0.5:
        check.fail("alpha", f"must be in (0, 0.5), got {spec.alpha}")
    if not 0 < spec.ci_level < 1:
        check.fail("ci_level", f"must be in (0, 1), got {spec.ci_level}")
    if not 0 < spec.power < 1:
        check.fail("power", f"must be in (0, 1), got {spec.power}")
    if spec.adjust not in ADJUST_METHODS:
        check.fail("adjust", f"unknown method {spec.adjust!r} (known: {', '.join(ADJUST_METHODS)})")
    if spec.nonfinite not in ("error", "drop"):
        check.fail("nonfinite", f"must be 'error' or 'drop', got {spec.nonfinite!r}")
    for key in ("n_boot", "n_permutations", "max_exact_patterns"):
        if getattr(spec, key) < 100:
            check.fail(key, f"must be >= 100, got {getattr(spec, key)}")
    if spec.max_resamples < spec.n_permutations:
        check.fail("max_resamples", f"must be >= n_permutations ({spec.n_permutations}), "
                   f"got {spec.max_resamples}")


def load_spec(path: str | Path) -> AnalysisSpec:
    """Read and validate an analysis spec TOML file; records its sha256 as ``spec_hash``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from exc
    spec = parse_spec(data, source=str(path))
    spec.spec_hash = hashlib.sha256(raw).hexdigest()
    return spec
