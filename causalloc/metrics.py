"""Unlearning metrics: extraction strength, forget/retain trajectories (scored by AUES and
FS@RS95, defined in the torch-free :mod:`causalloc.frontier`), TOFU truth ratio and forget
quality, and the relearning attack.

Every function works on the batch convention of :mod:`causalloc.data.collate`
(``input_ids``, ``attention_mask``, ``labels`` right-padded; ``labels`` unshifted, -100 off
the answer). Definitions: docs/metrics.md (with their sources); notation of the seed paper
(Lee et al. 2025): FS = 1 - ES(forget), RS = ES(retain).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from causalloc.data.collate import IGNORE_INDEX, encode_qa, eval_batches, pad_id
from causalloc.data.types import QAItem
from causalloc.errors import DataError
from causalloc.frontier import aues, checked_scores, fs_at_rs
from causalloc.models.positions import scored_positions_only
from causalloc.unlearn.losses import per_example_nll

Batch = Mapping[str, torch.Tensor]
_MODEL_KEYS = ("input_ids", "attention_mask")


# helpers --------------------------------------------------------------------------------
def _as_batch_list(batches: Batch | Iterable[Batch]) -> list[Batch]:
    """A single batch dict or an iterable of them, as a list."""
    return [batches] if isinstance(batches, Mapping) else list(batches)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _eval_mode(model: torch.nn.Module):
    """Evaluation mode without gradients; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _forward_logits(model: torch.nn.Module, batch: Batch, prefix_cache=None,
                    prefix: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``model`` on ``batch`` and the batch's labels, both on the model's device.

    Logits are computed at the scored positions only (0 elsewhere,
    :func:`causalloc.models.positions.scored_positions_only`): ES and answer NLLs read nothing
    else. With ``prefix_cache`` (the cache after the ``prefix`` tokens every row starts with)
    only the tokens after the prefix run, and logits and labels are those positions'."""
    device = _device(model)
    batch = {k: batch[k].to(device) for k in (*_MODEL_KEYS, "labels")}
    if prefix_cache is None:
        with scored_positions_only(model, batch):
            logits = model(**{k: batch[k] for k in _MODEL_KEYS}).logits
        return logits, batch["labels"]
    rows = copy.deepcopy(prefix_cache)
    rows.batch_repeat_interleave(batch["input_ids"].shape[0])
    suffix = {k: v[:, prefix:] for k, v in batch.items()}
    with scored_positions_only(model, suffix):
        logits = model(input_ids=suffix["input_ids"], attention_mask=batch["attention_mask"],
                       **{_cache_keyword(model): rows}).logits
    return logits, suffix["labels"]


def _answer_rows(labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, T-1]``: which shifted target positions are answer tokens; raises when a
    row has none (ES and the NLL are undefined for an empty answer)."""
    answer = labels[:, 1:] != IGNORE_INDEX
    empty = (~answer.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"batch rows {empty} have no answer tokens (all labels are -100)")
    return answer


# extraction strength --------------------------------------------------------------------
def extraction_strength_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Extraction strength per row from one teacher-forced pass: ``[B, T, V], [B, T] -> [B]``.

    ES(x, y) = 1 - k*/|y| (Wang et al. 2025, ICLR, "Towards effective evaluations and
    comparisons for LLM unlearning methods"; the seed paper's FS/RS are built on it), with
    k* the smallest answer-prefix length k such that greedy decoding from [x, y_<k]
    reproduces y_>=k exactly. Greedy decoding appends argmax p(. | x, y_<j) at each step
    j >= k; as long as every appended token equals y_j, the context at step j + 1 is exactly
    the teacher-forced context [x, y_<=j], so the generation reproduces the suffix iff the
    teacher-forced argmax is correct at every answer position j >= k (the first error makes
    the output differ at that token, whatever follows). Hence one forward pass gives
    k* = 1 + (index of the last answer position whose argmax is wrong), or 0 if none:
    ES = 1 when the question alone yields the answer, 0 when even y_<|y| fails on the last
    token. Answer tokens must be contiguous (as ``collate`` makes them); argmax ties go to
    the lowest token id, as in ``torch.argmax`` greedy decoding.
    """
    answer = _answer_rows(labels)
    targets = labels[:, 1:]
    wrong = answer & (logits[:, :-1].argmax(dim=-1) != targets)
    position_in_answer = answer.long().cumsum(dim=1)  # 1-based index of each answer token
    k_star = (wrong.long() * position_in_answer).amax(dim=1)
    return 1.0 - k_star.double() / answer.sum(dim=1).double()


def extraction_strength(model: torch.nn.Module, batches: Batch | Iterable[Batch],
                        share_prefix: bool = True) -> np.ndarray:
    """ES of every row of ``batches`` (one batch or an iterable), in eval mode without grad.

    With ``share_prefix`` the token prefix that every row starts with (a chat template's
    system prompt: 24 of SmolLM2's 79 tokens per TOFU item on average) is run once, and each
    batch runs only its rows' remaining tokens on a copy of the prefix's key/value cache
    (:func:`shared_prefix_length`). Under causal attention the prefix's states do not depend
    on what follows, so the logits are those of the full pass (bitwise equal on the tiny
    testbed's CPU kernels, equal to float rounding in general: tested); ``False`` runs every
    row whole, and so does a model that keeps no key/value cache.
    """
    batches = [{k: b[k] for k in (*_MODEL_KEYS, "labels")} for b in _as_batch_list(batches)]
    with _eval_mode(model):
        prefix = shared_prefix_length(batches) if share_prefix and _caches_keys_and_values(model) else 0
        cache = _prefix_cache(model, batches[0]["input_ids"][0, :prefix]) if prefix else None
        values = [extraction_strength_from_logits(*_forward_logits(model, b, cache, prefix)).cpu()
                  for b in batches]
    return torch.cat(values).numpy()


def extraction_strength_per_item(model: torch.nn.Module, order: torch.Tensor,
                                 batches: Sequence[Batch]) -> np.ndarray:
    """ES of every example in its own order, from the batches of
    :func:`causalloc.data.collate.length_sorted_batches` (``order``, ``batches``)."""
    values = np.empty(len(order))
    values[order.numpy()] = extraction_strength(model, batches)
    return values


#: shorter shared prefixes are run with their rows (a cache copy per batch costs more)
MIN_SHARED_PREFIX = 2


def shared_prefix_length(batches: Sequence[Batch]) -> int:
    """Length of the token prefix that every row of ``batches`` starts with, cut before the
    earliest scored position (the logits read must lie after the prefix); 0 when it is shorter
    than :data:`MIN_SHARED_PREFIX`."""
    first = batches[0]["input_ids"][0]
    length = min(int(_first_scored(b["labels"]).min()) for b in batches)
    for batch in batches:
        agree = (batch["input_ids"][:, :length] == first[:length]).all(dim=0)
        if not bool(agree.all()):
            length = int((~agree).int().argmax())
    return length if length >= MIN_SHARED_PREFIX else 0


def _first_scored(labels: torch.Tensor) -> torch.Tensor:
    """Per row, the first position whose logits predict an answer token (``[B]``)."""
    answer = _answer_rows(labels)
    return answer.int().argmax(dim=1)


def _prefix_cache(model: torch.nn.Module, prefix_ids: torch.Tensor):
    """The key/value cache of ``model`` after the one row ``prefix_ids``."""
    output = model(input_ids=prefix_ids[None].to(_device(model)), use_cache=True)
    return output["cache"] if "cache" in output else output["past_key_values"]


def _caches_keys_and_values(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a transformers model that can generate (so it takes and returns a
    key/value cache); other modules (test doubles, custom heads) run whole rows."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel) and model.can_generate()


def _cache_keyword(model: torch.nn.Module) -> str:
    """The forward's cache argument: ``cache`` in recent transformers (``past_key_values``,
    its earlier name, is deprecated there), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def extraction_strength_by_generation(model, batch: Batch) -> np.ndarray:
    """Reference ES by literal greedy generation (slow; used to validate the one-pass form).

    For each row, scanning prefix lengths k = 0, 1, ..., |y| from the shortest, run
    ``model.generate`` greedily (``do_sample=False``, one beam) on the unpadded [x, y_<k] for
    |y| - k new tokens and stop at the first k whose output equals y_>=k exactly (k = |y| always
    does: the suffix is empty). EOS does not stop generation (``eos_token_id=None``): ES
    compares token sequences, and ``encode_qa`` puts EOS inside y as its last token.
    """
    labels = batch["labels"]
    answer = _answer_rows(labels)
    result = []
    with _eval_mode(model):
        device = _device(model)
        for row in range(labels.shape[0]):
            positions = answer[row].nonzero().flatten() + 1  # unshifted answer positions
            start, n_answer = int(positions[0]), positions.numel()
            if int(positions[-1]) - start + 1 != n_answer:
                raise ValueError(f"batch row {row}: answer tokens are not contiguous")
            sequence = batch["input_ids"][row, : start + n_answer].to(device)
            target = labels[row, start : start + n_answer].to(device)
            k_star = n_answer
            for k in range(n_answer):
                prefix = sequence[: start + k].unsqueeze(0)
                generated = model.generate(
                    input_ids=prefix, attention_mask=torch.ones_like(prefix),
                    max_new_tokens=n_answer - k, do_sample=False, num_beams=1,
                    repetition_penalty=1.0, pad_token_id=0, eos_token_id=None,
                )[0, prefix.shape[1]:]
                if torch.equal(generated, target[k:]):
                    k_star = k
                    break
            result.append(1.0 - k_star / n_answer)
    return np.asarray(result, dtype=np.float64)


# forget / retain trajectories -------------------------------------------------------------
def rs_fs(model: torch.nn.Module, forget_batches: Batch | Iterable[Batch],
          retain_batches: Batch | Iterable[Batch]) -> tuple[float, float]:
    """(RS, FS) = (mean ES on retain, 1 - mean ES on forget) of the model as it is now."""
    rs = float(extraction_strength(model, retain_batches).mean())
    fs = 1.0 - float(extraction_strength(model, forget_batches).mean())
    return rs, fs


@dataclass
class Trajectory:
    """(step, RS, FS) at evaluation steps of one unlearning run; entry 0 is the starting model.

    Serialises to the ``trajectory`` column of runs.csv: a list of ``{"step", "rs", "fs"}``.
    """

    steps: list[int] = field(default_factory=list)
    rs: list[float] = field(default_factory=list)
    fs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not len(self.steps) == len(self.rs) == len(self.fs):
            raise ValueError(f"trajectory: steps, rs, fs have lengths {len(self.steps)}, "
                             f"{len(self.rs)}, {len(self.fs)}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"trajectory: steps must increase strictly, got {self.steps}")
        if self.steps:
            checked_scores(self.rs, self.fs)

    def add(self, step: int, rs: float, fs: float) -> None:
        """Append one evaluation (steps must increase; RS and FS in [0, 1])."""
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"trajectory: step {step} does not follow step {self.steps[-1]}")
        checked_scores([rs], [fs])
        self.steps.append(int(step))
        self.rs.append(float(rs))
        self.fs.append(float(fs))

    def evaluate(self, step: int, model: torch.nn.Module, forget_batches, retain_batches) -> None:
        """Measure (RS, FS) of ``model`` now (see :func:`rs_fs`) and append it at ``step``."""
        self.add(step, *rs_fs(model, forget_batches, retain_batches))

    def aues(self) -> float:
        return aues(self.rs, self.fs)

    def fs_at_rs(self, fraction: float = 0.95) -> float:
        """FS@RS95 relative to the first entry's RS (the starting model)."""
        if not self.steps:
            raise ValueError("trajectory is empty")
        return fs_at_rs(self.rs, self.fs, self.rs[0], fraction)

    def to_records(self) -> list[dict]:
        return [{"step": s, "rs": r, "fs": f} for s, r, f in zip(self.steps, self.rs, self.fs)]

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> Trajectory:
        records = list(records)
        for i, rec in enumerate(records):
            missing = {"step", "rs", "fs"} - set(rec)
            if missing:
                raise ValueError(f"trajectory record {i} lacks keys {sorted(missing)}")
        return cls([int(r["step"]) for r in records], [float(r["rs"]) for r in records],
                   [float(r["fs"]) for r in records])


# TOFU truth ratio and forget quality -----------------------------------------------------------
@dataclass(frozen=True)
class TruthRatio:
    """Per-item TOFU truth ratios and the losses behind them (arrays of length n_items).

    ``ratio`` is R = exp(mean_j L_perturbed_j - L_paraphrased) with L the mean token NLL of
    an answer given the original question (Maini et al. 2024, TOFU; the quantity its
    released code feeds to the forget-quality KS test). R > 1 means the model prefers the
    correct paraphrase to the perturbed wrong answers. The TOFU paper writes the inverse,
    R_truth = 1 / R, and reports two summaries of it, given here as properties.
    """

    ratio: np.ndarray
    paraphrased_nll: np.ndarray  # the correct answer's (the answer itself where no paraphrase)
    perturbed_nll: np.ndarray  # mean over the item's perturbed answers

    @property
    def tofu_forget_score(self) -> float:
        """TOFU's "Truth Ratio" reported on the forget set: mean(min(R, 1/R))."""
        return float(np.mean(np.minimum(self.ratio, 1.0 / self.ratio)))

    @property
    def tofu_utility_score(self) -> float:
        """TOFU's "Truth Ratio" in model utility (retain, real authors, world facts):
        mean(max(0, 1 - R_truth)) = mean(max(0, 1 - 1/R))."""
        return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / self.ratio)))


    @classmethod
    def from_nll(cls, grouped_nll: Sequence[np.ndarray]) -> TruthRatio:
        """Truth ratios from each item's answer NLLs: entry 0 is the correct answer's (the
        paraphrase for TOFU's author sets, the answer itself for real authors and world facts),
        the rest are the perturbed answers'."""
        for i, values in enumerate(grouped_nll):
            if len(values) < 2:
                raise DataError(f"truth ratio: item {i} has no perturbed answer")
        correct = np.array([values[0] for values in grouped_nll], dtype=np.float64)
        perturbed = np.array([np.mean(values[1:]) for values in grouped_nll], dtype=np.float64)
        return cls(np.exp(perturbed - correct), correct, perturbed)


