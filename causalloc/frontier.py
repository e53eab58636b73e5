"""The forget-retain frontier of one run's checkpoints and the scores read off it: AUES and
FS@RS95.

Pure numpy over (RS, FS) sequences, so that the executor (:mod:`causalloc.metrics`, which
needs torch) and the report's trade-off figure (:mod:`causalloc.report`, which must not
import torch) share one definition. Notation of the seed paper (Lee et al. 2025):
FS = 1 - ES(forget), RS = ES(retain), both in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_curve(rs, fs) -> tuple[np.ndarray, np.ndarray]:
    """``rs`` and ``fs`` as float64 arrays; ValueError unless equal-length, non-empty, 1-D."""
    rs, fs = np.asarray(rs, dtype=np.float64), np.asarray(fs, dtype=np.float64)
    if rs.ndim != 1 or rs.shape != fs.shape or rs.size == 0:
        raise ValueError(f"rs and fs must be equal-length non-empty 1-D sequences, got shapes "
                         f"{rs.shape} and {fs.shape}")
    return rs, fs


def checked_scores(rs, fs) -> tuple[np.ndarray, np.ndarray]:
    """``rs`` and ``fs`` as float64 arrays; ValueError unless they are equal-length,
    non-empty, 1-D, finite and in [0, 1]."""
    rs, fs = _as_curve(rs, fs)
    for name, values in (("rs", rs), ("fs", fs)):
        if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
            raise ValueError(f"{name} values must be finite and lie in [0, 1], got {values.tolist()}")
    return rs, fs


def _upper_envelope(rs: np.ndarray, fs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The RS values sorted, r_(1) <= ... <= r_(n), and F(r_(i)) = max_{j >= i} FS_(j)."""
    order = np.argsort(rs, kind="stable")
    return rs[order], np.maximum.accumulate(fs[order][::-1])[::-1]


def frontier(rs: Sequence[float], fs: Sequence[float], at) -> np.ndarray:
    """F(r) = max{FS_t : RS_t >= r} over the checkpoints t, at the retain levels ``at``;
    0 where no checkpoint reaches r.

    F is a non-increasing step function, constant on each interval (r_(i-1), r_(i)] between
    consecutive sorted RS values; its area over [0, 1] is :func:`aues`. Unlike the scores,
    it takes values outside [0, 1] as they are: the report draws what a run table holds.
    """
    sorted_rs, best_above = _upper_envelope(*_as_curve(rs, fs))
    index = np.searchsorted(sorted_rs, np.asarray(at, dtype=float), side="left")
    return np.where(index < sorted_rs.size, best_above[np.minimum(index, sorted_rs.size - 1)],
                    0.0)


def aues(rs: Sequence[float], fs: Sequence[float]) -> float:
    """Area under the forget-retain frontier of a set of checkpoints.

    F(r) = max{FS_t : RS_t >= r} over the evaluated checkpoints t (pass the starting model
    too), with F(r) = 0 where no checkpoint reaches r; AUES = integral of F(r) dr over
    [0, 1]. The seed paper reports an "area under the FS-RS curve" without saying what is
    swept; this makes it precise: an upper envelope, so a method scores the best forgetting
    it reached at each retain level, and dominated checkpoints do not lower it. F is a
    non-increasing step function, so the integral is exact: with the RS values sorted
    r_(1) <= ... <= r_(n) and r_(0) = 0, AUES = sum_i (r_(i) - r_(i-1)) * max_{j >= i} FS_(j).
    Range [0, 1]; 1 means perfect forgetting at full retain ES.
    """
    sorted_rs, best_above = _upper_envelope(*checked_scores(rs, fs))
    return float(np.sum(np.diff(sorted_rs, prepend=0.0) * best_above))


def fs_at_rs(rs: Sequence[float], fs: Sequence[float], rs0: float,
             fraction: float = 0.95) -> float:
    """FS@RS95: max FS_t over checkpoints with RS_t >= fraction * RS_0 (NaN if none does;
    never the case when the starting model, RS_t = RS_0, is among the checkpoints)."""
    rs, fs = checked_scores(rs, fs)
    eligible = rs >= fraction * float(rs0)
    return float(fs[eligible].max()) if eligible.any() else float("nan")
