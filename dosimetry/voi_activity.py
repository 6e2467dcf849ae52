"""Step 1 of a cycle: VOI activity per time point, partial-volume corrected (pure).

Sum of concentration x VOI fraction x voxel volume, partial-volume corrected with the site's
recovery curve when asked (``rc_fwhm_mm``: the Gaussian FWHM fitted to the site's NEMA
phantom, else configured for the camera or estimated from its uniform cylinder's edge). An
object of concentration C in a background C_bg images with mean ``RC0 C + (1 - RC0) C_bg``
(``RC0(d(V), FWHM)``, the recovery of a hot sphere in a cold background, at the VOI's
sphere-equivalent diameter), so ``A = (A_measured - (1 - RC0) C_bg V) / RC0`` with C_bg the
median concentration in a shell 1-2 FWHM outside the VOI, other VOIs excluded. After 177Lu
most activity is in the remainder of the body early on: ignoring the background spill-in
reads low-uptake organs tens of % high at 4 h (measured on the simulator).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from rntflow.dosimetry.cycle_types import DVH_FRACTION_THRESHOLD, CycleDosimetry, Finding, TimePoint, Voi


def recovery_coefficient(volume_ml: float, fwhm_mm: float | None) -> float:
    """Recovery of a hot sphere of ``volume_ml`` in a cold background, blurred by ``fwhm_mm``."""
    if fwhm_mm is None or fwhm_mm <= 0:
        return 1.0
    from rntflow.physics.recovery import rc_blurred_sphere, sphere_diameter_mm

    return float(rc_blurred_sphere(float(sphere_diameter_mm(volume_ml)), fwhm_mm))


def background_shells(
    vois: Sequence[Voi], spacing_mm: tuple[float, float, float], fwhm_mm: float | None
) -> dict[str, np.ndarray]:
    """Per VOI, the voxels 1-2 FWHM outside it and outside every VOI (boolean, z y x)."""
    if fwhm_mm is None or fwhm_mm <= 0 or not vois:
        return {}
    any_voi = np.zeros(vois[0].fraction.shape, bool)
    for v in vois:
        any_voi |= v.fraction > 0
    out = {}
    for v in vois:
        inside = v.fraction >= DVH_FRACTION_THRESHOLD
        if not inside.any():
            continue
        dist = ndimage.distance_transform_edt(~inside, sampling=spacing_mm)
        out[v.name] = (dist > fwhm_mm) & (dist <= 2.0 * fwhm_mm) & ~any_voi
    return out


def voi_activities_mbq(
    voi: Voi, tps: Sequence[TimePoint], rc: float, shell: np.ndarray | None, voxel_ml: float, out: CycleDosimetry
) -> tuple[np.ndarray, np.ndarray]:
    """Activity of one VOI per time point as imaged and corrected (MBq; step 1 of the module docstring).

    Parameters
    ----------
    voi : Voi
    tps : sequence of TimePoint
        Sorted by time.
    rc : float
        Recovery coefficient of the VOI (1: no correction).
    shell : numpy.ndarray of bool or None
        Background shell of the VOI (:func:`background_shells`).
    voxel_ml : float
        SPECT voxel volume (mL).
    out : CycleDosimetry
        Receives a finding when the VOI is not hotter than its shell.

    Returns
    -------
    measured, corrected : numpy.ndarray
        Activity as imaged, and after recovery (and background) correction (MBq).
    """
    act = np.array([float((tp.bq_per_ml * voi.fraction).sum()) * voxel_ml / 1e6 for tp in tps])
    corrected = act / rc
    if rc < 1.0 and shell is not None and shell.any():
        v_ml = float(voi.fraction.sum()) * voxel_ml
        bg = np.array([float(np.median(tp.bq_per_ml[shell])) for tp in tps]) * v_ml / 1e6  # MBq in V at C_bg
        spill_in = (act - (1.0 - rc) * np.clip(bg, 0.0, None)) / rc
        if np.all(spill_in > 0):
            corrected = spill_in
        else:
            out.findings.append(
                Finding(
                    "partial_volume_correction",
                    "voi",
                    voi.name,
                    "warn",
                    "background >= VOI",
                    "VOI hotter than its surroundings",
                    f"{voi.name}: not hotter than its surroundings; recovery applied without background correction",
                )
            )
    return act, corrected
