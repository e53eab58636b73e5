"""Localization accuracy of the masks that were run, against the oracle region V_tgt.

The formulas and column names are those of ``causalloc.attribution.accuracy.mask_accuracy``;
that function takes ``causalloc.masks.Mask`` objects, whose model signature imports torch,
which the report must not load, so the same set arithmetic is done here on the plain JSON
masks the report reads (``ReportInputs.masks``: name, signature, per-layer unit lists).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causalloc.report.inputs import ReportInputs
from causalloc.report.style import condition_order

#: columns of ``localization_accuracy``
ACCURACY_COLUMNS = ["mask", "size", "hits", "precision", "recall", "jaccard"]


def flat_units(mask: dict) -> np.ndarray:
    """Sorted flat unit indices ``layer * n_units + unit`` of a JSON mask."""
    n_units = mask["signature"]["n_units"]
    return np.unique(np.fromiter((layer * n_units + unit
                                  for layer, units in enumerate(mask["units"]) for unit in units),
                                 dtype=np.int64))


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """|A & B| / |A | B| of two sets of flat unit indices (1 for two empty sets)."""
    union = np.union1d(first, second).size
    return np.intersect1d(first, second, assume_unique=True).size / union if union else 1.0


def signature(mask: dict) -> tuple[int, int]:
    return mask["signature"]["n_layers"], mask["signature"]["n_units"]


def localization_accuracy(masks: list[dict], target: dict) -> pd.DataFrame:
    """Precision, recall and Jaccard of each mask against the oracle region ``target``.

    With hits = |M & V|: precision = hits / |M|, recall = hits / |V| (the INJ benchmark's
    recall, Chang et al. 2024), Jaccard = hits / |M | V|; a uniformly random mask's expected
    precision is |V| / (L * I). One row per mask of the target's signature, in the order
    given; masks made for another model are left out (they cannot overlap V_tgt).
    """
    target_units = flat_units(target)
    rows = []
    for mask in masks:
        if signature(mask) != signature(target):
            continue
        units = flat_units(mask)
        hits = int(np.intersect1d(units, target_units, assume_unique=True).size)
        rows.append({"mask": mask["name"], "size": int(units.size), "hits": hits,
                     "precision": hits / units.size if units.size else np.nan,
                     "recall": hits / target_units.size if target_units.size else np.nan,
                     "jaccard": jaccard(units, target_units)})
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def target_accuracy(inputs: ReportInputs) -> pd.DataFrame | None:
    """``localization_accuracy`` of the report's masks against V_tgt (masks/v_tgt.json),
    in display order (oracle, attributed, ..., random last); None without V_tgt or masks."""
    if inputs.target_mask is None or not inputs.masks:
        return None
    table = localization_accuracy(inputs.masks, inputs.target_mask)
    order = {name: i for i, name in enumerate(condition_order(table["mask"]))}
    return table.sort_values("mask", key=lambda names: names.map(order), kind="stable")
