"""Negative preference optimisation (NPO): DPO with only a rejected (forget) answer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from causalloc.unlearn.base import StepContext, register_objective
from causalloc.unlearn.losses import preference_loss, sequence_log_prob
from causalloc.unlearn.objectives._checks import BetaRetainObjective
from causalloc.unlearn.objectives.graddiff import retain_term, with_retain


def log_ratio(ctx: StepContext, batch: dict[str, torch.Tensor], output) -> torch.Tensor:
    """``r = log p_theta(y | x) - log p_ref(y | x)`` per row (sums over answer tokens);
    ``output`` is ``ctx.model``'s output on ``batch``."""
    current = sequence_log_prob(output.logits, batch["labels"])
    with torch.no_grad():
        reference = sequence_log_prob(ctx.reference(batch).logits, batch["labels"])
    return current - reference


@register_objective("npo")
@dataclass
class NPO(BetaRetainObjective):
    """``L = -(2 / beta) * mean log sigmoid(-beta * r) + alpha * NLL(retain)``, with
    ``r = log p_theta(y_forget | x) - log p_ref(y_forget | x)``.

    Source: Zhang et al. 2024 ("Negative Preference Optimization", eq. 3); the retain term
    follows the paper's NPO+RT and open-unlearning. At r = 0 the gradient equals GA's; it
    fades as the forget answers become unlikely relative to the frozen reference.

    beta: inverse temperature (> 0), 0.1 as in the paper and open-unlearning (0.5 in
        some code); smaller beta acts like GA for longer.
    alpha: weight of the retain NLL (>= 0), default 1.
    """

    needs_reference = True

    def loss(self, ctx: StepContext) -> torch.Tensor:
        (forget,), retain = with_retain(ctx, self.alpha, ctx.forget)
        forget_loss = preference_loss(-log_ratio(ctx, ctx.forget, forget), self.beta)
        return forget_loss + retain_term(self.alpha, ctx, retain)
