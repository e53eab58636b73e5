"""The words every layer of causalloc shares: condition kinds and their ``kind:arg`` grammar,
the facts of each metric, and the text of a cell.

The spec (:mod:`causalloc.runs.spec`), statistics (:mod:`causalloc.stats`), report
(:mod:`causalloc.report`), importers and audit read these facts from here and nowhere else.
Torch-free and pandas-free, so that every layer can import it.

Conditions
    A condition's strategy (and, by default, its name) is ``kind`` or ``kind:argument``:
    ``oracle``, ``random``, ``attributed:<method>``, ``disjoint:<condition>``,
    ``layer_matched:<condition>``, ``overlap:<fraction>``, ``given:<mask file>``.
    :func:`split_condition` is the one place that splits the text; :func:`parse_strategy`
    checks a spec's strategy, :func:`condition_kinds` reads the kinds of a run table's
    conditions (from design.json, else from their names).

Metrics
    :data:`METRICS` holds one :class:`Metric` per outcome: its label, direction, default
    SESOI, range and scale. A name may be a pattern with ``{field}`` parts (e.g.
    ``relearn_recovery_s{steps}_lr{lr}``) that stands for a family of columns; :func:`metric`
    resolves a column name against exact names first, then patterns. To add a metric, add
    one entry.

Cells
    :func:`cell_label` is the text of a cell (the block columns other than the replicate).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any


# conditions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConditionKind:
    """A mask strategy.

    ``argument``: what follows ``kind:`` in words (None: the kind takes no argument);
    ``random``: its mask is drawn at random (K draws per block);
    ``references``: the argument names another condition whose mask this one is drawn against.
    """

    name: str
    argument: str | None = None
    random: bool = False
    references: bool = False

    @property
    def form(self) -> str:
        """How the strategy is written: ``oracle``, ``overlap:<fraction>``."""
        return f"{self.name}:<{self.argument}>" if self.argument else self.name


#: every condition kind, in the order the spec documentation lists them
KINDS: dict[str, ConditionKind] = {k.name: k for k in (
    ConditionKind("oracle"),
    ConditionKind("random", random=True),
    ConditionKind("attributed", "method"),
    ConditionKind("disjoint", "condition", random=True, references=True),
    ConditionKind("layer_matched", "condition", random=True, references=True),
    ConditionKind("overlap", "fraction", random=True),
    ConditionKind("given", "mask file"),
)}
CONDITION_KINDS = tuple(KINDS)
#: kinds that draw their mask at random (K draws per block)
RANDOM_KINDS = frozenset(k.name for k in KINDS.values() if k.random)
#: kinds whose argument names a reference condition
REFERENCE_KINDS = frozenset(k.name for k in KINDS.values() if k.references)
#: how each strategy is written, for messages and documentation
STRATEGY_FORMS = tuple(k.form for k in KINDS.values())


class ConditionError(ValueError):
    """A strategy that does not follow the ``kind:arg`` grammar; the message says what is wrong
    (the caller adds where)."""


def split_condition(text: str) -> tuple[str, str | None]:
    """``kind:argument`` -> (``kind``, ``argument``); (``text``, None) without a ``:``. The
    argument is everything after the first ``:`` (``layer_matched:attributed:x`` ->
    (``layer_matched``, ``attributed:x``)). Nothing is checked."""
    kind, sep, argument = str(text).partition(":")
    return kind, argument if sep else None


def suggest(word: Any, options: Iterable) -> str:
    """``; did you mean 'x'?`` for the closest of ``options``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_strategy(strategy: str) -> tuple[str, str | float | None]:
    """Check a strategy's grammar -> (kind, argument): None for kinds without one, the
    fraction as a float for ``overlap``, the text otherwise. ConditionError when the kind is
    unknown, an argument is missing or extra, or an overlap fraction is not in [0, 1].
    Whether a method, reference condition or mask file exists is the caller's check."""
    kind, argument = split_condition(strategy)
    known = KINDS.get(kind)
    if known is None or (argument is not None) != (known.argument is not None):
        takes_none = [k.name for k in KINDS.values() if k.argument is None]
        raise ConditionError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGY_FORMS)})"
                             f"{suggest(strategy, takes_none)}")
    if known.argument is None:
        return kind, None
    if not argument:
        raise ConditionError(f"{kind}: needs an argument after ':' (e.g. {known.form})")
    if kind == "overlap":
        try:
            fraction = float(argument)
        except ValueError:
            raise ConditionError(f"overlap fraction must be a number in [0, 1], got {argument!r}") from None
        if not 0.0 <= fraction <= 1.0:
            raise ConditionError(f"overlap fraction must be in [0, 1], got {fraction}")
        return kind, fraction
    return kind, argument


def condition_prefix(name: str) -> str:
    """The part of a condition or mask name before the first ``:`` (``overlap:0.5`` ->
    ``overlap``; ``random_3`` stays ``random_3``)."""
    return split_condition(name)[0]


