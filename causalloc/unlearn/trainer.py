"""The hard-constrained masked trainer.

Written by hand because no library offers it: public masked-unlearning code multiplies
full gradients by a mask, which lets weight decay, optimizer momentum and clipping move or
distort "frozen" weights (methods.md, "Pitfalls"). Here the shared model is never
written to. Each run attaches :class:`MaskedColumns`: trainable copies ``c_l`` of the
selected value vectors of each masked layer, added through a forward hook on the value
module as ``out + act[..., idx_l] @ (c_l - V_l[idx_l])``. The optimizer only sees the
``c_l``, so weight decay, momentum and gradient clipping act on masked coordinates only,
and autograd computes no weight gradient for any frozen parameter (the backward pass also
stops at the lowest masked layer). Weights outside the mask cannot change; every run still
checks the whole shared model, bit for bit, against a snapshot of it
(:func:`check_shared_model`: per-tensor sha256 digests, and the saved checkpoint for the
values of a tensor that changed, so the check keeps no second copy of the model).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from causalloc.data.collate import collate
from causalloc.errors import ConstraintError, DataError, SpecError
from causalloc.masks import Mask
from causalloc.models.hooks import Hooks
from causalloc.models.units import UnitAdapter, adapter_for
from causalloc.models.weights import SavedWeights, row_chunks, tensor_digest

Batch = dict[str, torch.Tensor]


@dataclass
class TrainConfig:
    """Optimisation settings of one masked run (the same for every condition of a block).

    ``seed`` fixes the data order; ``grad_clip`` is a max global L2 norm over the masked
    coordinates (None or 0 disables it).
    """

    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 8
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    eval_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise SpecError(f"optimizer: unknown {self.optimizer!r} (known: {sorted(OPTIMIZERS)})")
        for key in ("steps", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise SpecError(f"{key}: must be >= 1, got {getattr(self, key)!r}")
        if not self.lr > 0:
            raise SpecError(f"lr: must be > 0, got {self.lr!r}")
        self.betas = tuple(self.betas)


OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], TrainConfig], torch.optim.Optimizer]] = {
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
}


class MaskedColumns(nn.Module):
    """Trainable copies of a mask's value vectors, attached to a frozen shared model.

    Use as a context manager: inside it the model computes with the trainable columns;
    inside ``with columns.disabled():`` it computes as the untouched starting model (the
    frozen reference of NPO / DPO / RMU, shared instead of copied).

    The columns (and the starting values they are compared with) are float32 master
    weights whatever the model dtype: the forward adds ``act @ (c - V[idx])`` cast to the
    activations' dtype, so in a bfloat16 model updates far below bf16 resolution (8
    significant bits) still accumulate, and at step 0 the added term is exactly 0. Merging
    (:meth:`merged_state`) rounds the trained columns to the model dtype.
    """

    def __init__(self, model: nn.Module, mask: Mask, adapter: UnitAdapter | None = None):
        super().__init__()
        self.adapter = adapter or adapter_for(model)
        mask.check_fits(self.adapter.signature)
        self.mask = mask
        self.layer_ids = mask.layers()
        self.columns = nn.ParameterList()
        self._index: list[torch.Tensor] = []
        self._base: list[torch.Tensor] = []
        for layer in self.layer_ids:
            values = self.adapter.value_matrix(layer)
            index = torch.tensor(mask.units[layer], dtype=torch.long, device=values.device)
            base = values.detach()[index].float()  # indexing copies; float32 master copy
            self._index.append(index)
            self._base.append(base)
            self.columns.append(nn.Parameter(base.clone()))
        names = {id(p): n for n, p in self.adapter.model.named_parameters()}
        #: parameter name of each masked layer's value weight -> its slot
        self._slot = {names[id(self.adapter.value_weight(layer))]: slot
                      for slot, layer in enumerate(self.layer_ids)}
        self._hooks = Hooks()
        self.active = True

    def _hook(self, slot: int):
        def add_delta(module, inputs, output):
            if not self.active:
                return output
            act = inputs[0][..., self._index[slot]]
            return output + act @ (self.columns[slot] - self._base[slot]).to(act.dtype)

        return add_delta

    def __enter__(self) -> MaskedColumns:  # noqa: PYI034 (hooks are attached here)
        for slot, layer in enumerate(self.layer_ids):
            module = self.adapter.value_modules[layer]
            self._hooks.forward(module, self._hook(slot))
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.remove()

    @contextmanager
    def disabled(self):
        """Compute as the starting model (trainable columns switched off)."""
        previous, self.active = self.active, False
        try:
            yield
        finally:
            self.active = previous

    def merge_into(self, model: nn.Module) -> None:
        """Write the trained columns into ``model`` in place: a separate copy of the same
        architecture, or the shared model itself (then restore it afterwards, e.g. with
        :meth:`ParameterSnapshot.restored_after`). Only the masked units are written."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, (axis, index) in self.inside().items():
                target = params[name]
                view = target.T if axis == 1 else target
                view[index] = self.columns[self._slot[name]].detach().to(target.dtype)

    def inside(self) -> dict[str, tuple[int, torch.Tensor]]:
        """Parameter name -> (unit axis, unit indices) of the coordinates inside the mask."""
        return {name: (self.adapter.unit_axis, self._index[slot]) for name, slot in self._slot.items()}

    def max_change_inside(self) -> float:
        with torch.no_grad():
            return max((float((c - b).abs().max()) for c, b in zip(self.columns, self._base)), default=0.0)


