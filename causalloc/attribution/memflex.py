"""MemFlex localization (Tian et al. 2024, "To Forget or Not? Towards Practical Knowledge
Unlearning for LLMs", KnowUnDo), re-scored per value vector as in the seed paper."""

from __future__ import annotations

import numpy as np
import torch

from causalloc.attribution.base import register_method
from causalloc.attribution.signals import Batch, value_gradients
from causalloc.data.collate import IGNORE_INDEX
from causalloc.errors import SpecError
from causalloc.models.units import adapter_for
from causalloc.unlearn.objectives._checks import check_number


def corrupted_copies(
    batch: Batch, n_copies: int, vocab_size: int, rng: np.random.Generator
) -> list[Batch]:
    """``n_copies`` copies of ``batch`` in which floor(n_answer / 2) answer tokens of every
    row are replaced by uniform random token ids (positions without replacement), in both
    ``input_ids`` and ``labels`` so the copy stays teacher-forced on its own tokens."""
    copies = []
    for _ in range(n_copies):
        input_ids, labels = batch["input_ids"].clone(), batch["labels"].clone()
        for row in range(labels.shape[0]):
            answer = (labels[row] != IGNORE_INDEX).nonzero().flatten().cpu().numpy()
            chosen = rng.choice(answer, size=answer.size // 2, replace=False)
            device = labels.device
            ids = torch.as_tensor(rng.integers(0, vocab_size, size=chosen.size), device=device)
            positions = torch.as_tensor(chosen, device=device)
            input_ids[row, positions] = ids
            labels[row, positions] = ids
        copies.append({**batch, "input_ids": input_ids, "labels": labels})
    return copies


def mean_corrupted_gradient(adapter, batches, n_copies: int, rng) -> torch.Tensor:
    """Mean over all corrupted copies of the answer-NLL gradient of the value weights."""
    vocab_size = int(adapter.model.config.vocab_size)
    copies = [c for b in batches for c in corrupted_copies(b, n_copies, vocab_size, rng)]
    return value_gradients(adapter, copies).double() / len(copies)


@register_method("memflex", needs_retain=True)
def memflex_scores(
    model, forget, retain, rng, *,
    n_copies: int = 3,
    cos_threshold: float = 0.92,
    grad_threshold: float = 6e-4,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Units whose forget gradient is unlike the retain gradient and large enough.

    Gradients ``g_forget``, ``g_retain`` of the answer NLL on ``n_copies`` random-token
    corrupted copies of each example (``corrupted_copies``), averaged over copies and batches.
    Per value vector k (its column of hidden weights):
    ``cos_k = cos(g_forget_k, g_retain_k)`` (0 when either is zero) and
    ``m_k = mean_j |g_forget_kj|``. MemFlex selects k iff ``cos_k < cos_threshold`` and
    ``m_k > grad_threshold`` (0.92 and 6e-4 in the paper, set on LoRA tensors of 7B models).

    The seed paper's per-vector ranking is unpublished; to fill an exact budget we rank by
    ``score = passes_k + s_k / (1 + s_k)`` with ``s_k = m_k * (1 - cos_k)``: every passing
    unit (score in [1, 2)) comes before every other (score in [0, 1)), each group ordered by
    large forget gradient pointing away from the retain gradient.
    Details: ``cosine``, ``forget_grad_mean_abs``, ``passes``.
    """
    if isinstance(n_copies, bool) or not isinstance(n_copies, int) or n_copies < 1:
        raise SpecError(f"localization.memflex.n_copies: must be an integer >= 1, got {n_copies!r}")
    check_number(cos_threshold, "localization.memflex.cos_threshold")
    check_number(grad_threshold, "localization.memflex.grad_threshold")
    adapter = adapter_for(model)
    g_forget = mean_corrupted_gradient(adapter, forget, n_copies, rng)
    g_retain = mean_corrupted_gradient(adapter, retain, n_copies, rng)
    norms = g_forget.norm(dim=2) * g_retain.norm(dim=2)
    dot = (g_forget * g_retain).sum(dim=2)
    tiny = torch.finfo(torch.float64).tiny
    cosine = torch.where(norms > 0, dot / norms.clamp_min(tiny), 0.0)
    magnitude = g_forget.abs().mean(dim=2)
    passes = (cosine < cos_threshold) & (magnitude > grad_threshold)
    s = magnitude * (1.0 - cosine)
    scores = passes.double() + s / (1.0 + s)
    details = {"cosine": cosine.cpu().numpy(), "forget_grad_mean_abs": magnitude.cpu().numpy(),
               "passes": passes.cpu().numpy()}
    return scores.cpu().numpy(), details
