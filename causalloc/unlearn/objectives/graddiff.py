"""Gradient difference (GradDiff): gradient ascent on forget, descent on retain."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from causalloc.unlearn.base import Objective, StepContext, register_objective
from causalloc.unlearn.losses import model_nll
from causalloc.unlearn.objectives._checks import check_number


def retain_term(alpha: float, ctx: StepContext) -> torch.Tensor | float:
    """``alpha * NLL(retain)``, skipping the retain forward pass when ``alpha == 0``."""
    return alpha * model_nll(ctx.model, ctx.retain) if alpha else 0.0


@register_objective("graddiff")
@dataclass
class GradDiff(Objective):
    """``L = -NLL(forget) + alpha * NLL(retain)``.

    Source: Liu et al. 2022 ("Continual Learning and Private Unlearning"); TOFU and
    open-unlearning default ``alpha = 1``.

    alpha: weight of the retain NLL (>= 0).
    """

    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_number(self.alpha, f"algorithm.{self.name}.alpha", 0)

    def loss(self, ctx: StepContext) -> torch.Tensor:
        return -model_nll(ctx.model, ctx.forget) + retain_term(self.alpha, ctx)
