"""Hyperparameter check shared by the objectives and the localization methods."""

from __future__ import annotations

import math

from causalloc.errors import SpecError


def check_number(value, where: str, minimum: float | None = None, strict: bool = False) -> None:
    """Raise SpecError naming ``where`` (e.g. ``algorithm.npo.beta``) unless ``value`` is a
    finite number, ``>= minimum`` (``> minimum`` when ``strict``) if a minimum is given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        relation = ">" if strict else ">="
        raise SpecError(f"{where}: must be {relation} {minimum}, got {value!r}")
