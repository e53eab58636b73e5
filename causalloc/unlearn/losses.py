"""Answer-token log-probabilities and NLLs under the batch convention of ``causalloc.data.collate``.

Labels are *not* shifted and -100 marks prompt and padding: the logits at position t - 1
predict ``labels[:, t]``. Every helper shifts once, here, so that objectives, metrics and
attribution agree on which token is scored by which logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from causalloc.data.collate import IGNORE_INDEX
from causalloc.errors import DataError


def answer_token_log_probs(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``log p(y_t | x, y_<t)`` and the answer-token mask, both ``[B, T - 1]``.

    Entries outside the answer (label -100) hold 0 in the log-probabilities and False in
    the mask. Computed in float32 whatever the model dtype (bf16 log-softmax is too coarse).
    Raises DataError when a row has no answer token.
    """
    if logits.shape[:2] != labels.shape:
        raise DataError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise DataError(f"batch row(s) {empty.tolist()} have no answer tokens (labels all -100)")
    shifted = logits[:, :-1].float()
    token_ce = F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    return -token_ce, mask


def answer_token_probs(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``p(y_t | x, y_<t)`` (0 outside the answer) and the answer mask, ``[B, T - 1]``."""
    log_probs, mask = answer_token_log_probs(logits, labels)
    return log_probs.exp() * mask, mask


def sequence_log_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log p(y | x) = sum_t log p(y_t | x, y_<t)`` over each row's answer tokens, ``[B]``
    (the sequence log-likelihood of NPO and DPO)."""
    log_probs, _ = answer_token_log_probs(logits, labels)
    return log_probs.sum(dim=1)


def per_example_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean answer-token cross-entropy of each row, ``[B]`` (the truth ratio of causalloc.metrics)."""
    log_probs, mask = answer_token_log_probs(logits, labels)
    return -log_probs.sum(dim=1) / mask.sum(dim=1)


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch NLL: mean cross-entropy over all answer tokens of the batch (scalar).

    Pooled over tokens, as ``transformers`` computes ``outputs.loss``, so long answers weigh
    more than short ones; this is the NLL of GA, GradDiff and the retain terms.
    """
    log_probs, mask = answer_token_log_probs(logits, labels)
    return -log_probs.sum() / mask.sum()


def preference_loss(margin: torch.Tensor, beta: float) -> torch.Tensor:
    """``-(2 / beta) * mean log sigmoid(beta * margin)``, the DPO loss scaled as in NPO.

    NPO (Zhang et al. 2024, eq. 3) is the case ``margin = -r(y_forget)``; DPO with refusals
    uses ``margin = r(y_refusal) - r(y_forget)``, where ``r = log p_theta - log p_ref``.
    ``logsigmoid`` keeps it finite for large margins.
    """
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def model_nll(forward, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`answer_nll` of ``forward(batch)`` (``ctx.model`` or ``ctx.reference``)."""
    return answer_nll(forward(batch).logits, batch["labels"])
