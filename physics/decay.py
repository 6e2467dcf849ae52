"""Physical decay: decay constants, activity at a time, decay during an acquisition.

The one home of the decay-during-acquisition integral (used by phantom calibration,
quantification and the simulator's camera model).
"""

from __future__ import annotations

import math
from datetime import datetime

from rntflow.core.errors import CalibrationError


def decay_constant_per_s(half_life_s: float) -> float:
    if half_life_s is None or not half_life_s > 0:
        raise CalibrationError(f"half-life must be positive, got {half_life_s!r} s")
    return math.log(2.0) / half_life_s


def activity_at(activity_mbq: float, reference: datetime, at: datetime, half_life_s: float) -> float:
    """Activity (MBq) at ``at`` given ``activity_mbq`` at ``reference`` (physical decay)."""
    dt_s = (at - reference).total_seconds()
    return activity_mbq * math.exp(-decay_constant_per_s(half_life_s) * dt_s)


def decay_integral_s(duration_s: float, half_life_s: float) -> float:
    """Integral of exp(-lambda t) over [0, T] (s): the effective acquisition time.

    For a source of activity A0 at acquisition start the expected counts are
    ``S * A0 * decay_integral_s(T, T_half)``. Uses ``-expm1`` for accuracy when
    lambda T is small (then the result tends to T).
    """
    lam = decay_constant_per_s(half_life_s)
    return -math.expm1(-lam * duration_s) / lam
