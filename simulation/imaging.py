"""Image formation: what a site's SPECT/CT would reconstruct from a known activity layout.

The model works in image space (no projector): the true activity is laid out on a fine
anatomy-frame grid (2.4 mm), blurred with the camera's Gaussian resolution, optionally
joined by an uncorrected scatter component (a broad Gaussian of 60 mm FWHM carrying
``scatter_fraction`` of the primary counts), resampled through the session's pose onto
the reconstruction grid, turned into expected counts with the site's true sensitivity
and the exact integral of the activity over the acquisition, and given noise whose
variance is ``noise_amplification`` times the mean (scaled Poisson, as OSEM amplifies
Poisson noise). CT is the same labels in HU with Gaussian noise.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from rntflow.simulation.geometry import Grid, Pose

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
SCATTER_FWHM_MM = 60.0


@functools.lru_cache(maxsize=8)
def _voxel_centres_mm(grid: Grid) -> np.ndarray:
    """``grid.points_mm()``, computed once per grid (every session resamples onto the same
    SPECT and CT grids); read-only, as it is shared."""
    pts = grid.points_mm()
    pts.flags.writeable = False
    return pts


def _resample(volume: np.ndarray, src: Grid, dst: Grid, pose: Pose, order: int, cval: float = 0.0) -> np.ndarray:
    """Sample an anatomy-frame volume at the scanner-frame voxel centres of ``dst``."""
    pts = pose.to_anatomy(_voxel_centres_mm(dst))
    ox, oy, oz = src.origin_mm
    dz, dy, dx = src.spacing_mm
    idx = np.stack([(pts[..., 2] - oz) / dz, (pts[..., 1] - oy) / dy, (pts[..., 0] - ox) / dx])
    return ndimage.map_coordinates(volume, idx, order=order, mode="constant", cval=cval, prefilter=False)


def label_volumes_ml(labels: np.ndarray, grid: Grid, n_labels: int) -> np.ndarray:
    """Voxelised volume of every label (mL)."""
    return np.bincount(labels.ravel(), minlength=n_labels).astype(float) * grid.voxel_ml


def expected_counts(
    labels: np.ndarray,
    fine: Grid,
    mean_activity_mbq: np.ndarray,
    recon: Grid,
    pose: Pose,
    sensitivity_cps_per_mbq: float,
    duration_s: float,
    fwhm_mm: float,
    scatter_fraction: float = 0.0,
) -> np.ndarray:
    """Noise-free reconstructed counts per voxel.

    Parameters
    ----------
    labels : ndarray of uint8
        Anatomy-frame label map on ``fine``.
    fine : Grid
        The anatomy-frame grid of ``labels``.
    mean_activity_mbq : ndarray
        Per label, the activity averaged over the acquisition (MBq); label 0 is air.
    recon : Grid
        Scanner-frame reconstruction grid.
    pose : Pose
        Anatomy-to-scanner placement for this session.
    sensitivity_cps_per_mbq : float
        True system sensitivity.
    duration_s : float
        Acquisition duration (s).
    fwhm_mm : float
        Reconstructed resolution.
    scatter_fraction : float
        Uncorrected scatter-to-primary ratio.

    Returns
    -------
    ndarray
        (nz, ny, nx) expected counts.
    """
    n = len(mean_activity_mbq)
    vol_ml = label_volumes_ml(labels, fine, n)
    conc = np.divide(mean_activity_mbq, vol_ml, out=np.zeros(n), where=vol_ml > 0)  # MBq/mL, exact totals
    act = (conc * fine.voxel_ml).astype(np.float32)[labels]
    sigma = fwhm_mm * FWHM_TO_SIGMA / np.asarray(fine.spacing_mm)
    img = ndimage.gaussian_filter(act, sigma, mode="constant", truncate=3.5)
    if scatter_fraction > 0:
        coarse = (
            act.reshape(act.shape[0] // 2, 2, act.shape[1] // 2, 2, act.shape[2] // 2, 2).sum((1, 3, 5))
            if all(s % 2 == 0 for s in act.shape)
            else None
        )
        if coarse is not None:
            sc = ndimage.gaussian_filter(
                coarse,
                SCATTER_FWHM_MM * FWHM_TO_SIGMA / (2 * np.asarray(fine.spacing_mm)),
                mode="constant",
                truncate=3.0,
            )
            sc = ndimage.zoom(sc, 2, order=1) / 8.0
        else:
            sc = ndimage.gaussian_filter(
                act, SCATTER_FWHM_MM * FWHM_TO_SIGMA / np.asarray(fine.spacing_mm), mode="constant", truncate=3.0
            )
        img = img + scatter_fraction * sc
    per_recon_voxel = _resample(img, fine, recon, pose, order=1) * (recon.voxel_ml / fine.voxel_ml)
    return per_recon_voxel * sensitivity_cps_per_mbq * duration_s


def noisy_counts(expected: np.ndarray, noise_amplification: float, rng: np.random.Generator) -> np.ndarray:
    """Scaled-Poisson noise: mean ``expected``, variance ``noise_amplification * expected``."""
    k = max(noise_amplification, 1.0)
    return rng.poisson(np.clip(expected, 0, None) / k).astype(np.float64) * k


def ct_hu(
    labels: np.ndarray,
    fine: Grid,
    hu_lut: np.ndarray,
    ct: Grid,
    pose: Pose,
    rng: np.random.Generator,
    noise_hu: float = 12.0,
) -> np.ndarray:
    """CT in HU on the scanner-frame grid ``ct``."""
    lab = _resample(labels, fine, ct, pose, order=0, cval=0).astype(np.intp)
    hu = hu_lut[lab] + rng.normal(0.0, noise_hu, size=lab.shape)
    return np.clip(hu, -1024, 3071)
