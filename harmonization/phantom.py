"""What every phantom analysis shares: image checks, the plateau level and the phantom mask.

Conventions (all phantom modules: :mod:`.cylinder`, :mod:`.nema`, :mod:`.filter`)
----------------------------------------------------------------------------------
* Arrays are indexed ``(z, y, x)`` (``SimpleITK.GetArrayFromImage`` order) and
  ``spacing_mm`` is given in the same order ``(dz, dy, dx)``; use
  :func:`array_and_spacing` to get both from a SimpleITK image.
* Activities are at acquisition start unless the name says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rntflow.core.errors import CalibrationError


def array_and_spacing(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A SimpleITK image as a float64 ``(z, y, x)`` array and ``(dz, dy, dx)`` spacing (mm)."""
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    sx, sy, sz = image.GetSpacing()
    return arr, (sz, sy, sx)


def check_phantom_image(values: np.ndarray, spacing_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The image as a float64 array and the spacing (mm) as an array, after checking both.

    Raises
    ------
    CalibrationError
        Not a non-empty 3-D array, NaN or infinite values, no positive voxel, or a
        spacing that is not three positive values (dz, dy, dx).
    """
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


def plateau_level(smoothed: np.ndarray) -> float:
    """Robust activity level of the phantom's large uniform region (image units).

    The 99th percentile lies in the upper tail of the uniform region (which fills well
    over 1 % of the FOV); the median of everything above half of it is the plateau.
    """
    p99 = float(np.percentile(smoothed, 99.0))
    if p99 <= 0:
        p99 = float(smoothed.max())
    return float(np.median(smoothed[smoothed > 0.5 * p99]))


def phantom_mask(values: np.ndarray, spacing_mm: Sequence[float], threshold_fraction: float = 0.5) -> np.ndarray:
    """Boolean mask of the phantom: smoothed image above a fraction of its plateau level.

    The largest connected component is kept and cold holes are filled slice by slice.
    """
    arr, _ = check_phantom_image(values, spacing_mm)
    sm = ndimage.gaussian_filter(arr, sigma=1.0)
    level = plateau_level(sm)
    mask = _largest_component(sm > threshold_fraction * level)
    filled = np.zeros_like(mask)
    for k in range(mask.shape[0]):
        filled[k] = ndimage.binary_fill_holes(mask[k])
    return filled


def touches_border(mask: np.ndarray) -> bool:
    """Whether a mask reaches any face of the array (the field of view)."""
    return bool(
        mask[0].any()
        or mask[-1].any()
        or mask[:, 0].any()
        or mask[:, -1].any()
        or mask[:, :, 0].any()
        or mask[:, :, -1].any()
    )
