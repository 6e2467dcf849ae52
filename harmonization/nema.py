"""NEMA IEC body phantom: true concentrations, sphere location and recovery coefficients.

Array and spacing conventions as in :mod:`rntflow.harmonization.phantom`.
RC = mean over the true-size sphere VOI (partial-voxel weighted) / true concentration.

Sources
-------
* NEMA NU 2-2018 section 7 / IEC 61675-1: IEC body phantom, sphere inner diameters 10, 13,
  17, 22, 28, 37 mm on a 57.2 mm radius circle around the lung insert (50 mm), in one plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from scipy import ndimage, optimize

from rntflow.core.errors import CalibrationError
from rntflow.harmonization.phantom import check_phantom_image, phantom_mask, plateau_level
from rntflow.harmonization.rc_curve import RcCurve, fit_rc_curve
from rntflow.physics.decay import activity_at
from rntflow.physics.recovery import sphere_volume_ml

#: NEMA IEC body phantom sphere inner diameters (mm), NEMA NU 2-2018 section 7.1.
NEMA_SPHERE_DIAMETERS_MM: tuple[float, ...] = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
#: Radius (mm) of the circle of sphere centres around the phantom axis (NEMA NU 2-2018).
NEMA_SPHERE_RING_RADIUS_MM = 57.2
#: Lung insert outer diameter (mm), approximately 50 mm (NEMA NU 2-2018 section 7.1).
NEMA_LUNG_INSERT_DIAMETER_MM = 50.0
#: Minimum hot excess over background (fraction of background) for the spheres to count as
#: found: a 37 mm sphere at SBR 4 with RC 0.4 stands ~1.6x above background, noise after
#: 1-voxel smoothing at ~7 % per voxel is ~2 %.
MIN_HOT_EXCESS_FRACTION = 0.25
#: Largest rms distance (mm) between the fitted ring and the hot-spot centroids.
MAX_RING_RESIDUAL_MM = 10.0


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
    sphere_diameters_mm: Sequence[float] = NEMA_SPHERE_DIAMETERS_MM,
) -> NemaTruth:
    """True background and sphere concentrations (Bq/mL) at acquisition start.

    With ``activity_includes_spheres`` (the fill log's total activity is everything in the
    phantom) ``c_bg = A / (V_bg + SBR * V_spheres)``; otherwise ``c_bg = A / V_bg``
    (A in MBq decayed to acquisition start, volumes in mL).

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


# --------------------------------------------------------------------------- sphere VOIs


def _sphere_weights(shape, sp: np.ndarray, centre_mm: np.ndarray, radius_mm: float, sub: int = 5):
    """Partial-voxel weights (fraction of each voxel inside the sphere) in a local box."""
    lo = np.floor((centre_mm - radius_mm) / sp - 0.5).astype(int)
    hi = np.ceil((centre_mm + radius_mm) / sp + 0.5).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(shape))
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    axes = [((np.arange(lo[i], hi[i])[:, None] + offs[None, :]) * sp[i] - centre_mm[i]) ** 2 for i in range(3)]
    d2 = (
        axes[0][:, None, None, :, None, None]
        + axes[1][None, :, None, None, :, None]
        + axes[2][None, None, :, None, None, :]
    )
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


# --------------------------------------------------------------------------- locating the ring


def _ring_positions(cy: float, cx: float, theta0: float, handed: int, radius_mm: float) -> np.ndarray:
    k = np.arange(6)
    ang = theta0 + handed * k * math.pi / 3.0
    return np.column_stack([cy + radius_mm * np.sin(ang), cx + radius_mm * np.cos(ang)])


@dataclass(frozen=True)
class _HotExcess:
    """Smoothed image, plateau level, body mask, hot excess over the plateau (image units)
    inside the body, the slice index of the sphere plane and the in-plane excess slab."""

    smoothed: np.ndarray
    level: float
    body: np.ndarray
    excess: np.ndarray
    kz: int
    slab: np.ndarray


def _hot_excess(arr: np.ndarray, sp: np.ndarray) -> _HotExcess:
    """The hot excess over the background and the slice where it peaks (the sphere plane)."""
    sm = ndimage.gaussian_filter(arr, sigma=1.0)
    level = plateau_level(sm)
    body = phantom_mask(arr, sp)
    inner = ndimage.distance_transform_edt(body, sampling=sp) > 10.0
    excess = np.where(inner, np.clip(sm - level, 0.0, None), 0.0)
    # the 37 mm sphere of any usable fill (SBR >= 4, RC >= 0.4) stands > 25 % above background
    if not excess.max() > MIN_HOT_EXCESS_FRACTION * level:
        raise CalibrationError(
            "NEMA phantom: no hot spheres found above the background (check the fill and the sphere plane)"
        )
    kz = int(np.argmax(excess.sum(axis=(1, 2))))
    z_lo, z_hi = max(kz - 1, 0), min(kz + 2, arr.shape[0])
    slab = ndimage.gaussian_filter(excess[z_lo:z_hi].mean(axis=0), 0.5)
    return _HotExcess(sm, level, body, excess, kz, slab)


