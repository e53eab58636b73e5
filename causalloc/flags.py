"""Outcome flags: per run, the named conditions under which its metrics mislead.

A verdict on a cell whose runs collapsed, never forgot, over-forgot or sat at MU95's floor
compares edge cases of the metrics rather than localization; the analysis counts the flags
per cell and the report marks every such verdict. Thresholds (in ``docs/metrics.md``):

- ``collapse``: final RS < COLLAPSE_FRACTION * RS_0 (retain destroyed: half of theta_o's
  retain ES gone);
- ``no_forgetting``: no checkpoint reaches FS >= FS_r - TARGET_TOLERANCE (FS_r: theta_r's FS,
  the forgetting of a model that never saw the forget set);
- ``over_forgetting``: final FS > FS_r + TARGET_TOLERANCE (AUES rewards forgetting beyond the
  retrained model's);
- ``mu95_floor``: MU95 equals the log forget quality of theta_o (no checkpoint that kept 95%
  of the model utility improved on the start: MU95 is censored at its floor).

Plain Python, called by the executor and documented for the statistics and report layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: final RS below this fraction of RS_0 is a collapse
COLLAPSE_FRACTION = 0.5
#: theta_r's FS counts as reached within this distance of it (the AUES SESOI), and as
#: over-shot beyond it
TARGET_TOLERANCE = 0.02


def outcome_flags(rs: Sequence[float], fs: Sequence[float], fs_target: float,
                  mu95: float | None = None, lfq0: float | None = None,
                  diverged: bool = False) -> list[str]:
    """The flags of a run from its checkpoints' RS and FS (step 0, theta_o, first; the
    checkpoints before a divergence), theta_r's FS (``fs_target``) and, when tracked, its
    MU95 and theta_o's log forget quality ``lfq0``. A run whose loss diverged gets ``collapse``."""
    flags = []
    final_rs, final_fs = float(rs[-1]), float(fs[-1])
    if diverged or final_rs < COLLAPSE_FRACTION * float(rs[0]):
        flags.append("collapse")
    if max(float(f) for f in fs) < fs_target - TARGET_TOLERANCE:
        flags.append("no_forgetting")
    if not diverged and final_fs > fs_target + TARGET_TOLERANCE:
        flags.append("over_forgetting")
    if mu95 is not None and lfq0 is not None and math.isfinite(mu95) and mu95 <= lfq0:
        flags.append("mu95_floor")
    return flags
