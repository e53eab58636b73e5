"""TOFU model utility and MU95, the seed paper's second headline metric.

Model utility (Maini et al. 2024, TOFU, Sec. 2.5; as open-unlearning's ``tofu_metrics``
computes it, its ``model_utility`` = ``hm_aggregate``) is the harmonic mean of nine numbers,
three per utility set:

============  ===============================  ====================  ===================
set           probability                      ROUGE                 truth ratio
============  ===============================  ====================  ===================
retain        ``retain_Q_A_Prob``              ``retain_Q_A_ROUGE``  ``retain_Truth_Ratio``
real authors  ``ra_Q_A_Prob_normalised``       ``ra_Q_A_ROUGE``      ``ra_Truth_Ratio``
world facts   ``wf_Q_A_Prob_normalised``       ``wf_Q_A_ROUGE``      ``wf_Truth_Ratio``
============  ===============================  ====================  ===================

with L(a) the mean answer-token NLL of answer a given the question (natural log):

- probability: mean over items of P(a) = exp(-L(a)) (open-unlearning ``probability``); for
  real authors and world facts normalised over the correct answer a and the perturbed
  answers w_j: P(a) / (P(a) + sum_j P(w_j)) (``probability_w_options``);
- ROUGE: mean ROUGE-L recall of the greedy answer against a (``rouge``, ``rougeL_recall``,
  Porter stemmer), from Google's maintained ``rouge-score`` package;
- truth ratio: mean over items of max(0, 1 - 1/R), R = exp(mean_j L(w_j) - L(c)) with c the
  paraphrased answer on retain and the answer itself on the other two sets, which have no
  paraphrase (``truth_ratio`` with ``aggregator: true_better``;
  :attr:`causalloc.metrics.TruthRatio.tofu_utility_score`).

The sets live in ``QASplits.extra`` under :data:`UTILITY_SPLITS` for every testbed kind (TOFU's
``retain_perturbed`` / ``real_authors`` / ``world_facts`` files, or the generator's analogues,
:func:`causalloc.data.generator.utility_sets`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from causalloc.data.collate import IGNORE_INDEX, encode_prompt, encode_qa, pad_id
from causalloc.data.types import QAItem
from causalloc.errors import DataError
from causalloc.metrics import AnswerScorer, TruthRatio, _eval_mode


@dataclass(frozen=True)
class UtilitySet:
    """How TOFU scores one utility set (the open-unlearning metric names use ``prefix``)."""

    prefix: str  # retain, ra, wf
    split: str  # its QASplits.extra key
    normalised: bool  # probability normalised over the correct and the perturbed answers
    paraphrase: bool  # truth ratio against the paraphrased answer (else the answer itself)

    @property
    def names(self) -> tuple[str, str, str]:
        """(probability, ROUGE, truth ratio) component names."""
        probability = f"{self.prefix}_Q_A_Prob" + ("_normalised" if self.normalised else "")
        return probability, f"{self.prefix}_Q_A_ROUGE", f"{self.prefix}_Truth_Ratio"


UTILITY_SETS = (
    UtilitySet("retain", "retain_perturbed", normalised=False, paraphrase=True),
    UtilitySet("ra", "real_authors", normalised=True, paraphrase=False),
    UtilitySet("wf", "world_facts", normalised=True, paraphrase=False),
)
#: the QASplits.extra keys a testbed needs for model utility
UTILITY_SPLITS = tuple(s.split for s in UTILITY_SETS)


@dataclass(frozen=True)
class ModelUtility:
    """The nine TOFU utility numbers (open-unlearning names) and their harmonic mean."""

    components: dict[str, float]

    @property
    def value(self) -> float:
        """Harmonic mean of the components (``scipy.stats.hmean``; 0 if any component is 0)."""
        return float(stats.hmean(list(self.components.values())))


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall of each prediction against its reference: LCS(words) / |reference words|,
    lower-cased, Porter-stemmed (``rouge_score.rouge_scorer``, as open-unlearning and TOFU)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"rouge: {len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([scorer.score(ref, pred)["rougeL"].recall
                     for pred, ref in zip(predictions, references)], dtype=np.float64)


class GreedyAnswerer:
    """Greedy answers to a fixed list of questions, prompts and references tokenised once.

    Prompts are those of :func:`causalloc.data.collate.encode_prompt` (what the model was
    trained on), sorted by reference length and left-padded; ``model.generate`` decodes
    greedily (one beam, no sampling) for at most max(reference tokens in the batch) +
    ``margin`` new tokens and stops a row at EOS. ROUGE-L *recall* does not fall with extra
    generated words, so the bound costs nothing but time.

    ``reproduced`` (optional, one bool per question) marks rows whose teacher-forced argmax
    equals the reference at every answer token (extraction strength 1, from a pass the caller
    made anyway): greedy decoding then emits exactly the reference up to its EOS (the argument
    of :func:`causalloc.metrics.extraction_strength_from_logits`), so those rows are not
    generated but decoded from the reference tokens; rows whose reference was cut before its
    EOS (``max_length``) are always generated.
    """

    def __init__(self, tokenizer, questions: Sequence[str], references: Sequence[str],
                 max_length: int = 128, batch_size: int = 64, margin: int = 8):
        self.tokenizer = tokenizer
        self.pad = pad_id(tokenizer)
        self.batch_size = batch_size
        self._prompts = [encode_prompt(tokenizer, q) for q in questions]
        answers = [[t for t in encode_qa(tokenizer, q, a, max_length)["labels"] if t != IGNORE_INDEX]
                   for q, a in zip(questions, references)]
        self._budgets = [len(ids) + margin for ids in answers]
        eos = tokenizer.eos_token_id
        self._complete = np.array([eos is not None and eos in ids for ids in answers])
        self._reference_text = [tokenizer.decode(ids[:ids.index(eos) + 1] if complete else ids,
                                                 skip_special_tokens=True).strip()
                                for ids, complete in zip(answers, self._complete)]

    def __call__(self, model: torch.nn.Module, reproduced: Sequence[bool] | None = None) -> list[str]:
        from transformers import GenerationConfig

        known = self._complete & np.asarray(reproduced if reproduced is not None else False, dtype=bool)
        answers = [text if k else "" for text, k in zip(self._reference_text, known)]
        rows = [i for i in np.argsort(self._budgets, kind="stable") if not known[i]]
        device = next(model.parameters()).device
        with _eval_mode(model):
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start:start + self.batch_size]
                width = max(len(self._prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, width - len(self._prompts[i]):] = torch.tensor(self._prompts[i])
                    attention[r, width - len(self._prompts[i]):] = 1
                config = GenerationConfig(do_sample=False, num_beams=1,
                                          max_new_tokens=max(self._budgets[i] for i in batch),
                                          pad_token_id=self.pad, eos_token_id=self.tokenizer.eos_token_id)
                out = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                                     generation_config=config)
                texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
                for i, text in zip(batch, texts):
                    answers[i] = text.strip()
        return answers


def _answer_groups(spec: UtilitySet, items: Sequence[QAItem]) -> list[tuple[str, list[str]]]:
    """(question, [answer, paraphrase (retain only), *perturbed]) per item; DataError naming
    the set and item when a needed field is empty."""
    groups = []
    for i, item in enumerate(items):
        if not item.perturbed_answers or (spec.paraphrase and not item.paraphrased_answer):
            need = "a paraphrased_answer and " if spec.paraphrase else ""
            raise DataError(f"model utility: {spec.split} item {i} ({item.question!r}) needs "
                            f"{need}perturbed_answers")
        correct = [item.paraphrased_answer] if spec.paraphrase else []
        groups.append((item.question, [item.answer, *correct, *item.perturbed_answers]))
    return groups


def _set_components(spec: UtilitySet, nll: Sequence[np.ndarray], rouge: np.ndarray) -> dict[str, float]:
    """The set's (probability, ROUGE, truth ratio) from each item's NLLs (see the module
    docstring for the formulas) and the items' ROUGE-L recalls."""
    answer_prob = np.exp(-np.array([values[0] for values in nll]))
    if spec.normalised:
        wrong = np.array([np.exp(-values[1:]).sum() for values in nll])
        answer_prob = answer_prob / (answer_prob + wrong)
    truth = TruthRatio.from_nll([values[1:] if spec.paraphrase else values for values in nll])
    names = spec.names
    return {names[0]: float(answer_prob.mean()), names[1]: float(rouge.mean()),
            names[2]: truth.tofu_utility_score}


