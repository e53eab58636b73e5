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


def budget_to_count(budget: float, signature: ModelSignature) -> int:
    """Number of value vectors for a budget: a float fraction in (0, 1] -> round(p * L * I),
    an integer -> that count (so ``1`` is one unit and ``1.0`` all of them). Raises
    MaskError for impossible budgets."""
    total = signature.total_units
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise MaskError(f"budget must be a fraction in (0, 1] or a unit count, got {budget!r}")
    if isinstance(budget, (int, np.integer)):
        count = int(budget)
    else:
        p = float(budget)
        if not (0.0 < p <= 1.0) or not np.isfinite(p):
            raise MaskError(f"budget fraction must lie in (0, 1], got {budget!r}")
        count = round(p * total)
    if count < 1:
        raise MaskError(f"budget {budget!r} selects no unit out of {total}")
    if count > total:
        raise MaskError(f"budget {budget!r} asks for {count} units but the model has {total}")
    return count


def _read_mask_json(path: str | Path):
    """Parsed JSON of a mask file; MaskError naming the file when missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MaskError(f"{path}: mask file not found") from None
    except json.JSONDecodeError as exc:
        raise MaskError(f"{path}: not valid JSON ({exc})") from None


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
        return cls.from_dict(_read_mask_json(path), source=str(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self.hash() == other.hash()

    def __hash__(self) -> int:
        return hash(self.hash())

    def __repr__(self) -> str:
        return f"Mask({self.name!r}, size={self.size}, layers={self.per_layer_counts().tolist()})"


def top_k_mask(
    scores: np.ndarray,
    budget: float,
    signature: ModelSignature,
    per_layer: bool = False,
    name: str = "",
) -> Mask:
    """Mask of the highest-scoring units at an exact budget.

    ``scores`` is ``[n_layers, n_units]`` (higher = more responsible). Global top-k by
    default; ``per_layer=True`` takes the same share from every layer (the remainder of
    ``count / n_layers`` goes to the layers with the best next-in-line score). Ties are
    broken deterministically by the lower flat index; NaN scores rank last.
    """
    scores = np.asarray(scores, dtype=np.float64)
    shape = (signature.n_layers, signature.n_units)
    if scores.shape != shape:
        raise MaskError(f"scores have shape {scores.shape}, the model needs {shape}")
    count = budget_to_count(budget, signature)
    clean = np.where(np.isnan(scores), -np.inf, scores)
    if not per_layer:
        order = np.lexsort((np.arange(clean.size), -clean.ravel()))
        return Mask.from_flat(order[:count], signature, name)
    base, extra = divmod(count, signature.n_layers)
    orders = [np.lexsort((np.arange(signature.n_units), -row)) for row in clean]
    next_scores = np.array([row[o[base]] if base < signature.n_units else -np.inf
                            for row, o in zip(clean, orders)])
    bonus = set(np.lexsort((np.arange(signature.n_layers), -next_scores))[:extra].tolist())
    units = tuple(o[: base + (l in bonus)] for l, o in enumerate(orders))
    return Mask(units, signature, name)


# samplers ------------------------------------------------------------------------------
# Every sampler draws from the caller's seeded ``np.random.Generator`` and records in
# ``meta`` the strategy, the generator's seed and pre-draw state (enough to replay the
# draw exactly) and the hash of the reference mask it was drawn against.


def _rng_record(rng: np.random.Generator) -> dict:
    """JSON-safe description of ``rng`` before a draw: its seed (SeedSequence entropy and
    spawn key, when it was seeded through one) and its exact bit-generator state."""
    if not isinstance(rng, np.random.Generator):
        raise MaskError(f"rng must be a seeded numpy Generator, got {type(rng).__name__}")
    bit_generator = rng.bit_generator
    seed_seq = getattr(bit_generator, "seed_seq", None)
    entropy = getattr(seed_seq, "entropy", None)
    return {
        "entropy": np.asarray(entropy).tolist() if entropy is not None else None,
        "spawn_key": list(getattr(seed_seq, "spawn_key", ())),
        "state": bit_generator.state,
    }


def _draw_meta(strategy: str, rng: np.random.Generator | None, reference: Mask | None,
               **extra) -> dict:
    """The ``meta`` of a drawn mask; numpy scalars in ``extra`` become plain JSON numbers."""
    extra = {k: v.item() if isinstance(v, np.generic) else v for k, v in extra.items()}
    return {
        "strategy": strategy,
        "rng": _rng_record(rng) if rng is not None else None,
        "reference_hash": reference.hash() if reference is not None else None,
        "reference_name": reference.name if reference is not None else None,
        **extra,
    }


def _choose(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct elements of ``pool``, uniformly without replacement."""
    return rng.choice(pool, size=count, replace=False) if count else pool[:0]


