"""Learned unit gates: the training loop shared by the pruning localizers ``hard_concrete``
and ``slimming`` (Chang et al. 2024, NAACL, "Do Localization Methods Actually Localize
Memorized Data in LLMs?", who adapt both from network pruning to find memorizing neurons).

A gate ``d[l, i]`` in [0, 1] per value vector is the share of unit i of layer l that is
*dropped*: a forward pre-hook multiplies the input of layer l's value module (the activation
that multiplies value vector i) by ``1 - d[l, i]``, which is the same as scaling the value
vector. Only the gate parameters are trained (plain gradient descent); the model's weights, flags and mode are
untouched. The objective, minimized over the gates only, is

    L(d) = UL_forget(d) + alpha * NLL_retain(d) + lambda * R(d)

- ``UL_forget = -mean_t log(1 - p(y_t | x, y_<t))`` over the forget answer tokens (the
  unlikelihood loss of Welleck et al. 2020): it rewards gates that make the forget answers
  unlikely and is bounded below by 0, unlike ``-NLL``;
- ``NLL_retain``: the answer NLL on retain data, so that gates that would break everything
  (embedding-like, generic units) are not opened;
- ``R``: the sparsity penalty of the method (expected L0 for hard concrete, L1 for slimming),
  as a mean over all units, so lambda does not depend on the model's size.

Batches: step s uses forget batch ``s mod n_forget`` and retain batch ``s mod n_retain`` (in
the order given; deterministic). Hand-written because no library trains unit gates on HF
value modules in the value-matrix convention of ``causalloc.models.units``.

Deviations from MemPi (terarachang/MemPi ``slim.py``, ``hardconcrete.py``), all in the
direction of "which units carry the forget data *and not* the retain data":
- MemPi learns a *keep* mask (init near 1) that preserves the LM loss on the memorized
  sequences with as few neurons as possible, and ranks neurons by the kept value; here the
  gate is a *drop* mask (init near 0) that destroys the forget answers with as few units as
  possible while a retain term keeps the rest of the model working, ranked by the drop value.
  With a keep mask on forget data alone, the units every answer needs (generic units) rank as
  high as the injected ones.
- MemPi trains on the full memorized set in one batch for up to a few thousand epochs with a
  stopping rule on the regularizer; here a fixed number of steps over the given batches.
- MemPi's penalty is summed per layer and averaged over layers; here averaged over all units
  (the same up to a constant when every layer has the same width).
- No start layer: every layer is gated (MemPi can leave the first layers ungated).
- Plain gradient descent instead of MemPi's Adam: Adam divides each gate's step by its own
  gradient scale, so every gate with a consistent gradient sign moves at the same speed and
  the ranking loses the size of the evidence. On the default tiny testbed (target seed 0,
  10% budget) the drop gates reached precision 0.12-0.31 against V_tgt with Adam and about
  0.6 with gradient descent; a keep mask in MemPi's form (forget NLL + L1, Adam) reached
  0.43-0.52. Precision is highest after few steps and falls as more gates open (the forget
  answers are then already gone and generic units are dropped too), hence the short defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from causalloc.attribution.signals import forward, inspection_mode
from causalloc.errors import SpecError
from causalloc.models.units import adapter_for
from causalloc.unlearn.losses import answer_nll, answer_token_log_probs
from causalloc.unlearn.objectives._checks import check_number


def unlikelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-mean_t log(1 - p(y_t | x, y_<t))`` over the batch's answer tokens (scalar, >= 0)."""
    log_probs, mask = answer_token_log_probs(logits, labels)
    # log(1 - exp(lp)) computed stably; clamp keeps lp = 0 (p = 1) finite
    log_one_minus = torch.log(-torch.expm1(log_probs.clamp(max=-1e-6)))
    return -(log_one_minus * mask).sum() / mask.sum()


@contextmanager
def gated_value_inputs(adapter, keep: Callable[[int], torch.Tensor]) -> Iterator[None]:
    """While active, layer l's value-module input is multiplied by ``keep(l)`` (``[n_units]``).

    ``keep`` is called at every forward pass, so a stochastic gate draws anew each time.
    The pre-hooks are removed on exit.
    """
    def gate(layer: int) -> Callable:
        def hook(module, args):
            return (args[0] * keep(layer).to(args[0].dtype),) + tuple(args[1:])

        return hook

    handles = [m.register_forward_pre_hook(gate(l)) for l, m in enumerate(adapter.value_modules)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def check_training(steps, lr, alpha, lam) -> None:
    """Clear SpecErrors for the shared hyperparameters."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SpecError(f"localization: steps must be an integer >= 1, got {steps!r}")
    check_number(lr, "localization: lr", 0, strict=True)
    check_number(alpha, "localization: alpha", 0)
    check_number(lam, "localization: lam", 0)


def train_gates(
    model,
    forget: list[dict],
    retain: list[dict],
    params: torch.Tensor,
    drop: Callable[[torch.Tensor, bool], torch.Tensor],
    penalty: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    lr: float,
    alpha: float,
    lam: float,
    after_step: Callable[[torch.Tensor], None] | None = None,
) -> dict[str, float]:
    """Minimize ``UL_forget + alpha * NLL_retain + lam * penalty(params)`` over ``params``
    by plain gradient descent (``torch.optim.SGD``, no momentum).

    ``params``: a leaf ``[n_layers, n_units]`` float32 tensor on the model's device (changed
    in place); ``drop(params, training)`` gives the drop gates d in [0, 1];
    ``after_step(params)`` may project the parameters (e.g. clamp) after each step.
    Returns the first and last values of the three loss terms.
    """
    adapter = adapter_for(model)
    params.requires_grad_(True)
    optimizer = torch.optim.SGD([params], lr=lr)
    state: dict[str, torch.Tensor] = {}

    def keep(layer: int) -> torch.Tensor:
        return 1.0 - state["drop"][layer]

    record: dict[str, float] = {}
    with inspection_mode(model), gated_value_inputs(adapter, keep):
        for step in range(steps):
            optimizer.zero_grad()
            state["drop"] = drop(params, True)
            batch = forget[step % len(forget)]
            ul = unlikelihood(forward(model, batch).logits, batch["labels"])
            loss = ul
            nll = torch.zeros((), device=params.device)
            if retain and alpha > 0:
                rbatch = retain[step % len(retain)]
                state["drop"] = drop(params, True)
                nll = answer_nll(forward(model, rbatch).logits, rbatch["labels"])
                loss = loss + alpha * nll
            reg = penalty(params)
            loss = loss + lam * reg
            loss.backward()
            optimizer.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(params)
            values = {"unlikelihood": float(ul.detach()), "retain_nll": float(nll.detach()), "penalty": float(reg.detach())}
            if step == 0:
                record.update({f"first_{k}": v for k, v in values.items()})
            record.update({f"last_{k}": v for k, v in values.items()})
    params.requires_grad_(False)
    state.clear()
    return record


def torch_generator(rng: np.random.Generator, device) -> torch.Generator:
    """A torch Generator on ``device`` seeded from the numpy Generator (recorded seed chain)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return generator


def gate_shape(model) -> tuple[int, int, torch.device]:
    """``(n_layers, n_units, device)`` of the value-vector gates of ``model``."""
    signature = adapter_for(model).signature
    return signature.n_layers, signature.n_units, next(model.parameters()).device
