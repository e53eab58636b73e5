"""What the localization methods read from a model: value-module inputs and value-weight
gradients, captured without changing the model.

Hand-written because no library exposes HF value modules in the value-matrix convention of
``causalloc.models.units`` (``[n_units, hidden]``); the hooks are temporary (context
managers), gradients come from ``torch.autograd.grad`` on the value weights only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from causalloc.data.collate import IGNORE_INDEX
from causalloc.models.hooks import Hooks
from causalloc.models.units import UnitAdapter
from causalloc.unlearn.losses import answer_nll

Batch = dict[str, torch.Tensor]


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: positions whose logits predict an answer token (t with labels[t+1] set).

    These are the positions through which a value vector contributes to the answer NLL
    (the last prompt token up to the token before the last answer token).
    """
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return positions


@contextmanager
def inspection_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter requiring grad, restored on exit (flags and mode)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@contextmanager
def captured_value_inputs(adapter: UnitAdapter) -> Iterator[list[torch.Tensor | None]]:
    """Record the input of every value module (``[B, T, n_units]``, detached) at each forward.

    Entry l of the yielded list holds layer l's input of the latest forward pass: unit i of
    it multiplies value vector i. The pre-hooks are removed on exit.
    """
    latest: list[torch.Tensor | None] = [None] * len(adapter.value_modules)

    def recorder(layer: int) -> Callable:
        def hook(module, args):
            latest[layer] = args[0].detach()

        return hook

    with Hooks() as hooks:
        for l, module in enumerate(adapter.value_modules):
            hooks.pre(module, recorder(l))
        yield latest


def forward(model: torch.nn.Module, batch: Batch):
    """The model's output on a batch (labels are scored by the caller, never by HF)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def value_gradients(
    adapter: UnitAdapter,
    batches: Sequence[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = answer_nll,
) -> torch.Tensor:
    """Sum over ``batches`` of d loss / d value weights, float32 ``[n_layers, n_units, hidden]``.

    ``loss_fn(logits, labels)`` defaults to the batch answer NLL. Only the value weights
    require grad during the passes; the model's flags, mode and ``.grad`` fields are
    untouched (``torch.autograd.grad`` returns the gradients instead of accumulating them).
    """
    model = adapter.model
    weights = [adapter.value_weight(l) for l in range(len(adapter.layers))]
    total = torch.zeros(adapter.signature.n_layers, adapter.signature.n_units,
                        adapter.signature.hidden, dtype=torch.float32, device=weights[0].device)
    with inspection_mode(model):
        for w in weights:
            w.requires_grad_(True)
        for batch in batches:
            loss = loss_fn(forward(model, batch).logits, batch["labels"])
            grads = torch.autograd.grad(loss, weights)
            for l, g in enumerate(grads):
                total[l] += (g.T if adapter.unit_axis == 1 else g).float()
    return total


def value_matrices(adapter: UnitAdapter) -> torch.Tensor:
    """All value matrices as one float32 ``[n_layers, n_units, hidden]`` copy."""
    with torch.no_grad():
        return torch.stack([adapter.value_matrix(l).float() for l in range(len(adapter.layers))])