def _lung_axis_yx_mm(hot: _HotExcess, sp: np.ndarray) -> np.ndarray:
    """Phantom axis (y, x mm) in the sphere plane: centre of the cold lung insert (body
    filled, activity well below background), else the body's centre of mass."""
    body_slice = hot.body[hot.kz]
    cold = body_slice & (hot.smoothed[hot.kz] < 0.5 * hot.level)
    lab, n = ndimage.label(cold)
    target_area = math.pi * (NEMA_LUNG_INSERT_DIAMETER_MM / 2) ** 2
    best = None
    for i in range(1, n + 1):
        area = float((lab == i).sum()) * sp[1] * sp[2]
        if 0.2 * target_area < area < 3.0 * target_area:
            if best is None or abs(area - target_area) < best[0]:
                best = (abs(area - target_area), i)
    region = lab == best[1] if best is not None else body_slice
    return np.array(ndimage.center_of_mass(region)) * sp[1:]


def _ring_orientation(
    slab: np.ndarray, sp: np.ndarray, cyx: np.ndarray, ring_radius_mm: float, n_spheres: int
) -> tuple[int, float]:
    """Handedness (+1/-1) and angle (rad) of the first sphere: the strongest hot peak is
    the largest sphere; the handedness is the one whose 17-28 mm positions are hottest."""
    peak = np.array(np.unravel_index(int(np.argmax(slab)), slab.shape), dtype=float) * sp[1:]
    theta_big = math.atan2(peak[0] - cyx[0], peak[1] - cyx[1])

    def sample(yx_mm: np.ndarray) -> float:
        idx = yx_mm / sp[1:]
        return float(ndimage.map_coordinates(slab, idx.T, order=1, mode="constant").sum())

    k_big = n_spheres - 1
    hyps = []
    for handed in (1, -1):
        theta0 = theta_big - handed * k_big * math.pi / 3.0
        pos = _ring_positions(cyx[0], cyx[1], theta0, handed, ring_radius_mm)
        hyps.append((sample(pos[2:5]), handed, theta0))
    _, handed, theta0 = max(hyps)
    return handed, theta0


def _refine_ring(
    slab: np.ndarray,
    sp: np.ndarray,
    cyx: np.ndarray,
    theta0: float,
    handed: int,
    ring_radius_mm: float,
    sphere_diameters_mm: Sequence[float],
) -> tuple[float, float, float, float]:
    """Ring centre (y, x mm), rotation (rad) and rms residual (mm) fitted by least squares
    to the intensity-weighted centroids of the three largest spheres (radius fixed)."""
    k_big = len(sphere_diameters_mm) - 1
    big = [k_big - 2, k_big - 1, k_big]
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
    if residual_mm > MAX_RING_RESIDUAL_MM:
        raise CalibrationError(f"NEMA phantom: hot spots do not match the NEMA sphere ring (rms {residual_mm:.1f} mm)")
    cy, cx, theta = sol.x
    return float(cy), float(cx), float(theta), residual_mm


def _sphere_plane_z_mm(hot: _HotExcess, sp: np.ndarray, yx: np.ndarray, sphere_diameters_mm: Sequence[float]) -> float:
    """Sphere plane (z mm): intensity-weighted z of the two largest spheres near the peak slice."""
    zs, ws = [], []
    k_big = len(sphere_diameters_mm) - 1
    for k in (k_big, k_big - 1):
        yi, xi = int(round(yx[k, 0] / sp[1])), int(round(yx[k, 1] / sp[2]))
        r_vox = int(math.ceil((0.5 * sphere_diameters_mm[k]) / min(sp[1], sp[2])))
        col = hot.excess[:, max(yi - r_vox, 0) : yi + r_vox + 1, max(xi - r_vox, 0) : xi + r_vox + 1].sum(axis=(1, 2))
        zwin = np.zeros_like(col)
        rz = int(math.ceil(sphere_diameters_mm[k] / sp[0]))
        zwin[max(hot.kz - rz, 0) : hot.kz + rz + 1] = 1.0
        col = col * zwin
        if col.sum() > 0:
            zs.append(float((col * np.arange(len(col))).sum() / col.sum()) * sp[0])
            ws.append(col.sum())
    return float(np.average(zs, weights=ws)) if zs else hot.kz * sp[0]