class ParameterSnapshot:
    """Every parameter of a shared model as it is now, kept for exact checks and restores
    without a second copy of the model in memory.

    Each tensor is recorded by its sha256 (:func:`~causalloc.models.weights.tensor_digest`),
    so "unchanged" is decided bit for bit. The values, needed only to measure by how much a
    changed tensor moved and to restore it, are read from ``saved``: the safetensors
    checkpoint the model was loaded from (memory-mapped, a slice at a time; converted to the
    model's dtype, as loading did). Without ``saved`` the snapshot keeps an in-memory clone
    instead (a second full copy: fine for small models, pass ``saved`` for large ones).
    """

    def __init__(self, model: nn.Module, saved: str | Path | None = None):
        self.digests = {name: tensor_digest(p) for name, p in model.named_parameters()}
        self.saved = SavedWeights(saved) if saved is not None else None
        self._copy = None if saved is not None else {
            name: p.detach().clone() for name, p in model.named_parameters()}
        if self.saved is not None:
            missing = sorted(set(self.digests) - set(self.saved.files))
            if missing:
                raise DataError(f"{saved}: the checkpoint lacks parameter(s) {missing[:5]} of the model")

    def changed(self, model: nn.Module) -> list[str]:
        """Names of the parameters whose bits differ from the snapshot."""
        params = dict(model.named_parameters())
        if set(params) != set(self.digests):
            raise ConstraintError(f"the model's parameters {sorted(set(params) ^ set(self.digests))[:5]} "
                                  "are not those of the snapshot")
        return [name for name, p in params.items() if tensor_digest(p) != self.digests[name]]

    def _reference(self, name: str, rows: slice, like: torch.Tensor) -> torch.Tensor:
        value = self._copy[name][rows] if self._copy is not None else self.saved.rows(name, rows)
        return value.to(device=like.device, dtype=like.dtype)

    def max_abs_change(self, model: nn.Module, exclude: dict | None = None) -> dict[str, float]:
        """max |theta - snapshot| of every changed parameter (over all its coordinates except
        ``exclude[name] = (unit axis, unit indices)``), compared a chunk of rows at a time."""
        params = dict(model.named_parameters())
        out = {}
        with torch.no_grad():
            for name in self.changed(model):
                param, worst = params[name], 0.0
                axis, index = (exclude or {}).get(name, (None, None))
                for rows in row_chunks(param.shape, 4):
                    diff = (param[rows].float() - self._reference(name, rows, param).float()).abs()
                    if axis == 1:
                        diff[:, index] = 0.0
                    elif axis == 0:
                        start = rows.start or 0
                        local = index[(index >= start) & (index < start + diff.shape[0])] - start
                        diff[local] = 0.0
                    if diff.numel():
                        worst = max(worst, float(diff.max()))
                out[name] = worst
        return out

    def restore(self, model: nn.Module) -> list[str]:
        """Write the snapshot's values back into every changed parameter and check that the
        model is then bitwise the snapshot again (ConstraintError if not). Returns the
        names restored."""
        params = dict(model.named_parameters())
        changed = self.changed(model)
        with torch.no_grad():
            for name in changed:
                for rows in row_chunks(params[name].shape, params[name].element_size()):
                    params[name][rows] = self._reference(name, rows, params[name])
        still = self.changed(model) if changed else []
        if still:
            raise ConstraintError(f"parameters {still[:5]} could not be restored bitwise from "
                                  f"{self.saved.path if self.saved else 'the snapshot'}")
        return changed

    @contextmanager
    def restored_after(self, model: nn.Module):
        """Run a block that may write into ``model`` (e.g. an in-place relearning attack);
        restore the model exactly afterwards, whatever happens in the block."""
        try:
            yield model
        finally:
            self.restore(model)


