"""Phantom analysis: uniform-cylinder sensitivity and NEMA IEC body recovery coefficients.

Conventions
-----------
* Arrays are indexed ``(z, y, x)`` (``SimpleITK.GetArrayFromImage`` order) and
  ``spacing_mm`` is given in the same order ``(dz, dy, dx)``; use
  :func:`array_and_spacing` to get both from a SimpleITK image.
* Activities are at acquisition start unless the name says otherwise.
* RC = mean over the true-size sphere VOI (partial-voxel weighted) / true concentration.

Sources
-------
* NEMA NU 2-2018 section 7 / IEC 61675-1: IEC body phantom, sphere inner diameters 10, 13,
  17, 22, 28, 37 mm on a 57.2 mm radius circle around the lung insert (50 mm), in one plane.
* Decay during acquisition: counts = S * A0 * (1 - exp(-lambda T)) / lambda (exact
  integral of A0 exp(-lambda t) over [0, T]; e.g. EANM/MIRD guidance, Dewaraja et al 2012,
  MIRD Pamphlet 23, J Nucl Med 53:1310).
* Gaussian-blurred sphere: mean over a sphere of radius R of its own indicator convolved
  with an isotropic Gaussian of std sigma is (1/V) int_0^{2R} 4 pi u^2 g(u) V_ov(u) du with
  V_ov(u) = pi/12 (4R + u)(2R - u)^2 the overlap volume of two spheres at distance u.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import numpy as np
import SimpleITK as sitk
from scipy import integrate, ndimage, optimize

from rntflow.core.errors import CalibrationError
from rntflow.physics.decay import activity_at, decay_constant_per_s, decay_integral_s
from rntflow.physics.recovery import FWHM_PER_SIGMA, rc_blurred_sphere, sphere_diameter_mm, sphere_volume_ml

#: NEMA IEC body phantom sphere inner diameters (mm), NEMA NU 2-2018 section 7.1.
NEMA_SPHERE_DIAMETERS_MM: tuple[float, ...] = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
#: Radius (mm) of the circle of sphere centres around the phantom axis (NEMA NU 2-2018).
NEMA_SPHERE_RING_RADIUS_MM = 57.2
#: Lung insert outer diameter (mm), approximately 50 mm (NEMA NU 2-2018 section 7.1).
NEMA_LUNG_INSERT_DIAMETER_MM = 50.0
#: Default spill-out margin (mm) when the system FWHM is not known: 3 x ~13 mm, a typical
#: 177Lu MEGP SPECT resolution with resolution recovery (Ljungberg et al 2016, MIRD 26).
DEFAULT_SPILL_MARGIN_MM = 40.0
#: Minimum hot excess over background (fraction of background) for the spheres to count as
#: found: a 37 mm sphere at SBR 4 with RC 0.4 stands ~1.6x above background, noise after
#: 1-voxel smoothing at ~7 % per voxel is ~2 %.
MIN_HOT_EXCESS_FRACTION = 0.25


# --------------------------------------------------------------------------- utilities


def array_and_spacing(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A SimpleITK image as a float64 ``(z, y, x)`` array and ``(dz, dy, dx)`` spacing (mm)."""
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    sx, sy, sz = image.GetSpacing()
    return arr, (sz, sy, sx)








