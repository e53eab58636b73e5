"""Question/answer items and author-level splits shared by the generator and the TOFU loader."""

from __future__ import annotations

from dataclasses import dataclass, field

from causalloc.errors import DataError


@dataclass(frozen=True)
class QAItem:
    """One question/answer pair about one author.

    ``paraphrased_answer`` and ``perturbed_answers`` (wrong answers phrased like the
    paraphrase) feed the truth ratio; they are empty when the source has none.
    """

    question: str
    answer: str
    author: str
    paraphrased_question: str = ""
    paraphrased_answer: str = ""
    perturbed_answers: tuple[str, ...] = ()


@dataclass
class QASplits:
    """Named splits of QA items, split by author (no author appears in two of
    ``forget``, ``retain``, ``holdout``).

    ``refusals`` holds "I don't know"-style sentences for DPO targets; ``extra`` holds
    further evaluation sets (e.g. TOFU ``real_authors``, ``world_facts``).
    """

    forget: list[QAItem]
    retain: list[QAItem]
    holdout: list[QAItem] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    extra: dict[str, list[QAItem]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("forget", "retain"):
            if not getattr(self, name):
                raise DataError(f"{self.source or 'data'}: split '{name}' is empty")

    def split(self, name: str) -> list[QAItem]:
        """Return a split by name (``forget``, ``retain``, ``holdout`` or an ``extra`` key)."""
        if name in ("forget", "retain", "holdout"):
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        known = ["forget", "retain", "holdout", *sorted(self.extra)]
        raise DataError(f"{self.source or 'data'}: unknown split '{name}' (known: {known})")
