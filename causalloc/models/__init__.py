"""Model loading (tiny config, local HF directory, GGUF) and value-vector unit adapters.

The loading functions are imported on first use (PEP 562 module ``__getattr__``) because
they pull in transformers, which would otherwise slow down every ``import causalloc.masks``
(masks need only :mod:`causalloc.models.units`).
"""

from causalloc.models.units import ModelSignature, UnitAdapter, adapter_for

__all__ = [
    "ModelSignature",
    "UnitAdapter",
    "adapter_for",
    "build_tiny_llama",
    "build_tiny_model",
    "load_hf_dir",
    "load_pretrained",
    "load_smollm2",
    "save_model",
    "smollm2_gguf_path",
    "tiny_model_config",
    "train_word_tokenizer",
]


def __getattr__(name: str):
    """Only called for names not yet defined here, i.e. the loading functions."""
    if name in __all__:
        from causalloc.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'causalloc.models' has no attribute {name!r}")
