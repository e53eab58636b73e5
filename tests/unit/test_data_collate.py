"""QA encoding and collation: loss on answer tokens only, plain prompt and chat template."""

import pytest
import torch

from causalloc.data.collate import IGNORE_INDEX, collate, encode_items, encode_qa, pad_id
from causalloc.data.generator import generate_authors
from causalloc.models.loading import train_word_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<bos> {{ m['role'] }} : {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<bos> assistant :{% endif %}"
)


@pytest.fixture(scope="module")
def items():
    return generate_authors(n_authors=2, n_questions=6, seed=5)


@pytest.fixture(scope="module")
def word_tokenizer(items):
    texts = [t for i in items for t in (i.question, i.answer)] + ["user assistant"]
    return train_word_tokenizer(texts)


def test_plain_prompt_labels_only_the_answer_and_eos(word_tokenizer, items):
    item = items[0]
    encoded = encode_qa(word_tokenizer, item.question, item.answer)
    answer_ids = word_tokenizer(item.answer, add_special_tokens=False)["input_ids"]
    n_prompt = len(encoded["input_ids"]) - len(answer_ids) - 1
    assert encoded["input_ids"][0] == word_tokenizer.bos_token_id
    assert encoded["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert encoded["labels"][n_prompt:] == answer_ids + [word_tokenizer.eos_token_id]
    prompt_tokens = word_tokenizer.convert_ids_to_tokens(encoded["input_ids"][:n_prompt])
    assert prompt_tokens[1:3] == ["Question", ":"] and prompt_tokens[-2:] == ["Answer", ":"]


def test_collate_pads_right_and_masks_padding(word_tokenizer, items):
    examples = encode_items(word_tokenizer, items[:2])
    short, long = sorted(examples, key=lambda e: len(e["input_ids"]))
    assert len(short["input_ids"]) < len(long["input_ids"])
    batch = collate([short, long], pad_id(word_tokenizer))
    n = len(short["input_ids"])
    assert batch["input_ids"].shape == (2, len(long["input_ids"]))
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, n:] == word_tokenizer.pad_token_id).all()
    answer = batch["labels"] != IGNORE_INDEX
    assert torch.equal(batch["labels"][answer], batch["input_ids"][answer])


def test_paraphrased_answer_field_is_the_target_when_asked(word_tokenizer, items):
    texts = [t for i in items for t in (i.question, i.paraphrased_answer)]
    tokenizer = train_word_tokenizer(texts)
    encoded = encode_items(tokenizer, items[:1], field="paraphrased_answer")[0]
    labelled = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    assert tokenizer.decode(labelled[:-1]) == tokenizer.decode(
        tokenizer(items[0].paraphrased_answer, add_special_tokens=False)["input_ids"]
    )


def test_truncation_cuts_the_answer_and_keeps_the_prompt(word_tokenizer, items):
    item = items[1]
    full = encode_qa(word_tokenizer, item.question, item.answer)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    cut = encode_qa(word_tokenizer, item.question, item.answer, max_length=n_prompt + 2)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 2]
    assert cut["labels"][n_prompt:] == full["labels"][n_prompt: n_prompt + 2]
    tiny = encode_qa(word_tokenizer, item.question, item.answer, max_length=3)
    assert tiny["input_ids"][:n_prompt] == full["input_ids"][:n_prompt]
    assert len(tiny["input_ids"]) == n_prompt + 1


def test_chat_template_labels_only_the_assistant_turn(items):
    texts = [t for i in items for t in (i.question, i.answer)] + ["user assistant"]
    tokenizer = train_word_tokenizer(texts)
    tokenizer.chat_template = CHAT_TEMPLATE
    item = items[2]
    encoded = encode_qa(tokenizer, item.question, item.answer)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    n_prompt = encoded["labels"].count(IGNORE_INDEX)
    assert tokens[:3] == ["<bos>", "user", ":"]
    assert tokens[n_prompt - 3: n_prompt] == ["<bos>", "assistant", ":"]
    assert "Question" not in tokens
    labelled = encoded["labels"][n_prompt:]
    assert tokenizer.convert_ids_to_tokens(labelled) == item.answer.split() + ["<eos>"]
