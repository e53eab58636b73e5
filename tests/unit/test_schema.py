"""One checker behind the three validated files: every message starts with the dotted key and
ends with the file (and record) it came from."""

from __future__ import annotations

import pytest
import yaml

from causalloc.audit.claims import load_claims
from causalloc.errors import SpecError
from causalloc.runs.spec import parse_spec as parse_experiment
from causalloc.schema import Checker
from causalloc.stats.spec import parse_spec as parse_analysis
from tests.unit.test_audit_claims import GOOD


def message(call) -> str:
    with pytest.raises(SpecError) as info:
        call()
    return str(info.value)


def test_the_three_files_share_one_message_form(tmp_path):
    assert message(lambda: parse_analysis({"n_boot": 10}, source="a.toml")) == \
        "n_boot: must be >= 100, got 10 (in a.toml)"
    assert message(lambda: parse_analysis({"comparisons": [{"a": "x", "b": "x"}]}, source="a.toml")) \
        == "comparisons[0]: a and b are the same condition 'x' (in a.toml)"
    assert message(lambda: parse_experiment({"seeds": [0]}, source="e.toml")).endswith(
        "missing required key (in e.toml)")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"claims": [{**GOOD, "kind": "better"}]}))
    text = message(lambda: load_claims(path))
    assert text.startswith("kind: unknown value 'better'")
    assert text.endswith(f"(in c.yaml, claim {GOOD['id']!r})")


def test_checker_reads_dotted_fields_and_types():
    check = Checker("f.toml")
    data = {"a": {"b": 1, "c": None}}
    assert check.get(data, "a.b") == 1 and check.get(data, "a.c", required=False) is None
    assert message(lambda: check.get(data, "a.c")) == "a.c: missing (in f.toml)"
    assert check.of_type(2, "x", float) == 2.0 and isinstance(check.of_type(2, "x", float), float)
    assert message(lambda: check.of_type(True, "x", int)) == "x: expected int, got bool (in f.toml)"
    assert message(lambda: check.finite(1.5, "y", low=0.0, high=1.0)) == \
        "y: must be in [0.0, 1.0], got 1.5 (in f.toml)"