def locate_nema_spheres(
    image_values: np.ndarray,
    spacing_mm: Sequence[float],
    ring_radius_mm: float = NEMA_SPHERE_RING_RADIUS_MM,
    sphere_diameters_mm: Sequence[float] = NEMA_SPHERE_DIAMETERS_MM,
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
    axis_centre_yx_mm : (float, float)
        Ring centre (mm).
    sphere_plane_z_mm : float
    position_residual_mm : float
        Rms distance between the fitted ring and the measured centroids.

    Raises
    ------
    CalibrationError
        No hot spheres found, geometry inconsistent with the NEMA ring, or a sphere
        outside the field of view.
    """
    arr, sp = check_phantom_image(image_values, spacing_mm)
    hot = _hot_excess(arr, sp)
    cyx = _lung_axis_yx_mm(hot, sp)
    handed, theta0 = _ring_orientation(hot.slab, sp, cyx, ring_radius_mm, len(sphere_diameters_mm))
    cy, cx, theta0, residual_mm = _refine_ring(hot.slab, sp, cyx, theta0, handed, ring_radius_mm, sphere_diameters_mm)
    yx = _ring_positions(cy, cx, theta0, handed, ring_radius_mm)
    z_mm = _sphere_plane_z_mm(hot, sp, yx, sphere_diameters_mm)
    centres = np.column_stack([np.full(6, z_mm), yx])
    for k, d in enumerate(sphere_diameters_mm):
        _check_inside_fov(arr.shape, sp, centres[k], 0.5 * d, f"the {d:g} mm sphere")
    return centres, (cy, cx), z_mm, residual_mm


# --------------------------------------------------------------------------- measuring


def _background_mean(
    arr: np.ndarray,
    sp: np.ndarray,
    body: np.ndarray,
    centres: np.ndarray,
    axis_yx: tuple[float, float],
    margin_mm: float = 30.0,
) -> float:
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


def measure_sphere_rcs(
    arr: np.ndarray,
    sp: Sequence[float],
    centres: np.ndarray,
    truth: NemaTruth,
    background_mean: float,
    sphere_diameters_mm: Sequence[float] = NEMA_SPHERE_DIAMETERS_MM,
) -> tuple[SphereResult, ...]:
    """RC of each sphere at the given centres (true-size, partial-voxel weighted VOI).

    Parameters
    ----------
    arr : ndarray (z, y, x)
        Image in Bq/mL.
    sp : (dz, dy, dx)
        Spacing (mm).
    centres : ndarray (n, 3)
        Sphere centres (z, y, x mm), in the order of ``sphere_diameters_mm``.
    truth : NemaTruth
    background_mean : float
        Measured background mean (Bq/mL), for ``rc_background_relative``.
    """
    sp = np.asarray(sp, dtype=float)
    out = []
    for c, d in zip(centres, sphere_diameters_mm):
        mean = _sphere_mean(arr, sp, np.asarray(c), 0.5 * d)
        out.append(
            SphereResult(
                diameter_mm=float(d),
                volume_ml=float(sphere_volume_ml(d)),
                centre_zyx_mm=tuple(float(v) for v in c),
                mean_bq_per_ml=mean,
                rc=mean / truth.sphere_bq_per_ml,
                rc_background_relative=mean / (background_mean * truth.sphere_to_background_ratio),
            )
        )
    return tuple(out)


def analyse_nema_phantom(
    image_bq_per_ml: np.ndarray,
    spacing_mm: Sequence[float],
    truth: NemaTruth,
    ring_radius_mm: float = NEMA_SPHERE_RING_RADIUS_MM,
) -> NemaResult:
    """Recovery coefficients of the six NEMA IEC spheres and the fitted RC(V) curve.

    Parameters
    ----------
    image_bq_per_ml : ndarray (z, y, x)
        Calibrated image (Bq/mL at acquisition start), e.g. from
        :func:`rntflow.harmonization.cylinder.to_bq_per_ml`.
    spacing_mm : (dz, dy, dx)
    truth : NemaTruth
        From :func:`nema_true_concentrations`.
    ring_radius_mm : float
        Radius of the sphere ring (mm).

    Returns
    -------
    NemaResult
        ``rc`` = sphere VOI mean / true sphere concentration; ``rc_background_relative`` =
        sphere VOI mean / (measured background mean x SBR), which is free of the
        calibration error; ``rc_curve`` fitted to ``rc``.
    """
    arr, sp = check_phantom_image(image_bq_per_ml, spacing_mm)
    centres, axis_yx, z_mm, resid = locate_nema_spheres(arr, sp, ring_radius_mm)
    body = phantom_mask(arr, sp)
    bg = _background_mean(arr, sp, body, centres, axis_yx)
    spheres = measure_sphere_rcs(arr, sp, centres, truth, bg)
    curve = fit_rc_curve([s.diameter_mm for s in spheres], [s.rc for s in spheres], truth.sphere_to_background_ratio)
    return NemaResult(spheres, bg, axis_yx, z_mm, truth, curve, resid)
