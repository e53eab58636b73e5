"""Hard Concrete localization: a learned L0 drop gate per value vector (Louizos et al. 2018,
ICLR, "Learning Sparse Neural Networks through L0 Regularization"; used as a localizer by
Chang et al. 2024, NAACL, code terarachang/MemPi ``hardconcrete.py``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from causalloc.attribution.base import register_method
from causalloc.attribution.gates import check_training, gate_shape, torch_generator, train_gates
from causalloc.errors import SpecError
from causalloc.unlearn.objectives._checks import check_number

#: stretch interval (gamma, zeta) of the hard concrete distribution (Louizos et al. 2018, sec. 4)
STRETCH = (-0.1, 1.1)


@register_method("hard_concrete", needs_retain=True)
def hard_concrete_scores(
    model, forget, retain, rng, *,
    steps: int = 25,
    lr: float = 0.1,
    alpha: float = 1.0,
    lam: float = 1.0,
    temperature: float = 2 / 3,
    init_drop: float = 0.05,
    forget_loss: str = "nll",
    layer_norm: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Units whose learned drop gate destroys the forget answers and spares retain.

    Gate of unit k with location ``log_alpha_k`` and temperature ``beta``
    (Louizos et al. 2018, eq. 10-12): at each forward pass during training
    ``u ~ U(0, 1)``, ``s = sigmoid((log u - log(1 - u) + log_alpha_k) / beta)``,
    ``d_k = clamp(s * (zeta - gamma) + gamma, 0, 1)`` with ``(gamma, zeta) = (-0.1, 1.1)``;
    its expected L0 norm is ``P(d_k > 0) = sigmoid(log_alpha_k - beta * log(-gamma / zeta))``.
    Trained with :func:`causalloc.attribution.gates.train_gates` on
    ``F_forget + alpha * NLL_retain + lam * mean_k P(d_k > 0)`` (``F_forget = -NLL_forget`` by
    default; steps on layer-normalized gradients); ``log_alpha`` starts where the
    deterministic gate is ``init_drop``. Score = learned ``log_alpha`` (monotone in the drop
    probability, and free of the ties of the clamped gate).

    Defaults (steps 25, lr 0.1, alpha 1, lam 1, temperature 2/3 as in Louizos et al.,
    init_drop 0.05, forget_loss "nll", layer_norm true) were chosen on the default tiny
    testbed (seed 0: precision 0.732 against V_tgt at 10%; in a harness with another noise
    seed lr 0.03 gave 0.72, lr 0.3 0.63, lr 1 0.54, temperature 1/3 0.64, init_drop 0.2 0.69)
    with seeds 1-2 beside it (0.646, 0.756) and checked on seeds 3-8 (0.56-0.80, mean 0.64);
    the previous defaults (unlikelihood, raw gradients, lr 0.3) gave 0.50 / 0.29 / 0.34 on
    seeds 0 / 1 / 2. Below slimming: the sampled gate is noise on the ranking, larger steps
    amplify it. Uniform noise comes from a torch Generator seeded from ``rng``. Deviations from MemPi: see
    ``causalloc.attribution.gates``; in addition MemPi initializes the gate at a keep
    probability and reads ``sigmoid(log_alpha)``.
    Details: ``drop_probability`` (``P(d_k > 0)``) and ``gate`` (the deterministic gate).
    """
    check_training(steps, lr, alpha, lam, forget_loss, layer_norm)
    check_number(temperature, "localization.hard_concrete.temperature", 0, strict=True)
    check_number(init_drop, "localization.hard_concrete.init_drop", 0, strict=True)
    if not init_drop < 1:
        raise SpecError(f"localization.hard_concrete.init_drop: must lie in (0, 1), got {init_drop!r}")
    gamma, zeta = STRETCH
    n_layers, n_units, device = gate_shape(model)
    generator = torch_generator(rng, device)
    p = (init_drop - gamma) / (zeta - gamma)
    log_alpha = torch.full((n_layers, n_units), math.log(p / (1 - p)), device=device)
    shift = temperature * math.log(-gamma / zeta)

    def drop(params: torch.Tensor, training: bool) -> torch.Tensor:
        if training:
            u = torch.rand(params.shape, generator=generator, device=device).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (-u).log1p() + params) / temperature)
        else:
            s = torch.sigmoid(params)
        return (s * (zeta - gamma) + gamma).clamp(0.0, 1.0)

    def expected_l0(params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params - shift).mean()

    train_gates(model, forget, retain, log_alpha, drop, expected_l0, steps=steps, lr=lr,
                alpha=alpha, lam=lam, forget_loss=forget_loss, layer_norm=layer_norm)
    scores = log_alpha.double().cpu().numpy()
    details = {"drop_probability": torch.sigmoid(log_alpha - shift).double().cpu().numpy(),
               "gate": drop(log_alpha, False).double().cpu().numpy()}
    return scores, details
