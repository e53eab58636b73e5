"""The naive reference executors of ``benchmarks/executor.py``: one masked unlearning run
written the way public unlearning code does it (open-unlearning's trainer and evaluator,
plus the gradient masking of public masked-unlearning code, since open-unlearning has no
parameter masks).

- the model is loaded from disk for every run (a script that runs one experiment per
  invocation); the frozen reference model of NPO / DPO is a deep copy of it, as
  open-unlearning's ``_prepare_ref_model``; the tokenizer and the data are loaded and
  encoded per run too;
- every forward computes full-vocabulary logits at every position, with the labels passed
  so that the model computes its own loss too (as ``model(**inputs)`` in open-unlearning);
  forget and retain batches take separate forwards;
- every parameter takes part in the backward pass; after ``loss.backward()`` each gradient
  is multiplied by a 0/1 mask (ones on the masked value vectors, zeros elsewhere), and the
  optimizer and gradient clipping run over all parameters. This keeps the weights outside
  the mask exactly unchanged only because the weight decay is 0 (the default; any other
  value raises): a zero gradient leaves AdamW's / Adam's moments at 0 and its update at 0,
  and SGD's momentum buffer at 0. Clipping is unaffected (the global norm of the masked
  gradients is the norm over the masked coordinates);
- ES (``es="one_pass"``, the default) comes from one teacher-forced forward per batch as in
  open-unlearning's ``extraction_strength``: full-vocabulary log-softmax, argmax per
  position, then per row a scan for the first answer suffix that the argmaxes reproduce.
  Two differences from open-unlearning, both to keep causalloc's definition (so the two
  paths agree on the metrics): the EOS token ending the answer is scored, and a row none of
  whose suffixes is reproduced gets k* = |y| (ES 0), not |y| - 1. ``es="generate"`` measures
  ES by literal greedy generation from every prefix instead
  (:func:`causalloc.metrics.extraction_strength_by_generation`): the slow second reference;
- runs are executed one at a time.

Everything that decides the numbers is shared with causalloc's executor so that only the
execution strategy differs: the run dict of :mod:`causalloc.runs.design`, the mask
(``causalloc.runs.worker.build_mask``), the objective's loss code, the seeded batch streams
(``BatchStream`` with the training seed for forget and seed + 1 for retain, as
``causalloc.unlearn.runner.unlearn``), the optimizer factory, the clipping norm and the
evaluation schedule (step 0, every ``eval.every`` steps, the last step).
"""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import numpy as np
import torch

from causalloc.data.collate import IGNORE_INDEX, encode_items, eval_batches, pad_id
from causalloc.metrics import aues, extraction_strength_by_generation, fs_at_rs
from causalloc.runs.worker import build_mask, testbed_config
from causalloc.testbed import build_testbed
from causalloc.unlearn import make_objective
from causalloc.unlearn.base import StepContext
from causalloc.unlearn.trainer import OPTIMIZERS, BatchStream, TrainConfig, to_device

_MODEL_KEYS = ("input_ids", "attention_mask")
#: how the naive reference measures ES (see the module docstring)
ES_METHODS = ("one_pass", "generate")


def _load(path):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model.requires_grad_(True)


def gradient_masks(model, mask) -> dict[str, torch.Tensor]:
    """0/1 tensor per parameter: ones on the value vectors of ``mask``, zeros elsewhere."""
    from causalloc.models.units import adapter_for

    adapter = adapter_for(model)
    masks = {name: torch.zeros_like(param) for name, param in model.named_parameters()}
    names = {id(param): name for name, param in model.named_parameters()}
    for layer in mask.layers():
        weight = adapter.value_weight(layer)
        units = torch.tensor(mask.units[layer], dtype=torch.long)
        if adapter.unit_axis == 1:
            masks[names[id(weight)]][:, units] = 1.0
        else:
            masks[names[id(weight)]][units] = 1.0
    return masks


def es_one_pass(model, batch) -> np.ndarray:
    """ES of every row of ``batch`` from one teacher-forced forward with full-vocabulary
    logits (open-unlearning's form, with causalloc's definition: see the module docstring).
    k* is the first k whose suffix of argmax predictions equals the answer suffix y_>=k."""
    labels = batch["labels"]
    output = model(**{k: batch[k] for k in (*_MODEL_KEYS, "labels")})
    predictions = torch.log_softmax(output.logits, dim=-1).argmax(dim=-1)[:, :-1]
    values = []
    for row in range(labels.shape[0]):
        scored = (labels[row, 1:] != IGNORE_INDEX).nonzero().flatten()
        predicted, target = predictions[row, scored], labels[row, 1:][scored]
        n_answer = target.numel()
        k_star = next((k for k in range(n_answer) if torch.equal(predicted[k:], target[k:])), n_answer)
        values.append(1.0 - k_star / n_answer)
    return np.asarray(values)


