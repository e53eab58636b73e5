"""One masked unlearning run: objective + data streams + the hard-constrained trainer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from causalloc.masks import Mask
from causalloc.unlearn.base import Objective, StepContext
from causalloc.unlearn.trainer import (
    BatchStream,
    MaskedColumns,
    ParameterSnapshot,
    TrainConfig,
    TrainResult,
    max_abs_change_outside_mask,
    to_device,
    train_masked,
)


@dataclass
class UnlearnData:
    """Encoded examples of one run. ``refusal`` is parallel to ``forget`` (same questions,
    refusal answers) and only needed by objectives with ``needs_refusals``."""

    forget: Sequence[dict]
    retain: Sequence[dict]
    pad_token_id: int
    refusal: Sequence[dict] | None = None


def unlearn(
    model: nn.Module,
    mask: Mask,
    objective: Objective,
    data: UnlearnData,
    config: TrainConfig,
    evaluate: Callable[[int], dict] | None = None,
    snapshot: ParameterSnapshot | None = None,
) -> tuple[TrainResult, MaskedColumns]:
    """Unlearn with updates restricted to ``mask``; the shared ``model`` is left untouched.

    Data order is drawn from ``config.seed`` (forget and retain streams get derived seeds),
    the objective's own random draws from a generator seeded with ``config.seed`` too, so
    the conditions of a block differ only in the mask. Returns the training result and the
    trained columns (re-enter them with ``with columns:`` to evaluate the unlearned model,
    or ``columns.merge_into(copy)`` to materialise it).
    """
    snapshot = snapshot or ParameterSnapshot(model)
    device = next(model.parameters()).device
    forget_sources = [data.forget] + ([data.refusal] if objective.needs_refusals else [])
    if objective.needs_refusals and data.refusal is None:
        raise ValueError(f"objective {objective.name!r} needs refusal targets but none were given")
    forget_stream = iter(BatchStream(forget_sources, config.batch_size, data.pad_token_id, config.seed))
    retain_stream = iter(BatchStream([data.retain], config.batch_size, data.pad_token_id, config.seed + 1))
    objective.prepare(model.config, torch.Generator().manual_seed(int(config.seed)))

    with MaskedColumns(model, mask) as columns:

        def run_model(batch, **kw):
            return model(**_model_inputs(batch, device), **kw)

        def run_reference(batch, **kw):
            with columns.disabled(), torch.no_grad():
                return model(**_model_inputs(batch, device), **kw)

        def loss_fn(step: int, _columns: MaskedColumns) -> torch.Tensor:
            forget_batches = next(forget_stream)
            (retain_batch,) = next(retain_stream)
            ctx = StepContext(
                forget=to_device(forget_batches[0], device),
                retain=to_device(retain_batch, device),
                refusal=to_device(forget_batches[1], device) if objective.needs_refusals else None,
                model=run_model,
                reference=run_reference,
                step=step,
            )
            return objective.loss(ctx)

        result = train_masked(model, columns, loss_fn, config, evaluate)
        result.max_abs_change_outside_mask = max_abs_change_outside_mask(model, snapshot, columns)
    return result, columns


def _model_inputs(batch: dict, device) -> dict:
    """The model's inputs (labels are not passed: objectives compute their own losses)."""
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
