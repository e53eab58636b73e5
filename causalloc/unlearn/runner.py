"""One masked unlearning run: objective + data streams + the hard-constrained trainer."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from causalloc.data.collate import stack_batches
from causalloc.masks import Mask
from causalloc.models.positions import scored_positions_only
from causalloc.unlearn.base import Objective, StepContext
from causalloc.unlearn.trainer import (
    BatchStream,
    MaskedColumns,
    ParameterSnapshot,
    TrainConfig,
    TrainResult,
    check_shared_model,
    frozen,
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
    """Outputs of the frozen reference forward, memoised per example (row).

    The reference of NPO / DPO / RMU is theta_o itself (the shared model with the trainable
    columns switched off), so a row's output depends on nothing but its tokens and the
    call's options. Rows are stored without padding, keyed by their real tokens and the
    options. A batch whose rows are all stored is served without a forward; otherwise the
    forward runs on the batch and adds the rows not yet stored. Served rows come from the
    store whenever they are in it, so a run sees the same values for the same sequence of
    batches whatever ran before it in the scope: the runs of a matched block share the data
    order, so a block's first run computes about one epoch of reference forwards (not one
    per step) and every later run computes none, and a result does not depend on which runs
    shared a worker. Padding positions of served outputs hold 0 (losses never read them).

    ``scope(key)`` starts a new scope (e.g. a block): rows of other scopes are dropped, since a
    row's stored value comes from the batch it first appeared in (equal to float rounding
    in any batch). Rows are added until ``max_bytes`` is reached and never evicted within a
    scope (an LRU would thrash on the sequential pattern).
    """

    #: the output fields kept (what objectives read from a reference forward)
    FIELDS = ("logits", "hidden_states")

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0  # batches served without a forward
        self.misses = 0  # batches that needed one
        self._scope = None
        self._rows: dict[str, dict] = {}

    def scope(self, key) -> None:
        if key != self._scope:
            self._scope, self._rows, self.bytes = key, {}, 0

    @staticmethod
    def key(row: dict[str, torch.Tensor], options: dict) -> str:
        """Digest of one row's tensors (real positions only) and the call's options."""
        digest = hashlib.blake2b(repr(sorted(options.items())).encode(), digest_size=16)
        for name in sorted(row):
            digest.update(name.encode())
            digest.update(row[name].detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def get(self, inputs: dict, options: dict, forward: Callable[[], object]):
        """The reference output for the batch described by ``inputs`` (``attention_mask`` and
        whatever identifies a row's output: tokens, labels when they decide which positions
        are computed), built from stored rows; ``forward()`` runs only when a row is missing."""
        real = inputs["attention_mask"].bool()
        keys = [self.key({name: value[row][real[row]] for name, value in inputs.items()}, options)
                for row in range(real.shape[0])]
        fresh = None

        def fresh_row(row: int) -> dict:
            """Row ``row`` of the fresh forward, real positions only (views)."""
            return {name: _map(value, lambda t: t[row][real[row]]) for name, value in fresh.items()}

        if all(k in self._rows for k in keys):
            self.hits += 1
        else:
            self.misses += 1
            output = forward()
            fresh = {name: _detached(getattr(output, name, None)) for name in self.FIELDS}
            for row, key in enumerate(keys):
                if key not in self._rows:  # cloned: a stored row must not keep the batch alive
                    self._store(key, {name: _map(value, torch.clone) for name, value in fresh_row(row).items()})
        from transformers.modeling_outputs import CausalLMOutputWithPast

        template = fresh or self._rows[keys[0]]
        served = {name: _map(value, lambda t: t.new_zeros(real.shape + t.shape[-1:]))
                  for name, value in template.items()}
        for row, key in enumerate(keys):
            source = self._rows.get(key) or fresh_row(row)
            for name, value in source.items():
                _copy_rows(served[name], value, row, real[row])
        return CausalLMOutputWithPast(**served)

    def _store(self, key: str, row: dict) -> None:
        size = sum(t.numel() * t.element_size() for value in row.values() for t in _tensors(value))
        if self.bytes + size <= self.max_bytes:
            self._rows[key] = row
            self.bytes += size


def _detached(value):
    return _map(value, torch.Tensor.detach)


def _map(value, fn):
    """``fn`` applied to a tensor or to each tensor of a tuple (hidden states); None stays None."""
    if isinstance(value, tuple):
        return tuple(fn(v) for v in value)
    return None if value is None else fn(value)


def _tensors(value):
    return value if isinstance(value, tuple) else () if value is None else (value,)


def _copy_rows(target, source, row: int, keep: torch.Tensor) -> None:
    """Write one row's real positions (``source``: ``[n_real, d]``) into ``target[row]``."""
    for out, values in zip(_tensors(target), _tensors(source)):
        out[row][keep] = values


