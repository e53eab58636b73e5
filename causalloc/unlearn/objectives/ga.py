"""Gradient ascent (GA): maximise the NLL of the forget answers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from causalloc.unlearn.base import Objective, StepContext, register_objective
from causalloc.unlearn.losses import model_nll


@register_objective("ga")
@dataclass
class GradientAscent(Objective):
    """``L = -NLL(forget)``, NLL = mean cross-entropy over the batch's answer tokens.

    Source: Jang et al. 2023 ("Knowledge Unlearning for Mitigating Privacy Risks"), the
    TOFU baseline (Maini et al. 2024). No hyperparameters and no retain term; the loss is
    unbounded below, so the trainer's schedule (steps, lr) is what stops it.
    """

    def loss(self, ctx: StepContext) -> torch.Tensor:
        return -model_nll(ctx.model, ctx.forget)
