"""CT number (HU) to mass density (g/cm3).

Piecewise-linear ("bilinear") calibration through reference points of Schneider,
Bortfeld & Schlegel 1996 (Phys Med Biol 41:111, Table/Fig. for a 120 kVp scanner):
air -1000 HU -> 0.00121, lung -800 HU -> 0.26 (ICRP 89 inflated lung), water 0 HU -> 1.00,
soft tissue/muscle 40 HU -> 1.04 (continuation of the water line), cortical bone
1500 HU -> 1.92; beyond the last point the bone slope is extrapolated, below -1000 HU
clipped to air. A site with its own measured calibration passes its own points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rntflow.core.constants import HU_DENSITY_CALIBRATION, SOFT_TISSUE_DENSITY_G_PER_ML
from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry import _checks as chk


def hu_to_density_g_per_ml(
    hu: np.ndarray | float, calibration: Sequence[tuple[float, float]] = HU_DENSITY_CALIBRATION
) -> np.ndarray:
    """Mass density (g/cm3) of each voxel from its HU, piecewise-linear calibration.

    Raises
    ------
    DosimetryInputError
        NaN/inf HU; a calibration without >= 2 finite (HU, density) points with
        increasing HU and densities > 0.
    """
    cal = chk.finite_array("calibration", calibration, ndim=2)
    if cal.shape[1] != 2 or cal.shape[0] < 2 or np.any(np.diff(cal[:, 0]) <= 0):
        raise DosimetryInputError(f"calibration={cal.tolist()!r}: needs >= 2 (HU, g/cm3) points with increasing HU")
    if np.any(cal[:, 1] <= 0):
        raise DosimetryInputError(f"calibration={cal.tolist()!r}: densities must be > 0 g/cm3")
    h = chk.finite_array("hu", hu)
    rho = np.interp(h, cal[:, 0], cal[:, 1])
    slope = (cal[-1, 1] - cal[-2, 1]) / (cal[-1, 0] - cal[-2, 0])
    rho = np.where(h > cal[-1, 0], cal[-1, 1] + slope * (h - cal[-1, 0]), rho)
    return np.maximum(rho, cal[0, 1])


def mass_g(
    mask: np.ndarray,
    hu: np.ndarray | None,
    voxel_ml: float,
    default_density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML,
) -> float:
    """Mass (g) of a VOI: sum of voxel volume (mL, > 0) x density (g/cm3) from CT when
    given, else ``default_density_g_per_ml`` (> 0; soft tissue by default).

    Raises
    ------
    DosimetryInputError
        Voxel volume or density not finite and > 0, NaN HU inside the mask, CT and mask
        of different shapes.
    """
    m = np.asarray(mask, dtype=bool)
    voxel_ml = chk.positive("voxel_ml", voxel_ml)
    if hu is None:
        rho = chk.positive("default_density_g_per_ml", default_density_g_per_ml)
        return float(m.sum() * voxel_ml * rho)
    hu_arr = np.asarray(hu, dtype=float)
    if hu_arr.shape != m.shape:
        raise DosimetryInputError(f"hu: shape {hu_arr.shape} differs from the mask's {m.shape}")
    return float(hu_to_density_g_per_ml(hu_arr[m]).sum() * voxel_ml) if m.any() else 0.0
