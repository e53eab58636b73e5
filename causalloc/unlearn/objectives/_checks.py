"""Hyperparameter checks shared by the objectives and the localization methods."""

from __future__ import annotations

import math
from dataclasses import dataclass

from causalloc.errors import SpecError
from causalloc.unlearn.base import Objective


def check_number(value, where: str, minimum: float | None = None, strict: bool = False) -> None:
    """Raise SpecError naming ``where`` (e.g. ``algorithm.npo.beta``) unless ``value`` is a
    finite number, ``>= minimum`` (``> minimum`` when ``strict``) if a minimum is given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        relation = ">" if strict else ">="
        raise SpecError(f"{where}: must be {relation} {minimum}, got {value!r}")


@dataclass
class BetaRetainObjective(Objective):
    """Base of the objectives with a shape parameter ``beta`` (> 0) and a retain weight
    ``alpha`` (>= 0): NPO, DPO, WGA. Subclasses document both and may change the defaults."""

    beta: float = 0.1
    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_number(self.beta, f"algorithm.{self.name}.beta", 0, strict=True)
        check_number(self.alpha, f"algorithm.{self.name}.alpha", 0)
