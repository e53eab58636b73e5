"""Model loading (tiny config, local HF directory, GGUF) and value-vector unit adapters."""

from causalloc.models.units import ModelSignature, UnitAdapter, adapter_for

__all__ = ["ModelSignature", "UnitAdapter", "adapter_for"]