def kind_of_name(name: str) -> tuple[str, str | None]:
    """(kind, reference) read from a condition name alone: its prefix when that is a known
    kind, else ``given`` (a mask from elsewhere); the reference of ``disjoint:x`` /
    ``layer_matched:x`` is ``x``."""
    prefix, rest = split_condition(name)
    kind = prefix if prefix in KINDS else "given"
    return kind, rest if kind in REFERENCE_KINDS and rest else None


def condition_kinds(conditions: Iterable[str], design: Mapping) -> dict[str, tuple[str, str | None]]:
    """(kind, reference) of each condition, from design.json's ``conditions`` or else from its
    name (:func:`kind_of_name`)."""
    declared = design.get("conditions") or {}
    out = {}
    for name in conditions:
        if name in declared:
            out[name] = (declared[name].get("kind", "given"), declared[name].get("reference"))
        else:
            out[name] = kind_of_name(name)
    return out


def random_group(name: str) -> str | None:
    """``random`` / ``layer_matched`` for a random-like condition or mask name (``random``,
    ``random_3``, ``layer_matched:attributed:x``), else None."""
    match = re.match(r"(random|layer_matched)", condition_prefix(name))
    return match.group(1) if match else None


def is_random_like(name: str) -> bool:
    """Whether a condition (or a mask named after it, e.g. ``random_3``) draws random masks:
    random or layer-matched random."""
    return random_group(name) is not None


