"""Localization methods: score every value vector and select a mask at an exact budget.

``localize(method, model, forget_batches, retain_batches, budget, ...)`` with method one of
``activations``, ``memflex``, ``wagle``, ``grad_x_weight``, ``weight_norm``, ``hard_concrete``,
``slimming``, ``random``
(importing this package registers them); ``causalloc.attribution.accuracy`` compares masks with a reference.
"""

from causalloc.attribution import (
    activations,
    grad_x_weight,
    hard_concrete,
    memflex,
    random,
    slimming,
    wagle,
    weight_norm,
)
from causalloc.attribution.base import (
    METHODS,
    AttributionResult,
    get_method,
    localize,
    register_method,
)

__all__ = [
    "METHODS", "AttributionResult", "activations", "get_method", "grad_x_weight", "hard_concrete",
    "localize", "memflex", "random", "register_method", "slimming", "wagle", "weight_norm",
]
