"""Learned unit gates: the training loop shared by the pruning localizers ``hard_concrete``
and ``slimming`` (Chang et al. 2024, NAACL, "Do Localization Methods Actually Localize
Memorized Data in LLMs?", who adapt both from network pruning to find memorizing neurons).

A gate ``d[l, i]`` in [0, 1] per value vector is the share of unit i of layer l that is
*dropped*: a forward pre-hook multiplies the input of layer l's value module (the activation
that multiplies value vector i) by ``1 - d[l, i]``, which is the same as scaling the value
vector. Only the gate parameters are trained (plain gradient descent); the model's weights,
flags and mode are untouched. The objective, minimized over the gates only, is

    L(d) = F_forget(d) + alpha * NLL_retain(d) + lambda * R(d)

- ``F_forget``, the forget term (hyperparameter ``forget_loss``):
  ``"nll"`` (default) ``= -NLL_forget = mean_t log p(y_t | x, y_<t)`` over the forget
  answer tokens: the gates ascend the forget NLL, as gradient-ascent unlearning does;
  ``"unlikelihood"`` ``= -mean_t log(1 - p(y_t | x, y_<t))`` (Welleck et al. 2020), bounded
  below by 0. The first is unbounded, but the layer-normalized steps below move each gate by
  at most about ``lr * steps`` RMS units, so it cannot run away;
- ``NLL_retain``: the answer NLL on retain data, so that gates that would break everything
  (embedding-like, generic units) are not opened;
- ``R``: the sparsity penalty of the method (expected L0 for hard concrete, L1 for slimming),
  as a mean over all units, so lambda does not depend on the model's size.

Layer-normalized steps (``layer_norm=True``, default): the gradient of the data terms
``F_forget + alpha * NLL_retain`` is divided, layer by layer, by its root mean square over
the layer's units, ``g[l, i] / sqrt(mean_j g[l, j]^2)``; the penalty's gradient is added
after. This is the layer-wise L2 normalization of importance scores of Molchanov et al.
(2017, ICLR, "Pruning Convolutional Neural Networks for Resource Efficient Inference",
sec. 2.2), applied to each step (a per-layer step size as in LARS, You et al. 2017). Why:
a unit of layer 0 feeds every later layer, so its raw gradient (and its exact ablation
effect) is 6-11x that of a later-layer unit whether it holds the forget data or not; on
the default tiny testbed the raw gradients put 140-220 of 410 units in layer 0 (V_tgt: 95)
and exact single-unit ablation of the forget NLL, ranked raw, reached only 0.57 precision
(0.72 after a per-layer robust z-score). The normalization presumes nothing about V_tgt's
layer distribution: every layer still gets as many units as its normalized evidence earns.

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
- Plain gradient descent on layer-normalized gradients instead of MemPi's Adam: Adam divides
  each gate's step by its own gradient scale, so every gate with a consistent gradient sign
  moves at the same speed and the ranking loses the size of the evidence (precision 0.12-0.31
  on the default tiny testbed); one scale per layer keeps the evidence's size within a layer.
- The forget term ascends the forget NLL instead of MemPi's preserving it (keep mask).

What was measured (precision against V_tgt at 10%, slimming; testbeds with seed 0, then 1
and 2; seeds 3-8 only checked the chosen defaults, see the README of
``reports/localization_methods``): raw gradients with the unlikelihood term (the previous
defaults) 0.61 / 0.43 / 0.36; layer-normalized with unlikelihood 0.55-0.58 (seed 0);
layer-normalized with ``-NLL`` 0.77 / 0.79 / 0.86; the forget and retain gradients
normalized separately 0.72 / 0.70 / 0.74; normalization by the layer's median absolute
gradient 0.74 / 0.77 / 0.85 and by its mean absolute gradient 0.76 / 0.78 / 0.88 (no better
than RMS); alpha 0 / 0.5 / 2 gave 0.78 / 0.77 / 0.75 on seed 0 (the retain term barely
matters once the forget term ascends the NLL); lam 0 gave the default's 0.77 (the L1 pull
is negligible next to unit-RMS steps) and an L1 pull 400-1200x the default's cost
0.02-0.08. More steps or larger steps lower precision (lr 0.03: 0.71; 50 steps: 0.74): once the forget
answers are gone, further steps open generic units. Slimming without the clamp to [0, 1]
(signed scores): 0.78 / 0.77 / 0.85, no gain; nor for the forget NLL averaged per example
instead of per token (0.77 / 0.80 / 0.85) or the gates averaged over the steps (0.77 / 0.80
/ 0.86); dividing each layer by the RMS of its retain gradient instead lost (0.60-0.69 on
seed 0).
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

#: forget terms of :func:`train_gates` (``forget_loss``)
FORGET_LOSSES = ("nll", "unlikelihood")


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


def check_training(steps, lr, alpha, lam, forget_loss="nll", layer_norm=True) -> None:
    """Clear SpecErrors for the shared hyperparameters."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SpecError(f"localization: steps must be an integer >= 1, got {steps!r}")
    check_number(lr, "localization: lr", 0, strict=True)
    check_number(alpha, "localization: alpha", 0)
    check_number(lam, "localization: lam", 0)
    if forget_loss not in FORGET_LOSSES:
        raise SpecError(f"localization: forget_loss must be one of {list(FORGET_LOSSES)}, "
                        f"got {forget_loss!r}")
    if not isinstance(layer_norm, bool):
        raise SpecError(f"localization: layer_norm must be true or false, got {layer_norm!r}")


