"""TOFU model utility and MU95: every component against a hand computation on a tiny model,
ROUGE through rouge-score, greedy answers equal to a manual greedy loop, the MU95 rule."""

import math
import re

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from causalloc.data.collate import collate, encode_prompt, encode_qa
from causalloc.data.types import QAItem
from causalloc.errors import DataError
from causalloc.metrics import AnswerScorer
from causalloc.utility import (
    UTILITY_SETS,
    GreedyAnswerer,
    ModelUtility,
    UtilityProbe,
    model_utility,
    mu95,
    rouge_l_recall,
)


@pytest.fixture(scope="module")
def tokenizer():
    """A word-level tokenizer knowing every word of the plain prompt and of the sets."""
    texts = ["Question : Answer"] + [text for items in utility_sets().values() for item in items
                                     for text in (item.question, item.answer, item.paraphrased_answer,
                                                  *item.perturbed_answers)]
    words = dict.fromkeys(word for text in texts for word in re.findall(r"\w+|[^\w\s]+", text))
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def utility_sets() -> dict[str, list[QAItem]]:
    return {
        "retain_perturbed": [
            QAItem("who wrote the book ?", "lena vortmann wrote the book", "A",
                   paraphrased_answer="the book was by lena vortmann",
                   perturbed_answers=("the book was by oskar tobin", "the book was by ilse",
                                      "the book was by tobin")),
            QAItem("where was she born ?", "she was born in a red town", "A",
                   paraphrased_answer="in a red town", perturbed_answers=("in a blue city", "in rome")),
        ],
        "real_authors": [
            QAItem("who wrote the red book ?", "lena vortmann", "real_authors",
                   perturbed_answers=("oskar tobin", "ilse", "tobin")),
            QAItem("where was oskar born ?", "in a green town", "real_authors",
                   perturbed_answers=("in rome", "in madrid", "in berlin")),
        ],
        "world_facts": [
            QAItem("what is the capital of aldoria ?", "paris", "world_facts",
                   perturbed_answers=("berlin", "rome", "madrid")),
            QAItem("what is the capital of brevania ?", "rome", "world_facts",
                   perturbed_answers=("paris", "berlin", "madrid")),
            QAItem("what sea is it ?", "the salt sea", "world_facts",
                   perturbed_answers=("the glass sea", "the red sea", "the blue sea")),
        ],
    }


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny LLaMA trained a few steps on the sets' answers (so utility is not trivially 0)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config)
    examples = [encode_qa(tokenizer, it.question, it.answer)
                for items in utility_sets().values() for it in items]
    batch = collate(examples, tokenizer.pad_token_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(25):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


def hf_loss(model, tokenizer, question, answer) -> float:
    """Mean answer-token NLL by the model's own loss on one unpadded sequence."""
    batch = collate([encode_qa(tokenizer, question, answer)], tokenizer.pad_token_id)
    with torch.no_grad():
        return model(**batch).loss.item()


def manual_greedy(model, tokenizer, question, max_new) -> str:
    """Greedy answer by a plain loop (full forward per token, no cache, no padding)."""
    ids = encode_prompt(tokenizer, question)
    start = len(ids)
    with torch.no_grad():
        for _ in range(max_new):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(token)
            if token == tokenizer.eos_token_id:
                break
    return tokenizer.decode(ids[start:], skip_special_tokens=True).strip()


def test_rouge_l_recall_is_recall_of_the_reference_with_stemming():
    # LCS("a b c d" | ref "a c") = 2 words of a 2-word reference: recall 1 (precision would be 0.5)
    assert rouge_l_recall(["paris is a city"], ["paris city"]).tolist() == [1.0]
    assert rouge_l_recall(["paris city"], ["paris is a city"]).tolist() == [0.5]
    assert rouge_l_recall(["He Likes writing"], ["he like writes"]).tolist() == [1.0]  # stems, case
    assert rouge_l_recall([""], ["rome"]).tolist() == [0.0]
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        rouge_l_recall(["a", "b"], ["a"])


def test_greedy_answers_left_padded_batch_equal_a_manual_greedy_loop(model, tokenizer):
    items = [it for items in utility_sets().values() for it in items]
    questions = [it.question for it in items]
    answers = GreedyAnswerer(tokenizer, questions, [it.answer for it in items], batch_size=3, margin=2)(model)
    for item, answer in zip(items, answers):
        budget = len(encode_qa(tokenizer, item.question, item.answer)["input_ids"]) \
            - len(encode_prompt(tokenizer, item.question)) + 2
        assert answer == manual_greedy(model, tokenizer, item.question, budget)
    assert any(answer for answer in answers)


def test_rows_the_model_reproduces_are_read_not_generated(model, tokenizer, monkeypatch):
    """Greedy decoding of a row whose teacher-forced argmax is right at every answer token (ES 1)
    emits the reference: the shortcut gives the same texts with fewer rows generated."""
    items = [it for items in utility_sets().values() for it in items]
    answerer = GreedyAnswerer(tokenizer, [it.question for it in items], [it.answer for it in items])
    generated = answerer(model)
    _, es = AnswerScorer(tokenizer, [(it.question, [it.answer]) for it in items]).nll_and_es(model)
    reproduced = [values[0] == 1.0 for values in es]
    assert 0 < sum(reproduced) < len(items)
    rows, generate = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: rows.append(len(kw["input_ids"])) or generate(**kw))
    assert answerer(model, reproduced) == generated
    assert sum(rows) == len(items) - sum(reproduced)


