"""Gradient x weight localization on the forget NLL."""

from __future__ import annotations

import numpy as np

from causalloc.attribution.base import register_method
from causalloc.attribution.signals import value_gradients, value_matrices
from causalloc.models.units import adapter_for


@register_method("grad_x_weight")
def grad_x_weight_scores(model, forget, retain, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``score(l, i) = sum_j | g_(l,i,j) * theta_(l,i,j) |`` over the weights j of value vector i.

    ``g`` is the gradient of the forget answer NLL summed over batches: the first-order
    estimate of how much the loss changes when each weight is zeroed (Taylor attribution,
    e.g. Molchanov et al. 2017), taken per weight in absolute value, then summed per unit
    as methods.md prescribes for gradient baselines.
    """
    adapter = adapter_for(model)
    gradient = value_gradients(adapter, forget)
    scores = (gradient * value_matrices(adapter)).abs().sum(dim=2)
    return scores.double().cpu().numpy(), {}