# metrics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """What causalloc knows about one outcome column.

    ``name``: the column, or a pattern with ``{field}`` parts standing for several columns
    (``relearn_recovery_s{steps}_lr{lr}``; the label may use the same fields);
    ``higher_is_better``: direction of "better" (None: not known);
    ``sesoi``: default smallest effect size of interest in metric units (None: the analysis
    must be given one; never guessed from data);
    ``low`` / ``high``: the range of possible values; ``scale``: what the number is;
    ``run``: the run function computes it (a spec may list it in ``[eval].metrics``);
    ``default``: in the default ``[eval].metrics``; ``needs_relearn``: needs a ``[relearn]`` table.
    """

    name: str
    label: str
    higher_is_better: bool | None
    sesoi: float | None
    scale: str
    low: float = -math.inf
    high: float = math.inf
    run: bool = True
    default: bool = False
    needs_relearn: bool = False

    @property
    def range(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def is_pattern(self) -> bool:
        return "{" in self.name

    def match(self, column: str) -> Metric | None:
        """This metric resolved for ``column`` (pattern fields filled into name and label),
        or None when ``column`` is not one of its columns."""
        if not self.is_pattern:
            return self if column == self.name else None
        parts = re.split(r"\{(\w+)\}", self.name)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
        found = re.fullmatch(regex, column)
        if found is None:
            return None
        return replace(self, name=column, label=self.label.format(**found.groupdict()))


_ES = "extraction strength (Carlini et al. 2021, as in Lee et al. 2025), in [0, 1]"
#: the SESOI of [0, 1] metrics: the seed paper's reporting resolution (two decimals)
_UNIT_SESOI = 0.02
#: the SESOI of log forget quality (natural log of a KS p-value): a factor e in the p-value
_LOG_SESOI = 1.0

#: every known metric, one entry each (the order of runs.csv and of the spec documentation)
METRICS: tuple[Metric, ...] = (
    Metric("aues", "AUES", True, _UNIT_SESOI, "area under the FS-RS frontier, in [0, 1]",
           0.0, 1.0, default=True),
    Metric("fs_at_rs95", "FS@RS95", True, _UNIT_SESOI,
           "best FS among checkpoints keeping >= 95% of the starting RS, in [0, 1]", 0.0, 1.0,
           default=True),
    Metric("fs_final", "final FS", True, _UNIT_SESOI, f"1 - forget {_ES}", 0.0, 1.0, default=True),
    Metric("rs_final", "final RS", True, _UNIT_SESOI, f"retain {_ES}", 0.0, 1.0, default=True),
    Metric("es_forget_final", "final forget ES", False, _UNIT_SESOI, f"forget {_ES}", 0.0, 1.0,
           default=True),
    Metric("es_retain_final", "final retain ES", True, _UNIT_SESOI, f"retain {_ES}", 0.0, 1.0,
           default=True),
    Metric("forget_quality", "forget quality", None, None,
           "TOFU forget quality: KS test p-value of truth ratios against theta_r, in [0, 1]",
           0.0, 1.0),
    Metric("log_forget_quality", "log forget quality", True, _LOG_SESOI,
           "natural log of TOFU forget quality, <= 0", -math.inf, 0.0, default=True),
    Metric("relearn_es", "relearning ES", False, _UNIT_SESOI,
           f"held-out forget {_ES} after a relearning attack", 0.0, 1.0, needs_relearn=True),
    Metric("relearn_recovery", "relearning recovery", False, _UNIT_SESOI,
           "forget ES regained by a relearning attack (after - before), in [-1, 1]", -1.0, 1.0,
           needs_relearn=True),
    Metric("relearn_recovery_s{steps}_lr{lr}", "relearning recovery ({steps} steps, lr {lr})", False,
           _UNIT_SESOI, "forget ES regained by a relearning attack of that strength (after - before), "
           "in [-1, 1]", -1.0, 1.0, needs_relearn=True),
    Metric("quant_recovery", "4-bit quantization recovery", False, _UNIT_SESOI,
           "forget ES regained when every decoder linear weight is rounded to 4 bits (after - before), "
           "in [-1, 1]", -1.0, 1.0),
    Metric("mu95", "MU95", True, _LOG_SESOI,
           "best log forget quality among checkpoints keeping >= 95% of theta_o's model utility",
           -math.inf, 0.0, default=True),
    Metric("steps_to_target", "steps to target", False, None,
           "training steps until FS is half-way from theta_o's to theta_r's with RS >= 95% of RS_0; "
           "2 x the run's steps when never (causalloc.frontier.steps_to_target)", 0.0, math.inf),
    Metric("select_{criterion}", "{criterion} on the selection split", None, None,
           "a tuned design's selection criterion, scored on the selection items only "
           "(causalloc.stats.tuning)", run=False),
    Metric("model_utility", "model utility", True, _UNIT_SESOI,
           "TOFU model utility (harmonic mean of nine retain, real-author and world-fact scores), "
           "in [0, 1]",
           0.0, 1.0, default=True),
)

_BY_NAME = {m.name: m for m in METRICS if not m.is_pattern}
_PATTERNS = [m for m in METRICS if m.is_pattern]
#: metrics the run function computes (allowed in a spec's ``[eval].metrics``)
RUN_METRICS = tuple(m.name for m in METRICS if m.run and not m.is_pattern)
#: a spec's ``[eval].metrics`` when it lists none
DEFAULT_RUN_METRICS = tuple(m.name for m in METRICS if m.default)


def metric(name: str) -> Metric | None:
    """The facts of a metric column (exact names first, then patterns), or None if unknown."""
    found = _BY_NAME.get(name)
    if found is not None:
        return found
    return next((m for m in (p.match(name) for p in _PATTERNS) if m is not None), None)


def metric_label(name: str) -> str:
    """Display name of a metric column, e.g. ``aues`` -> ``AUES`` (unknown: the column name)."""
    found = metric(name)
    return found.label if found is not None else name


class _Facts(Mapping):
    """Read-only ``{metric: fact}`` view of one field of :data:`METRICS` (metrics whose fact is
    None left out); lookups resolve patterns, iteration lists the exact names."""

    def __init__(self, field: str):
        self._field = field

    def __getitem__(self, name: str):
        found = metric(name) if isinstance(name, str) else None
        value = getattr(found, self._field) if found is not None else None
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (m.name for m in METRICS if not m.is_pattern and getattr(m, self._field) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


#: default SESOI per metric, in metric units (override with [sesoi] / ``--sesoi``)
DEFAULT_SESOI: Mapping[str, float] = _Facts("sesoi")
#: whether a larger value is better, per metric (override with [higher_is_better])
HIGHER_IS_BETTER: Mapping[str, bool] = _Facts("higher_is_better")


# cells ------------------------------------------------------------------------------------
def cell_label(cell: Mapping, *, named: bool = False) -> str:
    """Text of a cell (block columns other than the replicate; ``all`` for none).

    ``named=False`` (reports: headings, tables, figure titles): text values as they are,
    numbers with their column name, ``tiny, npo, budget 0.1``.
    ``named=True`` (comparisons.csv, analysis messages, audit): every column named,
    ``algorithm=ga, budget=0.1``.
    """
    if not cell:
        return "all"
    if named:
        return ", ".join(f"{key}={value}" for key, value in cell.items())
    return ", ".join(f"{key} {value}" if isinstance(value, (int, float)) else str(value)
                     for key, value in cell.items())


def varying_cell_labels(cells: list[dict]) -> list[str]:
    """Labels of ``cells`` that keep only the columns whose value differs between them
    (``npo`` instead of ``tiny, forget01, npo, budget 0.1``); full labels when none differ."""
    keys = [k for k in dict.fromkeys(k for cell in cells for k in cell)
            if len({repr(cell.get(k)) for cell in cells}) > 1]
    if not keys:
        return [cell_label(cell) for cell in cells]
    return [cell_label({k: cell[k] for k in keys if k in cell}) for cell in cells]


# families ---------------------------------------------------------------------------------
#: name of the primary family
PRIMARY = "primary"


def is_primary_family(name: str) -> bool:
    """Whether a family name (``primary``, ``primary: <label>``, either followed by
    `` | cell=...`` parts of a family split) names a primary family. ``primary: <label>``
    declares one of several primary families, each adjusted on its own (e.g. one per metric
    in analyses/oracle_vs_random.analysis.toml)."""
    head = str(name).split(" | ")[0]
    return head == PRIMARY or head.startswith(PRIMARY + ":")