class UtilityProbe:
    """TOFU model utility of any model on fixed utility sets, encoded once (score every
    checkpoint of a run with one teacher-forced pass and one greedy generation pass).

    ``sets`` maps each key of :data:`UTILITY_SPLITS` to its items (e.g. ``QASplits.extra``);
    a missing or empty set is a DataError naming it.
    """

    def __init__(self, tokenizer, sets: Mapping[str, Sequence[QAItem]], max_length: int = 128,
                 batch_size: int = 64, margin: int = 8):
        missing = [s.split for s in UTILITY_SETS if not sets.get(s.split)]
        if missing:
            raise DataError(f"model utility: utility set(s) {missing} missing or empty (the "
                            f"testbed data needs extra sets {list(UTILITY_SPLITS)}; rebuild it)")
        self._items = {s.split: list(sets[s.split]) for s in UTILITY_SETS}
        groups = [_answer_groups(s, self._items[s.split]) for s in UTILITY_SETS]
        self._sizes = [len(g) for g in groups]
        flat = [group for set_groups in groups for group in set_groups]
        self._scorer = AnswerScorer(tokenizer, flat, max_length, batch_size)
        items = [item for s in UTILITY_SETS for item in self._items[s.split]]
        self._references = [item.answer for item in items]
        self._answerer = GreedyAnswerer(tokenizer, [item.question for item in items],
                                        self._references, max_length, batch_size, margin)

    def __call__(self, model: torch.nn.Module) -> ModelUtility:
        nll, es = self._scorer.nll_and_es(model)
        reproduced = [values[0] == 1.0 for values in es]  # entry 0 of each group: the answer
        rouge = rouge_l_recall(self._answerer(model, reproduced), self._references)
        components, start = {}, 0
        for spec, size in zip(UTILITY_SETS, self._sizes):
            part = slice(start, start + size)
            components.update(_set_components(spec, nll[part], rouge[part]))
            start += size
        return ModelUtility(components)


