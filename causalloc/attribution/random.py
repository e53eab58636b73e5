"""Random localization: the baseline every method must beat, run like the others."""

from __future__ import annotations

import numpy as np

from causalloc.attribution.base import register_method
from causalloc.models.units import adapter_for


@register_method("random")
def random_scores(model, forget, retain, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``score(l, i) ~ U[0, 1)`` i.i.d. from the seeded Generator, so the top-k mask is a
    uniformly random set of units of the requested size (ties have probability 0)."""
    signature = adapter_for(model).signature
    return rng.random((signature.n_layers, signature.n_units)), {}
