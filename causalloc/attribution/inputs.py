"""What a localization method runs on: theta_o, its tokenizer, the forget / retain split and
their scoring batches, built the same way for ``causalloc localize`` and for the attributed
masks of runs (:mod:`causalloc.runs.worker`), so that both give the same mask.

A split is encoded with :func:`causalloc.data.collate.encode_items` (question + answer, up
to ``max_length`` tokens) and collated in order, :data:`BATCH_SIZE` examples per batch
(:func:`scoring_batches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from causalloc.data.collate import encode_items, eval_batches, pad_id
from causalloc.masks import Mask

#: examples per scoring batch, in runs and in ``causalloc localize``
BATCH_SIZE = 16


def scoring_batches(examples: Sequence[dict], pad: int, batch_size: int = BATCH_SIZE) -> list[dict]:
    """Encoded examples collated in order, ``batch_size`` per batch (the localization input)."""
    return eval_batches(examples, pad, batch_size)


@dataclass
class LocalizationSource:
    """theta_o with its tokenizer and data; ``reference`` is the true region V_tgt when known
    (a testbed), else None; ``info`` says where it all came from (written to localize.json)."""

    model: Any
    tokenizer: Any
    splits: Any
    max_length: int
    reference: Mask | None = None
    info: dict = field(default_factory=dict)

    def batches(self, split: str, batch_size: int = BATCH_SIZE) -> list[dict]:
        """The ``forget`` or ``retain`` split encoded and batched as in runs."""
        examples = encode_items(self.tokenizer, getattr(self.splits, split), self.max_length)
        return scoring_batches(examples, pad_id(self.tokenizer), batch_size)


def testbed_source(config, testbed, device: str | None = None) -> LocalizationSource:
    """theta_o, tokenizer, splits and V_tgt of a built testbed (``config``: its TestbedConfig);
    ``device`` None keeps the testbed's."""
    return LocalizationSource(
        model=testbed.load_model("theta_o", device=device), tokenizer=testbed.tokenizer(),
        splits=testbed.splits, max_length=config.max_length, reference=testbed.v_tgt,
        info={"kind": config.kind, "hash": config.hash(), "path": str(testbed.path),
              "diagnostics": testbed.diagnostics})


def model_dir_source(model_dir: str | Path, tofu_path: str | Path, *, authors: int | None = None,
                     forget_authors: int = 2, max_length: int = 128, dtype: str = "float32",
                     device: str | None = None) -> LocalizationSource:
    """A saved model (HF folder with tokenizer) with the TOFU forget/retain split of
    ``tofu_path`` (``authors`` in all, ``forget_authors`` of them forgotten); no ground truth.
    ``device`` None or ``auto``: CUDA when present."""
    from causalloc.data.tofu import load_tofu
    from causalloc.devices import resolve_device, torch_dtype
    from causalloc.models.loading import load_hf_dir

    splits = load_tofu(tofu_path, authors=authors, n_forget_authors=forget_authors)
    model, tokenizer = load_hf_dir(model_dir, torch_dtype(dtype))
    model = model.to(resolve_device(device or "auto")).requires_grad_(False)
    return LocalizationSource(
        model=model, tokenizer=tokenizer, splits=splits, max_length=max_length, reference=None,
        info={"model_dir": str(model_dir), "tofu_path": str(tofu_path), "authors": authors,
              "forget_authors": forget_authors})
