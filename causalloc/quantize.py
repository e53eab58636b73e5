"""Weight-only round-to-nearest quantization of a model's linear layers, in place (torch only).

Used by the ``quant_recovery`` endpoint: Zhang et al. (ICLR 2025, "Catastrophic Failure of LLM
Unlearning via Quantization") show that rounding an unlearned model's weights to 4 bits can
bring the forgotten knowledge back, because unlearning moves weights by less than one
quantization step. Their models are quantized with GPTQ / AWQ; no CPU library of our
environment quantizes a small HF model in place and gives the rounded float weights back, and
the scheme here is a few lines, so it is written out.

Scheme (round-to-nearest, RTN, the baseline of GPTQ/AWQ papers): every ``nn.Linear`` inside the
decoder layers (attention and MLP projections; not the embeddings, not ``lm_head``, as GPTQ and
AWQ leave them) is cut along its **input dimension** into groups of ``group_size`` consecutive
weights of one output row (the last group of a row may be shorter). Per group, asymmetric
``bits``-bit integers: ``scale = (max - min) / (2^bits - 1)`` (1 where max = min),
``zero = round(-min / scale)``, ``q = clamp(round(w / scale) + zero, 0, 2^bits - 1)``, and the
weight becomes ``(q - zero) * scale`` in the model's dtype (fake quantization: the model stays a
float model, as ``transformers`` dequantizes for computation). Defaults: 4 bits, group 64.
GPT-2's ``Conv1D`` layers are not ``nn.Linear``: such a model is refused with a clear error.
"""

from __future__ import annotations

import torch
from torch import nn

from causalloc.errors import SpecError


def quantized_group(weight: torch.Tensor, bits: int = 4, group_size: int = 64) -> torch.Tensor:
    """``weight`` (``[out, in]``) rounded as described in the module docstring (a new tensor)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise SpecError(f"quantization: bits must be an integer in [1, 16], got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise SpecError(f"quantization: group_size must be an integer >= 1, got {group_size!r}")
    w = weight.detach().float()
    out_features, in_features = w.shape
    pad = (-in_features) % group_size
    if pad:  # pad the last group with copies of its first weight: changes neither min nor max
        w = torch.cat([w, w[:, in_features - (in_features % group_size):][:, :1].expand(-1, pad)], dim=1)
    groups = w.reshape(out_features, -1, group_size)
    low, high = groups.amin(dim=2, keepdim=True), groups.amax(dim=2, keepdim=True)
    levels = 2 ** bits - 1
    scale = (high - low) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-low / scale)
    q = torch.clamp(torch.round(groups / scale) + zero, 0, levels)
    rounded = ((q - zero) * scale).reshape(out_features, -1)[:, :in_features]
    return rounded.to(weight.dtype)


def quantize_linear_weights_(model: nn.Module, bits: int = 4, group_size: int = 64) -> list[str]:
    """Round every ``nn.Linear`` weight inside ``model``'s decoder layers in place; return their
    parameter names. The caller restores the model (e.g.
    :meth:`causalloc.unlearn.ParameterSnapshot.restored_after`)."""
    from causalloc.models.units import adapter_for

    adapter = adapter_for(model)
    layer_ids = {id(m) for layer in adapter.layers for m in layer.modules()}
    names = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and id(module) in layer_ids:
                module.weight.copy_(quantized_group(module.weight, bits, group_size))
                names.append(f"{name}.weight")
    if not names:
        raise SpecError("quantization: the model has no linear layer inside its decoder layers")
    return names
