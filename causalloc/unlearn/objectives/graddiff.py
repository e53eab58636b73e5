"""Gradient difference (GradDiff): gradient ascent on forget, descent on retain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from causalloc.unlearn.base import Objective, StepContext, register_objective
from causalloc.unlearn.losses import answer_nll
from causalloc.unlearn.objectives._checks import check_number


def with_retain(ctx: StepContext, alpha: float, *batches, **kw) -> tuple[list, Any]:
    """``ctx.model`` outputs for ``batches`` and, when ``alpha`` > 0, for ``ctx.retain``
    (else None: no retain forward pass), all from one pass (:meth:`StepContext.models`)."""
    outputs = ctx.models(*batches, *([ctx.retain] if alpha else []), **kw)
    return outputs[:len(batches)], (outputs[len(batches)] if alpha else None)


def retain_term(alpha: float, ctx: StepContext, retain_output) -> torch.Tensor | float:
    """``alpha * NLL(retain)`` from the retain output of :func:`with_retain` (0 when alpha == 0)."""
    return alpha * answer_nll(retain_output.logits, ctx.retain["labels"]) if alpha else 0.0


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
        (forget,), retain = with_retain(ctx, self.alpha, ctx.forget)
        return -answer_nll(forget.logits, ctx.forget["labels"]) + retain_term(self.alpha, ctx, retain)