def model_utility(model: torch.nn.Module, tokenizer, sets: Mapping[str, Sequence[QAItem]],
                  max_length: int = 128) -> ModelUtility:
    """TOFU model utility of ``model`` on ``sets`` (see :class:`UtilityProbe`)."""
    return UtilityProbe(tokenizer, sets, max_length)(model)


def mu95(log_forget_quality: Sequence[float], utility: Sequence[float], reference_utility: float,
         fraction: float = 0.95) -> tuple[float, int]:
    """MU95: the best log forget quality among checkpoints whose model utility is at least
    ``fraction`` x ``reference_utility`` (theta_o's), and how many checkpoints qualified.

    The seed paper (Lee et al. 2025, Table 2) reports "log forget quality at 95% model
    utility" without a selection rule; this takes the max over qualifying checkpoints of the
    run, as FS@RS95 does for FS (:func:`causalloc.frontier.fs_at_rs`). NaN when no checkpoint
    qualifies (a checkpoint with NaN utility or NaN forget quality never does); never the case
    when the starting model (utility = reference) is among the checkpoints, as in the
    executor's trajectories, where MU95 >= log forget quality of theta_o.
    """
    lfq = np.asarray(log_forget_quality, dtype=np.float64)
    mu = np.asarray(utility, dtype=np.float64)
    if lfq.ndim != 1 or lfq.shape != mu.shape:
        raise ValueError(f"mu95: log_forget_quality and utility must be equal-length 1-D sequences, "
                         f"got shapes {lfq.shape} and {mu.shape}")
    eligible = (mu >= fraction * float(reference_utility)) & ~np.isnan(lfq)
    return (float(lfq[eligible].max()) if eligible.any() else float("nan")), int(eligible.sum())


__all__ = ["UTILITY_SETS", "UTILITY_SPLITS", "GreedyAnswerer", "ModelUtility", "UtilityProbe",
           "UtilitySet", "model_utility", "mu95", "rouge_l_recall"]
