"""Uniform-cylinder calibration: camera sensitivity (CNTS) or vendor scale factor (BQML),
and the conversion of image values to Bq/mL that uses it.

Array and spacing conventions as in :mod:`rntflow.harmonization.phantom`.

Sources
-------
* Decay during acquisition: counts = S * A0 * (1 - exp(-lambda T)) / lambda (exact
  integral of A0 exp(-lambda t) over [0, T]; Dewaraja et al 2012, MIRD Pamphlet 23,
  J Nucl Med 53:1310), computed once in :func:`rntflow.physics.decay.decay_integral_s`.
* Uncertainty combination: GUM, JCGM 100:2008.
* System resolution from the cylinder's edge (:func:`cylinder_edge_fwhm`): the image of a
  uniform disc of radius R blurred by an isotropic 2-D Gaussian of SD sigma is, at distance
  r from the axis, ``P(r) = 1 - Q1(r/sigma, R/sigma)`` with Q1 the first-order Marcum Q
  function, i.e. the CDF of a non-central chi-square with 2 degrees of freedom and
  non-centrality (r/sigma)^2 evaluated at (R/sigma)^2 (Marcum 1950; the edge-spread
  function of a circular object, as in the edge method of Boone and Seibert 1994, Med Phys
  21:1541). Far from the end caps the axial blur does not change a long cylinder's image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from scipy.stats import ncx2

from rntflow.core.errors import CalibrationError
from rntflow.harmonization.phantom import check_phantom_image, phantom_mask, touches_border
from rntflow.physics.decay import decay_constant_per_s, decay_integral_s
from rntflow.physics.recovery import FWHM_PER_SIGMA

#: Default spill-out margin (mm) when the system FWHM is not known: 3 x ~13 mm, a typical
#: 177Lu MEGP SPECT resolution with resolution recovery (Ljungberg et al 2016, MIRD 26).
DEFAULT_SPILL_MARGIN_MM = 40.0
#: Half-width (mm) of the radial band around the thresholded edge used by the edge fit:
#: more than 3 sigma of a 30 mm FWHM, so the plateau and the background both enter the fit.
EDGE_BAND_MM = 45.0
#: Plausible system FWHM (mm) for an edge fit; outside this range the fit is rejected.
EDGE_FWHM_RANGE_MM = (2.0, 40.0)
#: An edge fit whose own relative SD of the FWHM exceeds this is rejected.
EDGE_MAX_REL_SD = 0.25


@dataclass(frozen=True)
class UniformCylinderResult:
    """Sensitivity (CNTS) or vendor scale factor (BQML) from a uniform cylinder.

    ``value`` is whichever of the two applies; ``standard_uncertainty`` is its absolute
    standard uncertainty, the quadrature sum of the three relative components.
    """

    units: str
    sensitivity_cps_per_mbq: float | None
    vendor_scale_factor: float | None
    value: float
    standard_uncertainty: float
    rel_uncertainty_poisson: float
    rel_uncertainty_voi: float
    rel_uncertainty_activity: float
    voi_total: float
    voi_volume_ml: float
    phantom_volume_ml: float
    voi_margin_mm: float
    voi_clipped_by_fov: bool
    activity_at_acq_start_mbq: float
    duration_s: float
    effective_duration_s: float
    interior_cov: float


@dataclass(frozen=True)
class _VoiTotals:
    """The spill-out VOI (phantom dilated by a margin) and its total (image units)."""

    total: float
    voi: np.ndarray
    margin_mm: float
    rel_uncertainty: float


def _checked_units(activity_at_acq_start_mbq: float | None, units: str | None, duration_s: float | None) -> str:
    """Upper-case units after checking the activity, units and duration are usable."""
    if activity_at_acq_start_mbq is None or not activity_at_acq_start_mbq > 0:
        raise CalibrationError(
            f"uniform cylinder: no activity information (activity at acquisition start "
            f"{activity_at_acq_start_mbq!r} MBq); check RadionuclideTotalDose or the fill log"
        )
    unit = (units or "").upper()
    if unit not in ("CNTS", "BQML"):
        raise CalibrationError(f"uniform cylinder: units must be CNTS or BQML, got {units!r}")
    if unit == "CNTS" and (duration_s is None or not duration_s > 0):
        raise CalibrationError(f"uniform cylinder: acquisition duration missing ({duration_s!r} s)")
    return unit


def _voi_totals(arr: np.ndarray, sp: np.ndarray, mask: np.ndarray, fwhm_mm: float, margin_fwhm: float) -> _VoiTotals:
    """Total in the phantom dilated by ``margin_fwhm`` x FWHM, and the VOI-definition
    uncertainty: the totals with (k - 1) and (k + 1) FWHM margins bound the value, their
    half-difference is the half-width of a rectangular distribution (u = a / sqrt(3))."""
    margin_mm = margin_fwhm * fwhm_mm
    dist_mm = ndimage.distance_transform_edt(~mask, sampling=sp)

    def total(margin: float) -> float:
        return float(arr[dist_mm <= margin].sum())

    voi = dist_mm <= margin_mm
    voi_total = float(arr[voi].sum())
    lo_total, hi_total = total(max(margin_mm - fwhm_mm, 0.0)), total(margin_mm + fwhm_mm)
    rel = abs(hi_total - lo_total) / 2.0 / math.sqrt(3.0) / voi_total if voi_total > 0 else math.inf
    return _VoiTotals(voi_total, voi, margin_mm, rel)


def _interior_cov(arr: np.ndarray, sp: np.ndarray, mask: np.ndarray, fwhm_mm: float) -> float:
    """Coefficient of variation of the voxels deeper than 2 FWHM inside the phantom."""
    interior = ndimage.distance_transform_edt(mask, sampling=sp) > 2.0 * fwhm_mm
    vals = arr[interior] if interior.any() else arr[mask]
    return float(vals.std() / vals.mean()) if vals.mean() > 0 else math.nan


def analyse_uniform_cylinder(
    image_values: np.ndarray,
    spacing_mm: Sequence[float],
    duration_s: float | None,
    activity_at_acq_start_mbq: float | None,
    units: str | None,
    half_life_s: float | None,
    system_fwhm_mm: float | None = None,
    voi_margin_fwhm: float = 3.0,
    total_counts: float | None = None,
    activity_rel_uncertainty: float = 0.0,
) -> UniformCylinderResult:
    """Camera sensitivity or vendor scale factor from a uniform-cylinder SPECT.

    Parameters
    ----------
    image_values : ndarray (z, y, x)
        Reconstructed values: counts per voxel (``CNTS``) or Bq/mL decay-corrected to
        acquisition start (``BQML``).
    spacing_mm : (dz, dy, dx)
        Voxel spacing (mm).
    duration_s : float
        Acquisition duration (s) (needed for ``CNTS``).
    activity_at_acq_start_mbq : float
        True activity in the phantom at acquisition start (MBq): fill activity decayed
        from its reference time with :func:`rntflow.physics.decay.activity_at`.
    units : {"CNTS", "BQML"}
    half_life_s : float
        Physical half-life (s).
    system_fwhm_mm : float, optional
        System resolution (mm); the VOI is the thresholded phantom dilated by
        ``voi_margin_fwhm`` x FWHM to capture spill-out. Without it a 40 mm margin is used.
    total_counts : float, optional
        Detected counts of a BQML acquisition, for its Poisson term (a CNTS image uses
        its own VOI total).
    activity_rel_uncertainty : float
        Relative standard uncertainty of the dose-calibrator activity (default 0: the
        caller adds the site's dose-calibrator uncertainty when known).

    Returns
    -------
    UniformCylinderResult

    Notes
    -----
    CNTS: ``S = C / (A0 * (1 - exp(-lambda T)) / lambda)`` (cps/MBq), C the VOI total.
    BQML: ``f = sum(v) * V_voxel / A0`` (measured / true, dimensionless).

    Uncertainty: Poisson ``1/sqrt(C)`` (image total taken as detected counts, which
    ML-EM preserves); VOI definition (see :func:`_voi_totals`); the activity term as
    given. All combined in quadrature (GUM, JCGM 100:2008).

    Raises
    ------
    CalibrationError
        Empty image, missing activity/duration/half-life, unknown units, or a phantom
        extending beyond the field of view.
    """
    arr, sp = check_phantom_image(image_values, spacing_mm)
    unit = _checked_units(activity_at_acq_start_mbq, units, duration_s)
    decay_constant_per_s(half_life_s)  # validates the half-life before any image work
    mask = phantom_mask(arr, sp)
    if touches_border(mask):
        raise CalibrationError("uniform cylinder extends beyond the field of view: counts are truncated")
    voxel_ml = float(np.prod(sp)) / 1000.0
    fwhm = system_fwhm_mm if system_fwhm_mm and system_fwhm_mm > 0 else DEFAULT_SPILL_MARGIN_MM / voi_margin_fwhm
    vt = _voi_totals(arr, sp, mask, fwhm, voi_margin_fwhm)

    tau_s = decay_integral_s(duration_s, half_life_s) if unit == "CNTS" else math.nan
    if unit == "CNTS":
        sens, scale = vt.total / (activity_at_acq_start_mbq * tau_s), None
        value = sens
        rel_poisson = 1.0 / math.sqrt(vt.total) if vt.total > 0 else math.inf
    else:
        sens, scale = None, vt.total * voxel_ml * 1e-6 / activity_at_acq_start_mbq
        value = scale
        rel_poisson = 1.0 / math.sqrt(total_counts) if total_counts and total_counts > 0 else 0.0
    rel = math.sqrt(rel_poisson**2 + vt.rel_uncertainty**2 + activity_rel_uncertainty**2)
    return UniformCylinderResult(
        units=unit,
        sensitivity_cps_per_mbq=sens,
        vendor_scale_factor=scale,
        value=value,
        standard_uncertainty=abs(value) * rel,
        rel_uncertainty_poisson=rel_poisson,
        rel_uncertainty_voi=vt.rel_uncertainty,
        rel_uncertainty_activity=activity_rel_uncertainty,
        voi_total=vt.total,
        voi_volume_ml=float(vt.voi.sum()) * voxel_ml,
        phantom_volume_ml=float(mask.sum()) * voxel_ml,
        voi_margin_mm=vt.margin_mm,
        voi_clipped_by_fov=touches_border(vt.voi),
        activity_at_acq_start_mbq=activity_at_acq_start_mbq,
        duration_s=float(duration_s) if duration_s else math.nan,
        effective_duration_s=tau_s,
        interior_cov=_interior_cov(arr, sp, mask, fwhm),
    )


@dataclass(frozen=True)
class EdgeResolution:
    """System resolution estimated from a uniform cylinder's radial edge.

    Attributes
    ----------
    fwhm_mm : float
        Fitted Gaussian FWHM (mm) of the transaxial system response.
    fwhm_sd_mm : float
        Its standard uncertainty from the fit covariance (mm); noise only, not model error.
    radius_mm : float
        Cylinder radius (mm): fitted, or the known radius when given.
    centre_yx_mm : (float, float)
        Fitted axis position (mm, array frame: voxel (0, 0) centre at 0).
    n_slices : int
        Central transaxial slices averaged for the profile.
    n_points : int
        Pixels of the averaged slice that entered the fit.
    rms_residual_rel : float
        RMS fit residual relative to the plateau level.
    """

    fwhm_mm: float
    fwhm_sd_mm: float
    radius_mm: float
    centre_yx_mm: tuple[float, float]
    n_slices: int
    n_points: int
    rms_residual_rel: float


def disc_edge_profile(r_mm: np.ndarray, radius_mm: float, sigma_mm: float) -> np.ndarray:
    """A uniform disc of unit height blurred by an isotropic 2-D Gaussian, at radius ``r_mm``.

    ``P(r) = 1 - Q1(r / sigma, R / sigma)`` (module docstring): 1 on the axis of a disc much
    wider than sigma, 1/2 near the edge, 0 far outside.
    """
    s = max(float(sigma_mm), 1e-6)
    return ncx2.cdf((radius_mm / s) ** 2, 2, (np.asarray(r_mm, dtype=float) / s) ** 2)


def _central_slab(arr: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean of the slices in the central half of the phantom's axial extent, its mask, and
    the number of slices (the end caps' axial blur stays out of the profile)."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        raise CalibrationError("uniform cylinder: no phantom found for the edge fit")
    quarter = (zs[-1] - zs[0] + 1) // 4
    k0, k1 = zs[0] + quarter, zs[-1] - quarter
    slab = arr[k0 : k1 + 1].mean(axis=0)
    return slab, mask[k0 : k1 + 1].mean(axis=0) >= 0.5, int(k1 - k0 + 1)


def cylinder_edge_fwhm(
    image_values: np.ndarray, spacing_mm: Sequence[float], radius_mm: float | None = None
) -> EdgeResolution:
    """System FWHM (mm) from the radial edge of a uniform-cylinder image.

    Parameters
    ----------
    image_values : ndarray (z, y, x)
        Reconstruction of a uniform cylinder whose axis is along z (lying on the couch),
        in any linear unit (counts or Bq/mL).
    spacing_mm : (dz, dy, dx)
        Voxel spacing (mm).
    radius_mm : float, optional
        Known inner radius (mm); fitted when not given.

    Returns
    -------
    EdgeResolution

    Notes
    -----
    The central half of the phantom's axial extent is averaged into one transaxial image;
    its pixels within :data:`EDGE_BAND_MM` of the thresholded edge are fitted (least squares)
    with ``B + A P(|x - c|; R, sigma)`` (:func:`disc_edge_profile`), free parameters
    background B, plateau A, axis c, sigma and (unless given) R. Pixel values are taken as
    samples of the blurred object at pixel centres, as the NEMA recovery-curve fit does, so
    the FWHM includes the reconstruction's own voxel response. Without scatter correction
    the broad scatter halo widens the fitted FWHM.

    Raises
    ------
    CalibrationError
        Empty image, a phantom touching the field of view, a fit that does not converge,
        or a FWHM outside :data:`EDGE_FWHM_RANGE_MM` or with a relative SD above
        :data:`EDGE_MAX_REL_SD`.
    """
    arr, sp = check_phantom_image(image_values, spacing_mm)
    mask = phantom_mask(arr, sp)
    if touches_border(mask):
        raise CalibrationError("uniform cylinder extends beyond the field of view: no edge to fit")
    slab, slab_mask, n_slices = _central_slab(arr, mask)
    yy, xx = np.meshgrid(np.arange(slab.shape[0]) * sp[1], np.arange(slab.shape[1]) * sp[2], indexing="ij")
    area_mm2 = float(slab_mask.sum()) * sp[1] * sp[2]
    r0 = math.sqrt(area_mm2 / math.pi)
    cy, cx = float(yy[slab_mask].mean()), float(xx[slab_mask].mean())
    rr = np.hypot(yy - cy, xx - cx)
    band = (rr >= max(r0 - EDGE_BAND_MM, 0.0)) & (rr <= r0 + EDGE_BAND_MM)
    y, x, v = yy[band], xx[band], slab[band]
    level = float(np.median(slab[rr <= max(r0 - EDGE_BAND_MM, 0.5 * r0)])) if r0 > 0 else float(v.max())
    fixed_r = radius_mm is not None

    def unpack(p: np.ndarray) -> tuple[float, float, float, float, float, float]:
        b, a, y0, x0, sigma = p[:5]
        return b, a, y0, x0, sigma, (float(radius_mm) if fixed_r else p[5])

    def resid(p: np.ndarray) -> np.ndarray:
        b, a, y0, x0, sigma, r = unpack(p)
        return b + a * disc_edge_profile(np.hypot(y - y0, x - x0), r, sigma) - v

    p0 = [0.0, level, cy, cx, 5.0] + ([] if fixed_r else [r0])
    lo = [-np.inf, 0.0, cy - 20.0, cx - 20.0, 0.3] + ([] if fixed_r else [0.5 * r0])
    hi = [np.inf, np.inf, cy + 20.0, cx + 20.0, 40.0] + ([] if fixed_r else [1.5 * r0 + 1.0])
    sol = optimize.least_squares(resid, p0, bounds=(lo, hi), x_scale="jac")
    if not sol.success:
        raise CalibrationError(f"uniform cylinder edge fit did not converge: {sol.message}")
    dof = max(v.size - len(p0), 1)
    s2 = float(np.sum(sol.fun**2)) / dof
    try:
        cov = np.linalg.inv(sol.jac.T @ sol.jac) * s2
        sigma_sd = math.sqrt(max(float(cov[4, 4]), 0.0))
    except np.linalg.LinAlgError:
        sigma_sd = math.inf
    b, a, y0, x0, sigma, r = unpack(sol.x)
    fwhm, fwhm_sd = FWHM_PER_SIGMA * sigma, FWHM_PER_SIGMA * sigma_sd
    if not EDGE_FWHM_RANGE_MM[0] <= fwhm <= EDGE_FWHM_RANGE_MM[1]:
        raise CalibrationError(
            f"uniform cylinder edge fit: FWHM {fwhm:.1f} mm outside the plausible "
            f"{EDGE_FWHM_RANGE_MM[0]:g}-{EDGE_FWHM_RANGE_MM[1]:g} mm"
        )
    if not fwhm_sd <= EDGE_MAX_REL_SD * fwhm:
        raise CalibrationError(f"uniform cylinder edge fit: FWHM {fwhm:.1f} +- {fwhm_sd:.1f} mm too uncertain")
    return EdgeResolution(
        fwhm_mm=fwhm,
        fwhm_sd_mm=fwhm_sd,
        radius_mm=float(r),
        centre_yx_mm=(float(y0), float(x0)),
        n_slices=n_slices,
        n_points=int(v.size),
        rms_residual_rel=math.sqrt(s2) / a if a > 0 else math.inf,
    )


def to_bq_per_ml(
    image_values: np.ndarray,
    units: str,
    voxel_volume_ml: float,
    duration_s: float | None = None,
    half_life_s: float | None = None,
    sensitivity_cps_per_mbq: float | None = None,
    vendor_scale_factor: float | None = None,
) -> np.ndarray:
    """Image values to activity concentration (Bq/mL) at acquisition start.

    CNTS: ``C = counts / (S * tau * V_voxel * 1e-6)`` with tau (s) from
    :func:`rntflow.physics.decay.decay_integral_s`, S in cps/MBq, V_voxel in mL.
    BQML: ``C = value / f`` (the vendor scale factor, 1 when not given).

    Raises
    ------
    CalibrationError
        A CNTS image without a positive sensitivity, duration or half-life; a vendor
        scale factor that is not positive; unknown units.
    """
    unit = (units or "").upper()
    arr = np.asarray(image_values, dtype=np.float64)
    if unit == "BQML":
        if vendor_scale_factor is None:
            return arr
        if not vendor_scale_factor > 0:
            raise CalibrationError(f"vendor scale factor must be > 0, got {vendor_scale_factor!r}")
        return arr / vendor_scale_factor
    if unit == "CNTS":
        if not all(v is not None and v > 0 for v in (sensitivity_cps_per_mbq, duration_s, half_life_s)):
            raise CalibrationError("CNTS image: sensitivity, duration and half-life are all needed (> 0) for Bq/mL")
        tau = decay_integral_s(duration_s, half_life_s)
        return arr / (sensitivity_cps_per_mbq * tau * voxel_volume_ml * 1e-6)
    raise CalibrationError(f"units must be CNTS or BQML, got {units!r}")