def max_abs_change_outside_mask(
    model: nn.Module, snapshot: ParameterSnapshot, columns: MaskedColumns | None = None
) -> float:
    """max |theta_final - theta_start| over every parameter coordinate outside the mask, exact.

    theta_final is the model as a run leaves it, with its trained columns merged in. They are
    written inside the mask only, so outside it theta_final is the shared model: the value is
    0.0 when every parameter's digest matches the snapshot, else it is measured against the
    snapshot's values of the changed parameters. Must be exactly 0.0 for a hard constraint.
    """
    changes = snapshot.max_abs_change(model, columns.inside() if columns is not None else None)
    return max(changes.values(), default=0.0)


def check_shared_model(model: nn.Module, snapshot: ParameterSnapshot,
                       columns: MaskedColumns | None = None) -> float:
    """The hard-constraint check of a run: the WHOLE shared model, inside the mask too, must
    still be bitwise its snapshot (the trained columns are copies, so a run never writes it).

    Returns :func:`max_abs_change_outside_mask` (0.0). If any parameter differs, restores the
    model from the snapshot (so that later runs sharing it stay matched) and raises
    ConstraintError naming the parameters and how far they moved, outside the mask and in all.
    """
    outside = snapshot.max_abs_change(model, columns.inside() if columns is not None else None)
    if not outside:
        return 0.0
    anywhere = snapshot.max_abs_change(model)
    snapshot.restore(model)
    listed = ", ".join(f"{name} (max |change| {anywhere[name]:.3g}, outside the mask {outside[name]:.3g})"
                       for name in list(anywhere)[:5])
    raise ConstraintError(f"the shared model changed during the run: {listed}; it was restored from "
                          "its snapshot")


