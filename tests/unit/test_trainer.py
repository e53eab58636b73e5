"""The hard constraint: nothing outside the mask can move, whatever the optimizer does."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from causalloc.data.collate import collate
from causalloc.errors import ConstraintError
from causalloc.masks import Mask
from causalloc.models.units import adapter_for
from causalloc.unlearn.base import Objective
from causalloc.unlearn.runner import UnlearnData, unlearn
from causalloc.unlearn.trainer import (
    BatchStream,
    MaskedColumns,
    ParameterSnapshot,
    TrainConfig,
    max_abs_change_outside_mask,
)
from tests.conftest import random_examples, tiny_llama


class _AscentOnForget(Objective):
    """Test objective: gradient ascent on forget plus descent on retain."""

    def loss(self, ctx):
        def nll(batch):
            logits = ctx.model(batch).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

        return -nll(ctx.forget) + nll(ctx.retain)


def _mask(model, per_layer):
    sig = adapter_for(model).signature
    rng = np.random.default_rng(3)
    units = tuple(np.sort(rng.choice(sig.n_units, size=k, replace=False)) for k in per_layer)
    return Mask(units, sig, "test")


def _data():
    return UnlearnData(forget=random_examples(12, seed=1), retain=random_examples(12, seed=2), pad_token_id=0)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(steps=6, lr=0.05, optimizer="adamw", weight_decay=0.5, grad_clip=None),
        TrainConfig(steps=6, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=0.1, grad_clip=None),
        TrainConfig(steps=6, lr=0.05, optimizer="adam", grad_clip=1e-3),
    ],
    ids=["adamw_weight_decay", "sgd_momentum", "clipping"],
)
def test_parameters_outside_mask_bitwise_unchanged(config):
    model = tiny_llama()
    mask = _mask(model, [5, 0])  # layer 1 untouched entirely
    before = copy.deepcopy(model.state_dict())
    result, _ = unlearn(model, mask, _AscentOnForget(), _data(), config)
    # the shared model itself is never written
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert result.max_abs_change_outside_mask == 0.0
    assert result.max_abs_change_inside_mask > 0.0


def test_merged_model_differs_only_inside_mask_and_matches_hooked_forward():
    model = tiny_llama()
    mask = _mask(model, [4, 3])
    adapter = adapter_for(model)
    batch = collate(random_examples(4, seed=9), 0)
    with MaskedColumns(model, mask) as columns:
        torch.manual_seed(0)
        with torch.no_grad():
            for c in columns.columns:
                c.add_(torch.randn_like(c))
            hooked = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            with columns.disabled():
                reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    merged = copy.deepcopy(model)  # after the hooks are gone
    columns.merge_into(merged)
    original = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(reference, original)
    with torch.no_grad():
        merged_logits = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(hooked, merged_logits, rtol=1e-4, atol=1e-5)
    dense = mask.dense()
    merged_adapter = adapter_for(merged)
    for layer in range(adapter.signature.n_layers):
        changed = (merged_adapter.value_matrix(layer) != adapter.value_matrix(layer)).any(dim=1).numpy()
        assert not changed[~dense[layer]].any()
        assert changed[dense[layer]].all()
    for (name, a), (_, b) in zip(model.named_parameters(), merged.named_parameters()):
        if "down_proj" not in name:
            assert torch.equal(a, b), name


def test_measure_detects_a_write_outside_the_mask():
    model = tiny_llama()
    mask = _mask(model, [2, 2])
    snapshot = ParameterSnapshot(model)
    with MaskedColumns(model, mask) as columns:
        with torch.no_grad():
            model.model.layers[1].self_attn.q_proj.weight[0, 0] += 0.25
        assert max_abs_change_outside_mask(model, snapshot, columns) == pytest.approx(0.25)


def test_no_weight_gradients_for_frozen_parameters():
    model = tiny_llama()
    model.requires_grad_(False)
    mask = _mask(model, [0, 3])
    batch = collate(random_examples(3), 0)
    with MaskedColumns(model, mask) as columns:
        out = model(input_ids=batch["input_ids"]).logits.sum()
        out.backward()
        assert columns.columns[0].grad is not None
    assert all(p.grad is None for p in model.parameters())


def test_gradient_masking_pitfall_is_real():
    """The naive approach (mask the gradient, AdamW with weight decay) moves frozen weights."""
    model = tiny_llama()
    mask = _mask(model, [3, 0])
    weight = adapter_for(model).value_weight(0)
    frozen = ~torch.as_tensor(mask.dense()[0])
    before = weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    batch = collate(random_examples(3), 0)
    model(input_ids=batch["input_ids"]).logits.sum().backward()
    weight.grad[:, frozen] = 0
    opt.step()
    assert (weight.detach()[:, frozen] != before[:, frozen]).any()


def test_batch_stream_is_seeded_and_parallel():
    a = random_examples(10, seed=4)
    b = random_examples(10, seed=5)
    first = [x for _, x in zip(range(4), BatchStream([a, b], 3, 0, seed=7))]
    again = [x for _, x in zip(range(4), BatchStream([a, b], 3, 0, seed=7))]
    for (fa, fb), (ga, gb) in zip(first, again):
        assert torch.equal(fa["input_ids"], ga["input_ids"]) and torch.equal(fb["input_ids"], gb["input_ids"])
    other = next(iter(BatchStream([a, b], 3, 0, seed=8)))
    assert not torch.equal(other[0]["input_ids"], first[0][0]["input_ids"])


def test_same_seed_same_numbers():
    model = tiny_llama()
    mask = _mask(model, [4, 4])
    config = TrainConfig(steps=4, lr=0.01, seed=11)
    r1, _ = unlearn(model, mask, _AscentOnForget(), _data(), config)
    r2, _ = unlearn(model, mask, _AscentOnForget(), _data(), config)
    assert r1.losses == r2.losses


class _WritesSharedWeights(_AscentOnForget):
    """Broken on purpose: besides its loss, writes into the shared value weight of layer 0
    at a unit INSIDE the mask (a write that a check of the outside coordinates alone misses)."""

    def __init__(self, model, unit: int):
        self.model, self.unit = model, unit

    def loss(self, ctx):
        weight = adapter_for(self.model).value_weight(0)
        with torch.no_grad():
            weight[:, self.unit] += 1e-3
        return super().loss(ctx)


def test_unlearn_freezes_the_shared_model_and_puts_its_flags_back():
    model = tiny_llama().requires_grad_(True)
    before = copy.deepcopy(model.state_dict())
    unlearn(model, _mask(model, [3, 3]), _AscentOnForget(), _data(), TrainConfig(steps=3, lr=0.05))
    assert all(p.grad is None for p in model.parameters())  # no weight gradient was computed
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_write_into_the_shared_model_inside_the_mask_fails_the_run_and_is_undone():
    model = tiny_llama()
    mask = _mask(model, [3, 0])
    objective = _WritesSharedWeights(model, int(mask.units[0][0]))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConstraintError, match=r"shared model changed.*down_proj.*outside the mask 0"):
        unlearn(model, mask, objective, _data(), TrainConfig(steps=2, lr=0.05))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # restored


def test_snapshot_against_the_saved_checkpoint_is_exact_and_restores(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path / "theta")
    snapshot = ParameterSnapshot(model, saved=tmp_path / "theta")
    assert snapshot._copy is None and snapshot.changed(model) == []
    mask = _mask(model, [2, 2])
    with MaskedColumns(model, mask) as columns:
        weight = adapter_for(model).value_weight(1)
        with torch.no_grad():
            weight[0, int(mask.units[1][0])] += 0.5  # inside the mask: not an outside change
            model.model.norm.weight[3] -= 0.125
        assert max_abs_change_outside_mask(model, snapshot, columns) == 0.125
        assert snapshot.max_abs_change(model) == {"model.layers.1.mlp.down_proj.weight": 0.5,
                                                  "model.norm.weight": 0.125}
    assert sorted(snapshot.restore(model)) == ["model.layers.1.mlp.down_proj.weight", "model.norm.weight"]
    assert snapshot.changed(model) == []
    with snapshot.restored_after(model), torch.no_grad():  # e.g. an in-place relearning attack
        for param in model.parameters():
            param.mul_(1.5)
    assert snapshot.changed(model) == []
