"""Localization methods: registry, result type and :func:`localize`.

A method is a function in its own module of this package, decorated with
``@register_method(name)``, with the signature
``fn(model, forget, retain, rng, *, hyper=default, ...) -> (scores, details)``:
``forget`` / ``retain`` are validated lists of batches (``causalloc.data.collate``
convention, already on the model's device; ``retain`` is empty unless the method
declares ``needs_retain``), ``rng`` a seeded ``numpy.random.Generator``, ``scores`` a
float64 ``[n_layers, n_units]`` array (higher = more responsible for the forget data) and
``details`` a dict of further per-unit arrays. :func:`localize` turns the scores into a
:class:`~causalloc.masks.Mask` at an exact budget with :func:`~causalloc.masks.top_k_mask`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from causalloc.data.collate import IGNORE_INDEX
from causalloc.errors import DataError, SpecError
from causalloc.masks import Mask, budget_to_count, top_k_mask

REQUIRED_BATCH_KEYS = ("input_ids", "attention_mask", "labels")


@dataclass(frozen=True)
class AttributionResult:
    """Scores of every value vector and the mask they select.

    scores: float64 ``[n_layers, n_units]``; the mask holds the top units by score.
    hyper: every hyperparameter the method ran with, defaults included.
    details: method-specific per-unit arrays (e.g. MemFlex's cosines), same shape as scores.
    """

    scores: np.ndarray
    mask: Mask
    method: str
    hyper: dict
    seed: int
    details: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its scoring function, its defaults and whether it reads retain data."""

    name: str
    score: Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]]
    needs_retain: bool
    defaults: dict[str, Any]


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, needs_retain: bool = False):
    """Function decorator: make a scoring function available to :func:`localize` as ``name``.

    Its keyword-only parameters are its hyperparameters; their defaults are recorded.
    """

    def decorator(fn: Callable) -> Callable:
        defaults = {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        METHODS[name] = MethodSpec(name, fn, needs_retain, defaults)
        return fn

    return decorator


def get_method(name: str) -> MethodSpec:
    """The registered method ``name`` (SpecError listing the known names otherwise)."""
    if name not in METHODS:
        raise SpecError(f"localization.method: unknown method {name!r} (known: {sorted(METHODS)})")
    return METHODS[name]


def check_batches(batches: Mapping | Iterable[Mapping] | None, role: str, device) -> list[dict]:
    """Validate ``batches`` (one batch or a sequence of them) and move them to ``device``.

    Raises DataError when there is no batch, a key is missing or a row has no answer token.
    """
    if batches is None:
        batches = []
    elif isinstance(batches, Mapping):
        batches = [batches]
    checked = []
    for number, batch in enumerate(batches):
        missing = [k for k in REQUIRED_BATCH_KEYS if k not in batch]
        if missing:
            raise DataError(f"{role} batch {number}: missing key(s) {missing}")
        labels = batch["labels"]
        if labels.ndim != 2 or labels.shape != batch["input_ids"].shape:
            raise DataError(f"{role} batch {number}: labels {tuple(labels.shape)} do not match "
                            f"input_ids {tuple(batch['input_ids'].shape)}")
        empty = (~(labels[:, 1:] != IGNORE_INDEX).any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise DataError(f"{role} batch {number}: row(s) {empty.tolist()} have no answer tokens")
        checked.append({k: batch[k].to(device) for k in REQUIRED_BATCH_KEYS})
    if not checked:
        raise DataError(f"localization: no {role} batches")
    return checked


def localize(
    method: str,
    model,
    forget_batches,
    retain_batches,
    budget: float,
    per_layer: bool = False,
    seed: int = 0,
    **hyper: Any,
) -> AttributionResult:
    """Score every value vector of ``model`` with ``method`` and select an exact budget.

    ``budget``: a fraction in (0, 1] (round(p * L * I) units) or a unit count;
    ``per_layer=True`` takes the same share from every layer. ``seed`` seeds the
    ``numpy`` Generator of the methods that draw (random, MemFlex). The model is left as
    it was (weights, ``requires_grad`` flags, train/eval mode).
    """
    from causalloc.models.units import adapter_for

    spec = get_method(method)
    unknown = sorted(set(hyper) - set(spec.defaults))
    if unknown:
        raise SpecError(f"localization.{method}: unknown hyperparameter(s) {unknown} "
                        f"(allowed: {sorted(spec.defaults)})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"localization.seed: must be a non-negative integer, got {seed!r}")
    signature = adapter_for(model).signature
    count = budget_to_count(budget, signature)
    device = next(model.parameters()).device
    forget = check_batches(forget_batches, "forget", device)
    retain = check_batches(retain_batches, "retain", device) if spec.needs_retain else []
    resolved = {**spec.defaults, **hyper}
    rng = np.random.default_rng(int(seed))
    scores, details = spec.score(model, forget, retain, rng, **resolved)
    scores = np.asarray(scores, dtype=np.float64)
    mask = top_k_mask(scores, count, signature, per_layer=per_layer, name=method)
    mask.meta.update(method=method, hyper=resolved, seed=int(seed), per_layer=bool(per_layer),
                     budget=budget.item() if isinstance(budget, np.generic) else budget,
                     count=count)
    return AttributionResult(scores, mask, method, resolved, int(seed), details)