def _check_image(values: np.ndarray, spacing_mm) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 3 or arr.size == 0:
        raise CalibrationError(f"phantom image must be a non-empty 3-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError("phantom image contains NaN or infinite values")
    if not np.any(arr > 0):
        raise CalibrationError("phantom image is empty (no positive voxel): nothing to calibrate")
    sp = np.asarray(spacing_mm, dtype=np.float64)
    if sp.shape != (3,) or not np.all(sp > 0):
        raise CalibrationError(f"spacing_mm must be three positive values (dz, dy, dx), got {spacing_mm!r}")
    return arr, sp


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def _plateau_level(smoothed: np.ndarray) -> float:
    """Robust activity level of the phantom's large uniform region (image units).

    The 99th percentile lies in the upper tail of the uniform region (which fills well
    over 1 % of the FOV); the median of everything above half of it is the plateau.
    """
    p99 = float(np.percentile(smoothed, 99.0))
    if p99 <= 0:
        p99 = float(smoothed.max())
    return float(np.median(smoothed[smoothed > 0.5 * p99]))


def phantom_mask(values: np.ndarray, spacing_mm, threshold_fraction: float = 0.5) -> np.ndarray:
    """Boolean mask of the phantom: smoothed image above a fraction of its plateau level.

    The largest connected component is kept and cold holes are filled slice by slice.
    """
    arr, sp = _check_image(values, spacing_mm)
    sm = ndimage.gaussian_filter(arr, sigma=1.0)
    level = _plateau_level(sm)
    mask = _largest_component(sm > threshold_fraction * level)
    filled = np.zeros_like(mask)
    for k in range(mask.shape[0]):
        filled[k] = ndimage.binary_fill_holes(mask[k])
    return filled


def _touches_border(mask: np.ndarray) -> bool:
    return bool(
        mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        or mask[:, :, 0].any() or mask[:, :, -1].any()
    )


# --------------------------------------------------------------------------- uniform cylinder


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


def analyse_uniform_cylinder(
    image_values: np.ndarray,
    spacing_mm,
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
        from its reference time with :func:`activity_at`.
    units : {"CNTS", "BQML"}
    half_life_s : float
        Physical half-life (s).
    system_fwhm_mm : float, optional
        System resolution; the VOI is the thresholded phantom dilated by
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
    ML-EM preserves); VOI definition: the totals with margins of (k - 1) and (k + 1)
    FWHM bound the value, their half-difference is taken as the half-width of a
    rectangular distribution (standard uncertainty half-width / sqrt(3)); the activity
    term as given. All combined in quadrature (GUM, JCGM 100:2008).

    Raises
    ------
    CalibrationError
        Empty image, missing activity/duration/half-life, unknown units, or a phantom
        extending beyond the field of view.
    """
    arr, sp = _check_image(image_values, spacing_mm)
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
    lam = decay_constant_per_s(half_life_s)  # validates half-life

    mask = phantom_mask(arr, sp)
    if _touches_border(mask):
        raise CalibrationError("uniform cylinder extends beyond the field of view: counts are truncated")
    voxel_ml = float(np.prod(sp)) / 1000.0
    fwhm = system_fwhm_mm if system_fwhm_mm and system_fwhm_mm > 0 else DEFAULT_SPILL_MARGIN_MM / voi_margin_fwhm
    margin_mm = voi_margin_fwhm * fwhm
    dist_mm = ndimage.distance_transform_edt(~mask, sampling=sp)

    def total(margin: float) -> tuple[float, np.ndarray]:
        voi = dist_mm <= margin
        return float(arr[voi].sum()), voi

    voi_total, voi = total(margin_mm)
    lo_total, _ = total(max(margin_mm - fwhm, 0.0))
    hi_total, _ = total(margin_mm + fwhm)
    rel_voi = abs(hi_total - lo_total) / 2.0 / math.sqrt(3.0) / voi_total if voi_total > 0 else math.inf

    interior = ndimage.distance_transform_edt(mask, sampling=sp) > 2.0 * fwhm
    interior_vals = arr[interior] if interior.any() else arr[mask]
    cov = float(interior_vals.std() / interior_vals.mean()) if interior_vals.mean() > 0 else math.nan

    tau_s = decay_integral_s(duration_s, half_life_s) if unit == "CNTS" else math.nan
    if unit == "CNTS":
        sens = voi_total / (activity_at_acq_start_mbq * tau_s)
        scale = None
        value = sens
        rel_poisson = 1.0 / math.sqrt(voi_total) if voi_total > 0 else math.inf
    else:
        measured_mbq = voi_total * voxel_ml * 1e-6
        scale = measured_mbq / activity_at_acq_start_mbq
        sens = None
        value = scale
        rel_poisson = 1.0 / math.sqrt(total_counts) if total_counts and total_counts > 0 else 0.0
    rel = math.sqrt(rel_poisson**2 + rel_voi**2 + activity_rel_uncertainty**2)
    return UniformCylinderResult(
        units=unit,
        sensitivity_cps_per_mbq=sens,
        vendor_scale_factor=scale,
        value=value,
        standard_uncertainty=abs(value) * rel,
        rel_uncertainty_poisson=rel_poisson,
        rel_uncertainty_voi=rel_voi,
        rel_uncertainty_activity=activity_rel_uncertainty,
        voi_total=voi_total,
        voi_volume_ml=float(voi.sum()) * voxel_ml,
        phantom_volume_ml=float(mask.sum()) * voxel_ml,
        voi_margin_mm=margin_mm,
        voi_clipped_by_fov=_touches_border(voi),
        activity_at_acq_start_mbq=activity_at_acq_start_mbq,
        duration_s=float(duration_s) if duration_s else math.nan,
        effective_duration_s=tau_s,
        interior_cov=cov,
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

    CNTS: ``C = counts / (S * tau * V_voxel * 1e-6)`` with tau from :func:`decay_integral_s`.
    BQML: ``C = value / f`` (the vendor scale factor, 1 when not given).

    Raises
    ------
    CalibrationError
        A CNTS image without sensitivity, duration or half-life.
    """
    unit = (units or "").upper()
    arr = np.asarray(image_values, dtype=np.float64)
    if unit == "BQML":
        return arr / (vendor_scale_factor if vendor_scale_factor else 1.0)
    if unit == "CNTS":
        if not sensitivity_cps_per_mbq or not duration_s or not half_life_s:
            raise CalibrationError("CNTS image: sensitivity, duration and half-life are all needed for Bq/mL")
        tau = decay_integral_s(duration_s, half_life_s)
        return arr / (sensitivity_cps_per_mbq * tau * voxel_volume_ml * 1e-6)
    raise CalibrationError(f"units must be CNTS or BQML, got {units!r}")


# --------------------------------------------------------------------------- blurred-sphere RC








@dataclass(frozen=True)
class RcCurve:
    """Fitted recovery curve: Gaussian-blurred sphere in a warm background.

    ``RC(V) = amplitude * (1/SBR + (1 - 1/SBR) * RC0(d(V), fwhm_mm))`` where RC0 is
    :func:`rc_blurred_sphere`. Calling it with the phantom's SBR (the default) reproduces
    the measured RC = mean/true; ``sbr=math.inf`` gives the pure spill-out recovery of a
    hot object in a cold background.
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


def fit_rc_curve(diameters_mm, rc_values, sbr: float) -> RcCurve:
    """Least-squares fit of :class:`RcCurve` (FWHM and amplitude) to measured RCs."""
    d = np.asarray(diameters_mm, dtype=float)
    rc = np.asarray(rc_values, dtype=float)
    inv = 0.0 if math.isinf(sbr) else 1.0 / sbr

    def resid(p: np.ndarray) -> np.ndarray:
        model = p[1] * (inv + (1 - inv) * np.array([rc_blurred_sphere(di, p[0]) for di in d]))
        return model - rc

    sol = optimize.least_squares(resid, x0=[15.0, 1.0], bounds=([0.5, 0.2], [100.0, 5.0]))
    return RcCurve(fwhm_mm=float(sol.x[0]), amplitude=float(sol.x[1]), sbr=float(sbr))


# --------------------------------------------------------------------------- NEMA IEC body


@dataclass(frozen=True)
class NemaTruth:
    """True activity concentrations (Bq/mL) in a NEMA IEC phantom at acquisition start."""

    background_bq_per_ml: float
    sphere_bq_per_ml: float
    sphere_to_background_ratio: float


def nema_true_concentrations(
    total_activity_mbq: float | None,
    reference_datetime: datetime | None,
    acquisition_start: datetime | None,
    background_volume_ml: float | None,
    sphere_to_background_ratio: float | None,
    half_life_s: float | None,
    activity_includes_spheres: bool = True,
    sphere_diameters_mm=NEMA_SPHERE_DIAMETERS_MM,
) -> NemaTruth:
    """True background and sphere concentrations (Bq/mL) at acquisition start.

    With ``activity_includes_spheres`` (the fill log's total activity is everything in the
    phantom) ``c_bg = A / (V_bg + SBR * V_spheres)``; otherwise ``c_bg = A / V_bg``.

    Raises
    ------
    CalibrationError
        When activity, reference time, volume, SBR or half-life is missing.
    """
    if total_activity_mbq is None or not total_activity_mbq > 0:
        raise CalibrationError(f"NEMA phantom: no activity information ({total_activity_mbq!r} MBq)")
    if reference_datetime is None or acquisition_start is None:
        raise CalibrationError("NEMA phantom: activity reference time or acquisition start missing")
    if background_volume_ml is None or not background_volume_ml > 0:
        raise CalibrationError(f"NEMA phantom: background volume missing ({background_volume_ml!r} mL)")
    if sphere_to_background_ratio is None or not sphere_to_background_ratio > 1:
        raise CalibrationError(
            f"NEMA phantom: sphere-to-background ratio must be > 1, got {sphere_to_background_ratio!r}"
        )
    a_mbq = activity_at(total_activity_mbq, reference_datetime, acquisition_start, half_life_s)
    v_spheres = float(np.sum(sphere_volume_ml(np.asarray(sphere_diameters_mm)))) if activity_includes_spheres else 0.0
    c_bg = a_mbq * 1e6 / (background_volume_ml + sphere_to_background_ratio * v_spheres)
    return NemaTruth(c_bg, c_bg * sphere_to_background_ratio, float(sphere_to_background_ratio))


@dataclass(frozen=True)
class SphereResult:
    """One NEMA sphere: position (mm, array order z, y, x from voxel 0) and recovery."""

    diameter_mm: float
    volume_ml: float
    centre_zyx_mm: tuple[float, float, float]
    mean_bq_per_ml: float
    rc: float
    rc_background_relative: float


@dataclass(frozen=True)
class NemaResult:
    """NEMA IEC body analysis: spheres, background and the fitted RC curve."""

    spheres: tuple[SphereResult, ...]
    background_mean_bq_per_ml: float
    axis_centre_yx_mm: tuple[float, float]
    sphere_plane_z_mm: float
    truth: NemaTruth
    rc_curve: RcCurve
    position_residual_mm: float

    def rc_by_diameter(self) -> dict[float, float]:
        return {s.diameter_mm: s.rc for s in self.spheres}


def _sphere_weights(shape, sp: np.ndarray, centre_mm: np.ndarray, radius_mm: float, sub: int = 5):
    """Partial-voxel weights (fraction of each voxel inside the sphere) in a local box."""
    lo = np.floor((centre_mm - radius_mm) / sp - 0.5).astype(int)
    hi = np.ceil((centre_mm + radius_mm) / sp + 0.5).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(shape))
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    axes = [
        ((np.arange(lo[i], hi[i])[:, None] + offs[None, :]) * sp[i] - centre_mm[i]) ** 2
        for i in range(3)
    ]
    d2 = axes[0][:, None, None, :, None, None] + axes[1][None, :, None, None, :, None] + axes[2][None, None, :, None, None, :]
    w = (d2 <= radius_mm**2).mean(axis=(3, 4, 5))
    return tuple(slice(lo[i], hi[i]) for i in range(3)), w


def _sphere_mean(arr: np.ndarray, sp: np.ndarray, centre_mm: np.ndarray, radius_mm: float) -> float:
    sl, w = _sphere_weights(arr.shape, sp, centre_mm, radius_mm)
    return float((arr[sl] * w).sum() / w.sum())


def _check_inside_fov(shape, sp: np.ndarray, centre_mm: np.ndarray, radius_mm: float, label: str) -> None:
    extent_lo = -0.5 * sp
    extent_hi = (np.asarray(shape) - 0.5) * sp
    if np.any(centre_mm - radius_mm < extent_lo) or np.any(centre_mm + radius_mm > extent_hi):
        raise CalibrationError(
            f"NEMA phantom: {label} (centre z,y,x = {np.round(centre_mm, 1).tolist()} mm) lies "
            "outside the field of view: reposition the phantom"
        )


def _ring_positions(cy: float, cx: float, theta0: float, handed: int, radius_mm: float) -> np.ndarray:
    k = np.arange(6)
    ang = theta0 + handed * k * math.pi / 3.0
    return np.column_stack([cy + radius_mm * np.sin(ang), cx + radius_mm * np.cos(ang)])


def locate_nema_spheres(
    image_values: np.ndarray,
    spacing_mm,
    ring_radius_mm: float = NEMA_SPHERE_RING_RADIUS_MM,
    sphere_diameters_mm=NEMA_SPHERE_DIAMETERS_MM,
) -> tuple[np.ndarray, tuple[float, float], float, float]:
    """Find the six sphere centres of a NEMA IEC body phantom from the image.

    Method: plateau (background) level; sphere plane = slice of maximum hot excess over
    the background; in that plane the cold lung insert gives the axis, the strongest
    hot peak is the 37 mm sphere; the ring handedness is the one whose predicted 17-28 mm
    positions are hottest; centre and rotation are then refined by least squares on the
    intensity-weighted centroids of the 22, 28 and 37 mm spheres (ring radius fixed).

    Returns
    -------
    centres_zyx_mm : ndarray (6, 3)
        In the order of ``sphere_diameters_mm``, mm from the centre of voxel (0, 0, 0).
    axis_centre_yx_mm, sphere_plane_z_mm, position_residual_mm

    Raises
    ------
    CalibrationError
        No hot spheres found, geometry inconsistent with the NEMA ring, or a sphere
        outside the field of view.
    """
    arr, sp = _check_image(image_values, spacing_mm)
    sm = ndimage.gaussian_filter(arr, sigma=1.0)
    level = _plateau_level(sm)
    body = phantom_mask(arr, sp)
    inner = ndimage.distance_transform_edt(body, sampling=sp) > 10.0
    excess = np.where(inner, np.clip(sm - level, 0.0, None), 0.0)
    profile = excess.sum(axis=(1, 2))
    # the 37 mm sphere of any usable fill (SBR >= 4, RC >= 0.4) stands > 25 % above background
    if not excess.max() > MIN_HOT_EXCESS_FRACTION * level:
        raise CalibrationError(
            "NEMA phantom: no hot spheres found above the background (check the fill and the sphere plane)"
        )
    kz = int(np.argmax(profile))
    z_lo, z_hi = max(kz - 1, 0), min(kz + 2, arr.shape[0])
    slab = excess[z_lo:z_hi].mean(axis=0)
    slab = ndimage.gaussian_filter(slab, 0.5)

    # axis from the cold lung insert (body filled, activity well below background)
    body_slice = body[kz]
    cold = body_slice & (sm[kz] < 0.5 * level)
    lab, n = ndimage.label(cold)
    target_area = math.pi * (NEMA_LUNG_INSERT_DIAMETER_MM / 2) ** 2
    best = None
    for i in range(1, n + 1):
        area = float((lab == i).sum()) * sp[1] * sp[2]
        if 0.2 * target_area < area < 3.0 * target_area:
            if best is None or abs(area - target_area) < best[0]:
                best = (abs(area - target_area), i)
    if best is not None:
        cyx = np.array(ndimage.center_of_mass(lab == best[1])) * sp[1:]
    else:
        cyx = np.array(ndimage.center_of_mass(body_slice)) * sp[1:]

    peak = np.array(np.unravel_index(int(np.argmax(slab)), slab.shape), dtype=float) * sp[1:]
    theta37 = math.atan2(peak[0] - cyx[0], peak[1] - cyx[1])

    def sample(yx_mm: np.ndarray) -> float:
        idx = yx_mm / sp[1:]
        return float(ndimage.map_coordinates(slab, idx.T, order=1, mode="constant").sum())

    k37 = len(sphere_diameters_mm) - 1
    hyps = []
    for handed in (1, -1):
        theta0 = theta37 - handed * k37 * math.pi / 3.0
        pos = _ring_positions(cyx[0], cyx[1], theta0, handed, ring_radius_mm)
        hyps.append((sample(pos[2:5]), handed, theta0))
    _, handed, theta0 = max(hyps)

    # refine with intensity-weighted centroids of the three largest spheres
    big = [k37 - 2, k37 - 1, k37]
    pos = _ring_positions(cyx[0], cyx[1], theta0, handed, ring_radius_mm)
    yy, xx = np.meshgrid(np.arange(slab.shape[0]) * sp[1], np.arange(slab.shape[1]) * sp[2], indexing="ij")
    cents = []
    for k in big:
        win = (yy - pos[k, 0]) ** 2 + (xx - pos[k, 1]) ** 2 <= (0.5 * sphere_diameters_mm[k] + 10.0) ** 2
        w = slab * win
        if w.sum() <= 0:
            raise CalibrationError(
                f"NEMA phantom: the {sphere_diameters_mm[k]:g} mm sphere was not found where the ring geometry puts it"
            )
        cents.append([(w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()])
    cents_arr = np.array(cents)

    def resid(p: np.ndarray) -> np.ndarray:
        return (_ring_positions(p[0], p[1], p[2], handed, ring_radius_mm)[big] - cents_arr).ravel()

    sol = optimize.least_squares(resid, x0=[cyx[0], cyx[1], theta0])
    residual_mm = float(np.sqrt(np.mean(sol.fun.reshape(-1, 2) ** 2 * 2)))
    if residual_mm > 10.0:
        raise CalibrationError(
            f"NEMA phantom: hot spots do not match the NEMA sphere ring (rms {residual_mm:.1f} mm)"
        )
    cy, cx, theta0 = sol.x
    yx = _ring_positions(cy, cx, theta0, handed, ring_radius_mm)

    # sphere plane: intensity-weighted z of the 37 and 28 mm spheres
    zs, ws = [], []
    for k in (k37, k37 - 1):
        yi, xi = int(round(yx[k, 0] / sp[1])), int(round(yx[k, 1] / sp[2]))
        r_vox = int(math.ceil((0.5 * sphere_diameters_mm[k]) / min(sp[1], sp[2])))
        col = excess[:, max(yi - r_vox, 0): yi + r_vox + 1, max(xi - r_vox, 0): xi + r_vox + 1].sum(axis=(1, 2))
        zwin = np.zeros_like(col)
        rz = int(math.ceil(sphere_diameters_mm[k] / sp[0]))
        zwin[max(kz - rz, 0): kz + rz + 1] = 1.0
        col = col * zwin
        if col.sum() > 0:
            zs.append(float((col * np.arange(len(col))).sum() / col.sum()) * sp[0])
            ws.append(col.sum())
    z_mm = float(np.average(zs, weights=ws)) if zs else kz * sp[0]

    centres = np.column_stack([np.full(6, z_mm), yx])
    for k, d in enumerate(sphere_diameters_mm):
        _check_inside_fov(arr.shape, sp, centres[k], 0.5 * d, f"the {d:g} mm sphere")
    return centres, (float(cy), float(cx)), z_mm, residual_mm


def _background_mean(arr: np.ndarray, sp: np.ndarray, body: np.ndarray, centres: np.ndarray,
                     axis_yx: tuple[float, float], margin_mm: float = 30.0) -> float:
    """Mean in the body, within +-2 cm of the sphere plane, away from spheres, insert and wall."""
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(arr.shape, sp)), indexing="ij")
    sel = body & (np.abs(zz - centres[0, 0]) <= 20.0)
    sel &= ndimage.distance_transform_edt(body, sampling=sp) > margin_mm
    sel &= (yy - axis_yx[0]) ** 2 + (xx - axis_yx[1]) ** 2 > (NEMA_LUNG_INSERT_DIAMETER_MM / 2 + margin_mm) ** 2
    for c, d in zip(centres, NEMA_SPHERE_DIAMETERS_MM):
        sel &= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 > (d / 2 + margin_mm) ** 2
    if sel.sum() < 10:
        raise CalibrationError("NEMA phantom: no background region found away from the spheres")
    return float(arr[sel].mean())


def measure_sphere_rcs(arr: np.ndarray, sp, centres: np.ndarray, truth: NemaTruth,
                       background_mean: float, sphere_diameters_mm=NEMA_SPHERE_DIAMETERS_MM) -> tuple[SphereResult, ...]:
    """RC of each sphere at the given centres (true-size, partial-voxel weighted VOI)."""
    sp = np.asarray(sp, dtype=float)
    out = []
    for c, d in zip(centres, sphere_diameters_mm):
        mean = _sphere_mean(arr, sp, np.asarray(c), 0.5 * d)
        out.append(SphereResult(
            diameter_mm=float(d),
            volume_ml=float(sphere_volume_ml(d)),
            centre_zyx_mm=tuple(float(v) for v in c),
            mean_bq_per_ml=mean,
            rc=mean / truth.sphere_bq_per_ml,
            rc_background_relative=mean / (background_mean * truth.sphere_to_background_ratio),
        ))
    return tuple(out)


def analyse_nema_phantom(
    image_bq_per_ml: np.ndarray,
    spacing_mm,
    truth: NemaTruth,
    ring_radius_mm: float = NEMA_SPHERE_RING_RADIUS_MM,
) -> NemaResult:
    """Recovery coefficients of the six NEMA IEC spheres and the fitted RC(V) curve.

    Parameters
    ----------
    image_bq_per_ml : ndarray (z, y, x)
        Calibrated image (Bq/mL at acquisition start), e.g. from :func:`to_bq_per_ml`.
    spacing_mm : (dz, dy, dx)
    truth : NemaTruth
        From :func:`nema_true_concentrations`.

    Returns
    -------
    NemaResult
        ``rc`` = sphere VOI mean / true sphere concentration; ``rc_background_relative`` =
        sphere VOI mean / (measured background mean x SBR), which is free of the
        calibration error; ``rc_curve`` fitted to ``rc``.
    """
    arr, sp = _check_image(image_bq_per_ml, spacing_mm)
    centres, axis_yx, z_mm, resid = locate_nema_spheres(arr, sp, ring_radius_mm)
    body = phantom_mask(arr, sp)
    bg = _background_mean(arr, sp, body, centres, axis_yx)
    spheres = measure_sphere_rcs(arr, sp, centres, truth, bg)
    curve = fit_rc_curve([s.diameter_mm for s in spheres], [s.rc for s in spheres], truth.sphere_to_background_ratio)
    return NemaResult(spheres, bg, axis_yx, z_mm, truth, curve, resid)


# --------------------------------------------------------------------------- harmonising filter


@dataclass(frozen=True)
class HarmonisingFilter:
    """The Gaussian post-filter that brings a site's RCs into the trial reference band.

    ``status``: ``pass`` (already in band, no filter), ``filter`` (in band after a
    Gaussian of ``fwhm_mm``), ``fail`` (below the band already, or no FWHM fits).
    """

    status: str
    fwhm_mm: float | None
    rc_before: dict[float, float]
    rc_after: dict[float, float]
    band: dict[float, tuple[float, float]]
    message: str


def parse_rc_band(reference_rc_band: Mapping) -> dict[float, tuple[float, float]]:
    band = {}
    for key, (lo, hi) in reference_rc_band.items():
        try:
            band[float(key)] = (float(lo), float(hi))
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"reference_rc_band: key {key!r} is not a sphere diameter in mm") from exc
    if not band:
        raise CalibrationError("reference_rc_band is empty: the trial defines no reference RC band")
    return band


def harmonising_filter(
    image_bq_per_ml: np.ndarray,
    spacing_mm,
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
    reference_rc_band : mapping
        ``TrialConfig.calibration.reference_rc_band``: sphere diameter (mm, str or
        number) -> (min RC, max RC).
    """
    arr, sp = _check_image(image_bq_per_ml, spacing_mm)
    band = parse_rc_band(reference_rc_band)
    by_d = {s.diameter_mm: s for s in nema.spheres}
    missing = [d for d in band if not any(abs(d - k) < 0.5 for k in by_d)]
    if missing:
        raise CalibrationError(f"reference_rc_band names sphere(s) {missing} mm the phantom does not have")
    keys = {d: min(by_d, key=lambda k: abs(k - d)) for d in band}
    centres = np.array([by_d[keys[d]].centre_zyx_mm for d in band])
    diams = [keys[d] for d in band]

    def rcs(fwhm: float) -> dict[float, float]:
        img = arr if fwhm <= 0 else ndimage.gaussian_filter(arr, sigma=fwhm / FWHM_PER_SIGMA / sp)
        res = measure_sphere_rcs(img, sp, centres, nema.truth, nema.background_mean_bq_per_ml, diams)
        return {d: r.rc for d, r in zip(band, res)}

    before = rcs(0.0)
    if all(lo <= before[d] <= hi for d, (lo, hi) in band.items()):
        return HarmonisingFilter("pass", 0.0, before, before, band, "RCs within the reference band without filtering")
    below = [d for d, (lo, _) in band.items() if before[d] < lo]
    if below:
        return HarmonisingFilter(
            "fail", None, before, before, band,
            f"RC below the reference band for sphere(s) {below} mm: the site is already blurrier "
            "than the reference and no post-filter can sharpen it",
        )
    best = None
    for fwhm in np.arange(step_mm, max_fwhm_mm + 1e-9, step_mm):
        now = rcs(float(fwhm))
        if all(lo <= now[d] <= hi for d, (lo, hi) in band.items()):
            score = sum(((now[d] - 0.5 * (lo + hi)) / (0.5 * (hi - lo))) ** 2 for d, (lo, hi) in band.items())
            if best is None or score < best[0]:
                best = (score, float(fwhm), now)
        elif best is not None and any(now[d] < band[d][0] for d in band):
            break  # RCs fall monotonically with FWHM: past the band
    if best is None:
        return HarmonisingFilter(
            "fail", None, before, before, band,
            f"no Gaussian post-filter up to {max_fwhm_mm} mm brings all RCs into the band",
        )
    return HarmonisingFilter("filter", best[1], before, best[2], band,
                             f"Gaussian post-filter FWHM {best[1]:.2f} mm brings RCs into the band")