def unlearn(
    model: nn.Module,
    mask: Mask,
    objective: Objective,
    data: UnlearnData,
    config: TrainConfig,
    evaluate: Callable[[int], dict] | None = None,
    snapshot: ParameterSnapshot | None = None,
    reference_cache: ReferenceCache | None = None,
    keep: Callable[[list[dict]], bool] | None = None,
) -> tuple[TrainResult, MaskedColumns]:
    """Unlearn with updates restricted to ``mask``; the shared ``model`` is left untouched.

    Data order is drawn from ``config.seed`` (forget and retain streams get derived seeds),
    the objective's own random draws from a generator seeded with ``config.seed`` too, so
    the conditions of a block differ only in the mask; ``result.matching_digest`` records
    both (the rows of every batch drawn and the draws' seed), for the executor to check
    that the runs of a block agree. Returns the training result and the
    trained columns (re-enter them with ``with columns:`` to evaluate the unlearned model,
    or ``columns.merge_into(copy)`` to materialise it). ``reference_cache`` memoises the
    frozen reference forwards across the runs that share it (see :class:`ReferenceCache`;
    it must only ever see this ``model``). The objective's forwards compute logits at the
    scored positions only (:mod:`causalloc.models.positions`, unless it sets
    ``needs_full_logits``), and ``ctx.models`` runs several batches in one pass. ``keep``:
    see :func:`~causalloc.unlearn.trainer.train_masked` (``result.kept``).

    The shared model is frozen for the run (``requires_grad`` off, flags put back after), and
    afterwards the whole of it, inside the mask too, must still be bitwise ``snapshot``
    (default: a snapshot taken now; pass one made with the saved checkpoint to avoid its
    in-memory copy): :func:`~causalloc.unlearn.trainer.check_shared_model` raises
    ConstraintError otherwise, after restoring the model.
    """
    snapshot = snapshot or ParameterSnapshot(model)
    device = next(model.parameters()).device
    forget_sources = [data.forget] + ([data.refusal] if objective.needs_refusals else [])
    if objective.needs_refusals and data.refusal is None:
        raise ValueError(f"objective {objective.name!r} needs refusal targets but none were given")
    streams = (BatchStream(forget_sources, config.batch_size, data.pad_token_id, config.seed),
               BatchStream([data.retain], config.batch_size, data.pad_token_id, config.seed + 1))
    forget_stream, retain_stream = iter(streams[0]), iter(streams[1])
    draws = torch.Generator().manual_seed(int(config.seed))
    objective.prepare(model.config, draws)

    with frozen(model), MaskedColumns(model, mask) as columns:

        def positions(batch, options):
            """Logits at the scored positions only, unless the objective or call needs more."""
            if objective.needs_full_logits or options.get("output_hidden_states") or "labels" not in batch:
                return nullcontext()
            return scored_positions_only(model, to_device(batch, device), columns.adapter)

        def run_model(batch, **kw):
            options = _options(kw)
            with positions(batch, options):
                return model(**_model_inputs(batch, device), **options)

        def run_merged(batches, **kw):
            output = run_model(stack_batches(batches, data.pad_token_id), **kw)
            return split_output(output, batches)

        def run_reference(batch, **kw):
            inputs, options = _model_inputs(batch, device), _options(kw)

            def forward():
                with columns.disabled(), torch.no_grad(), positions(batch, options):
                    return model(**inputs, **options)

            if reference_cache is None:
                return forward()
            # the labels decide which positions are computed, so they identify a row too
            rows = {**inputs, "labels": batch["labels"].to(device)} if "labels" in batch else inputs
            return reference_cache.get(rows, {**options, "needs_full_logits": objective.needs_full_logits},
                                       forward)

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
                merged=run_merged,
            )
            return objective.loss(ctx)

        result = train_masked(model, columns, loss_fn, config, evaluate, keep)
        result.max_abs_change_outside_mask = check_shared_model(model, snapshot, columns)
    result.matching_digest = hashlib.sha256(
        f"{draws.initial_seed()}|{streams[0].drawn.hexdigest()}|{streams[1].drawn.hexdigest()}".encode()
    ).hexdigest()
    return result, columns


def split_output(output, batches: Sequence[dict]) -> list:
    """Cut the output of a forward over ``stack_batches(batches)`` back into one output per
    batch (its rows, its length)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    parts, start = [], 0
    for batch in batches:
        rows, length = batch["input_ids"].shape
        index = (slice(start, start + rows), slice(0, length))
        parts.append(CausalLMOutputWithPast(
            **{name: _map(getattr(output, name), lambda t, i=index: t[i]) for name in ("logits", "hidden_states")}))
        start += rows
    return parts


def _model_inputs(batch: dict, device) -> dict:
    """The model's inputs (labels are not passed: objectives compute their own losses)."""
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}


def _options(kw: dict) -> dict:
    """Forward options: no key/value cache is built unless asked (nothing generates here)."""
    return {"use_cache": False, **kw}
