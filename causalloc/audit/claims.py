"""Claims files: published localization claims as YAML, checked into :class:`Claim` objects.

The schema is documented in docs/claims.md. A file has an optional ``defaults`` mapping,
deep-merged under every entry of its ``claims`` list (so that a table's citation, SESOI or
conditions are written once), optional named ``presets`` that a claim pulls in with
``preset: NAME`` (merged between the defaults and the claim), and the ``claims`` list. Every problem is a
:class:`~causalloc.errors.SpecError` whose message names the file, the claim id and the
dotted field, e.g. ``published.a.n: must be an integer >= 2, got 1 (in lee2025.yaml, claim 'x')``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from causalloc.errors import SpecError
from causalloc.schema import Checker

KINDS = ("superiority", "equivalence", "non-inferiority")
DIRECTIONS = ("higher", "lower")
#: what the published evidence of a claim consists of
EVIDENCE = ("figures", "means_only", "qualitative")
SPREAD_KINDS = ("sd", "se")
_TOP_KEYS = {"id", "source", "claim", "kind", "contrast", "metric", "cell", "evidence",
             "published", "sesoi", "runs", "spec", "note"}


@dataclass(frozen=True)
class Group:
    """One published group: mean and, unless means only, its spread (sd or se) and n."""

    mean: float
    spread: float | None = None
    spread_kind: str | None = None
    n: int | None = None

    @property
    def sd(self) -> float | None:
        """The spread as a standard deviation (se x sqrt(n) when the paper gave an se)."""
        if self.spread is None:
            return None
        return self.spread * math.sqrt(self.n) if self.spread_kind == "se" else self.spread


@dataclass(frozen=True)
class Claim:
    """One checked claim; ``published`` fields are None where the paper gives no figure."""

    id: str
    paper: str
    table: str
    text: str
    kind: str
    a: str
    b: str
    metric: str
    direction: str
    evidence: str
    sesoi: float
    sesoi_justification: str
    resolution: float | None = None
    group_a: Group | None = None
    group_b: Group | None = None
    abs_delta_mean: float | None = None
    abs_delta_sd: float | None = None
    reported_p: float | None = None
    reported_p_resolution: float | None = None
    reported_test: str | None = None
    cell: dict = field(default_factory=dict)
    runs_match: dict = field(default_factory=dict)
    runs_conditions: dict = field(default_factory=dict)
    runs_metric: str | None = None
    spec: str | None = None
    note: str = ""
    source_file: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def testable_from_figures(self) -> bool:
        return self.evidence == "figures"

    @property
    def run_a(self) -> str:
        """The run-table condition that stands for contrast a (default: a's name)."""
        return self.runs_conditions.get("a", self.a)

    @property
    def run_b(self) -> str:
        return self.runs_conditions.get("b", self.b)

    @property
    def run_metric(self) -> str:
        return self.runs_metric or self.metric


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; nested mappings are merged key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Fields(Checker):
    """Reads the dotted fields of one claim mapping (:class:`causalloc.schema.Checker`;
    errors name the field, the file and the claim id)."""

    def __init__(self, source: str, claim_id: str, data: dict):
        super().__init__(f"{source}, claim {claim_id!r}")
        self.data = data

    def field(self, path: str, required: bool = True):
        return self.get(self.data, path, required)

    def string_at(self, path: str, required: bool = True) -> str | None:
        value = self.field(path, required)
        return None if value is None else self.text(value, path)

    def number_at(self, path: str, required: bool = True, positive: bool = False) -> float | None:
        value = self.field(path, required)
        if value is None:
            return None
        value = self.finite(value, path)
        if positive and not value > 0:
            self.fail(path, f"must be > 0, got {value}")
        return value

    def choice_at(self, path: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.field(path, required=default is None)
        return self.one_of(default if value is None else value, path, options)

    def mapping_at(self, path: str) -> dict:
        value = self.field(path, required=False)
        return {} if value is None else self.table(value, path)

    def group(self, path: str, means_only: bool) -> Group:
        mean = self.number_at(f"{path}.mean")
        if means_only:
            return Group(mean=mean)
        spread = self.number_at(f"{path}.spread")
        if spread < 0:
            self.fail(f"{path}.spread", f"a spread cannot be negative, got {spread}")
        kind = self.choice_at(f"{path}.spread_kind", SPREAD_KINDS)
        n = self.field(f"{path}.n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            self.fail(f"{path}.n", f"must be an integer >= 2 (a spread needs two values), got {n!r}")
        return Group(mean=mean, spread=spread, spread_kind=kind, n=n)


def parse_claim(data: dict, source: str, index: int) -> Claim:
    """Check one merged claim mapping (defaults applied) and build its :class:`Claim`."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: claims[{index}]: expected a mapping, got {type(data).__name__}")
    claim_id = data.get("id")
    if not isinstance(claim_id, str) or not claim_id.strip():
        raise SpecError(f"{source}: claims[{index}].id: missing (every claim needs an id)")
    f = _Fields(source, claim_id, data)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        f.fail(unknown[0], f"unknown field (known: {', '.join(sorted(_TOP_KEYS))})")
    evidence = f.choice_at("evidence", EVIDENCE, default="figures")
    means_only = evidence == "means_only"
    values = {
        "id": claim_id,
        "paper": f.string_at("source.paper"),
        "table": f.string_at("source.table"),
        "text": f.string_at("claim"),
        "kind": f.choice_at("kind", KINDS),
        "a": f.string_at("contrast.a"),
        "b": f.string_at("contrast.b"),
        "metric": f.string_at("metric.name"),
        "direction": f.choice_at("metric.direction", DIRECTIONS),
        "evidence": evidence,
        "sesoi": f.number_at("sesoi.value", positive=True),
        "sesoi_justification": f.string_at("sesoi.justification"),
        "cell": f.mapping_at("cell"),
        "runs_match": f.mapping_at("runs.match"),
        "runs_conditions": f.mapping_at("runs.conditions"),
        "runs_metric": f.string_at("runs.metric", required=False),
        "spec": f.string_at("spec", required=False),
        "note": f.string_at("note", required=False) or "",
        "source_file": source,
    }
    for key in values["runs_conditions"]:
        if key not in ("a", "b"):
            f.fail(f"runs.conditions.{key}", "unknown key (known: a, b)")
    if evidence != "qualitative":
        values["group_a"] = f.group("published.a", means_only)
        values["group_b"] = f.group("published.b", means_only)
        values["resolution"] = f.number_at("published.resolution", positive=True)
    if evidence == "figures":
        _published_figures(f, values)
    return Claim(**values)


def _published_figures(f: _Fields, values: dict) -> None:
    """The optional |Delta|, reported p and test of a claim with full figures, checked."""
    a, b = values["group_a"], values["group_b"]
    abs_mean = f.number_at("published.abs_delta.mean", required=False)
    if abs_mean is not None:
        if abs_mean < 0:
            f.fail("published.abs_delta.mean", f"a mean absolute difference cannot be negative, "
                   f"got {abs_mean}")
        abs_sd = f.number_at("published.abs_delta.sd")
        if abs_sd < 0:
            f.fail("published.abs_delta.sd", f"a spread cannot be negative, got {abs_sd}")
        if a.n != b.n:
            f.fail("published.abs_delta", f"per-seed differences need equal n, got {a.n} and {b.n}")
        mean_diff = a.mean - b.mean
        # the mean of |d_i| bounds |mean of d_i|; allow one rounding unit of each figure
        if abs(mean_diff) > abs_mean + 1.5 * values["resolution"]:
            f.fail("published.abs_delta.mean", f"|mean difference| = |{a.mean} - {b.mean}| = "
                   f"{abs(mean_diff):.6g} is larger than the mean |Delta| {abs_mean}, which is "
                   "impossible (the mean of |d_i| is at least |mean of d_i|)")
        values["abs_delta_mean"], values["abs_delta_sd"] = abs_mean, abs_sd
    p = f.number_at("published.reported_p", required=False)
    if p is not None:
        if not 0 <= p <= 1:
            f.fail("published.reported_p", f"a p-value must lie in [0, 1], got {p}")
        values["reported_p"] = p
        values["reported_p_resolution"] = f.number_at(
            "published.reported_p_resolution", positive=True)
    values["reported_test"] = f.string_at("published.reported_test", required=False)


def load_claims(path: str | Path) -> list[Claim]:
    """Read and check a claims YAML file; claim ids must be unique."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or not data["claims"]:
        raise SpecError(f"{path}: expected a mapping with a non-empty 'claims' list")
    unknown = sorted(set(data) - {"defaults", "presets", "claims"})
    if unknown:
        raise SpecError(f"{path}: {unknown[0]}: unknown top-level key "
                        "(known: defaults, presets, claims)")
    defaults = data.get("defaults") or {}
    presets = data.get("presets") or {}
    for key, value in (("defaults", defaults), ("presets", presets)):
        if not isinstance(value, dict):
            raise SpecError(f"{path}: {key}: expected a mapping")
    claims = []
    for index, entry in enumerate(data["claims"]):
        merged = entry
        if isinstance(entry, dict):
            entry = dict(entry)
            name = entry.pop("preset", None)
            if name is not None and not isinstance(presets.get(name), dict):
                raise SpecError(f"{path.name}: claims[{index}].preset: unknown preset {name!r} "
                                f"(known: {', '.join(presets) or 'none'})")
            merged = deep_merge(deep_merge(defaults, presets[name] if name else {}), entry)
        claims.append(parse_claim(merged, path.name, index))
    seen = set()
    for claim in claims:
        if claim.id in seen:
            raise SpecError(f"{path.name}: claim {claim.id!r}: id: duplicate claim id")
        seen.add(claim.id)
    return claims
