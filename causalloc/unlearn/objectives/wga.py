"""Weighted gradient ascent (WGA): gradient ascent damped on tokens already forgotten."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from causalloc.unlearn.base import StepContext, register_objective
from causalloc.unlearn.losses import answer_token_log_probs
from causalloc.unlearn.objectives._checks import BetaRetainObjective
from causalloc.unlearn.objectives.graddiff import retain_term, with_retain


def wga_token_weights(log_probs: torch.Tensor, beta: float) -> torch.Tensor:
    """``w_t = stopgrad(p(y_t | x, y_<t)) ** beta`` from per-token log-probabilities."""
    return (beta * log_probs.detach()).exp()


@register_objective("wga")
@dataclass
class WeightedGradientAscent(BetaRetainObjective):
    """``L = -mean_t(w_t * CE_t) + alpha * NLL(retain)``, ``w_t = stopgrad(p_t) ** beta``,
    the mean taken over all answer tokens of the forget batch.

    Source: Wang et al. 2025 (ICLR, "Rethinking LLM Unlearning Objectives: A Gradient
    Perspective and Go Beyond"). A token the model no longer predicts (p_t -> 0) stops
    receiving ascent, which keeps the loss bounded in practice.

    beta: weight exponent (> 0). Default 1.0 as in open-unlearning; the authors' code uses 5,
        which damps faster (forgets more gently).
    alpha: weight of the retain NLL (>= 0); open-unlearning default 1.
    """

    beta: float = 1.0

    def loss(self, ctx: StepContext) -> torch.Tensor:
        (forget,), retain = with_retain(ctx, self.alpha, ctx.forget)
        log_probs, mask = answer_token_log_probs(forget.logits, ctx.forget["labels"])
        weighted_ce = wga_token_weights(log_probs, self.beta) * -log_probs
        forget_loss = -weighted_ce[mask].mean()
        return forget_loss + retain_term(self.alpha, ctx, retain)