def mean_es(model, batches, method: str) -> float:
    """Mean ES over ``batches`` (one forward or generation per batch, no gradients)."""
    measure = es_one_pass if method == "one_pass" else extraction_strength_by_generation
    with torch.no_grad():
        return float(np.mean(np.concatenate([measure(model, b) for b in batches])))


def naive_run(run: dict, es: str = "one_pass") -> dict:
    """Execute one resolved run dict the naive way, ES measured by ``es`` (one of
    ``ES_METHODS``); returns metrics, trajectory, timings."""
    if es not in ES_METHODS:
        raise ValueError(f"es: unknown {es!r} (known: {ES_METHODS})")
    if run["train"].get("weight_decay", 0.0):
        raise ValueError("the naive reference masks gradients, which keeps the weights outside the "
                         "mask fixed only without weight decay; got train.weight_decay="
                         f"{run['train']['weight_decay']!r}")
    start = time.perf_counter()
    testbed = build_testbed(testbed_config(run["testbed"]))  # cached: reads the folder
    tokenizer_path = testbed.path / "tokenizer"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    pad = pad_id(tokenizer)
    max_length = testbed.config.max_length
    forget = encode_items(tokenizer, testbed.splits.forget, max_length)
    retain = encode_items(tokenizer, testbed.splits.retain, max_length)
    forget_eval, retain_eval = eval_batches(forget, pad), eval_batches(retain, pad)
    model = _load(testbed.path / "theta_o")
    objective = make_objective(run["objective"]["name"], **run["objective"]["hyper"])
    reference = copy.deepcopy(model).requires_grad_(False) if objective.needs_reference else None
    if objective.needs_refusals:
        raise NotImplementedError("the naive reference covers objectives without refusal targets")
    initial = {name: param.detach().clone() for name, param in model.named_parameters()}
    mask = build_mask(run["mask"], run["budget"], SimpleNamespace(signature=testbed.v_tgt.signature,
                                                                  testbed=testbed, model=model))
    grad_masks = gradient_masks(model, mask)
    config = TrainConfig(**run["train"], eval_every=int(run["eval"]["every"]))
    params = list(model.parameters())
    optimizer = OPTIMIZERS[config.optimizer](params, config)
    forget_stream = iter(BatchStream([forget], config.batch_size, pad, config.seed))
    retain_stream = iter(BatchStream([retain], config.batch_size, pad, config.seed + 1))
    objective.prepare(model.config, torch.Generator().manual_seed(int(config.seed)))
    device = next(model.parameters()).device
    eval_steps = {0, config.steps}
    if config.eval_every:
        eval_steps |= set(range(config.eval_every, config.steps, config.eval_every))
    setup_seconds = time.perf_counter() - start

    def forward(net, no_grad=False):
        def call(batch, **kw):
            with torch.set_grad_enabled(not no_grad):
                return net(**{k: batch[k].to(device) for k in (*_MODEL_KEYS, "labels")}, **kw)
        return call

    trajectory, train_seconds, eval_seconds, diverged = [], 0.0, 0.0, False

    def evaluate(step):
        nonlocal eval_seconds
        begin = time.perf_counter()
        trajectory.append({"step": step, "rs": mean_es(model, retain_eval, es),
                           "fs": 1.0 - mean_es(model, forget_eval, es)})
        eval_seconds += time.perf_counter() - begin

    evaluate(0)
    for step in range(1, config.steps + 1):
        begin = time.perf_counter()
        (forget_batch,), (retain_batch,) = next(forget_stream), next(retain_stream)
        ctx = StepContext(forget=to_device(forget_batch, device), retain=to_device(retain_batch, device),
                          refusal=None, model=forward(model), step=step,
                          reference=forward(reference, no_grad=True) if reference is not None else None)
        loss = objective.loss(ctx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                param.grad.mul_(grad_masks[name])
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        train_seconds += time.perf_counter() - begin
        if not np.isfinite(value):
            diverged = True
            break
        if step in eval_steps:
            evaluate(step)
    rs, fs = [p["rs"] for p in trajectory], [p["fs"] for p in trajectory]
    fs_final, rs_final = (float("nan"), float("nan")) if diverged else (fs[-1], rs[-1])
    metrics = {"aues": aues(rs, fs), "fs_at_rs95": fs_at_rs(rs, fs, rs[0], 0.95),
               "fs_final": fs_final, "rs_final": rs_final,
               "es_forget_final": 1.0 - fs_final, "es_retain_final": rs_final}
    return {
        "metrics": metrics,
        "trajectory": trajectory,
        "max_abs_change_outside_mask": _max_change_outside(model, initial, grad_masks),
        "diverged": diverged,
        "timings": {"setup": setup_seconds, "train": train_seconds, "eval": eval_seconds},
    }


def _max_change_outside(model, initial: dict, grad_masks: dict) -> float:
    """max |theta_final - theta_start| where the gradient mask is 0 (a record, not timed)."""
    with torch.no_grad():
        return max(float(((param - initial[name]).abs() * (1 - grad_masks[name])).max())
                   for name, param in model.named_parameters())
