"""Data: QA items and splits, the fictitious-author generator and the TOFU loader.

Tokenization and collation live in :mod:`causalloc.data.collate` (imported on its own
because it needs torch, which ``causalloc.stats`` / ``causalloc.report`` must not load).
"""

from causalloc.data.generator import generate_authors, generated_splits, make_splits
from causalloc.data.tofu import load_tofu, read_json_records
from causalloc.data.types import QAItem, QASplits

__all__ = [
    "QAItem",
    "QASplits",
    "generate_authors",
    "generated_splits",
    "load_tofu",
    "make_splits",
    "read_json_records",
]
