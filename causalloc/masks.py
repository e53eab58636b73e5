"""Masks over value vectors and the samplers that draw them.

A :class:`Mask` is a per-layer set of sorted unit indices plus the
:class:`~causalloc.models.units.ModelSignature` it fits. Units are addressed either as
``(layer, unit)`` or by the flat index ``layer * n_units + unit``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from causalloc.errors import MaskError
from causalloc.models.units import ModelSignature


def budget_to_count(budget: float | int, signature: ModelSignature) -> int:
    """Number of value vectors for a budget: a fraction in (0, 1] -> round(p * L * I),
    an integer >= 1 -> that count. Raises MaskError for impossible budgets."""
    total = signature.total_units
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise MaskError(f"budget must be a fraction in (0, 1] or a unit count, got {budget!r}")
    if isinstance(budget, (int, np.integer)) and budget > 1:
        count = int(budget)
    else:
        p = float(budget)
        if not (0.0 < p <= 1.0) or not np.isfinite(p):
            raise MaskError(f"budget fraction must lie in (0, 1], got {budget!r}")
        count = int(round(p * total))
    if count < 1:
        raise MaskError(f"budget {budget!r} selects no unit out of {total}")
    if count > total:
        raise MaskError(f"budget {budget!r} asks for {count} units but the model has {total}")
    return count


@dataclass(frozen=True, eq=False)
class Mask:
    """Per-layer sorted unit indices (``units[l]`` is an int64 array) for one model signature."""

    units: tuple[np.ndarray, ...]
    signature: ModelSignature
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        sig = self.signature
        if len(self.units) != sig.n_layers:
            raise MaskError(f"mask has {len(self.units)} layers, model signature has {sig.n_layers}")
        cleaned = []
        for l, idx in enumerate(self.units):
            arr = np.unique(np.asarray(idx, dtype=np.int64))
            if arr.size and (arr[0] < 0 or arr[-1] >= sig.n_units):
                raise MaskError(f"mask layer {l}: unit index out of range [0, {sig.n_units})")
            arr.setflags(write=False)
            cleaned.append(arr)
        object.__setattr__(self, "units", tuple(cleaned))

    # construction ------------------------------------------------------------------
    @classmethod
    def from_flat(cls, flat, signature: ModelSignature, name: str = "", meta: dict | None = None) -> Mask:
        """Build from flat indices ``layer * n_units + unit``."""
        flat = np.asarray(flat, dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= signature.total_units):
            raise MaskError(f"flat unit index out of range [0, {signature.total_units})")
        layers = flat // signature.n_units
        units = tuple(flat[layers == l] % signature.n_units for l in range(signature.n_layers))
        return cls(units, signature, name, dict(meta or {}))

    # views -------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(sum(u.size for u in self.units))

    @property
    def budget_fraction(self) -> float:
        return self.size / self.signature.total_units

    def flat(self) -> np.ndarray:
        """Sorted flat indices ``layer * n_units + unit``."""
        n = self.signature.n_units
        parts = [u + l * n for l, u in enumerate(self.units)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def per_layer_counts(self) -> np.ndarray:
        return np.array([u.size for u in self.units], dtype=np.int64)

    def dense(self) -> np.ndarray:
        """Boolean ``[n_layers, n_units]`` membership matrix."""
        out = np.zeros((self.signature.n_layers, self.signature.n_units), dtype=bool)
        for l, u in enumerate(self.units):
            out[l, u] = True
        return out

    def layers(self) -> list[int]:
        """Layers holding at least one unit of the mask."""
        return [l for l, u in enumerate(self.units) if u.size]

    def overlap(self, other: Mask) -> int:
        """Number of units shared with ``other``."""
        self.check_fits(other.signature)
        return int(np.intersect1d(self.flat(), other.flat(), assume_unique=True).size)

    def check_fits(self, signature: ModelSignature) -> None:
        """Raise MaskError unless this mask was made for a model with ``signature``."""
        if signature != self.signature:
            raise MaskError(
                f"mask {self.name or self.hash()[:12]} was made for {self.signature}, "
                f"not for this model {signature}"
            )

    # identity and persistence --------------------------------------------------------
    def hash(self) -> str:
        """Stable sha256 of the signature and the units (name and meta excluded)."""
        h = hashlib.sha256(json.dumps(self.signature.to_dict(), sort_keys=True).encode())
        h.update(self.flat().astype("<i8").tobytes())
        return h.hexdigest()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "signature": self.signature.to_dict(),
            "units": [u.tolist() for u in self.units],
            "size": self.size,
            "hash": self.hash(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "mask") -> Mask:
        for key in ("signature", "units"):
            if key not in d:
                raise MaskError(f"{source}: missing key {key!r}")
        mask = cls(tuple(np.asarray(u, dtype=np.int64) for u in d["units"]),
                   ModelSignature.from_dict(d["signature"]), d.get("name", ""), d.get("meta", {}))
        if "hash" in d and d["hash"] != mask.hash():
            raise MaskError(f"{source}: stored hash does not match the units (file edited or corrupt)")
        return mask

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise MaskError(f"{path}: mask file not found") from None
        except json.JSONDecodeError as exc:
            raise MaskError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self.hash() == other.hash()

    def __hash__(self) -> int:
        return hash(self.hash())

    def __repr__(self) -> str:
        return f"Mask({self.name!r}, size={self.size}, layers={self.per_layer_counts().tolist()})"
