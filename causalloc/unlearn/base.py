"""The objective protocol and registry shared by the masked trainer and the objectives.

An objective is one small module in ``causalloc/unlearn/objectives/`` that defines a
dataclass subclass of :class:`Objective` (its fields are its hyperparameters, with
documented defaults) decorated with ``@register_objective("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from causalloc.errors import SpecError

Batch = dict[str, torch.Tensor]


@dataclass
class StepContext:
    """What an objective sees at one optimisation step.

    ``model(batch, **kw)`` runs the model being unlearned (masked trainable columns
    active, gradients on); ``reference(batch, **kw)`` runs the frozen starting model
    (theta_o: same weights with the trainable columns switched off, under ``no_grad``),
    shared read-only across runs and never copied. Both return HF ``CausalLMOutput``s;
    pass ``output_hidden_states=True`` for hidden states. Unless the objective sets
    ``needs_full_logits``, logits are computed at the scored positions only (those whose
    next label is an answer token, all that the losses read) and are 0 elsewhere.
    ``refusal`` holds the forget questions paired with refusal answers (for DPO);
    it is None unless the objective sets ``needs_refusals``. ``models(*batches)`` runs the
    model on several batches at once (see :meth:`models`).
    """

    forget: Batch
    retain: Batch
    refusal: Batch | None
    model: Callable[..., Any]
    reference: Callable[..., Any]
    step: int
    #: ``merged(batches, **kw)``: the outputs of ``model`` on ``batches`` from one forward
    #: pass over the stacked rows (the executor provides it; None: one pass per batch)
    merged: Callable[..., list] | None = None

    def models(self, *batches: Batch, **kw: Any) -> list:
        """``[model(b, **kw) for b in batches]``, from one forward pass when ``merged`` is set.

        Equal to float rounding: the rows are padded to the longest batch, and padding at the
        end of a row changes nothing before it. For small models most of a pass is
        per-operation overhead, so one pass over 16 rows beats two over 8
        (``benchmarks/train_step.py``).
        """
        if self.merged is None or len(batches) < 2:
            return [self.model(b, **kw) for b in batches]
        return self.merged(batches, **kw)


@dataclass
class Objective:
    """Base class: subclasses are dataclasses whose fields are hyperparameters."""

    name: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False
    needs_refusals: ClassVar[bool] = False
    #: True if the loss reads logits outside the scored (answer-predicting) positions; by
    #: default ``model`` / ``reference`` calls without hidden states compute logits there
    #: only (0 elsewhere; see causalloc.models.positions)
    needs_full_logits: ClassVar[bool] = False
    #: training settings (TrainConfig fields) this objective needs by default, overriding
    #: the global TrainConfig defaults; a spec's own values override both
    train_defaults: ClassVar[dict[str, Any]] = {}

    def prepare(self, config: Any, generator: torch.Generator) -> None:
        """Called once per run before the first step with the model's HF config and the
        run's seeded generator (e.g. RMU draws its control vector here)."""

    def loss(self, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str):
    """Class decorator: make an objective available by ``name``."""

    def decorator(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return decorator


def make_objective(name: str, **hyper: Any) -> Objective:
    """Instantiate a registered objective; unknown names or hyperparameters raise SpecError."""
    from causalloc.unlearn import objectives  # noqa: F401  (registers the built-ins)

    if name not in OBJECTIVES:
        raise SpecError(f"algorithm: unknown objective {name!r} (known: {sorted(OBJECTIVES)})")
    cls = OBJECTIVES[name]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(hyper) - allowed)
    if unknown:
        raise SpecError(f"algorithm.{name}: unknown hyperparameter(s) {unknown} (allowed: {sorted(allowed)})")
    return cls(**hyper)
