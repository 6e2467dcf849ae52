"""The harmonising filter: a Gaussian post-filter that brings a site's RCs into the trial band.

Array and spacing conventions as in :mod:`rntflow.harmonization.phantom`; RCs are
re-measured at the sphere centres located by :mod:`rntflow.harmonization.nema`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rntflow.core.errors import CalibrationError
from rntflow.harmonization.nema import NemaResult, measure_sphere_rcs
from rntflow.harmonization.phantom import check_phantom_image
from rntflow.harmonization.rc_curve import parse_rc_band
from rntflow.physics.recovery import FWHM_PER_SIGMA


@dataclass(frozen=True)
class HarmonisingFilter:
    """The Gaussian post-filter that brings a site's RCs into the trial reference band.

    ``status``: ``pass`` (already in band, no filter), ``filter`` (in band after a
    Gaussian of ``fwhm_mm``), ``fail`` (below the band already, or no FWHM fits).
    ``rc_before`` / ``rc_after`` and ``band`` are keyed by sphere diameter (mm).
    """

    status: str
    fwhm_mm: float | None
    rc_before: dict[float, float]
    rc_after: dict[float, float]
    band: dict[float, tuple[float, float]]
    message: str


def _gaussian(arr: np.ndarray, sp: np.ndarray, fwhm_mm: float) -> np.ndarray:
    """The image filtered by an isotropic Gaussian of ``fwhm_mm`` (unchanged for 0)."""
    return arr if fwhm_mm <= 0 else ndimage.gaussian_filter(arr, sigma=fwhm_mm / FWHM_PER_SIGMA / sp)


def _in_band(rcs: Mapping[float, float], band: Mapping[float, tuple[float, float]]) -> bool:
    return all(lo <= rcs[d] <= hi for d, (lo, hi) in band.items())


def _band_score(rcs: Mapping[float, float], band: Mapping[float, tuple[float, float]]) -> float:
    """Sum of squared deviations from the band centres, in band half-widths."""
    return sum(((rcs[d] - 0.5 * (lo + hi)) / (0.5 * (hi - lo))) ** 2 for d, (lo, hi) in band.items())


def harmonising_filter(
    image_bq_per_ml: np.ndarray,
    spacing_mm: Sequence[float],
    nema: NemaResult,
    reference_rc_band: Mapping,
    max_fwhm_mm: float = 30.0,
    step_mm: float = 0.25,
) -> HarmonisingFilter:
    """Find the Gaussian post-filter FWHM (mm) that puts the site's RCs in the band.

    The image is filtered with Gaussians of FWHM 0, step, 2 step ... max_fwhm_mm and the
    RCs re-measured at the located sphere centres. Among filters that put every banded
    sphere inside its band, the one closest to the band centres (sum of squared
    deviations in band half-widths) is chosen.

    Parameters
    ----------
    image_bq_per_ml : ndarray (z, y, x)
        The calibrated image the NEMA analysis used (Bq/mL).
    spacing_mm : (dz, dy, dx)
    nema : NemaResult
        Sphere centres, truth and background of that analysis.
    reference_rc_band : mapping
        ``TrialConfig.calibration.reference_rc_band``: sphere diameter (mm, str or
        number) -> (min RC, max RC).
    max_fwhm_mm, step_mm : float
        Search range and step of the filter FWHM (mm).

    Raises
    ------
    CalibrationError
        An empty band, or a band naming a sphere the phantom does not have.
    """
    arr, sp = check_phantom_image(image_bq_per_ml, spacing_mm)
    band = parse_rc_band(reference_rc_band)
    by_d = {s.diameter_mm: s for s in nema.spheres}
    missing = [d for d in band if not any(abs(d - k) < 0.5 for k in by_d)]
    if missing:
        raise CalibrationError(f"reference_rc_band names sphere(s) {missing} mm the phantom does not have")
    keys = {d: min(by_d, key=lambda k: abs(k - d)) for d in band}
    centres = np.array([by_d[keys[d]].centre_zyx_mm for d in band])
    diams = [keys[d] for d in band]

    def rcs(fwhm: float) -> dict[float, float]:
        res = measure_sphere_rcs(
            _gaussian(arr, sp, fwhm), sp, centres, nema.truth, nema.background_mean_bq_per_ml, diams
        )
        return {d: r.rc for d, r in zip(band, res)}

    before = rcs(0.0)
    if _in_band(before, band):
        return HarmonisingFilter("pass", 0.0, before, before, band, "RCs within the reference band without filtering")
    below = [d for d, (lo, _) in band.items() if before[d] < lo]
    if below:
        return HarmonisingFilter(
            "fail",
            None,
            before,
            before,
            band,
            f"RC below the reference band for sphere(s) {below} mm: the site is already blurrier "
            "than the reference and no post-filter can sharpen it",
        )
    best = None
    for fwhm in np.arange(step_mm, max_fwhm_mm + 1e-9, step_mm):
        now = rcs(float(fwhm))
        if _in_band(now, band):
            score = _band_score(now, band)
            if best is None or score < best[0]:
                best = (score, float(fwhm), now)
        elif best is not None and any(now[d] < band[d][0] for d in band):
            break  # RCs fall monotonically with FWHM: past the band
    if best is None:
        return HarmonisingFilter(
            "fail",
            None,
            before,
            before,
            band,
            f"no Gaussian post-filter up to {max_fwhm_mm} mm brings all RCs into the band",
        )
    return HarmonisingFilter(
        "filter", best[1], before, best[2], band, f"Gaussian post-filter FWHM {best[1]:.2f} mm brings RCs into the band"
    )


def harmonised_rcs(
    image_bq_per_ml: np.ndarray, spacing_mm: Sequence[float], nema: NemaResult, hf: HarmonisingFilter | None
) -> dict[float, float]:
    """RC of every sphere (keyed by diameter, mm) after the harmonising filter.

    Empty when there is no usable filter (``None``, ``fail`` or no FWHM); the unfiltered
    RCs when no filter is needed (FWHM 0).
    """
    if hf is None or hf.status == "fail" or hf.fwhm_mm is None:
        return {}
    if hf.fwhm_mm <= 0:
        return {s.diameter_mm: s.rc for s in nema.spheres}
    sp = np.asarray(spacing_mm, dtype=float)
    filtered = _gaussian(np.asarray(image_bq_per_ml, dtype=float), sp, hf.fwhm_mm)
    centres = np.array([s.centre_zyx_mm for s in nema.spheres])
    diams = [s.diameter_mm for s in nema.spheres]
    res = measure_sphere_rcs(filtered, sp, centres, nema.truth, nema.background_mean_bq_per_ml, diams)
    return {r.diameter_mm: r.rc for r in res}
