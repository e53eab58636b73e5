"""One masked unlearning run: objective + data streams + the hard-constrained trainer."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
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


class ReferenceCache:
    """Outputs of the frozen reference forward, memoised by the exact inputs and options.

    The reference of NPO / DPO / RMU is theta_o itself (the shared model with the trainable
    columns switched off), so its output depends on nothing but the batch. The runs of a
    matched block share the data order, so every run of a block after the first that a
    worker executes asks for exactly the forwards the first one computed: served from here,
    they cost a hash and a copy. The values are those the forward returns (same frozen
    weights, same inputs), so a result does not depend on which runs shared a worker.

    ``scope(key)`` starts a new scope (e.g. a block): entries of other scopes are dropped.
    Entries are added until ``max_bytes`` is reached and never evicted within a scope, so a
    block longer than the budget still gets its first steps cached in every later run
    (an LRU would thrash on the sequential pattern).
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._scope = None
        self._entries: OrderedDict[str, dict] = OrderedDict()

    def scope(self, key) -> None:
        if key != self._scope:
            self._scope, self._entries, self.bytes = key, OrderedDict(), 0

    @staticmethod
    def key(inputs: dict, options: dict) -> str:
        digest = hashlib.blake2b(repr(sorted(options.items())).encode(), digest_size=16)
        for name in sorted(inputs):
            value = inputs[name].detach().cpu().contiguous()
            digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.numpy().tobytes())
        return digest.hexdigest()

    def get(self, inputs: dict, options: dict, forward: Callable[[], object]):
        """The cached output for these inputs, or ``forward()`` (stored when it fits).

        Only the tensors ``logits`` and ``hidden_states`` are kept; callers get copies, so an
        objective that writes into an output cannot corrupt later runs."""
        key = self.key(inputs, options)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            output = forward()
            entry = {name: _detached(getattr(output, name, None)) for name in ("logits", "hidden_states")}
            size = sum(t.numel() * t.element_size() for t in _tensors(entry))
            if self.bytes + size > self.max_bytes:
                return output
            self._entries[key] = entry
            self.bytes += size
        else:
            self.hits += 1
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(logits=_cloned(entry["logits"]), hidden_states=_cloned(entry["hidden_states"]))


def _detached(value):
    if isinstance(value, tuple):
        return tuple(v.detach() for v in value)
    return None if value is None else value.detach()


def _cloned(value):
    if isinstance(value, tuple):
        return tuple(v.clone() for v in value)
    return None if value is None else value.clone()


def _tensors(entry: dict):
    for value in entry.values():
        yield from (value if isinstance(value, tuple) else () if value is None else (value,))


def unlearn(
    model: nn.Module,
    mask: Mask,
    objective: Objective,
    data: UnlearnData,
    config: TrainConfig,
    evaluate: Callable[[int], dict] | None = None,
    snapshot: ParameterSnapshot | None = None,
    reference_cache: ReferenceCache | None = None,
) -> tuple[TrainResult, MaskedColumns]:
    """Unlearn with updates restricted to ``mask``; the shared ``model`` is left untouched.

    Data order is drawn from ``config.seed`` (forget and retain streams get derived seeds),
    the objective's own random draws from a generator seeded with ``config.seed`` too, so
    the conditions of a block differ only in the mask. Returns the training result and the
    trained columns (re-enter them with ``with columns:`` to evaluate the unlearned model,
    or ``columns.merge_into(copy)`` to materialise it). ``reference_cache`` memoises the
    frozen reference forwards across the runs that share it (see :class:`ReferenceCache`;
    it must only ever see this ``model``).
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
            return model(**_model_inputs(batch, device), **_options(kw))

        def run_reference(batch, **kw):
            inputs, options = _model_inputs(batch, device), _options(kw)

            def forward():
                with columns.disabled(), torch.no_grad():
                    return model(**inputs, **options)

            return forward() if reference_cache is None else reference_cache.get(inputs, options, forward)

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


def _options(kw: dict) -> dict:
    """Forward options: no key/value cache is built unless asked (nothing generates here)."""
    return {"use_cache": False, **kw}
