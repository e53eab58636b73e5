"""Shared fixtures: tiny models built from configs, random QA-like batches (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



def pytest_configure(config):
    """One torch thread per test process: the test models are tiny, and OpenMP threads on a
    busy 2-core machine thrash (30x slower steps were measured here)."""
    import torch

    torch.set_num_threads(1)


#: TOFU is found only through the documented setting (docs/data.md); tests on it skip without it
TOFU_DIR = Path(os.environ["CAUSALLOC_TOFU_DIR"]) if os.environ.get("CAUSALLOC_TOFU_DIR") else None
TOFU_SKIP = ("TOFU tests skipped: set CAUSALLOC_TOFU_DIR to a TOFU data directory (full.json, "
             "forget01.json, ...; docs/data.md)")


def has_tofu() -> bool:
    return TOFU_DIR is not None and (TOFU_DIR / "full.json").is_file()


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    if not has_tofu():
        pytest.skip(TOFU_SKIP if TOFU_DIR is None else f"CAUSALLOC_TOFU_DIR={TOFU_DIR} holds no full.json")
    return TOFU_DIR


def tiny_llama(seed: int = 0, vocab: int = 50, hidden: int = 32, intermediate: int = 64, layers: int = 2):
    """A random LLaMA-architecture model small enough for unit tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=64, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def random_examples(n: int, vocab: int = 50, seed: int = 0, prompt_len: int = 4, answer_len: int = 6):
    """Encoded QA-like examples (token lists with -100 on the prompt), lengths varying."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = int(rng.integers(2, prompt_len + 1))
        a = int(rng.integers(2, answer_len + 1))
        ids = rng.integers(1, vocab, size=p + a).tolist()
        out.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return out
