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


#: steps_to_target asks for this share of the forgetting between theta_o and theta_r
TARGET_SHARE = 0.5


def steps_to_target(steps: Sequence[float], rs: Sequence[float], fs: Sequence[float],
                    fs_retrained: float, horizon: float, fraction: float = 0.95,
                    share: float = TARGET_SHARE) -> float:
    """Steps to a fixed forget target at kept utility: a dose-free endpoint (lower is better).

    Target FS* = FS_0 + share * (FS_r - FS_0): ``share`` (default half) of the way from
    theta_o's FS (checkpoint 0) to the retrained model's (``fs_retrained``, theta_r never saw
    the forget set). The first checkpoint t with FS_t >= FS* while RS_t >= fraction * RS_0;
    the step is interpolated linearly in FS from the checkpoint before t when that one was
    below FS*. A run that never gets there is censored at ``2 * horizon`` (twice its steps),
    so that it ranks behind every run that does. AUES scores whatever a run reaches at its
    dose; this counts what it takes to reach one fixed point without breaking retain (Wang &
    Veitch 2025 compare edits at matched efficacy likewise). Half the gap rather than all of
    it: on the tiny testbeds no run keeps 95% of RS_0 at theta_r's FS, which would censor
    every run.
    """
    steps = np.asarray(steps, dtype=np.float64)
    rs, fs = checked_scores(rs, fs)
    target = fs[0] + share * (float(fs_retrained) - fs[0])
    reached = np.flatnonzero((fs >= target) & (rs >= fraction * rs[0]))
    if reached.size == 0:
        return 2.0 * float(horizon)
    t = int(reached[0])
    if t == 0 or fs[t - 1] >= target:
        return float(steps[t])
    return float(steps[t - 1] + (target - fs[t - 1]) / (fs[t] - fs[t - 1]) * (steps[t] - steps[t - 1]))
