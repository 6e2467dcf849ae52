"""Recovery-coefficient curve RC(V) fitted to NEMA sphere RCs, and the trial's RC band.

The model is a Gaussian-blurred sphere in a warm background
(:func:`rntflow.physics.recovery.rc_blurred_sphere`: the mean over a sphere of radius R
of its own indicator convolved with an isotropic Gaussian is
(1/V) int_0^{2R} 4 pi u^2 g(u) V_ov(u) du, V_ov(u) = pi/12 (4R + u)(2R - u)^2 the overlap
volume of two spheres at distance u).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from rntflow.core.errors import CalibrationError
from rntflow.physics.recovery import rc_blurred_sphere, sphere_diameter_mm


@dataclass(frozen=True)
class RcCurve:
    """Fitted recovery curve: Gaussian-blurred sphere in a warm background.

    ``RC(V) = amplitude * (1/SBR + (1 - 1/SBR) * RC0(d(V), fwhm_mm))`` where RC0 is
    :func:`rntflow.physics.recovery.rc_blurred_sphere` and V the sphere volume (mL).
    Calling it with the phantom's SBR (the default) reproduces the measured RC =
    mean/true; ``sbr=math.inf`` gives the pure spill-out recovery of a hot object in a
    cold background.
    """

    fwhm_mm: float
    amplitude: float
    sbr: float

    def __call__(self, volume_ml: float | np.ndarray, sbr: float | None = None) -> float | np.ndarray:
        s = self.sbr if sbr is None else sbr
        inv = 0.0 if math.isinf(s) else 1.0 / s
        d = np.atleast_1d(sphere_diameter_mm(volume_ml))
        rc0 = np.array([rc_blurred_sphere(di, self.fwhm_mm) for di in d])
        out = self.amplitude * (inv + (1.0 - inv) * rc0)
        return float(out[0]) if np.ndim(volume_ml) == 0 else out


def fit_rc_curve(diameters_mm: Sequence[float], rc_values: Sequence[float], sbr: float) -> RcCurve:
    """Least-squares fit of :class:`RcCurve` (FWHM in mm and amplitude) to measured RCs.

    Parameters
    ----------
    diameters_mm : sequence of float
        Sphere inner diameters (mm).
    rc_values : sequence of float
        Measured RC = sphere VOI mean / true sphere concentration.
    sbr : float
        Sphere-to-background concentration ratio of the fill (``math.inf``: cold background).
    """
    d = np.asarray(diameters_mm, dtype=float)
    rc = np.asarray(rc_values, dtype=float)
    inv = 0.0 if math.isinf(sbr) else 1.0 / sbr

    def resid(p: np.ndarray) -> np.ndarray:
        model = p[1] * (inv + (1 - inv) * np.array([rc_blurred_sphere(di, p[0]) for di in d]))
        return model - rc

    sol = optimize.least_squares(resid, x0=[15.0, 1.0], bounds=([0.5, 0.2], [100.0, 5.0]))
    return RcCurve(fwhm_mm=float(sol.x[0]), amplitude=float(sol.x[1]), sbr=float(sbr))


def parse_rc_band(reference_rc_band: Mapping) -> dict[float, tuple[float, float]]:
    """The trial's reference RC band as {sphere diameter (mm): (min RC, max RC)}.

    Raises
    ------
    CalibrationError
        A key that is not a number (mm), or an empty band.
    """
    band = {}
    for key, (lo, hi) in reference_rc_band.items():
        try:
            band[float(key)] = (float(lo), float(hi))
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"reference_rc_band: key {key!r} is not a sphere diameter in mm") from exc
    if not band:
        raise CalibrationError("reference_rc_band is empty: the trial defines no reference RC band")
    return band