def forget_term(logits: torch.Tensor, labels: torch.Tensor, forget_loss: str) -> torch.Tensor:
    """The forget term ``F_forget`` of :func:`train_gates` (to be minimized)."""
    if forget_loss == "nll":
        return -answer_nll(logits, labels)
    return unlikelihood(logits, labels)


def layer_normalized(grad: torch.Tensor) -> torch.Tensor:
    """``grad[l, i] / sqrt(mean_j grad[l, j]^2)``: each layer's gradient at unit RMS (a layer
    whose gradient is all zero stays zero)."""
    rms = grad.pow(2).mean(dim=1, keepdim=True).sqrt()
    return torch.where(rms > 0, grad / rms.clamp_min(torch.finfo(grad.dtype).tiny), grad)


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
    forget_loss: str = "nll",
    layer_norm: bool = True,
    after_step: Callable[[torch.Tensor], None] | None = None,
) -> dict[str, float]:
    """Minimize ``F_forget + alpha * NLL_retain + lam * penalty(params)`` over ``params``
    by plain gradient descent (``torch.optim.SGD``, no momentum), the data terms' gradient
    layer-normalized when ``layer_norm`` (see the module docstring).

    ``params``: a leaf ``[n_layers, n_units]`` float32 tensor on the model's device (changed
    in place); ``drop(params, training)`` gives the drop gates d in [0, 1];
    ``after_step(params)`` may project the parameters (e.g. clamp) after each step.
    Returns the first and last values of the three loss terms (``forget``: F_forget).
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
            data = forget_value = forget_term(forward(model, batch).logits, batch["labels"], forget_loss)
            nll = torch.zeros((), device=params.device)
            if retain and alpha > 0:
                rbatch = retain[step % len(retain)]
                state["drop"] = drop(params, True)
                nll = answer_nll(forward(model, rbatch).logits, rbatch["labels"])
                data = data + alpha * nll
            data.backward()
            if layer_norm:
                params.grad = layer_normalized(params.grad)
            reg = penalty(params)
            (lam * reg).backward()
            optimizer.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(params)
            values = {"forget": float(forget_value.detach()), "retain_nll": float(nll.detach()),
                      "penalty": float(reg.detach())}
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
