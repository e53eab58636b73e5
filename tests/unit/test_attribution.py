"""Localization methods on a tiny LLaMA with planted signals, plus accuracy metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from causalloc.attribution import METHODS, localize
from causalloc.attribution.accuracy import layer_distribution, mask_accuracy, pairwise_overlap
from causalloc.attribution.memflex import corrupted_copies
from causalloc.data.collate import collate
from causalloc.errors import DataError, MaskError, SpecError
from causalloc.masks import Mask
from causalloc.models.units import ModelSignature, adapter_for

N_LAYERS, N_UNITS, HIDDEN = 2, 64, 32
ALL_METHODS = ["activations", "grad_x_weight", "memflex", "random", "wagle", "weight_norm"]


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=N_UNITS,
                         num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=32)
    return LlamaForCausalLM(config)


def qa_batch(n_items: int, seed: int) -> dict[str, torch.Tensor]:
    """Random 5-token prompts with 5-token answers (hand-made ids, collated)."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n_items):
        prompt, answer = [1, *rng.integers(3, 64, 4).tolist()], rng.integers(3, 64, 5).tolist()
        examples.append({"input_ids": prompt + answer, "labels": [-100] * 5 + answer})
    return collate(examples, pad_token_id=0)


FORGET, RETAIN = qa_batch(8, seed=1), qa_batch(8, seed=2)


