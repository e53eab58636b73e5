"""Forwards restricted to the scored positions give the full forward's logits and gradients there."""

import numpy as np
import pytest
import torch

from causalloc.data.collate import collate
from causalloc.masks import Mask
from causalloc.metrics import _forward_logits, _prefix_cache, extraction_strength, shared_prefix_length
from causalloc.models.loading import build_tiny_model
from causalloc.models.positions import scored_positions, scored_positions_only, up_to_last_scored
from causalloc.models.units import adapter_for
from causalloc.unlearn.losses import answer_nll
from causalloc.unlearn.trainer import MaskedColumns
from tests.conftest import random_examples

VOCAB = 40


@pytest.fixture(scope="module", params=["llama", "gpt_neox", "gpt2"])
def model(request):
    return build_tiny_model(request.param, vocab_size=VOCAB, seed=2, hidden=16, intermediate=24,
                            layers=3, heads=2).eval()


@pytest.fixture(scope="module")
def batch():
    # prompt lengths 2-6 and answers 2-5: rows differ in length, so there is right padding
    return collate(random_examples(6, vocab=VOCAB, seed=4, prompt_len=6, answer_len=5), pad_token_id=0)


def test_scored_positions_are_those_predicting_an_answer_token():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, 9, 3]])
    expected = torch.tensor([[False, True, True, False, False], [True, True, True, True, False]])
    assert torch.equal(scored_positions(labels), expected)


def test_positions_after_the_last_scored_one_are_not_needed():
    scored = scored_positions(torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, 9, 3], [-100] * 5]))
    expected = torch.tensor([[True, True, True, False, False], [True, True, True, True, False], [False] * 5])
    assert torch.equal(up_to_last_scored(scored), expected)


def test_logits_at_scored_positions_equal_the_full_forward_and_are_zero_elsewhere(model, batch):
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        full = model(**inputs).logits
        with scored_positions_only(model, batch):
            restricted = model(**inputs).logits
    scored = scored_positions(batch["labels"])
    assert (~scored).any() and (batch["attention_mask"] == 0).any()
    torch.testing.assert_close(restricted[scored], full[scored], rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(restricted[~scored]) == 0


def test_gradients_of_masked_columns_equal_the_full_forward(model, batch):
    signature = adapter_for(model).signature
    mask = Mask(tuple([1, 4, 9, 20] for _ in range(signature.n_layers)), signature)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    grads = []
    for restricted in (False, True):
        with MaskedColumns(model, mask) as columns:
            with torch.no_grad():  # move the columns off theta so the delta term is not zero
                for column in columns.columns:
                    column.add_(0.05)
            if restricted:
                with scored_positions_only(model, batch, columns.adapter):
                    logits = model(**inputs).logits
            else:
                logits = model(**inputs).logits
            answer_nll(logits, batch["labels"]).backward()
            grads.append([column.grad.clone() for column in columns.columns])
    for full, part in zip(*grads):
        assert full.abs().sum() > 0
        torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-7)


def test_hooks_are_removed_on_exit_and_on_error(model, batch):
    adapter = adapter_for(model)
    modules = [*adapter.mlp_modules, adapter.output_module]
    with pytest.raises(ValueError, match="another batch"), torch.no_grad(), scored_positions_only(model, batch):
        model(input_ids=batch["input_ids"][:2])
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in modules)


def test_a_model_without_unit_adapter_runs_unchanged(batch):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(vocab_size=VOCAB, hidden_size=16, ffn_dim=24, num_hidden_layers=2,
                                   num_attention_heads=2, word_embed_proj_dim=16,
                                   max_position_embeddings=32)).eval()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        full = opt(**inputs).logits
        with scored_positions_only(opt, batch):
            same = opt(**inputs).logits
    assert torch.equal(full, same)


# ES with the shared prefix run once -------------------------------------------------------------
def prefixed_batches(prefix: list[int]) -> list[dict]:
    """Two batches of rows that all start with ``prefix`` (a chat template's system prompt),
    rows of varied length (right padding)."""
    rows = random_examples(10, vocab=VOCAB, seed=5, prompt_len=6, answer_len=5)
    for row in rows:
        row["input_ids"] = prefix + row["input_ids"]
        row["labels"] = [-100] * len(prefix) + row["labels"]
    return [collate(rows[:6], pad_token_id=0), collate(rows[6:], pad_token_id=0)]


def test_shared_prefix_length_stops_at_the_first_difference_and_before_any_answer():
    batches = prefixed_batches([7, 8, 9, 10])
    assert shared_prefix_length(batches) >= 4
    batches[1]["input_ids"][2, 2] = 39  # one row of the second batch differs at position 2
    assert shared_prefix_length(batches) == 2
    batches[1]["input_ids"][2, 1] = 39  # a 1-token prefix is not worth a cache
    assert shared_prefix_length(batches) == 0
    answer_first = prefixed_batches([7, 8, 9, 10])
    answer_first[0]["labels"][0, 3] = answer_first[0]["input_ids"][0, 3]  # an answer at position 3
    assert shared_prefix_length(answer_first) == 2  # its logits are read at position 2


def test_es_with_the_shared_prefix_run_once_equals_the_whole_rows(model):
    """Logits at the scored positions and ES, with trained masked columns active too (their
    hooks see the prefix and the rest of the rows in separate forwards)."""
    batches = prefixed_batches([7, 8, 9, 10, 11])
    prefix = shared_prefix_length(batches)
    signature = adapter_for(model).signature
    mask = Mask(tuple([1, 4, 9] for _ in range(signature.n_layers)), signature)
    with MaskedColumns(model, mask) as columns, torch.no_grad():
        for column in columns.columns:
            column.add_(torch.randn_like(column))
        cache = _prefix_cache(model, batches[0]["input_ids"][0, :prefix])
        for batch in batches:
            whole, labels = _forward_logits(model, batch)
            shared, _ = _forward_logits(model, batch, cache, prefix)
            scored = scored_positions(labels)
            assert not scored[:, :prefix].any()
            torch.testing.assert_close(shared[scored[:, prefix:]], whole[scored], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(extraction_strength(model, batches),
                                      extraction_strength(model, batches, share_prefix=False))
    assert prefix == 5
