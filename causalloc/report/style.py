"""One figure style for every report: colorblind-safe colours, paper column widths, 8 pt text.

Colours come from seaborn's ``colorblind`` palette (a reordering of Okabe & Ito, 2008, "Color
Universal Design"); each condition keeps its colour and marker in every figure, and markers
differ as well so that figures stay readable in greyscale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import matplotlib as mpl
import seaborn as sns

from causalloc.vocab import condition_prefix, is_random_like

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


def condition_order(conditions: Iterable[str]) -> list[str]:
    """Stable display order: oracle, attributed, overlap, disjoint, others, random-like last."""
    rank = {"oracle": 0, "attributed": 1, "given": 2, "overlap": 3, "disjoint": 4}
    return sorted(set(map(str, conditions)),
                  key=lambda c: (9 if is_random_like(c) else rank.get(condition_prefix(c), 5), c))


def condition_styles(conditions: Iterable[str]) -> dict[str, dict]:
    """Colour and marker per condition: oracle black, random-like grey, others cycle.

    The assignment depends only on the set of names, so every figure of one report agrees.
    """
    styles: dict[str, dict] = {}
    others = 0
    for i, name in enumerate(condition_order(conditions)):
        if condition_prefix(name) == "oracle":
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
