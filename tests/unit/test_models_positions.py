"""Forwards restricted to the scored positions give the full forward's logits and gradients there."""

import pytest
import torch

from causalloc.data.collate import collate
from causalloc.masks import Mask
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
