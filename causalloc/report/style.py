"""One figure style for every report: colorblind-safe colours, paper column widths, 8 pt text.

Colours come from seaborn's ``colorblind`` palette (a reordering of Okabe & Ito, 2008, "Color
Universal Design"); each condition keeps its colour and marker in every figure, and markers
differ as well so that figures stay readable in greyscale.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator

import matplotlib as mpl
import seaborn as sns

#: figure widths in inches: one column / two columns of a two-column paper (ACL, NeurIPS-like)
SINGLE_COLUMN = 3.35
DOUBLE_COLUMN = 6.9
#: raster resolution of the PNG files
PNG_DPI = 300

_PALETTE = sns.color_palette("colorblind", 10).as_hex()
#: fixed colours for the reference conditions; the others cycle through the rest
_ORACLE_COLOR = "#000000"
_RANDOM_COLOR = "#949494"  # the palette's grey
#: the palette minus grey (kept for random masks) and the two pale colours that vanish on white
_CYCLE = [c for c in _PALETTE if c not in (_RANDOM_COLOR, "#fbafe4", "#ece133")]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]

#: background of each verdict's cells in the HTML answer table: Paul Tol's "light" scheme
#: (Tol 2021, "Colour Schemes", SRON/EPS/TN/09-002), made for cells behind black text and
#: distinct under the common colour-vision deficiencies
VERDICT_COLORS = {
    "a_better": "#77AADD",      # light blue
    "b_better": "#EE8866",      # orange
    "equivalent": "#44BB99",    # mint
    "negligible": "#EEDD88",    # light yellow
    "inconclusive": "#DDDDDD",  # pale grey
}

#: readable names for the metrics of the run table (unknown metrics keep their column name)
METRIC_LABELS = {
    "aues": "AUES",
    "fs_at_rs95": "FS@RS95",
    "fs_final": "final FS",
    "rs_final": "final RS",
    "es_forget_final": "final forget ES",
    "es_retain_final": "final retain ES",
    "log_forget_quality": "log forget quality",
    "relearn_es": "relearning ES",
    "relearn_recovery": "relearning recovery",
    "relearn_recovery_s5_lr0.001": "relearning recovery (5 steps, lr 1e-3)",
    "relearn_recovery_s20_lr0.001": "relearning recovery (20 steps, lr 1e-3)",
    "relearn_recovery_s20_lr0.01": "relearning recovery (20 steps, lr 1e-2)",
    "quant_recovery": "4-bit quantization recovery",
    "mu95": "MU95",
    "model_utility": "model utility",
}

_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "grid.linewidth": 0.4,
    "pdf.fonttype": 42,  # embed TrueType so that journals accept the PDF and text stays editable
    "ps.fonttype": 42,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "figure.dpi": 100,
}


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply the report style to every figure created inside the block."""
    with mpl.rc_context(_RC):
        yield


def metric_label(metric: str) -> str:
    """Display name of a metric column, e.g. ``aues`` -> ``AUES``."""
    return METRIC_LABELS.get(metric, metric)


def cell_label(cell: dict) -> str:
    """Short label of a cell (the block columns other than the replicate): text values as they
    are, numbers with their column name (``tiny, npo, budget 0.1``)."""
    if not cell:
        return "all"
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


def random_group(name: str) -> str | None:
    """``random`` / ``layer_matched`` for a random-like condition or mask name (``random``,
    ``random_3``, ``layer_matched:attributed:x``), else None."""
    match = re.match(r"(random|layer_matched)", condition_kind(name))
    return match.group(1) if match else None


def condition_kind(condition: str) -> str:
    """Kind of a condition from its name: the part before the first ``:`` (``overlap:0.5``
    -> ``overlap``)."""
    return str(condition).split(":", 1)[0]


def is_random_like(condition: str) -> bool:
    """Whether a condition (or a mask named after it, e.g. ``random_3``) draws random masks:
    random or layer-matched random."""
    return random_group(condition) is not None


def condition_order(conditions: Iterable[str]) -> list[str]:
    """Stable display order: oracle, attributed, overlap, disjoint, others, random-like last."""
    rank = {"oracle": 0, "attributed": 1, "given": 2, "overlap": 3, "disjoint": 4}
    return sorted(set(map(str, conditions)),
                  key=lambda c: (9 if is_random_like(c) else rank.get(condition_kind(c), 5), c))


def condition_styles(conditions: Iterable[str]) -> dict[str, dict]:
    """Colour and marker per condition: oracle black, random-like grey, others cycle.

    The assignment depends only on the set of names, so every figure of one report agrees.
    """
    styles: dict[str, dict] = {}
    others = 0
    for i, name in enumerate(condition_order(conditions)):
        if condition_kind(name) == "oracle":
            color = _ORACLE_COLOR
        elif is_random_like(name):
            color = _RANDOM_COLOR
        else:
            color = _CYCLE[others % len(_CYCLE)]
            others += 1
        styles[name] = {"color": color, "marker": _MARKERS[i % len(_MARKERS)]}
    return styles


def pair_color(index: int) -> str:
    """Colour of the ``index``-th comparison pair (a vs b) in the forest plot."""
    return _CYCLE[index % len(_CYCLE)]
