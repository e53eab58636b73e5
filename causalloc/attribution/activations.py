"""Activation-based localization (Chang et al. 2024, NAACL, "Do Localization Methods
Actually Localize Memorized Data in LLMs?")."""

from __future__ import annotations

import numpy as np
import torch

from causalloc.attribution.base import register_method
from causalloc.attribution.signals import (
    captured_value_inputs,
    forward,
    inspection_mode,
    predicting_positions,
)
from causalloc.models.units import adapter_for


@register_method("activations")
def activation_scores(model, forget, retain, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``score(l, i) = | mean_t a[l, t, i] | * ||v_(l, i)||_2`` on the forget data.

    ``a[l, t, i]`` is the input of layer l's value module (the activation that multiplies
    value vector i); the signed mean is pooled over all answer-predicting positions of all
    forget examples (see ``signals.predicting_positions``), the absolute value taken after.
    No gradients. Details: ``mean_activation`` and ``value_norm``.
    """
    adapter = adapter_for(model)
    sums = torch.zeros(adapter.signature.n_layers, adapter.signature.n_units, dtype=torch.float64)
    n_positions = 0
    with inspection_mode(model), torch.no_grad(), captured_value_inputs(adapter) as inputs:
        for batch in forget:
            forward(model, batch)
            positions = predicting_positions(batch["labels"])
            n_positions += int(positions.sum())
            for l, a in enumerate(inputs):
                sums[l] += a[positions].double().sum(dim=0).cpu()
    mean_activation = (sums / n_positions).numpy()
    value_norm = adapter.value_norms().double().cpu().numpy()
    scores = np.abs(mean_activation) * value_norm
    return scores, {"mean_activation": mean_activation, "value_norm": value_norm}
