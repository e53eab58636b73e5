"""Unlearning objectives: hand-computed loss values on tiny tensors and a real tiny LLaMA."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from causalloc.errors import DataError, SpecError
from causalloc.unlearn.base import OBJECTIVES, StepContext, make_objective
from causalloc.unlearn.losses import (
    answer_nll,
    answer_token_probs,
    per_example_nll,
    sequence_log_prob,
)
from causalloc.unlearn.objectives.rmu import resolve_layer
from causalloc.unlearn.objectives.wga import wga_token_weights

VOCAB = 4
# two rows: row 0 answers tokens (1, 2) after prompt token 3; row 1 answers token 1 and is padded
LABELS = torch.tensor([[-100, 1, 2], [-100, 1, -100]])
INPUT_IDS = torch.tensor([[3, 1, 2], [3, 1, 0]])
ATTENTION = torch.tensor([[1, 1, 1], [1, 1, 0]])


def batch() -> dict[str, torch.Tensor]:
    return {"input_ids": INPUT_IDS, "attention_mask": ATTENTION, "labels": LABELS}


def logits_for(target_probs: list[list[float]], requires_grad: bool = False) -> torch.Tensor:
    """Logits ``[2, 3, VOCAB]`` whose softmax gives the label at position t + 1 the
    probability ``target_probs[row][t]`` (others share the rest), so log-softmax is exact."""
    logits = torch.zeros(2, 3, VOCAB)
    for row, probs in enumerate(target_probs):
        for t, p in enumerate(probs):
            target = int(INPUT_IDS[row, t + 1])  # on padding: the pad id, never scored
            dist = torch.full((VOCAB,), (1 - p) / (VOCAB - 1))
            dist[target] = p
            logits[row, t] = dist.log()
    return logits.requires_grad_(requires_grad)


def fake_ctx(model_out: dict, ref_out: dict | None = None, refusal=None) -> StepContext:
    """A StepContext whose model/reference return prepared outputs keyed by the batch object."""
    forget, retain = model_out["forget_batch"], model_out["retain_batch"]

    def lookup(table):
        return lambda b, **kw: table[id(b)]

    model_table = {id(forget): model_out["forget"], id(retain): model_out["retain"]}
    ref_table = {}
    if refusal is not None:
        model_table[id(refusal)] = model_out["refusal"]
    if ref_out:
        ref_table = {id(forget): ref_out["forget"]}
        if refusal is not None:
            ref_table[id(refusal)] = ref_out["refusal"]
    return StepContext(forget, retain, refusal, lookup(model_table), lookup(ref_table), step=0)


def outputs(logits=None, hidden=None):
    return SimpleNamespace(logits=logits, hidden_states=hidden)


# the forget rows: p = (0.5, 0.25) and (0.5,); the retain rows: p = (0.5, 0.5) and (0.25,)
FORGET_P = [[0.5, 0.25], [0.5, 0.9]]  # 0.9 sits on the padded position and must be ignored
RETAIN_P = [[0.5, 0.5], [0.25, 0.9]]
FORGET_NLL = (math.log(2) + math.log(4) + math.log(2)) / 3
RETAIN_NLL = (math.log(2) + math.log(2) + math.log(4)) / 3


def standard_ctx(refusal_p=None, ref_forget_p=None, ref_refusal_p=None):
    model_out = {"forget_batch": batch(), "retain_batch": batch(),
                 "forget": outputs(logits_for(FORGET_P)), "retain": outputs(logits_for(RETAIN_P))}
    refusal = None
    ref_out = None
    if ref_forget_p is not None:
        ref_out = {"forget": outputs(logits_for(ref_forget_p))}
    if refusal_p is not None:
        refusal = batch()
        model_out["refusal"] = outputs(logits_for(refusal_p))
        ref_out["refusal"] = outputs(logits_for(ref_refusal_p))
    return fake_ctx(model_out, ref_out, refusal)


def test_loss_helpers_match_hand_values_and_skip_padding():
    logits = logits_for(FORGET_P)
    assert answer_nll(logits, LABELS).item() == pytest.approx(FORGET_NLL, rel=1e-6)
    per_row = per_example_nll(logits, LABELS)
    assert per_row.tolist() == pytest.approx([1.5 * math.log(2), math.log(2)], rel=1e-6)
    assert sequence_log_prob(logits, LABELS).tolist() == pytest.approx(
        [math.log(0.125), math.log(0.5)], rel=1e-6)
    probs, mask = answer_token_probs(logits, LABELS)
    assert mask.tolist() == [[True, True], [True, False]]
    assert probs.flatten().tolist() == pytest.approx([0.5, 0.25, 0.5, 0.0], rel=1e-6)


def test_loss_helpers_reject_rows_without_answer_tokens():
    labels = LABELS.clone()
    labels[1] = -100
    with pytest.raises(DataError, match=r"row\(s\) \[1\]"):
        answer_nll(logits_for(FORGET_P), labels)


def test_ga_and_graddiff_values():
    ctx = standard_ctx()
    assert make_objective("ga").loss(ctx).item() == pytest.approx(-FORGET_NLL, rel=1e-6)
    loss = make_objective("graddiff", alpha=2.0).loss(ctx).item()
    assert loss == pytest.approx(-FORGET_NLL + 2 * RETAIN_NLL, rel=1e-6)


def test_wga_weights_are_probabilities_to_the_beta_and_stop_gradient():
    log_p = torch.log(torch.tensor([0.5, 0.25]))
    assert wga_token_weights(log_p, 2.0).tolist() == pytest.approx([0.25, 0.0625])
    logits = logits_for(FORGET_P, requires_grad=True)
    ctx = fake_ctx({"forget_batch": batch(), "retain_batch": batch(),
                    "forget": outputs(logits), "retain": outputs(logits_for(RETAIN_P))})
    loss = make_objective("wga", beta=1.0, alpha=0.0).loss(ctx)
    # -(mean of p * CE) over the 3 answer tokens: p = 0.5, 0.25, 0.5
    expected = -(0.5 * math.log(2) + 0.25 * math.log(4) + 0.5 * math.log(2)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dz_target of -(w/N) * CE with w held fixed is -(w/N) * (p - 1) = w (1 - p) / N
    assert logits.grad[0, 0, 1].item() == pytest.approx(0.5 * 0.5 / 3, rel=1e-5)
    assert logits.grad[0, 1, 2].item() == pytest.approx(0.25 * 0.75 / 3, rel=1e-5)
    assert torch.all(logits.grad[1, 1] == 0)  # padded position gets no gradient


def test_npo_value_from_log_ratios():
    # r_0 = log(0.125) - log(1/16) = log 2; r_1 = log(0.5) - log(0.25) = log 2
    ctx = standard_ctx(ref_forget_p=[[0.25, 0.25], [0.25, 0.1]])
    beta = 0.1
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(beta * math.log(2))))
    loss = make_objective("npo", beta=beta, alpha=0.0).loss(ctx).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    with_retain = make_objective("npo", beta=beta, alpha=1.0).loss(ctx).item()
    assert with_retain == pytest.approx(expected + RETAIN_NLL, rel=1e-6)


def test_dpo_value_prefers_refusal_over_forget_answer():
    # r(forget) = log 2 per row (as in NPO); r(refusal): row 0 log(0.25/0.0625) = log 4,
    # row 1 log(0.5/0.5) = 0 -> margins log 2 and -log 2
    ctx = standard_ctx(ref_forget_p=[[0.25, 0.25], [0.25, 0.1]],
                       refusal_p=[[0.5, 0.5], [0.5, 0.1]], ref_refusal_p=[[0.25, 0.25], [0.5, 0.1]])
    beta = 0.5

    def log_sigmoid(x):
        return -math.log1p(math.exp(-x))

    margin = beta * math.log(2)
    expected = -(2 / beta) * (log_sigmoid(margin) + log_sigmoid(-margin)) / 2
    loss = make_objective("dpo", beta=beta, alpha=0.0).loss(ctx).item()
    assert loss == pytest.approx(expected, rel=1e-6)


def test_dpo_needs_a_matching_refusal_batch():
    ctx = standard_ctx(ref_forget_p=[[0.25, 0.25], [0.25, 0.1]])
    with pytest.raises(DataError, match="refusal"):
        make_objective("dpo").loss(ctx)
    assert OBJECTIVES["dpo"].needs_refusals and OBJECTIVES["dpo"].needs_reference


def test_rmu_control_vector_layer_and_masked_mse():
    rmu = make_objective("rmu", steering_coeff=5.0, alpha=2.0, layer=0)
    config = SimpleNamespace(num_hidden_layers=2, hidden_size=2)
    rmu.prepare(config, torch.Generator().manual_seed(0))
    u = torch.rand(2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rmu.control_vector, 5.0 * u / u.norm())
    assert rmu.control_vector.norm().item() == pytest.approx(5.0)
    rmu.control_vector = torch.tensor([3.0, 4.0])  # hand-chosen target for exact arithmetic
    forget_h = torch.tensor([[[3.0, 4.0], [3.0, 5.0], [0.0, 0.0]],
                             [[0.0, 0.0], [7.0, 9.0], [99.0, 99.0]]])
    retain_h = torch.zeros(2, 3, 2)
    frozen_h = torch.ones(2, 3, 2)
    ctx = fake_ctx({"forget_batch": batch(), "retain_batch": batch(),
                    "forget": outputs(hidden=(None, forget_h)),
                    "retain": outputs(hidden=(None, retain_h))},
                   {"forget": outputs(hidden=(None, frozen_h))})
    ctx.reference = lambda b, **kw: outputs(hidden=(None, frozen_h))
    # non-padding positions: (0,0) (0,1) (0,2) (1,0) (1,1); squared errors 0, 1, 25, 25, 16+25
    forget_mse = (0 + 1 + 25 + 25 + 41) / 10
    retain_mse = 1.0
    assert rmu.loss(ctx).item() == pytest.approx(forget_mse + 2.0 * retain_mse, rel=1e-6)


def test_rmu_layer_resolution():
    assert resolve_layer(0.25, 2) == 0
    assert resolve_layer(0.25, 4) == 1  # 0.75 rounds up
    assert resolve_layer(0.25, 32) == 8
    assert resolve_layer(1.0, 6) == 5
    assert resolve_layer(3, 6) == 3
    for bad in (1.5, -0.1, True, "7"):
        with pytest.raises(SpecError, match="algorithm.rmu.layer"):
            make_objective("rmu", layer=bad)
    with pytest.raises(SpecError, match="out of range"):
        make_objective("rmu", layer=4).prepare(SimpleNamespace(num_hidden_layers=4, hidden_size=2),
                                                torch.Generator().manual_seed(0))


def test_registry_defaults_and_bad_hyperparameters():
    assert sorted(OBJECTIVES) == ["dpo", "ga", "graddiff", "npo", "rmu", "wga"]
    assert make_objective("wga").beta == 1.0 and make_objective("npo").beta == 0.1
    assert make_objective("dpo").beta == 0.1 and make_objective("rmu").layer == 0.25
    with pytest.raises(SpecError, match=r"algorithm.npo.beta: must be > 0"):
        make_objective("npo", beta=0.0)
    with pytest.raises(SpecError, match=r"algorithm.graddiff.alpha: must be >= 0"):
        make_objective("graddiff", alpha=-1)
    with pytest.raises(SpecError, match=r"algorithm.wga.beta: must be a finite number"):
        make_objective("wga", beta=float("nan"))
    with pytest.raises(SpecError, match="unknown hyperparameter"):
        make_objective("ga", alpha=1.0)
    with pytest.raises(SpecError, match="unknown objective"):
        make_objective("gradient_ascent")


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def test_objectives_on_a_real_model_at_the_reference_point(tiny_llama):
    """At theta = theta_ref: GA is -HF loss (label convention), NPO and DPO equal
    (2 / beta) log 2, RMU's retain term is 0; every objective back-propagates."""
    from causalloc.data.collate import collate

    forget = collate([{"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8]},
                      {"input_ids": [1, 9, 10, 11], "labels": [-100, -100, 10, 11]}], 0)
    retain = collate([{"input_ids": [1, 12, 13, 14], "labels": [-100, 12, 13, 14]}], 0)
    refusal = collate([{"input_ids": [1, 5, 20, 21], "labels": [-100, -100, 20, 21]},
                       {"input_ids": [1, 9, 20, 21], "labels": [-100, -100, 20, 21]}], 0)

    def run(b, **kw):
        return tiny_llama(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **kw)

    def frozen(b, **kw):
        with torch.no_grad():
            return run(b, **kw)

    ctx = StepContext(forget, retain, refusal, run, frozen, step=0)
    hf_loss = tiny_llama(**forget).loss.item()
    values = {}
    for name in sorted(OBJECTIVES):
        objective = make_objective(name)
        objective.prepare(tiny_llama.config, torch.Generator().manual_seed(0))
        tiny_llama.zero_grad()
        loss = objective.loss(ctx)
        loss.backward()
        values[name] = loss.item()
        grad = tiny_llama.model.layers[0].mlp.down_proj.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    nll_retain = tiny_llama(**retain).loss.item()
    assert values["ga"] == pytest.approx(-hf_loss, rel=1e-5)
    assert values["npo"] == pytest.approx(20 * math.log(2) + nll_retain, rel=1e-5)
    assert values["dpo"] == pytest.approx(20 * math.log(2) + nll_retain, rel=1e-5)
    rmu = make_objective("rmu", alpha=0.0)
    rmu.prepare(tiny_llama.config, torch.Generator().manual_seed(0))
    assert values["rmu"] == pytest.approx(rmu.loss(ctx).item(), rel=1e-5)


def test_one_forward_pass_over_several_batches_gives_every_objective_the_same_loss(tiny_llama):
    """``StepContext.models`` with the executor's one-pass ``merged`` (rows stacked, padded to
    the longest batch, outputs cut back) equals one pass per batch, loss and gradient."""
    from causalloc.data.collate import collate, stack_batches
    from causalloc.unlearn.runner import split_output

    forget = collate([{"input_ids": [1, 5, 6, 7, 8, 3], "labels": [-100, -100, 6, 7, 8, 3]},
                      {"input_ids": [1, 9, 10, 11], "labels": [-100, -100, 10, 11]}], 0)
    retain = collate([{"input_ids": [1, 12, 13, 14], "labels": [-100, 12, 13, 14]}], 0)
    refusal = collate([{"input_ids": [1, 5, 20, 21], "labels": [-100, -100, 20, 21]},
                       {"input_ids": [1, 9, 20], "labels": [-100, -100, 20]}], 0)
    stacked = stack_batches([forget, retain], pad_token_id=0)
    assert stacked["input_ids"].shape == (3, 6) and stacked["labels"][2, 4:].tolist() == [-100, -100]
    assert stacked["attention_mask"][2].tolist() == [1, 1, 1, 1, 0, 0]

    def run(b, **kw):
        return tiny_llama(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **kw)

    def frozen(b, **kw):
        with torch.no_grad():
            return run(b, **kw)

    def merged(batches, **kw):
        return split_output(run(stack_batches(batches, 0), **kw), batches)

    for name in sorted(OBJECTIVES):
        results = []
        for one_pass in (None, merged):
            objective = make_objective(name)
            objective.prepare(tiny_llama.config, torch.Generator().manual_seed(0))
            tiny_llama.zero_grad()
            loss = objective.loss(StepContext(forget, retain, refusal, run, frozen, step=0, merged=one_pass))
            loss.backward()
            results.append((loss.item(), tiny_llama.model.layers[0].mlp.down_proj.weight.grad.clone()))
        (separate, grad_separate), (together, grad_together) = results
        assert together == pytest.approx(separate, rel=1e-5, abs=1e-6), name
        torch.testing.assert_close(grad_together, grad_separate, rtol=1e-4, atol=1e-6)
