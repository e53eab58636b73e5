"""Claims files: the shipped files load, and bad files give errors naming claim and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from causalloc.audit.claims import load_claims
from causalloc.errors import SpecError
from causalloc.runs.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]

GOOD = {
    "id": "row1",
    "source": {"paper": "Lee 2025", "table": "Table 2"},
    "claim": "Oracle and random give the same AUES.",
    "kind": "equivalence",
    "contrast": {"a": "oracle", "b": "random"},
    "metric": {"name": "aues", "direction": "higher"},
    "published": {
        "a": {"mean": 0.593, "spread": 0.016, "spread_kind": "sd", "n": 5},
        "b": {"mean": 0.586, "spread": 0.020, "spread_kind": "sd", "n": 5},
        "abs_delta": {"mean": 0.018, "sd": 0.013},
        "resolution": 0.001,
        "reported_p": 0.61,
        "reported_p_resolution": 0.01,
    },
    "sesoi": {"value": 0.02, "justification": "two points of AUES"},
}


def write(tmp_path: Path, claim: dict) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [claim]}))
    return path


def changed(path: str, value) -> dict:
    """GOOD with one dotted field set (value None: removed)."""
    claim = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = claim
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return claim


def test_good_claim_loads(tmp_path):
    (claim,) = load_claims(write(tmp_path, GOOD))
    assert claim.id == "row1" and claim.group_a.n == 5 and claim.abs_delta_sd == 0.013
    assert claim.run_a == "oracle" and claim.higher_is_better


@pytest.mark.parametrize("field, value, message", [
    ("claim", None, "claim: missing"),
    ("published.a.mean", None, "published.a.mean: missing"),
    ("sesoi.justification", None, "sesoi.justification: missing"),
    ("metric.direction", "up", "metric.direction: unknown value 'up'"),
    ("kind", "better", "kind: unknown value 'better'"),
    ("published.b.n", 1, "published.b.n: must be an integer >= 2"),
    ("published.a.spread", -0.01, "published.a.spread: a spread cannot be negative"),
    ("published.abs_delta.mean", 0.002, "published.abs_delta.mean: |mean difference|"),
    ("published.reported_p", 1.2, "published.reported_p: a p-value must lie in [0, 1]"),
    ("published.reported_p", -0.1, "published.reported_p: a p-value must lie in [0, 1]"),
    ("sesoi.value", 0, "sesoi.value: must be > 0"),
    ("published.a.spread_kind", "iqr", "published.a.spread_kind: unknown value 'iqr'"),
])
def test_bad_claims_name_claim_and_field(tmp_path, field, value, message):
    with pytest.raises(SpecError) as info:
        load_claims(write(tmp_path, changed(field, value)))
    assert "claim 'row1'" in str(info.value) and message in str(info.value)


def test_abs_delta_check_allows_rounding_only(tmp_path):
    # |0.593 - 0.586| = 0.007 vs mean |Delta| 0.006: explained by rounding to 0.001
    load_claims(write(tmp_path, changed("published.abs_delta.mean", 0.006)))
    with pytest.raises(SpecError, match="impossible"):
        load_claims(write(tmp_path, changed("published.abs_delta.mean", 0.005)))


def test_file_level_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("claims: []\n")
    with pytest.raises(SpecError, match="non-empty 'claims' list"):
        load_claims(path)
    path.write_text(yaml.safe_dump({"claims": [GOOD, GOOD]}))
    with pytest.raises(SpecError, match="duplicate claim id"):
        load_claims(path)
    path.write_text(yaml.safe_dump({"claims": [{**GOOD, "preset": "nope"}]}))
    with pytest.raises(SpecError, match="unknown preset 'nope'"):
        load_claims(path)
    path.write_text(yaml.safe_dump({"claims": [{**GOOD, "colour": 1}]}))
    with pytest.raises(SpecError, match="colour: unknown field"):
        load_claims(path)


def test_defaults_and_presets_are_deep_merged(tmp_path):
    path = tmp_path / "c.yaml"
    claim = changed("published.a.n", None)
    del claim["sesoi"]["value"]  # the claim's own value would win over the preset's
    path.write_text(yaml.safe_dump({
        "defaults": {"published": {"a": {"n": 5}}},
        "presets": {"wide": {"sesoi": {"value": 0.05}}},
        "claims": [{**claim, "preset": "wide"}],
    }))
    (loaded,) = load_claims(path)
    assert loaded.group_a.n == 5 and loaded.sesoi == 0.05


def test_shipped_claims_and_their_specs():
    lee = load_claims(ROOT / "data/claims/lee2025.yaml")
    table2 = [c for c in lee if c.table == "Table 2"]
    assert len(table2) == 16 and all(c.abs_delta_mean is not None for c in table2)
    assert {c.metric for c in table2} == {"aues", "mu95"}
    assert {c.sesoi for c in table2 if c.metric == "aues"} == {0.02}
    assert {c.sesoi for c in table2 if c.metric == "mu95"} == {1.0}
    methods = [c for c in lee if c.evidence == "means_only"]
    assert len(methods) == 6 and {c.b for c in methods} == {"random"}
    lacuna = load_claims(ROOT / "data/claims/lacuna2026.yaml")
    assert lacuna and all(c.evidence == "qualitative" for c in lacuna)
    for claim in lee + lacuna:
        spec = load_spec(ROOT / claim.spec)
        names = {c.name for c in spec.conditions}
        assert {claim.run_a, claim.run_b} <= names, claim.id
        assert claim.run_metric in spec.eval.metrics or claim.run_metric == "mu95", claim.id
