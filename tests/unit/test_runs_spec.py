"""Experiment spec validation: resolved values, defaults, and errors that name the key path."""

from __future__ import annotations

import copy
import datetime
import os
from pathlib import Path

import pytest

from causalloc.errors import SpecError
from causalloc.runs.spec import load_spec
from tests.runs_helpers import BASE, TRAIN, parse

ROOT = Path(__file__).resolve().parents[2]
def with_change(path: str, value):
    """BASE with one value set at a dotted path ('algorithms.0.lr'); value None deletes it."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        del node[last]
    else:
        node[last] = value
    return data


def test_example_spec_resolves_every_section():
    spec = load_spec(ROOT / "analyses" / "example_tiny.toml")
    assert spec.name == "example_tiny"
    assert spec.testbed.model_label == "tiny" and spec.testbed.data == "generated"
    assert spec.budgets == (0.1,) and spec.seeds == (0, 1) and spec.k_random == 3
    kinds = {c.name: (c.kind, c.reference, c.is_random) for c in spec.conditions}
    assert kinds == {
        "oracle": ("oracle", None, False),
        "random": ("random", None, True),
        "attributed:activations": ("attributed", None, False),
        "disjoint:oracle": ("disjoint", "oracle", True),
        "layer_matched:attributed:activations": ("layer_matched", "attributed:activations", True),
        "overlap:0.5": ("overlap", "oracle", True),
    }
    assert [a.label for a in spec.algorithms] == ["graddiff", "npo"]
    assert spec.relearn is not None and spec.relearn.steps == 10
    assert "relearn_es" in spec.eval.metrics
    assert spec.spec_hash == load_spec(ROOT / "analyses" / "example_tiny.toml").spec_hash


def test_defaults_are_written_into_the_resolved_spec():
    spec = parse(BASE)
    (npo,) = spec.algorithms
    assert npo.label == "npo"
    assert npo.train == {**TRAIN, "steps": 10, "lr": 1e-3}
    assert npo.hyper == {"beta": 0.1, "alpha": 1.0}  # objective defaults filled in
    assert spec.testbed.to_dict() == {"kind": "tiny", "budget": 0.1, "seed": 0, "n_authors": 20,
                                      "n_forget_authors": 2, "n_questions": 20, "build": {}}
    assert [c.name for c in spec.conditions] == ["oracle", "random", "disjoint:oracle"]
    assert spec.eval.every == 10 and "relearn_es" not in spec.eval.metrics


def test_hash_changes_with_any_setting():
    base = parse(BASE).spec_hash
    assert parse(with_change("algorithms.0.lr", 2e-3)).spec_hash != base
    assert parse(with_change("algorithms.0.beta", 0.2)).spec_hash != base
    assert parse(with_change("testbed.build", {"epochs": 3})).spec_hash != base


def test_unchecked_registry_passes_hyperparameters_through():
    spec = parse(with_change("algorithms.0.anything", 3), algorithms={"npo": None})
    assert spec.algorithms[0].hyper == {"anything": 3}


def test_given_mask_path_is_resolved_against_the_spec_folder(tmp_path):
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "m.json").write_text("{}")
    data = with_change("conditions.1", {"name": "mine", "strategy": "given:masks/m.json"})
    spec = parse(data, base_dir=tmp_path)
    assert spec.condition("mine").argument == str(tmp_path / "masks" / "m.json")
    assert spec.condition("mine").kind == "given" and not spec.condition("mine").is_random


CYCLE = [{"name": "a", "strategy": "disjoint:b"}, {"name": "b", "strategy": "layer_matched:a"}]


@pytest.mark.parametrize(("path", "value", "message"), [
    ("budget", [0.1], "budget: unknown key (known: "),
    ("budget", [0.1], "did you mean 'budgets'?"),
    ("testbed.n_author", 3, "testbed.n_author: unknown key"),
    ("testbed.kind", "huge", "testbed.kind: unknown value 'huge' (known: tiny, tofu, smollm2, hf)"),
    ("testbed.kind", "tofu", "testbed.tofu_path: required when kind = 'tofu'"),
    ("testbed.n_forget_authors", 20, "testbed.n_forget_authors: must be smaller than n_authors (20)"),
    ("testbed.budget", 0, "testbed.budget: must be in (0.0, 1.0], got 0"),
    ("testbed.run_dtype", "bf16", "testbed.run_dtype: unknown value 'bf16' (known: float32, bfloat16, float16)"),
    ("testbed.run_dtype", 16, "testbed.run_dtype: "),
    ("testbed.build", {"when": datetime.date(2020, 1, 1)}, "testbed.build.when: dates and times"),
    ("seeds", [0, "1"], "seeds[1]: must be an integer, got str '1'"),
    ("seeds", [0, 0], "seeds[1]: duplicate value 0"),
    ("seeds", [-1], "seeds[0]: must be >= 0"),
    ("seeds", [], "seeds: must be a non-empty list"),
    ("budgets", [0.1, 1.5], "budgets[1]: must be in (0.0, 1.0], got 1.5"),
    ("budgets", [0.0], "budgets[0]: must be in (0.0, 1.0]"),
    ("budgets", [0.6], "budgets[0]: 0.6 leaves too few units outside the reference"),
    ("k_random", 0, "k_random: must be >= 1, got 0"),
    ("k_random", True, "k_random: must be an integer, got bool"),
    ("conditions", None, "conditions: missing required key"),
    ("conditions.1", {"strategy": "oracel"}, "conditions[1].strategy: unknown strategy 'oracel'"),
    ("conditions.1", {"strategy": "oracel"}, "did you mean 'oracle'?"),
    ("conditions.1", {"strategy": "random:3"}, "conditions[1].strategy: unknown strategy"),
    ("conditions.1", {"strategy": "attributed:magic"},
     "conditions[1].strategy: unknown attribution method 'magic'"),
    ("conditions.1", {"strategy": "overlap:1.5"}, "conditions[1].strategy: overlap fraction must be in [0, 1]"),
    ("conditions.1", {"strategy": "overlap:half"},
     "conditions[1].strategy: overlap fraction must be a number"),
    ("conditions.1", {"strategy": "given:nowhere.json"}, "conditions[1].strategy: 'nowhere.json' does not exist"),
    ("conditions.1", {"strategy": "oracle"}, "conditions[1].name: duplicate condition name 'oracle'"),
    ("conditions.1", {"strategy": "random", "draws": 3}, "conditions[1].draws: unknown key"),
    ("conditions.2", {"strategy": "disjoint:orcale"},
     "conditions[2].strategy: refers to condition 'orcale', which is not defined"),
    ("conditions", CYCLE, "conditions[0].strategy: reference cycle a -> b -> a"),
    ("algorithms.0.name", "gaa", "algorithms[0].name: unknown value 'gaa' (known: ga, npo, rmu)"),
    ("algorithms.0.betaa", 1.0, "algorithms[0].betaa: unknown key"),
    ("algorithms.0.beta", "x", "algorithms[0].beta: must be of type float like its default 0.1"),
    ("algorithms.0.lr", -1.0, "algorithms[0].lr: must be in (0.0, inf), got -1.0"),
    ("algorithms.0.steps", 1.5, "algorithms[0].steps: must be an integer, got float"),
    ("algorithms.0.optimizer", "lion", "algorithms[0].optimizer: unknown value 'lion'"),
    ("algorithms.0.betas", [0.9], "algorithms[0].betas: must be two numbers in [0, 1)"),
    ("algorithms.0.seed", 3, "algorithms[0].seed: set by the design"),
    ("algorithms", [{"name": "npo"}, {"name": "npo"}], "algorithms[1].label: duplicate algorithm label"),
    ("eval.metrics", ["aeus"], "eval.metrics[0]: unknown metric 'aeus'"),
    ("eval.metrics", ["relearn_es"], "eval.metrics[0]: 'relearn_es' needs a [relearn] table"),
    ("eval.metrics", ["relearn_recovery"], "eval.metrics[0]: 'relearn_recovery' needs a [relearn] table"),
    ("testbed.tofu_path", ".", "testbed.tofu_path: kind 'tiny' trains on generated authors"),
    ("eval.every", 0, "eval.every: must be >= 1"),
    ("relearn.fraction", 1.0, "relearn.fraction: must be in (0.0, 1.0), got 1.0"),
    ("localization.magic", {}, "localization.magic: unknown attribution method"),
])
def test_errors_name_the_key_path(path, value, message):
    with pytest.raises(SpecError) as info:
        parse(with_change(path, value))
    text = str(info.value)
    assert message in text
    if ": " in message:  # the message starts with the key path
        assert text.startswith(message.split(": ")[0] + ": ")
    assert text.endswith("(in test.toml)")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match=r"missing\.toml: spec file not found"):
        load_spec(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("budgets = [0.1\nseeds = [0]\n")
    with pytest.raises(SpecError, match=r"broken\.toml: not valid TOML \(.*line"):
        load_spec(broken)


_REPO = Path(__file__).resolve().parents[2]
SHIPPED_SPECS = sorted(p for p in (_REPO / "analyses").glob("*.toml") if not p.name.endswith(".analysis.toml")) \
    + sorted((_REPO / "causalloc" / "demo_data").glob("*.toml"))
#: analysis specs (causalloc analyze --spec) beside the experiment specs they analyse
SHIPPED_ANALYSIS_SPECS = sorted((_REPO / "analyses").glob("*.analysis.toml"))


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_parses(path, tmp_path, monkeypatch):
    """The specs in analyses/ and the demo's designs load (a key one of them uses can be
    refused after a change to the parser; the full demo only runs in the slow suite). A spec
    on TOFU names it by $CAUSALLOC_TOFU_DIR; parsing only checks that the folder exists, so an
    empty folder stands in where the variable is unset."""
    if not os.environ.get("CAUSALLOC_TOFU_DIR"):
        monkeypatch.setenv("CAUSALLOC_TOFU_DIR", str(tmp_path))
    assert load_spec(path).conditions


def test_no_shipped_spec_names_a_place_outside_the_repository():
    for path in SHIPPED_SPECS + SHIPPED_ANALYSIS_SPECS:
        text = path.read_text()
        assert "shared/" not in text and "tofu_path = \"/" not in text, path


def test_a_path_names_an_environment_variable_and_an_unset_one_is_named(tmp_path, monkeypatch):
    spec = {**BASE, "testbed": {"kind": "tofu", "tofu_path": "$CAUSALLOC_TOFU_DIR"}}
    monkeypatch.delenv("CAUSALLOC_TOFU_DIR", raising=False)
    with pytest.raises(SpecError, match=r"testbed.tofu_path: .*environment variable CAUSALLOC_TOFU_DIR, "
                                        r"which is not set"):
        parse(spec)
    monkeypatch.setenv("CAUSALLOC_TOFU_DIR", str(tmp_path))
    assert parse(spec).testbed.tofu_path == str(tmp_path.resolve())


@pytest.mark.parametrize("path", SHIPPED_ANALYSIS_SPECS, ids=lambda p: p.name)
def test_every_shipped_analysis_spec_parses_and_names_conditions_of_its_design(path, monkeypatch,
                                                                             tmp_path):
    from causalloc.stats.spec import load_spec as load_analysis_spec

    if not os.environ.get("CAUSALLOC_TOFU_DIR"):  # a TOFU design names its data by this variable
        monkeypatch.setenv("CAUSALLOC_TOFU_DIR", str(tmp_path))

    design = load_spec(path.with_name(path.name.replace(".analysis.toml", ".toml")))
    names = {c.name for c in design.conditions}
    comparisons = load_analysis_spec(path).comparisons
    assert comparisons and all({c.a, c.b} <= names for c in comparisons)


def _with_run_dtype(path: Path, run_dtype: str):
    """The shipped spec at ``path`` with ``[testbed] run_dtype`` set."""
    from causalloc.runs.spec import parse_spec, tomllib

    data = tomllib.loads(path.read_text())
    data["testbed"]["run_dtype"] = run_dtype
    return parse_spec(data, source=str(path), base_dir=path.parent, default_name=path.stem)


@pytest.mark.parametrize("name", ["oracle_vs_random", "regression"])  # built and pinned testbeds
def test_run_dtype_is_in_the_run_ids_only_when_set_and_never_in_the_testbed(name):
    import pandas as pd

    from causalloc.runs.design import expand
    from causalloc.runs.worker import testbed_config

    path = ROOT / "analyses" / f"{name}.toml"
    committed = set(pd.read_csv(ROOT / "reports" / name / "runs.csv")["run_id"])
    spec = load_spec(path)
    assert spec.testbed.run_dtype is None and "run_dtype" not in spec.testbed.to_dict()
    assert {run["run_id"] for run in expand(spec)} == committed  # a spec without it keeps its ids
    bf16 = _with_run_dtype(path, "bfloat16")
    assert bf16.testbed.run_dtype == "bfloat16"
    runs = expand(bf16)
    assert all(run["testbed"]["run_dtype"] == "bfloat16" for run in runs)
    assert not {run["run_id"] for run in runs} & committed
    if not spec.testbed.pinned:  # the same testbed (config hash) serves both
        float32 = expand(spec)[0]["testbed"]
        assert testbed_config(runs[0]["testbed"]).hash() == testbed_config(float32).hash()