class AnswerScorer:
    """Mean token NLL of several answers per question, encoded and batched once.

    ``groups`` = [(question, [answer_0, answer_1, ...]), ...]; :meth:`nll` returns one array
    per group, in the given answer order (:meth:`nll_and_es` also the extraction strength of
    every answer, from the same pass). Sequences are sorted by length before batching (less
    padding), so scoring the same model many times (every checkpoint of a run) costs forward
    passes only.
    """

    def __init__(self, tokenizer, groups: Sequence[tuple[str, Sequence[str]]],
                 max_length: int = 128, batch_size: int = 64):
        examples, owners = [], []
        for i, (question, answers) in enumerate(groups):
            for answer in answers:
                examples.append(encode_qa(tokenizer, question, answer, max_length))
                owners.append(i)
        if not examples:
            raise DataError("answer scorer: no answers to score")
        self._order = np.argsort([len(e["input_ids"]) for e in examples], kind="stable")
        self._batches = eval_batches([examples[i] for i in self._order], pad_id(tokenizer), batch_size)
        self._bounds = np.cumsum([len(answers) for _, answers in groups])[:-1]

    def nll(self, model: torch.nn.Module) -> list[np.ndarray]:
        """Mean answer-token NLL (natural log) of every answer under ``model``, per group."""
        return self.nll_and_es(model)[0]

    def nll_and_es(self, model: torch.nn.Module) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Mean answer-token NLL and extraction strength (:func:`extraction_strength_from_logits`)
        of every answer under ``model``, per group, from one teacher-forced pass."""
        nll, es = [], []
        with _eval_mode(model):
            for batch in self._batches:
                logits, labels = _forward_logits(model, batch)
                nll.append(per_example_nll(logits, labels).cpu().double())
                es.append(extraction_strength_from_logits(logits, labels).cpu())
        return self._per_group(torch.cat(nll)), self._per_group(torch.cat(es))

    def _per_group(self, values: torch.Tensor) -> list[np.ndarray]:
        """Values in batch order -> one array per group, in the given answer order."""
        out = np.empty(len(values), dtype=np.float64)
        out[self._order] = values.numpy()
        return np.split(out, self._bounds)


def truth_ratio_groups(items: Sequence[QAItem]) -> list[tuple[str, list[str]]]:
    """(question, [paraphrased answer, *perturbed answers]) per item, the groups of TOFU's
    forget-set truth ratio; DataError naming the item when one lacks them."""
    groups = []
    for i, item in enumerate(items):
        if not item.paraphrased_answer or not item.perturbed_answers:
            raise DataError(f"truth ratio: item {i} ({item.author!r}: {item.question!r}) lacks a "
                            f"paraphrased_answer or perturbed_answers")
        groups.append((item.question, [item.paraphrased_answer, *item.perturbed_answers]))
    if not groups:
        raise DataError("truth ratio: no items")
    return groups


def truth_ratio(model: torch.nn.Module, tokenizer, items: Sequence[QAItem],
                batch_size: int = 16, max_length: int = 128) -> TruthRatio:
    """TOFU truth ratio of every item (see :class:`TruthRatio`); needs each item's
    ``paraphrased_answer`` and ``perturbed_answers`` (DataError naming the item otherwise)."""
    scorer = AnswerScorer(tokenizer, truth_ratio_groups(items), max_length, batch_size)
    return TruthRatio.from_nll(scorer.nll(model))


def forget_quality(tr_unlearned: TruthRatio | Sequence[float],
                   tr_reference: TruthRatio | Sequence[float]) -> tuple[float, float]:
    """TOFU forget quality: (p, ln p) of the two-sample Kolmogorov-Smirnov test
    (``scipy.stats.ks_2samp``, two-sided, exact when small) between the forget-set truth
    ratios of the unlearned model and of theta_r, the model that never saw the forget set.

    High p = indistinguishable from never having learned. The log is natural (base e; the
    seed paper's "log forget quality" does not state a base: divide by ln 10 for log10);
    p = 0 gives -inf.
    """
    samples = []
    for name, values in (("tr_unlearned", tr_unlearned), ("tr_reference", tr_reference)):
        values = np.asarray(values.ratio if isinstance(values, TruthRatio) else values, float)
        if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
            raise ValueError(f"forget quality: {name} must be a non-empty 1-D finite sequence")
        samples.append(values)
    p = float(stats.ks_2samp(*samples).pvalue)
    return p, float(np.log(p)) if p > 0 else float("-inf")


# relearning attack ------------------------------------------------------------------------
@dataclass(frozen=True)
class RelearnResult:
    """Outcome of :func:`relearning_attack`: ``es`` = mean ES on the held-out forget part
    after the attack, ``es_per_example`` its rows, ``curve`` = [(step, mean ES)] from step 0."""

    es: float
    es_per_example: np.ndarray
    curve: list[tuple[int, float]]
    seed: int


def relearning_attack(model: torch.nn.Module, forget_train_batches: Iterable[Batch],
                      forget_eval_batches: Batch | Iterable[Batch], steps: int, lr: float,
                      seed: int, weight_decay: float = 0.01,
                      eval_every: int | None = None, in_place: bool = False) -> RelearnResult:
    """Fine-tune ``model`` (a deep copy of it) on part of the forget set; return ES on the rest.

    A resurfacing test (Lacuna, Boglioni et al. 2026): knowledge that unlearning only hid
    comes back after a few steps. All parameters are trained with AdamW (``lr``,
    ``weight_decay``) on the mean answer NLL for ``steps`` steps, cycling through
    ``forget_train_batches`` in an order reshuffled every pass by a ``torch.Generator``
    seeded with ``seed`` (dropout, if any, draws from a forked RNG seeded the same way).
    ES on ``forget_eval_batches`` is measured at step 0, every ``eval_every`` steps and at
    the end (``eval_every=None``: start and end only). By default ``model`` itself is never
    modified. ``in_place=True`` trains ``model`` itself instead of a copy (no second copy of
    the weights in memory): its ``requires_grad`` flags and train/eval mode are put back
    afterwards, its weights are not; the caller restores them (e.g. with
    :meth:`causalloc.unlearn.ParameterSnapshot.restored_after`).
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"relearning attack: need steps >= 0 and lr > 0, got {steps}, {lr}")
    train_batches = _as_batch_list(forget_train_batches)
    eval_batches = _as_batch_list(forget_eval_batches)
    if not train_batches or not eval_batches:
        raise ValueError("relearning attack: forget_train_batches and forget_eval_batches "
                         "must be non-empty")
    attacked = model if in_place else copy.deepcopy(model)
    flags, training = [p.requires_grad for p in attacked.parameters()], attacked.training
    try:
        return _relearn(attacked, train_batches, eval_batches, steps, lr, seed, weight_decay, eval_every)
    finally:
        for param, flag in zip(attacked.parameters(), flags):
            param.requires_grad_(flag)
        attacked.train(training)


def _relearn(attacked, train_batches, eval_batches, steps, lr, seed, weight_decay,
             eval_every) -> RelearnResult:
    """The training loop of :func:`relearning_attack` on ``attacked`` (modified)."""
    attacked.requires_grad_(True)
    device = _device(attacked)
    optimizer = torch.optim.AdamW(attacked.parameters(), lr=lr, weight_decay=weight_decay)
    order_generator = torch.Generator().manual_seed(seed)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []

    curve = [(0, float(extraction_strength(attacked, eval_batches).mean()))]
    order: list[int] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        attacked.train()
        for step in range(1, steps + 1):
            if not order:
                order = torch.randperm(len(train_batches), generator=order_generator).tolist()
            batch = train_batches[order.pop(0)]
            loss = attacked(**{k: batch[k].to(device) for k in (*_MODEL_KEYS, "labels")}).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if eval_every and step % eval_every == 0 and step != steps:
                curve.append((step, float(extraction_strength(attacked, eval_batches).mean())))
    optimizer.zero_grad(set_to_none=True)
    final = extraction_strength(attacked, eval_batches)
    if steps:
        curve.append((steps, float(final.mean())))
    return RelearnResult(float(final.mean()), final, curve, seed)
