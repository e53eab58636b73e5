"""WAGLE weight attribution (Jia et al. 2024, "WAGLE: Strategic Weight Attribution for
Effective and Modular Unlearning in Large Language Models")."""

from __future__ import annotations

import numpy as np

from causalloc.attribution.base import register_method
from causalloc.attribution.signals import value_gradients, value_matrices
from causalloc.models.units import adapter_for
from causalloc.unlearn.objectives._checks import check_number


@register_method("wagle", needs_retain=True)
def wagle_scores(
    model, forget, retain, rng, *, mu: float = 1e-6
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``S_j = | (theta_j - g_retain_j / mu) * g_forget_j |`` per weight, summed per value vector.

    ``g`` are gradients of the plain answer NLL summed over batches, on the forget and the
    retain data. mu: the Hessian-diagonal surrogate of the paper, 1e-6 in the released TOFU
    configs (the code's default is 1e-3); with mu this small the retain-gradient term
    dominates. Details: ``forget_grad_norm`` and ``retain_grad_norm`` per unit.
    """
    check_number(mu, "localization.wagle.mu", 0, strict=True)
    adapter = adapter_for(model)
    forget_grad = value_gradients(adapter, forget).double()
    retain_grad = value_gradients(adapter, retain).double()
    weights = value_matrices(adapter).double()
    scores = ((weights - retain_grad / mu) * forget_grad).abs().sum(dim=2)
    details = {"forget_grad_norm": forget_grad.norm(dim=2).cpu().numpy(),
               "retain_grad_norm": retain_grad.norm(dim=2).cpu().numpy()}
    return scores.cpu().numpy(), details
