"""Localization accuracy: masks against a ground-truth mask (e.g. the testbed's V_tgt),
per-layer distributions and overlap between methods, as tidy pandas DataFrames.

Set arithmetic on unit indices is all there is, hence numpy; the tables follow the
pingouin convention (one row per comparison, fixed columns).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from causalloc.errors import MaskError
from causalloc.masks import Mask, top_k_mask

ACCURACY_COLUMNS = ["mask", "size", "reference_size", "hits", "precision", "recall", "jaccard",
                    "chance_precision"]
LAYER_COLUMNS = ["mask", "layer", "count", "share_of_mask", "share_of_layer"]
OVERLAP_COLUMNS = ["mask_a", "mask_b", "size_a", "size_b", "shared", "jaccard"]
#: accuracy_table columns in front of ACCURACY_COLUMNS (``mask`` dropped: it repeats ``method``)
ACCURACY_PREFIX = ["method", "selection", "per_layer", "equal_budget"]


def _check_masks(masks: Mapping[str, Mask]) -> None:
    if not masks:
        raise MaskError("accuracy: no masks given")
    signatures = {m.signature for m in masks.values()}
    if len(signatures) > 1:
        names = sorted(map(str, signatures))
        raise MaskError(f"accuracy: masks were made for different models {names}")


def mask_accuracy(masks: Mapping[str, Mask], reference: Mask) -> pd.DataFrame:
    """Precision, recall and Jaccard of each mask against ``reference``, one row per mask.

    With hits = |M & R|: precision = hits / |M|, recall = hits / |R| (the INJ benchmark's
    recall, Chang et al. 2024: sum_l |topk_l & gold_l| / sum_l |gold_l|), Jaccard =
    hits / |M | R|. At equal budget (|M| = |R|) precision equals recall.
    ``chance_precision`` = |R| / (L * I), the expected precision and recall of a uniformly
    random mask of size |R|: the baseline a method must beat.
    """
    _check_masks({**masks, "reference": reference})
    reference_units = reference.flat()
    total = reference.signature.total_units
    rows = []
    for name, mask in masks.items():
        hits = int(np.intersect1d(mask.flat(), reference_units, assume_unique=True).size)
        union = mask.size + reference.size - hits
        rows.append({
            "mask": name,
            "size": mask.size,
            "reference_size": reference.size,
            "hits": hits,
            "precision": hits / mask.size if mask.size else np.nan,
            "recall": hits / reference.size if reference.size else np.nan,
            "jaccard": hits / union if union else np.nan,
            "chance_precision": reference.size / total,
        })
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def layer_distribution(masks: Mapping[str, Mask]) -> pd.DataFrame:
    """Units per layer of each mask (long format: one row per mask and layer).

    share_of_mask = count / |M|; share_of_layer = count / I (units per layer).
    """
    _check_masks(masks)
    rows = []
    for name, mask in masks.items():
        for layer, count in enumerate(mask.per_layer_counts().tolist()):
            rows.append({
                "mask": name,
                "layer": layer,
                "count": count,
                "share_of_mask": count / mask.size if mask.size else np.nan,
                "share_of_layer": count / mask.signature.n_units,
            })
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def pairwise_overlap(masks: Mapping[str, Mask]) -> pd.DataFrame:
    """Shared units and Jaccard |A & B| / |A | B| for every ordered pair of masks,
    diagonal included, so ``df.pivot(index="mask_a", columns="mask_b", values="jaccard")``
    is the full symmetric overlap matrix."""
    _check_masks(masks)
    flats = {name: mask.flat() for name, mask in masks.items()}
    rows = []
    for a, units_a in flats.items():
        for b, units_b in flats.items():
            shared = int(np.intersect1d(units_a, units_b, assume_unique=True).size)
            union = units_a.size + units_b.size - shared
            rows.append({"mask_a": a, "mask_b": b, "size_a": int(units_a.size),
                         "size_b": int(units_b.size), "shared": shared,
                         "jaccard": shared / union if union else np.nan})
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


def accuracy_table(results: Mapping, reference: Mask, per_layer: bool) -> pd.DataFrame:
    """accuracy.csv of ``causalloc localize``: :func:`mask_accuracy` of every method's mask
    (``results``: method -> AttributionResult) against ``reference`` at the requested budget,
    plus the equal-budget selection (top-|reference| of the same scores, same tie rule)
    when the requested budget differs from |reference|."""
    frames = []
    for name, result in results.items():
        selections = {"requested": result.mask}
        if result.mask.size != reference.size:
            selections["equal_budget"] = top_k_mask(result.scores, reference.size,
                                                    reference.signature, per_layer=per_layer,
                                                    name=name)
        for selection, mask in selections.items():
            row = mask_accuracy({name: mask}, reference)
            frames.append(row.assign(method=name, selection=selection, per_layer=per_layer,
                                     equal_budget=mask.size == reference.size))
    table = pd.concat(frames, ignore_index=True).drop(columns="mask")  # "mask" repeats "method"
    return table[ACCURACY_PREFIX + [c for c in table.columns if c not in ACCURACY_PREFIX]]
