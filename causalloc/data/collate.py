"""QA tokenization and collation with the loss on answer tokens only.

Batch convention (used by the trainer, objectives, metrics and attribution):
``{"input_ids": LongTensor[B, T], "attention_mask": LongTensor[B, T],
"labels": LongTensor[B, T]}``, right-padded; ``labels`` equals ``input_ids`` on answer
tokens and -100 elsewhere (prompt and padding). Labels are *not* shifted: position t of
``labels`` is predicted by the logits at position t - 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from causalloc.data.types import QAItem

IGNORE_INDEX = -100
#: plain prompt format for tokenizers without a chat template (the tiny testbed model)
PLAIN_PROMPT = "Question: {question}\nAnswer:"


def encode_qa(tokenizer, question: str, answer: str, max_length: int = 128) -> dict[str, list[int]]:
    """Token ids and labels for one QA pair; labels mask the prompt with -100.

    Uses the tokenizer's chat template when it has one (user turn = question,
    assistant turn = answer), else ``PLAIN_PROMPT`` followed by `` answer`` and EOS.
    Truncation cuts the answer from the right, never the prompt.
    """
    prompt_ids = encode_prompt(tokenizer, question)
    if getattr(tokenizer, "chat_template", None):
        full_ids = _as_ids(tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            tokenize=True,
        ))
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("chat template: the prompt is not a prefix of the full conversation")
        answer_ids = full_ids[len(prompt_ids):]
    else:
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            answer_ids = answer_ids + [tokenizer.eos_token_id]
    answer_ids = answer_ids[: max(1, max_length - len(prompt_ids))]
    input_ids = prompt_ids + answer_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return {"input_ids": input_ids, "labels": labels}


def encode_prompt(tokenizer, question: str) -> list[int]:
    """Token ids of the prompt that precedes an answer (what ``encode_qa`` masks with -100 and
    what greedy generation starts from): the chat template's user turn with the generation
    prompt, else ``<bos>`` (when the tokenizer has one) and ``PLAIN_PROMPT``."""
    if getattr(tokenizer, "chat_template", None):
        return _as_ids(tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
        ))
    prompt_ids = tokenizer(PLAIN_PROMPT.format(question=question), add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + prompt_ids


def _as_ids(encoded) -> list[int]:
    """``apply_chat_template`` returns a list or a BatchEncoding depending on the version."""
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def collate(examples: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples into a batch (see the module docstring for the layout)."""
    length = max(len(e["input_ids"]) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, length), pad_token_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    for row, e in enumerate(examples):
        k = len(e["input_ids"])
        input_ids[row, :k] = torch.tensor(e["input_ids"])
        labels[row, :k] = torch.tensor(e["labels"])
        attention[row, :k] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def stack_batches(batches: Sequence[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One batch holding the rows of ``batches`` in order, right-padded to the longest
    (``input_ids`` with ``pad_token_id``, ``labels`` with -100, anything else with 0)."""
    length = max(int(b["input_ids"].shape[1]) for b in batches)
    fill = {"input_ids": pad_token_id, "labels": IGNORE_INDEX}
    return {key: torch.cat([torch.nn.functional.pad(b[key], (0, length - b[key].shape[1]), value=fill.get(key, 0))
                            for b in batches])
            for key in batches[0]}


def encode_items(tokenizer, items: Sequence[QAItem], max_length: int = 128, field: str = "answer"):
    """Encode QA items; ``field`` picks ``answer`` or ``paraphrased_answer`` as the target."""
    return [encode_qa(tokenizer, it.question, getattr(it, field), max_length) for it in items]


def pad_id(tokenizer) -> int:
    """The padding id, falling back to EOS (LLaMA-style tokenizers often have no pad)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return 0


def eval_batches(examples: Sequence[dict[str, list[int]]], pad_token_id: int, batch_size: int = 64):
    """Collated batches in order (for evaluation; no shuffling)."""
    return [collate(examples[i:i + batch_size], pad_token_id) for i in range(0, len(examples), batch_size)]


def length_sorted_batches(examples: Sequence[dict[str, list[int]]], pad_token_id: int,
                          batch_size: int = 64) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """``examples`` sorted by length (stable) and collated in batches, the least padding for
    one pass over all of them: returns ``order`` (sorted position j holds example
    ``order[j]``) and the batches."""
    order = torch.argsort(torch.tensor([len(e["input_ids"]) for e in examples]), stable=True)
    return order, eval_batches([examples[i] for i in order.tolist()], pad_token_id, batch_size)