def _complement(reference: Mask) -> np.ndarray:
    """Sorted flat indices of the units outside ``reference``."""
    return np.setdiff1d(np.arange(reference.signature.total_units), reference.flat(),
                        assume_unique=True)


def uniform_random(signature: ModelSignature, budget: float, rng: np.random.Generator,
                   name: str = "random") -> Mask:
    """Uniformly random mask of ``budget_to_count(budget)`` value vectors drawn without
    replacement from all ``L * I`` units (the seed paper's V_tgt and "Random" baseline)."""
    meta = _draw_meta("uniform_random", rng, None, budget=budget)
    count = budget_to_count(budget, signature)
    flat = _choose(np.arange(signature.total_units), count, rng)
    return Mask.from_flat(flat, signature, name, meta)


def disjoint_random(reference: Mask, rng: np.random.Generator, budget: float | None = None,
                    name: str = "disjoint") -> Mask:
    """Uniformly random mask from the complement of ``reference`` (no shared unit).

    The size defaults to ``reference.size`` (the equal-size "Random" condition of the seed
    paper, drawn outside V_tgt); MaskError when the complement holds fewer units.
    """
    meta = _draw_meta("disjoint_random", rng, reference, budget=budget)
    signature = reference.signature
    count = reference.size if budget is None else budget_to_count(budget, signature)
    pool = _complement(reference)
    if count > pool.size:
        raise MaskError(
            f"disjoint_random: {count} units requested but only {pool.size} lie outside "
            f"reference mask {reference.name or reference.hash()[:12]}"
        )
    return Mask.from_flat(_choose(pool, count, rng), signature, name, meta)


def layer_matched_random(reference: Mask, rng: np.random.Generator, disjoint: bool = False,
                         name: str = "layer_matched") -> Mask:
    """Random mask with exactly the reference's unit count in every layer, drawn uniformly
    within each layer (optionally only among units outside the reference).

    Controls for *where in depth* a localized mask sits while randomizing *which* units.
    """
    meta = _draw_meta("layer_matched_random", rng, reference, disjoint=disjoint)
    signature = reference.signature
    units = []
    for layer, (count, taken) in enumerate(zip(reference.per_layer_counts(), reference.units)):
        pool = np.arange(signature.n_units)
        if disjoint:
            pool = np.setdiff1d(pool, taken, assume_unique=True)
        if count > pool.size:
            raise MaskError(
                f"layer_matched_random: layer {layer} needs {count} units disjoint from the "
                f"reference but only {pool.size} are free"
            )
        units.append(_choose(pool, int(count), rng))
    return Mask(tuple(units), signature, name, meta)


def overlap_controlled(reference: Mask, fraction: float, rng: np.random.Generator,
                       budget: float | None = None, name: str = "") -> Mask:
    """Random mask of size ``n`` (default ``reference.size``) sharing exactly
    ``round(fraction * n)`` units with ``reference``, the rest drawn from its complement.

    ``round`` is Python's (half to even), as in :func:`budget_to_count`. Sweeping ``fraction``
    from 0 (disjoint) to 1 (the reference itself, at equal size) gives a dose-response
    curve of effect against overlap with the reference. MaskError when ``fraction`` is
    outside [0, 1] or the reference or its complement is too small for the split.
    """
    try:
        fraction_value = float(fraction)
    except (TypeError, ValueError):
        raise MaskError(f"overlap_controlled: fraction must be a number, got {fraction!r}") from None
    if not (0.0 <= fraction_value <= 1.0):
        raise MaskError(f"overlap_controlled: fraction must lie in [0, 1], got {fraction!r}")
    meta = _draw_meta("overlap_controlled", rng, reference, fraction=fraction_value,
                      budget=budget)
    signature = reference.signature
    count = reference.size if budget is None else budget_to_count(budget, signature)
    n_inside = round(fraction_value * count)
    n_outside = count - n_inside
    pool_outside = _complement(reference)
    if n_inside > reference.size or n_outside > pool_outside.size:
        raise MaskError(
            f"overlap_controlled: {n_inside} units inside and {n_outside} outside the reference "
            f"are impossible (reference has {reference.size}, complement {pool_outside.size})"
        )
    inside = _choose(reference.flat(), n_inside, rng)
    outside = _choose(pool_outside, n_outside, rng)
    meta["n_inside"] = n_inside
    return Mask.from_flat(np.concatenate([inside, outside]), signature,
                          name or f"overlap:{fraction_value:g}", meta)


