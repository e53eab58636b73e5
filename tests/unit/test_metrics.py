"""Metrics: ES (one pass == literal greedy generation), AUES, FS@RS95, trajectories, truth
ratio, forget quality and the relearning attack, with hand-checked numbers."""

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from causalloc.data.collate import collate
from causalloc.data.types import QAItem
from causalloc.errors import DataError
from causalloc.frontier import aues, frontier, fs_at_rs
from causalloc.metrics import (
    Trajectory,
    TruthRatio,
    extraction_strength,
    extraction_strength_by_generation,
    extraction_strength_from_logits,
    forget_quality,
    relearning_attack,
    rs_fs,
    truth_ratio,
)

VOCAB = 24


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run ~10x faster on one thread when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llama(seed: int, vocab_size: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def qa_examples(rng: np.random.Generator, n: int) -> list[dict]:
    """Random question/answer token lists of varied lengths (ids 3.. avoid pad/bos/eos)."""
    out = []
    for _ in range(n):
        question = rng.integers(3, VOCAB, size=rng.integers(3, 7)).tolist()
        answer = rng.integers(3, VOCAB, size=rng.integers(3, 9)).tolist()
        out.append({"input_ids": question + answer, "labels": [-100] * len(question) + answer})
    return out


def greedy_continuation(model, ids: list[int], n: int) -> list[int]:
    """n tokens by a manual greedy loop (full forward each step, no cache)."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-n:] if n else []


# ES from constructed logits ------------------------------------------------------------------
def logits_predicting(predictions: list[list[int]], vocab: int = 10) -> torch.Tensor:
    """Logits whose argmax at position t is predictions[row][t]."""
    logits = torch.zeros(len(predictions), len(predictions[0]), vocab)
    for row, preds in enumerate(predictions):
        for t, token in enumerate(preds):
            logits[row, t, token] = 1.0
    return logits


def test_es_from_constructed_logits_hand_checked():
    # prompt at positions 0-1, answer y = (5, 6, 7, 8) at positions 2-5; logits at t predict t+1
    labels = torch.tensor([[-100, -100, 5, 6, 7, 8]] * 5 + [[-100, 4, 9, -100, -100, -100]])
    predictions = [
        [0, 5, 6, 7, 8, 0],  # all correct -> k* = 0, ES = 1
        [0, 1, 6, 7, 8, 0],  # y_0 wrong -> k* = 1, ES = 3/4
        [0, 5, 1, 7, 8, 0],  # y_1 wrong -> k* = 2, ES = 1/2
        [0, 1, 6, 1, 8, 0],  # y_0 and y_2 wrong: the last error counts -> k* = 3, ES = 1/4
        [0, 5, 6, 7, 1, 0],  # last token wrong -> k* = 4, ES = 0
        [4, 1, 0, 0, 0, 0],  # padded row, answer (4, 9): y_1 wrong -> ES = 0; pads ignored
    ]
    es = extraction_strength_from_logits(logits_predicting(predictions), labels)
    assert es.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_es_rejects_rows_without_answer():
    labels = torch.tensor([[-100, 3, 4], [-100, -100, -100]])
    with pytest.raises(ValueError, match=r"rows \[1\] have no answer tokens"):
        extraction_strength_from_logits(torch.zeros(2, 3, 5), labels)


# one pass == literal greedy generation ---------------------------------------------------------
def test_es_single_pass_equals_generation_on_random_model():
    """A random model rarely answers right, so half of the answers are built from its own
    greedy continuations (after a random answer prefix of length m: ES >= 1 - m/|y|)."""
    model = tiny_llama(0)
    rng = np.random.default_rng(1)
    examples = qa_examples(rng, 48)
    for ex in examples[::2]:
        n_prompt = ex["labels"].count(-100)
        question, answer = ex["input_ids"][:n_prompt], ex["input_ids"][n_prompt:]
        m = int(rng.integers(0, len(answer)))
        answer[m:] = greedy_continuation(model, question + answer[:m], len(answer) - m)
        ex["input_ids"] = question + answer
        ex["labels"] = [-100] * n_prompt + answer
    batch = collate(examples, pad_token_id=0)
    one_pass = extraction_strength(model, batch)
    literal = extraction_strength_by_generation(model, batch)
    np.testing.assert_array_equal(one_pass, literal)
    assert len(np.unique(one_pass)) >= 5 and (one_pass == 1).any() and (one_pass == 0).any()
    print(f"random model ES values: {np.unique(one_pass).round(2).tolist()}")


def test_es_single_pass_equals_generation_on_trained_model():
    model = tiny_llama(1).train()
    rng = np.random.default_rng(2)
    train = qa_examples(rng, 48)
    batch = collate(train, pad_token_id=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(12):  # partly memorised: ES spread over [0, 1]
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    one_pass = extraction_strength(model, [collate(train[:20], 0), collate(train[20:], 0)])
    literal = extraction_strength_by_generation(model, batch)
    np.testing.assert_array_equal(one_pass, literal)
    inside = (one_pass > 0) & (one_pass < 1)
    assert len(np.unique(one_pass)) >= 8 and inside.sum() >= 15 and (one_pass == 1).sum() >= 3


def test_extraction_strength_restores_training_mode_and_takes_one_batch():
    model = tiny_llama(0).train()
    batch = collate(qa_examples(np.random.default_rng(0), 3), 0)
    es = extraction_strength(model, batch)
    assert es.shape == (3,) and model.training
    assert not any(p.grad is not None for p in model.parameters())


# AUES, FS@RS95, trajectories --------------------------------------------------------------------
def test_aues_of_a_known_staircase():
    # F(r) = 0.8 on [0, .3], 0.5 on (.3, .6], 0.1 on (.6, .9], 0 after:
    # .3 * .8 + .3 * .5 + .3 * .1 = 0.42
    assert aues([0.9, 0.6, 0.3], [0.1, 0.5, 0.8]) == pytest.approx(0.42)
    # order does not matter; a dominated checkpoint does not lower the frontier
    assert aues([0.3, 0.5, 0.9, 0.6], [0.8, 0.2, 0.1, 0.5]) == pytest.approx(0.42)
    # a new frontier point (0.5, 0.6) lifts F on (.3, .5]: .24 + .2*.6 + .1*.5 + .03 = 0.44
    assert aues([0.9, 0.6, 0.3, 0.5], [0.1, 0.5, 0.8, 0.6]) == pytest.approx(0.44)
    assert aues([1.0], [1.0]) == 1.0 and aues([0.0], [1.0]) == 0.0
    assert aues([0.95, 0.95], [0.2, 0.7]) == pytest.approx(0.95 * 0.7)


def test_frontier_matches_its_definition_and_aues_its_dense_integral():
    rng = np.random.default_rng(0)
    grid = (np.arange(200_000) + 0.5) / 200_000
    for _ in range(5):
        rs, fs = rng.uniform(size=8), rng.uniform(size=8)
        levels = np.r_[grid[::100], rs, 0.0, 1.0]  # the RS values themselves are edges of F
        brute = np.array([fs[rs >= r].max() if (rs >= r).any() else 0.0 for r in levels])
        assert frontier(rs, fs, levels).tolist() == brute.tolist()
        assert aues(rs, fs) == pytest.approx(brute[:2000].mean(), abs=2e-3)


@pytest.mark.parametrize("rs, fs", [([], []), ([0.5], [0.5, 0.1]), ([1.2], [0.1]),
                                    ([0.5], [float("nan")])])
def test_aues_rejects_bad_input(rs, fs):
    with pytest.raises(ValueError):
        aues(rs, fs)


def test_frontier_draws_out_of_range_values_that_the_scores_reject():
    # the report draws a run table as it is; the executor's scores refuse RS > 1
    assert frontier([1.001, 0.5], [0.2, 0.9], [0.5, 1.0, 1.001, 1.2]).tolist() == [0.9, 0.2, 0.2, 0.0]
    with pytest.raises(ValueError, match="rs values must be finite and lie in"):
        aues([1.001, 0.5], [0.2, 0.9])
    with pytest.raises(ValueError, match="equal-length"):
        frontier([0.5], [0.1, 0.2], [0.5])


def test_fs_at_rs_of_a_known_trajectory():
    rs = [0.80, 0.78, 0.75, 0.70, 0.50]
    fs = [0.05, 0.30, 0.60, 0.90, 1.00]
    # 0.95 * 0.80 = 0.76: eligible checkpoints 0.80 and 0.78 -> best FS 0.30
    assert fs_at_rs(rs, fs, rs0=0.80) == 0.30
    assert fs_at_rs(rs, fs, rs0=0.80, fraction=0.9) == 0.60  # threshold 0.72 admits 0.75
    assert fs_at_rs(rs, fs, rs0=0.80, fraction=0.85) == 0.90  # threshold 0.68 admits 0.70
    assert math.isnan(fs_at_rs(rs[1:], fs[1:], rs0=0.9))


def test_trajectory_helpers_and_records():
    traj = Trajectory()
    for step, rs, fs in [(0, 0.8, 0.05), (10, 0.78, 0.3), (20, 0.75, 0.6), (30, 0.5, 1.0)]:
        traj.add(step, rs, fs)
    assert traj.fs_at_rs() == 0.3
    assert traj.aues() == pytest.approx(0.5 * 1.0 + 0.25 * 0.6 + 0.03 * 0.3 + 0.02 * 0.05)
    records = traj.to_records()
    assert records[1] == {"step": 10, "rs": 0.78, "fs": 0.3}
    assert Trajectory.from_records(records) == traj
    with pytest.raises(ValueError, match="does not follow"):
        traj.add(30, 0.5, 0.5)
    with pytest.raises(ValueError, match="lacks keys"):
        Trajectory.from_records([{"step": 0, "rs": 0.5}])
    with pytest.raises(ValueError, match="increase strictly"):
        Trajectory([0, 0], [0.1, 0.2], [0.1, 0.2])


def test_rs_fs_and_trajectory_evaluate_use_es():
    model = tiny_llama(0)
    forget = collate(qa_examples(np.random.default_rng(0), 4), 0)
    retain = collate(qa_examples(np.random.default_rng(1), 4), 0)
    rs, fs = rs_fs(model, forget, retain)
    assert rs == pytest.approx(extraction_strength(model, retain).mean())
    assert fs == pytest.approx(1 - extraction_strength(model, forget).mean())
    traj = Trajectory()
    traj.evaluate(0, model, forget, retain)
    assert traj.to_records() == [{"step": 0, "rs": rs, "fs": fs}]


# truth ratio and forget quality ------------------------------------------------------------------
WORDS = ["Question", "Answer", ":", "?", ".", "who", "wrote", "the", "book", "she", "he", "was",
         "born", "in", "a", "city", "town", "red", "blue", "where"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def test_truth_ratio_matches_per_sequence_losses():
    tokenizer = word_tokenizer()
    model = tiny_llama(3, vocab_size=len(tokenizer))
    items = [
        QAItem("who wrote the book ?", "she wrote it", "A", paraphrased_answer="she was",
               perturbed_answers=("he was born", "a red city", "blue")),
        QAItem("where was he born ?", "in a town", "B", paraphrased_answer="born in a town .",
               perturbed_answers=("in a city",)),
    ]
    result = truth_ratio(model, tokenizer, items, batch_size=3)

    def loss(question, answer):  # HF loss = mean token NLL over the labelled answer tokens
        from causalloc.data.collate import encode_qa
        batch = collate([encode_qa(tokenizer, question, answer)], tokenizer.pad_token_id)
        with torch.no_grad():
            return model(**batch).loss.item()

    for i, item in enumerate(items):
        para = loss(item.question, item.paraphrased_answer)
        pert = np.mean([loss(item.question, a) for a in item.perturbed_answers])
        assert result.paraphrased_nll[i] == pytest.approx(para, rel=1e-5)
        assert result.perturbed_nll[i] == pytest.approx(pert, rel=1e-5)
        assert result.ratio[i] == pytest.approx(math.exp(pert - para), rel=1e-5)
    with pytest.raises(DataError, match="item 0 .*lacks"):
        truth_ratio(model, tokenizer, [QAItem("who ?", "he", "C", paraphrased_answer="he")])


def test_tofu_truth_ratio_summaries_hand_checked():
    tr = TruthRatio(np.array([2.0, 0.5, 1.0]), np.zeros(3), np.zeros(3))
    assert tr.tofu_forget_score == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert tr.tofu_utility_score == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_forget_quality_ks_p_value_and_natural_log():
    same = np.linspace(0.5, 2.0, 10)
    assert forget_quality(same, same) == (1.0, 0.0)
    # fully separated samples of 10 and 10: exact two-sided KS p = 2 / C(20, 10)
    p, log_p = forget_quality(np.arange(10) + 0.5, np.arange(10) + 100.0)
    assert p == pytest.approx(2 / math.comb(20, 10), rel=1e-9)
    assert log_p == pytest.approx(math.log(2 / math.comb(20, 10)))  # about -11.44
    tr = TruthRatio(same, same, same)
    assert forget_quality(tr, same)[0] == 1.0
    with pytest.raises(ValueError, match="tr_reference"):
        forget_quality(same, [])


# relearning attack ----------------------------------------------------------------------------
def test_relearning_attack_relearns_on_a_copy_and_is_deterministic():
    model = tiny_llama(4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    examples = qa_examples(np.random.default_rng(5), 8)
    train = [collate(examples[:4], 0), collate(examples[4:], 0)]
    kwargs = {"forget_train_batches": train, "forget_eval_batches": train, "steps": 30,
              "lr": 3e-3, "eval_every": 10}
    result = relearning_attack(model, seed=0, **kwargs)
    assert [s for s, _ in result.curve] == [0, 10, 20, 30]
    assert result.curve[0][1] == pytest.approx(extraction_strength(model, train).mean())
    assert result.curve[0][1] < 0.1 and result.es > 0.5  # the trained-on facts come back
    assert result.es == result.curve[-1][1] == pytest.approx(result.es_per_example.mean())
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    again = relearning_attack(model, seed=0, **kwargs)
    assert again.curve == result.curve
    assert relearning_attack(model, seed=1, **kwargs).curve != result.curve