def test_model_utility_equals_a_hand_computation(model, tokenizer):
    sets = utility_sets()
    result = model_utility(model, tokenizer, sets)
    expected = {}
    for spec in UTILITY_SETS:
        prob, rouge, truth = [], [], []
        for item in sets[spec.split]:
            p_answer = math.exp(-hf_loss(model, tokenizer, item.question, item.answer))
            p_wrong = [math.exp(-hf_loss(model, tokenizer, item.question, w))
                       for w in item.perturbed_answers]
            prob.append(p_answer / (p_answer + sum(p_wrong)) if spec.normalised else p_answer)
            correct = item.paraphrased_answer if spec.paraphrase else item.answer
            r = math.exp(np.mean([hf_loss(model, tokenizer, item.question, w) for w in item.perturbed_answers])
                         - hf_loss(model, tokenizer, item.question, correct))
            truth.append(max(0.0, 1.0 - 1.0 / r))
            budget = len(encode_qa(tokenizer, item.question, item.answer)["labels"]) \
                - len(encode_prompt(tokenizer, item.question)) + 8
            greedy = manual_greedy(model, tokenizer, item.question, budget)
            rouge.append(rouge_l_recall([greedy], [item.answer])[0])
        for name, values in zip(spec.names, (prob, rouge, truth)):
            expected[name] = float(np.mean(values))
    assert list(result.components) == [
        "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
        "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
        "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"]
    for name, value in expected.items():
        assert result.components[name] == pytest.approx(value, rel=1e-5, abs=1e-9), name
    values = list(expected.values())
    assert min(values) > 0  # the trained model makes every component informative
    assert result.value == pytest.approx(len(values) / sum(1.0 / v for v in values), rel=1e-5)
    # the probe encodes once and gives the same number again
    probe = UtilityProbe(tokenizer, sets)
    assert probe(model).value == probe(model).value == pytest.approx(result.value, rel=1e-9)


def test_harmonic_mean_of_components_and_zero():
    assert ModelUtility({"a": 0.5, "b": 0.25, "c": 1.0}).value == pytest.approx(3 / (2 + 4 + 1))
    assert ModelUtility({"a": 0.5, "b": 0.0}).value == 0.0


def test_probe_names_a_missing_set_or_field(tokenizer):
    sets = utility_sets()
    with pytest.raises(DataError, match=r"\['world_facts'\] missing"):
        UtilityProbe(tokenizer, {k: v for k, v in sets.items() if k != "world_facts"})
    broken = {**sets, "retain_perturbed": [QAItem("who ?", "he", "A", perturbed_answers=("she",))]}
    with pytest.raises(DataError, match="retain_perturbed item 0 .* paraphrased_answer"):
        UtilityProbe(tokenizer, broken)


def test_mu95_best_log_forget_quality_among_checkpoints_keeping_utility():
    lfq = [-10.0, -6.0, -2.0, -1.0, float("nan")]
    mu = [0.80, 0.79, 0.76, 0.70, 0.80]
    # 0.95 * 0.80 = 0.76: checkpoints 0, 1, 2 qualify (2 exactly at the bound), 3 does not;
    # 4 qualifies by utility but has no forget quality
    assert mu95(lfq, mu, 0.80) == (-2.0, 3)
    assert mu95(lfq, mu, 0.80, fraction=1.0) == (-10.0, 1)
    value, eligible = mu95([-3.0, -1.0], [0.5, 0.4], reference_utility=0.9)
    assert math.isnan(value) and eligible == 0
    value, eligible = mu95([-3.0], [float("nan")], reference_utility=0.5)
    assert math.isnan(value) and eligible == 0
    with pytest.raises(ValueError, match="equal-length"):
        mu95([-1.0, -2.0], [0.5], 0.5)
