"""Weight-norm localization: the trivial baseline that reads the weights alone."""

from __future__ import annotations

import numpy as np

from causalloc.attribution.base import register_method
from causalloc.models.units import adapter_for


@register_method("weight_norm")
def weight_norm_scores(model, forget, retain, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``score(l, i) = ||v_(l, i)||_2``, the L2 norm of value vector i of layer l.

    Uses no data: a localizer that cannot beat it finds large weights, not knowledge. On a
    testbed with free (unconstrained) injection it finds V_tgt with precision 1.0, because
    injection grows the trained vectors; norm-matched injection brings it to chance.
    """
    return adapter_for(model).value_norms().double().cpu().numpy(), {}
