"""Forward passes that compute only the positions the losses and metrics read.

Every unlearning loss and evaluation metric of causalloc reads the logits at the *scored*
positions t only: those whose next token ``labels[:, t + 1]`` is an answer token
(:mod:`causalloc.unlearn.losses`, :mod:`causalloc.metrics`). The MLP blocks and the LM head
are position-wise (each position's output depends on its own input alone), so inside
:func:`scored_positions_only`

- every MLP block runs only on the real tokens (``attention_mask == 1``) up to the row's last
  scored position: no real token attends to a padding position, and under causal
  attention no scored position attends to a later one (e.g. the EOS that ends the answer,
  whose own logits predict nothing), so what those positions hold never reaches them;
- the last layer's MLP block and the LM head run on the scored positions only: nothing
  after them mixes positions.

The logits at the scored positions are those of the full forward pass (the same per-row
arithmetic: bitwise equal on the CPUs we test on, equal to float rounding in general);
elsewhere the logits are 0 and the hidden states are not the model's, so callers that read
hidden states or other positions must not use it. On the default tiny testbed padding is
14% and scored positions 34% of the tokens of a training batch, and a masked NPO step is
1.11 times as fast (``benchmarks/train_step.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from causalloc.data.collate import IGNORE_INDEX
from causalloc.errors import MaskError
from causalloc.models.hooks import Hooks
from causalloc.models.units import UnitAdapter, adapter_for


def scored_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: positions whose logits predict an answer token (``labels[:, t + 1]``)."""
    scored = torch.zeros_like(labels, dtype=torch.bool)
    scored[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return scored


def up_to_last_scored(scored: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: positions at or before each row's last scored position (none in a
    row without any)."""
    index = torch.arange(scored.shape[1], device=scored.device)
    last = torch.where(scored, index, -1).amax(dim=1, keepdim=True)
    return index <= last


@contextmanager
def scored_positions_only(model: nn.Module, batch: dict[str, torch.Tensor],
                          adapter: UnitAdapter | None = None) -> Iterator[None]:
    """Inside, ``model`` run on ``batch`` computes logits at the scored positions only
    (see the module docstring). A model whose family has no unit adapter runs unchanged."""
    if adapter is None:
        try:
            adapter = adapter_for(model)
        except MaskError:
            yield
            return
    device = batch["labels"].device
    scored = scored_positions(batch["labels"])
    live = batch["attention_mask"].to(device).bool() & up_to_last_scored(scored)
    plan = [(module, live) for module in adapter.mlp_modules[:-1]]
    plan += [(module, scored) for module in (adapter.mlp_modules[-1], adapter.output_module) if module is not None]
    with Hooks() as hooks:
        for module, keep in plan:
            _compute_only_at(hooks, module, keep)
        yield


def _compute_only_at(hooks: Hooks, module: nn.Module, keep: torch.Tensor) -> None:
    """Attach to ``hooks`` the hooks making the position-wise ``module`` (input ``[B, T, d]``)
    compute only where ``keep`` is True; its output is 0 elsewhere."""
    rows = keep.flatten().nonzero().squeeze(1)
    shape = keep.shape

    def gather(_module, args):
        x = args[0]
        if x.shape[:-1] != shape:
            raise ValueError(f"scored_positions_only: {type(module).__name__} got input {tuple(x.shape)}, "
                             f"but the batch has shape {tuple(shape)}: the model was called on another batch")
        return (x.reshape(-1, x.shape[-1]).index_select(0, rows).unsqueeze(0), *args[1:])

    def scatter(_module, _args, out):
        flat = out.new_zeros(shape.numel(), out.shape[-1]).index_copy(0, rows, out[0])
        return flat.view(*shape, out.shape[-1])

    hooks.pre(module, gather).forward(module, scatter)
