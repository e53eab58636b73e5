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
measures it (:func:`max_abs_change_outside_mask`) against a snapshot of the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from causalloc.data.collate import collate
from causalloc.errors import SpecError
from causalloc.masks import Mask
from causalloc.models.units import UnitAdapter, adapter_for

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
        self._hooks: list = []
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
            self._hooks.append(module.register_forward_hook(self._hook(slot)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    @contextmanager
    def disabled(self):
        """Compute as the starting model (trainable columns switched off)."""
        previous, self.active = self.active, False
        try:
            yield
        finally:
            self.active = previous

    def merged_state(self) -> dict[str, torch.Tensor]:
        """Value weights with the trained columns written in, keyed by parameter name;
        the model itself is not modified."""
        names = {id(p): n for n, p in self.adapter.model.named_parameters()}
        out = {}
        for slot, layer in enumerate(self.layer_ids):
            weight = self.adapter.value_weight(layer)
            merged = weight.detach().clone()
            view = merged.T if self.adapter.unit_axis == 1 else merged
            view[self._index[slot]] = self.columns[slot].detach().to(merged.dtype)
            out[names[id(weight)]] = merged
        return out

    def merge_into(self, model: nn.Module) -> None:
        """Write the trained columns into ``model`` (a separate copy of the same architecture)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.merged_state().items():
                params[name].copy_(value)

    def max_change_inside(self) -> float:
        with torch.no_grad():
            return max((float((c - b).abs().max()) for c, b in zip(self.columns, self._base)), default=0.0)


class ParameterSnapshot:
    """Exact copy of every parameter of a model, taken once and compared after runs."""

    def __init__(self, model: nn.Module):
        self.values = {n: p.detach().clone() for n, p in model.named_parameters()}


def max_abs_change_outside_mask(
    model: nn.Module, snapshot: ParameterSnapshot, columns: MaskedColumns | None = None
) -> float:
    """max |theta_final - theta_start| over every parameter coordinate outside the mask.

    theta_final is the model as a run leaves it, with its trained columns merged in;
    coordinates inside the mask are excluded. Must be exactly 0.0 for a hard constraint.
    """
    merged = columns.merged_state() if columns is not None else {}
    inside = {}
    if columns is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for slot, layer in enumerate(columns.layer_ids):
            inside[names[id(columns.adapter.value_weight(layer))]] = (columns.adapter.unit_axis, columns._index[slot])
    worst = 0.0
    with torch.no_grad():
        for name, param in model.named_parameters():
            final = merged.get(name, param.detach())
            diff = (final.float() - snapshot.values[name].float()).abs()
            if name in inside:
                axis, index = inside[name]
                keep = torch.ones(diff.shape[axis], dtype=torch.bool, device=diff.device)
                keep[index] = False
                diff = diff[:, keep] if axis == 1 else diff[keep]
            if diff.numel():
                worst = max(worst, float(diff.max()))
    return worst


class BatchStream:
    """Endless stream of collated batches in a seeded order (a new permutation per epoch).

    ``sources`` are parallel lists of encoded examples (e.g. forget questions with their
    answers and the same questions with refusal answers): each step yields one batch per
    source, built from the same indices. Conditions of a matched block use the same seed
    and therefore the same data order. Each source is collated once up front; a batch is
    its rows cut to their longest example, which is exactly what ``collate`` of those
    examples gives, without rebuilding tensors from Python lists every step.
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
        self._collated = [collate(list(src), pad_token_id) for src in sources]
        self._lengths = [torch.tensor([len(e["input_ids"]) for e in src]) for src in sources]

    def __iter__(self) -> Iterator[list[Batch]]:
        while True:
            order = torch.randperm(self.n, generator=self.generator)
            for start in range(0, self.n - self.batch_size + 1, self.batch_size):
                rows = order[start:start + self.batch_size]
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


def to_device(batch: Batch | None, device) -> Batch | None:
    return None if batch is None else {k: v.to(device) for k, v in batch.items()}


def train_masked(
    model: nn.Module,
    columns: MaskedColumns,
    loss_fn: Callable[[int, MaskedColumns], torch.Tensor],
    config: TrainConfig,
    evaluate: Callable[[int], dict] | None = None,
) -> TrainResult:
    """Optimise ``loss_fn(step, columns)`` over the masked columns only.

    ``columns`` must be entered (hooks attached). Gradients are zeroed before ``loss_fn``
    is called, so a ``loss_fn`` may itself call ``backward()`` on earlier micro-batches
    (gradient accumulation): their gradients add to those of the loss it returns.
    ``evaluate(step)`` is called at step 0,
    every ``config.eval_every`` steps and after the last step, with the trained columns
    active; its dicts form the trajectory.
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