def given(units_or_path, signature: ModelSignature, name: str = "given") -> Mask:
    """An oracle or externally chosen mask, checked against ``signature``.

    Accepts a :class:`Mask`; a path to a JSON file holding a saved Mask (its signature must
    match) or one of the plain forms below; a mapping ``{layer: [unit, ...]}`` (JSON string
    keys allowed); an ``[n, 2]`` array-like of ``(layer, unit)`` pairs; or a 1-D array-like
    of flat indices ``layer * n_units + unit``. MaskError for an empty mask, an index out of
    range or a mask made for another model.
    """
    source = "in-memory"
    if isinstance(units_or_path, (str, Path)):
        source = str(units_or_path)
        units_or_path = _read_mask_json(units_or_path)
        if isinstance(units_or_path, dict) and "signature" in units_or_path:
            units_or_path = Mask.from_dict(units_or_path, source=source)
    meta = _draw_meta("given", None, None, source=source)
    if isinstance(units_or_path, Mask):
        units_or_path.check_fits(signature)
        meta["source_meta"] = units_or_path.meta
        mask = Mask(units_or_path.units, signature, units_or_path.name or name, meta)
    else:
        mask = _mask_from_plain(units_or_path, signature, name, meta, source)
    if mask.size == 0:
        raise MaskError(f"{source}: the given mask selects no unit")
    return mask


def _mask_from_plain(units, signature: ModelSignature, name: str, meta: dict,
                     source: str) -> Mask:
    """Mask from a ``{layer: units}`` mapping, ``(layer, unit)`` pairs or flat indices."""
    if isinstance(units, dict):
        per_layer = [[] for _ in range(signature.n_layers)]
        for key, idx in units.items():
            try:
                layer = int(key)
            except (TypeError, ValueError):
                raise MaskError(f"{source}: layer key {key!r} is not an integer") from None
            if not 0 <= layer < signature.n_layers:
                raise MaskError(f"{source}: layer {layer} out of range [0, {signature.n_layers})")
            per_layer[layer] = idx
        return Mask(tuple(np.asarray(u, dtype=np.int64) for u in per_layer), signature, name, meta)
    try:
        arr = np.asarray(units, dtype=np.int64)
    except (TypeError, ValueError):
        raise MaskError(f"{source}: units must be integers (pairs, flat indices or a "
                        f"{{layer: units}} mapping)") from None
    if arr.ndim == 2 and arr.shape[1] == 2:
        if arr.size and not ((0 <= arr[:, 0]).all() and (arr[:, 0] < signature.n_layers).all()):
            raise MaskError(f"{source}: layer index out of range [0, {signature.n_layers})")
        if arr.size and not ((0 <= arr[:, 1]).all() and (arr[:, 1] < signature.n_units).all()):
            raise MaskError(f"{source}: unit index out of range [0, {signature.n_units})")
        arr = arr[:, 0] * signature.n_units + arr[:, 1]
    elif arr.ndim != 1:
        raise MaskError(f"{source}: expected (layer, unit) pairs of shape [n, 2] or flat "
                        f"indices, got an array of shape {arr.shape}")
    try:
        return Mask.from_flat(arr, signature, name, meta)
    except MaskError as exc:
        raise MaskError(f"{source}: {exc}") from None
