"""From SPECT counts (or vendor Bq/mL) to activity concentration, with decay handling.

* ``bq_per_ml = counts / (sensitivity_cps_per_mbq * duration_s) / voxel_ml * 1e6``.
* Decay during the acquisition (exact integral): counts reflect the mean activity over
  ``[0, T]``, ``A_start (1 - exp(-l T)) / (l T)``; the start activity is that mean times
  ``l T / (1 - exp(-l T))``.
* Decay between acquisition start and a reference time (e.g. administration):
  ``A_ref = A_start * exp(-l (t_ref - t_start))`` (``t_ref`` earlier -> larger).
* Vendor quantitative images (Bq/mL) are divided by the site's cross-calibration scale
  factor (measured/true of the uniform phantom).
* Partial-volume correction: VOI activity / RC(volume).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from rntflow.physics.nuclides import nuclide
from rntflow.core.errors import CalibrationError, DosimetryInputError


def decay_during_acquisition_factor(nuclide_name: str, duration_s: float) -> float:
    """Factor ``l T / (1 - exp(-l T))`` (>= 1) turning mean activity into start activity."""
    if duration_s < 0:
        raise DosimetryInputError("duration must be >= 0 s")
    lam_s = nuclide(nuclide_name).decay_constant_per_h / 3600.0
    x = lam_s * duration_s
    return 1.0 if x == 0 else x / -math.expm1(-x)


def counts_to_bq_per_ml(counts: np.ndarray | float, sensitivity_cps_per_mbq: float, duration_s: float,
                        voxel_ml: float, *, nuclide_name: str | None = None) -> np.ndarray:
    """Activity concentration (Bq/mL) at acquisition start from counts per voxel.

    With ``nuclide_name`` the decay during the acquisition is corrected exactly.
    """
    if sensitivity_cps_per_mbq <= 0:
        raise CalibrationError("sensitivity must be > 0 cps/MBq")
    if duration_s <= 0 or voxel_ml <= 0:
        raise DosimetryInputError("duration and voxel volume must be > 0")
    out = np.asarray(counts, dtype=float) / (sensitivity_cps_per_mbq * duration_s) / voxel_ml * 1e6
    if nuclide_name is not None:
        out = out * decay_during_acquisition_factor(nuclide_name, duration_s)
    return out


def decay_correct(value: np.ndarray | float, nuclide_name: str, from_time_h: float, to_time_h: float) -> np.ndarray:
    """Activity (any unit) at ``to_time_h`` from its value at ``from_time_h`` (physical decay)."""
    lam = nuclide(nuclide_name).decay_constant_per_h
    return np.asarray(value, dtype=float) * math.exp(-lam * (to_time_h - from_time_h))


def vendor_bq_per_ml(image_bq_per_ml: np.ndarray, scale_factor: float) -> np.ndarray:
    """Vendor Bq/mL image corrected by the site's scale factor (measured/true)."""
    if scale_factor <= 0:
        raise CalibrationError("scale factor must be > 0")
    return np.asarray(image_bq_per_ml, dtype=float) / scale_factor


def voi_activity_mbq(bq_per_ml: np.ndarray, mask: np.ndarray, voxel_ml: float) -> float:
    """Activity in a VOI (MBq)."""
    return float(np.asarray(bq_per_ml, float)[np.asarray(mask, bool)].sum() * voxel_ml / 1e6)


def partial_volume_correct(activity_mbq: float, volume_ml: float, rc: Callable[[float], float]) -> float:
    """VOI activity corrected by the recovery coefficient ``rc(volume_ml)``."""
    if volume_ml <= 0:
        raise DosimetryInputError("VOI volume must be > 0 mL")
    value = float(rc(volume_ml))
    if not (0.0 < value <= 1.5):
        raise CalibrationError(f"implausible recovery coefficient {value} at {volume_ml} mL")
    return activity_mbq / value
