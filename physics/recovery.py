"""Partial-volume recovery of a hot sphere under a Gaussian system response (pure maths).

Used by phantom analysis (RC curves) and by dosimetry (recovery correction of VOIs).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate

from rntflow.core.errors import CalibrationError

#: FWHM = 2 sqrt(2 ln 2) sigma for a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def rc_blurred_sphere(diameter_mm: float, fwhm_mm: float) -> float:
    """Mean over a sphere of its own indicator blurred by an isotropic 3-D Gaussian.

    This is the recovery coefficient of a hot sphere in a cold background for a
    Gaussian system response (1 for FWHM -> 0, -> 0 for FWHM >> d).
    """
    r = 0.5 * float(diameter_mm)
    if r <= 0:
        raise CalibrationError(f"sphere diameter must be positive, got {diameter_mm!r} mm")
    if fwhm_mm <= 0:
        return 1.0
    sigma = fwhm_mm / FWHM_PER_SIGMA
    vol = 4.0 / 3.0 * math.pi * r**3
    norm = (2.0 * math.pi * sigma**2) ** -1.5

    def integrand(u: float) -> float:
        return (
            4.0
            * math.pi
            * u
            * u
            * norm
            * math.exp(-u * u / (2 * sigma * sigma))
            * (math.pi / 12.0 * (4 * r + u) * (2 * r - u) ** 2)
        )

    upper = min(2.0 * r, 12.0 * sigma)
    val, _ = integrate.quad(integrand, 0.0, upper, limit=200, points=[min(sigma, upper)])
    return float(val / vol)


def sphere_volume_ml(diameter_mm: float | np.ndarray) -> float | np.ndarray:
    return np.pi / 6.0 * np.asarray(diameter_mm, dtype=float) ** 3 / 1000.0


def sphere_diameter_mm(volume_ml: float | np.ndarray) -> float | np.ndarray:
    return np.cbrt(6.0 * np.asarray(volume_ml, dtype=float) * 1000.0 / np.pi)