def plant_dominant_units(model, units, activation_scale=4.0, value_norm=2.0) -> None:
    """Make units dominate the MLP output: gate and up rows = s * r (so the activation
    a = (s r.x)^2 sigmoid(s r.x) is large and never negative) and a value vector of norm
    ``value_norm`` (the others have norm ~0.1 at init)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, unit in units:
            mlp = model.model.layers[layer].mlp
            direction = torch.randn(HIDDEN, generator=generator)
            direction /= direction.norm()
            mlp.gate_proj.weight[unit] = activation_scale * direction
            mlp.up_proj.weight[unit] = activation_scale * direction
            value = torch.randn(HIDDEN, generator=generator)
            mlp.down_proj.weight[:, unit] = value_norm * value / value.norm()


def recall(result, reference: Mask) -> float:
    return result.mask.overlap(reference) / reference.size


@pytest.fixture(scope="module")
def trained_plant():
    """The testbed's injection in miniature: train only 13 planted value vectors (10%) on
    the forget data (Adam, lr 1e-2, 40 steps); the planted set is the ground truth."""
    model = tiny_llama()
    signature = adapter_for(model).signature
    planted = Mask.from_flat(np.random.default_rng(0).choice(signature.total_units, 13,
                                                             replace=False), signature, "planted")
    columns = torch.tensor(planted.dense(), dtype=torch.float32)
    adapter = adapter_for(model)
    for p in model.parameters():
        p.requires_grad_(False)
    weights = [adapter.value_weight(layer) for layer in range(N_LAYERS)]
    for w in weights:
        w.requires_grad_(True)
    optimizer = torch.optim.Adam(weights, lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        model(**FORGET).loss.backward()
        for layer, w in enumerate(weights):
            w.grad *= columns[layer][None, :]
        optimizer.step()
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer.zero_grad(set_to_none=True)
    return model, planted


@pytest.mark.parametrize("method", ["activations", "grad_x_weight"])
def test_single_dominant_value_vector_ranks_first(method):
    model = tiny_llama()
    plant_dominant_units(model, [(1, 17)])
    result = localize(method, model, FORGET, None, budget=2)  # (an integer 1 would mean 100%)
    assert int(np.argmax(result.scores)) == 1 * N_UNITS + 17
    assert 17 in result.mask.units[1].tolist() and result.mask.size == 2


def test_weight_norm_ranks_by_value_vector_norm_and_ignores_the_data():
    model = tiny_llama()
    adapter = adapter_for(model)
    with torch.no_grad():
        adapter.value_weight(1)[:, 17] *= 50.0
        adapter.value_weight(0)[:, 3] *= 30.0
    result = localize("weight_norm", model, FORGET, None, budget=2)
    down = [model.model.layers[l].mlp.down_proj.weight.detach() for l in range(N_LAYERS)]
    norms = torch.stack([w.norm(dim=0) for w in down])  # down_proj columns are the value vectors
    np.testing.assert_allclose(result.scores, norms.double().numpy(), rtol=1e-6)
    assert result.mask.units[1].tolist() == [17] and result.mask.units[0].tolist() == [3]
    other_data = localize("weight_norm", model, qa_batch(8, seed=9), None, budget=2)
    np.testing.assert_array_equal(other_data.scores, result.scores)


def test_every_method_recovers_dominant_planted_units():
    """8 scaled units (6% of 128): every attribution method recovers all of them at equal
    budget; random does not (chance recall 8/128)."""
    model = tiny_llama()
    signature = adapter_for(model).signature
    planted = Mask.from_flat(np.random.default_rng(0).choice(128, 8, replace=False), signature)
    plant_dominant_units(model, [(int(f) // N_UNITS, int(f) % N_UNITS) for f in planted.flat()])
    recalls = {m: recall(localize(m, model, FORGET, RETAIN, budget=8), planted)
               for m in ALL_METHODS}
    print("dominant plant recall:", recalls)
    for method in ("activations", "grad_x_weight", "memflex", "wagle"):
        assert recalls[method] == 1.0, method
    assert recalls["random"] < 0.5
    memflex = localize("memflex", model, FORGET, RETAIN, budget=8)
    assert memflex.details["passes"].sum() == 8  # the paper's thresholds select exactly them


def test_trained_plant_recall(trained_plant):
    """Units trained on forget (the testbed's design): activations and grad_x_weight find
    them through their grown norms; WAGLE and MemFlex recall is reported (gradients vanish
    at the units that already fit the forget data, so these need not beat chance)."""
    model, planted = trained_plant
    chance = planted.size / planted.signature.total_units
    recalls = {m: recall(localize(m, model, FORGET, RETAIN, budget=planted.size), planted)
               for m in ALL_METHODS}
    print(f"trained plant recall (chance {chance:.3f}):", recalls)
    assert recalls["activations"] >= 0.75
    assert recalls["grad_x_weight"] >= 0.75
    random_recalls = [recall(localize("random", model, FORGET, None, planted.size, seed=s), planted)
                      for s in range(30)]
    assert abs(np.mean(random_recalls) - chance) < 0.05


def test_localize_leaves_the_model_unchanged(trained_plant):
    model, _ = trained_plant
    model.model.embed_tokens.weight.requires_grad_(False)  # a mixed set of flags to restore
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for method in ALL_METHODS:
        localize(method, model, FORGET, RETAIN, budget=0.1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.model.embed_tokens.weight.requires_grad_(True)


def test_budget_per_layer_and_result_record():
    model = tiny_llama()
    result = localize("grad_x_weight", model, [FORGET], None, budget=0.1, per_layer=True)
    assert result.mask.size == round(0.1 * 128)
    assert result.mask.per_layer_counts().tolist() == [7, 6] or \
        result.mask.per_layer_counts().tolist() == [6, 7]
    assert result.scores.shape == (N_LAYERS, N_UNITS) and result.scores.dtype == np.float64
    assert result.mask.meta["method"] == "grad_x_weight" and result.mask.meta["count"] == 13
    assert Mask.from_dict(json.loads(json.dumps(result.mask.to_dict()))) == result.mask
    memflex = localize("memflex", model, FORGET, RETAIN, budget=5, seed=3, cos_threshold=0.5)
    assert memflex.hyper == {"n_copies": 3, "cos_threshold": 0.5, "grad_threshold": 6e-4}
    assert memflex.seed == 3


def test_seeded_methods_are_reproducible():
    model = tiny_llama()
    first = localize("random", model, FORGET, None, budget=10, seed=7)
    again = localize("random", model, FORGET, None, budget=10, seed=7)
    other = localize("random", model, FORGET, None, budget=10, seed=8)
    assert first.mask == again.mask and first.mask != other.mask
    m1 = localize("memflex", model, FORGET, RETAIN, budget=10, seed=1)
    m2 = localize("memflex", model, FORGET, RETAIN, budget=10, seed=1)
    m3 = localize("memflex", model, FORGET, RETAIN, budget=10, seed=2)
    assert np.array_equal(m1.scores, m2.scores) and not np.array_equal(m1.scores, m3.scores)


def test_corrupted_copies_replace_half_the_answer_tokens():
    rng = np.random.default_rng(0)
    copies = corrupted_copies(FORGET, 3, vocab_size=10_000, rng=rng)
    assert len(copies) == 3
    answer = FORGET["labels"] != -100
    for copy in copies:
        assert torch.equal(copy["input_ids"][~answer], FORGET["input_ids"][~answer])
        assert torch.equal(copy["labels"][answer], copy["input_ids"][answer])
        changed = (copy["input_ids"] != FORGET["input_ids"]).sum(dim=1)
        assert changed.tolist() == (answer.sum(dim=1) // 2).tolist()
    assert not torch.equal(copies[0]["input_ids"], copies[1]["input_ids"])


def test_bad_names_budgets_and_data_give_clear_errors():
    model = tiny_llama()
    assert sorted(METHODS) == sorted(ALL_METHODS + ["hard_concrete", "slimming"])  # see test_attribution_learned
    with pytest.raises(SpecError, match="unknown method 'causal_tracing'"):
        localize("causal_tracing", model, FORGET, RETAIN, 0.1)
    with pytest.raises(SpecError, match=r"unknown hyperparameter\(s\) \['mu'\]"):
        localize("activations", model, FORGET, RETAIN, 0.1, mu=1.0)
    with pytest.raises(SpecError, match="localization.wagle.mu"):
        localize("wagle", model, FORGET, RETAIN, 0.1, mu=0.0)
    with pytest.raises(SpecError, match="localization.memflex.n_copies"):
        localize("memflex", model, FORGET, RETAIN, 0.1, n_copies=0)
    with pytest.raises(SpecError, match="localization.seed"):
        localize("random", model, FORGET, RETAIN, 0.1, seed=-1)
    for budget in (0.0, 1.5, 129, -3, "10%"):
        with pytest.raises(MaskError, match="budget"):
            localize("random", model, FORGET, RETAIN, budget)
    with pytest.raises(DataError, match="no forget batches"):
        localize("activations", model, [], RETAIN, 0.1)
    with pytest.raises(DataError, match="no retain batches"):
        localize("memflex", model, FORGET, None, 0.1)
    with pytest.raises(DataError, match=r"forget batch 0: missing key\(s\) \['labels'\]"):
        localize("activations", model, {"input_ids": FORGET["input_ids"],
                                         "attention_mask": FORGET["attention_mask"]}, None, 0.1)
    no_answer = {**FORGET, "labels": torch.full_like(FORGET["labels"], -100)}
    with pytest.raises(DataError, match="no answer tokens"):
        localize("grad_x_weight", model, no_answer, None, 0.1)


SIGNATURE = ModelSignature("llama", n_layers=2, n_units=4, hidden=8)


def test_accuracy_against_a_hand_made_reference():
    reference = Mask.from_flat([0, 1, 5], SIGNATURE)
    masks = {"half": Mask.from_flat([1, 5, 6], SIGNATURE), "exact": reference,
             "disjoint": Mask.from_flat([2, 3, 4], SIGNATURE)}
    table = mask_accuracy(masks, reference).set_index("mask")
    assert table.loc["half", ["hits", "precision", "recall", "jaccard"]].tolist() == \
        pytest.approx([2, 2 / 3, 2 / 3, 0.5])
    assert table.loc["exact", "jaccard"] == 1.0 and table.loc["disjoint", "recall"] == 0.0
    assert (table["chance_precision"] == 3 / 8).all()
    small = mask_accuracy({"one": Mask.from_flat([5], SIGNATURE)}, reference).iloc[0]
    assert (small["precision"], small["recall"], small["jaccard"]) == (1.0, 1 / 3, 1 / 3)


def test_layer_distribution_and_pairwise_overlap():
    masks = {"a": Mask.from_flat([0, 1, 5], SIGNATURE), "b": Mask.from_flat([1, 6, 7], SIGNATURE)}
    layers = layer_distribution(masks)
    assert layers.query("mask == 'a'")["count"].tolist() == [2, 1]
    assert layers.query("mask == 'b'")["share_of_layer"].tolist() == [0.25, 0.5]
    assert layers.groupby("mask")["share_of_mask"].sum().tolist() == pytest.approx([1.0, 1.0])
    overlap = pairwise_overlap(masks)
    matrix = overlap.pivot(index="mask_a", columns="mask_b", values="jaccard")
    expected = pd.DataFrame([[1.0, 0.2], [0.2, 1.0]], index=["a", "b"], columns=["a", "b"])
    assert np.allclose(matrix.loc[["a", "b"], ["a", "b"]].to_numpy(), expected.to_numpy())
    assert overlap.query("mask_a == 'a' and mask_b == 'b'")["shared"].item() == 1


def test_accuracy_rejects_masks_of_different_models():
    other = ModelSignature("llama", n_layers=3, n_units=4, hidden=8)
    with pytest.raises(MaskError, match="different models"):
        mask_accuracy({"a": Mask.from_flat([0], other)}, Mask.from_flat([0], SIGNATURE))
    with pytest.raises(MaskError, match="no masks"):
        pairwise_overlap({})
