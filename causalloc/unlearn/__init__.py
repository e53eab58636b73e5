"""Unlearning objectives (registry) and the hard-constrained masked trainer."""

from causalloc.unlearn.base import (
    OBJECTIVES,
    Objective,
    StepContext,
    make_objective,
    register_objective,
)
from causalloc.unlearn.runner import UnlearnData, unlearn
from causalloc.unlearn.trainer import (
    MaskedColumns,
    ParameterSnapshot,
    TrainConfig,
    check_shared_model,
    max_abs_change_outside_mask,
)

__all__ = [
    "OBJECTIVES",
    "MaskedColumns",
    "Objective",
    "ParameterSnapshot",
    "StepContext",
    "TrainConfig",
    "UnlearnData",
    "check_shared_model",
    "make_objective",
    "max_abs_change_outside_mask",
    "register_objective",
    "unlearn",
]