@contextmanager
def frozen(model: nn.Module):
    """``model`` with ``requires_grad`` off for every parameter inside the block (no weight
    gradient is computed or stored for the shared model); the flags are put back after."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for param, flag in zip(model.parameters(), flags):
            param.requires_grad_(flag)


class BatchStream:
    """Endless stream of collated batches in a seeded order (a new permutation per epoch).

    ``sources`` are parallel lists of encoded examples (e.g. forget questions with their
    answers and the same questions with refusal answers): each step yields one batch per
    source, built from the same indices. Conditions of a matched block use the same seed
    and therefore the same data order. Each source is collated once up front; a batch is
    its rows cut to their longest example, which is exactly what ``collate`` of those
    examples gives, without rebuilding tensors from Python lists every step. ``drawn``
    hashes the rows of every batch yielded so far (the data order a run actually saw).
    """

    def __init__(self, sources: Sequence[Sequence[dict]], batch_size: int, pad_token_id: int, seed: int):
        sizes = {len(s) for s in sources}
        if not sources or sizes == {0}:
            raise SpecError("training data: no examples")
        if len(sizes) != 1:
            raise SpecError(f"training data: parallel sources differ in length {sorted(sizes)}")
        self.n = sizes.pop()
        self.batch_size = min(batch_size, self.n)
        self.pad_token_id = pad_token_id
        self.generator = torch.Generator().manual_seed(int(seed))
        self.drawn = hashlib.sha256()
        self._collated = [collate(list(src), pad_token_id) for src in sources]
        self._lengths = [torch.tensor([len(e["input_ids"]) for e in src]) for src in sources]

    def __iter__(self) -> Iterator[list[Batch]]:
        while True:
            order = torch.randperm(self.n, generator=self.generator)
            for start in range(0, self.n - self.batch_size + 1, self.batch_size):
                rows = order[start:start + self.batch_size]
                self.drawn.update(rows.numpy().tobytes())
                yield [{key: value[rows, :int(lengths[rows].max())].contiguous() for key, value in full.items()}
                       for full, lengths in zip(self._collated, self._lengths)]


@dataclass
class TrainResult:
    """What a masked run returns: trajectory of evaluations, timings and the hard-constraint check."""

    trajectory: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    max_abs_change_outside_mask: float = float("nan")
    max_abs_change_inside_mask: float = float("nan")
    seconds_train: float = 0.0
    seconds_eval: float = 0.0
    config: dict = field(default_factory=dict)
    #: sha256 of the data order and the seed of the objective's draws the run used: equal
    #: for every run of a matched block (they may differ only in the mask)
    matching_digest: str = ""
    #: the checkpoint chosen by ``train_masked``'s ``keep`` rule: ``{"step", "columns"}``
    #: (float32 copies of the trainable columns), or None
    kept: dict | None = None


def to_device(batch: Batch | None, device) -> Batch | None:
    return None if batch is None else {k: v.to(device) for k, v in batch.items()}


def train_masked(
    model: nn.Module,
    columns: MaskedColumns,
    loss_fn: Callable[[int, MaskedColumns], torch.Tensor],
    config: TrainConfig,
    evaluate: Callable[[int], dict] | None = None,
    keep: Callable[[list[dict]], bool] | None = None,
) -> TrainResult:
    """Optimise ``loss_fn(step, columns)`` over the masked columns only.

    ``columns`` must be entered (hooks attached). Gradients are zeroed before ``loss_fn``
    is called, so a ``loss_fn`` may itself call ``backward()`` on earlier micro-batches
    (gradient accumulation): their gradients add to those of the loss it returns.
    ``evaluate(step)`` is called at step 0,
    every ``config.eval_every`` steps and after the last step, with the trained columns
    active; its dicts form the trajectory. ``keep(trajectory)``, called after each evaluation,
    says whether the checkpoint just evaluated replaces ``result.kept`` (a copy of the
    columns, e.g. the checkpoint that defines FS@RS95, for a later relearning attack).
    """
    result = TrainResult(config=asdict(config))
    params = list(columns.columns)
    optimizer = OPTIMIZERS[config.optimizer](params, config) if params else None
    eval_steps = {0, config.steps}
    if config.eval_every:
        eval_steps |= set(range(config.eval_every, config.steps, config.eval_every))

    def run_eval(step: int) -> None:
        if evaluate is None or step not in eval_steps:
            return
        start = time.perf_counter()
        with torch.no_grad():
            result.trajectory.append({"step": step, **evaluate(step)})
            if keep is not None and keep(result.trajectory):
                result.kept = {"step": step, "columns": [c.detach().clone() for c in params]}
        result.seconds_eval += time.perf_counter() - start

    was_training = model.training
    model.eval()  # deterministic: no dropout in any run
    run_eval(0)
    for step in range(1, config.steps + 1):
        start = time.perf_counter()
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(step, columns)
        if optimizer is not None:
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
        value = float(loss.detach())
        result.losses.append(value)
        result.seconds_train += time.perf_counter() - start
        if not np.isfinite(value):
            result.trajectory.append({"step": step, "diverged": True, "loss": value})
            break
        run_eval(step)
    model.train(was_training)
    result.max_abs_change_inside_mask = columns.max_change_inside()
    return result
