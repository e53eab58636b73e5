"""Value vectors: the parameter units that masks select.

A value vector of layer l, unit i is the weight that multiplies the i-th MLP hidden
activation on its way back into the residual stream (methods.md, "Parameter units"):

- LLaMA / Mistral / Qwen2 / OLMo2 / SmolLM: column i of ``mlp.down_proj.weight`` (hidden x I)
- GPT-NeoX / Pythia: column i of ``mlp.dense_4h_to_h.weight`` (hidden x I)
- GPT-2: row i of ``mlp.c_proj.weight`` (Conv1D stores I x hidden)

Every adapter exposes the same convention: the *value matrix* ``V[l]`` of shape
``[n_units, hidden]`` with row i = value vector i, so that the MLP output is
``act[..., n_units] @ V[l] + bias`` whatever the architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from causalloc.errors import MaskError


@dataclass(frozen=True)
class ModelSignature:
    """What a mask must agree with: architecture family, layers, units per layer, width."""

    arch: str
    n_layers: int
    n_units: int
    hidden: int

    @property
    def total_units(self) -> int:
        return self.n_layers * self.n_units

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSignature:
        try:
            return cls(str(d["arch"]), int(d["n_layers"]), int(d["n_units"]), int(d["hidden"]))
        except KeyError as exc:
            raise MaskError(f"model signature lacks key {exc.args[0]!r}") from None


#: model_type -> (path to the decoder layers, path inside a layer to the value module, unit axis)
_FAMILIES = {
    "llama": ("model.layers", "mlp.down_proj", 1),
    "gpt_neox": ("gpt_neox.layers", "mlp.dense_4h_to_h", 1),
    "gpt2": ("transformer.h", "mlp.c_proj", 0),
}
#: further model types with the LLaMA layout
_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "gemma", "gemma2", "phi3"}


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def family_of(model_type: str | None, model_class: str) -> str:
    """The adapter family of a ``model_type``; MaskError naming the model class otherwise
    (usable on a config alone, before any weights are loaded)."""
    family = "llama" if model_type in _LLAMA_LIKE else model_type
    if family not in _FAMILIES:
        raise MaskError(
            f"{model_class} (model_type {model_type!r}) has no value-vector adapter: known "
            f"model types are {sorted(_LLAMA_LIKE | {'gpt_neox', 'gpt2'})}; a new family needs "
            "an entry in causalloc.models.units._FAMILIES naming its decoder-layer list and its "
            "MLP output projection (e.g. 'model.layers' and 'mlp.down_proj' for LLaMA)"
        )
    return family


class UnitAdapter:
    """Maps (layer, unit) value vectors to the weights of one loaded model."""

    def __init__(self, model: nn.Module):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        model_class = type(model).__name__
        family = family_of(model_type, model_class)
        layers_path, module_path, self.unit_axis = _FAMILIES[family]
        self.family = family
        self.model = model
        try:
            self.layers = list(_get(model, layers_path))
        except AttributeError:
            raise MaskError(f"{model_class} (model_type {model_type!r}): no decoder layers at "
                            f"{layers_path!r}, where the {family} adapter looks for them") from None
        try:
            self.value_modules = [_get(layer, module_path) for layer in self.layers]
        except AttributeError:
            raise MaskError(
                f"{model_class} (model_type {model_type!r}): the {family} adapter looked for the "
                f"MLP output projection (the value vectors) at {layers_path}[i].{module_path}, "
                f"but {type(self.layers[0]).__name__} has no {module_path!r}") from None
        #: the MLP block holding each layer's value module (position-wise in every family)
        self.mlp_modules = [_get(layer, module_path.rsplit(".", 1)[0]) for layer in self.layers]
        #: the LM head (``get_output_embeddings``), None for a model without one
        self.output_module = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        weight = self.value_modules[0].weight
        n_units = weight.shape[self.unit_axis]
        hidden = weight.shape[1 - self.unit_axis]
        self.signature = ModelSignature(family, len(self.layers), int(n_units), int(hidden))

    def value_weight(self, layer: int) -> nn.Parameter:
        """The stored weight parameter holding layer ``layer``'s value vectors."""
        return self.value_modules[layer].weight

    def value_matrix(self, layer: int) -> torch.Tensor:
        """``[n_units, hidden]`` view (no copy) of layer ``layer``'s value vectors."""
        w = self.value_weight(layer)
        return w.T if self.unit_axis == 1 else w

    def value_norms(self) -> torch.Tensor:
        """``[n_layers, n_units]`` L2 norms of all value vectors."""
        with torch.no_grad():
            return torch.stack([self.value_matrix(l).float().norm(dim=1) for l in range(len(self.layers))])


def adapter_for(model: nn.Module) -> UnitAdapter:
    """The unit adapter of a loaded HF causal LM (raises MaskError for unknown families)."""
    return UnitAdapter(model)
