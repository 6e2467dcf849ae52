"""Local energy deposition (LED) dose maps: all electron energy stays in its voxel.

``dose_gy = TIA_mbq_h * 3.6e9 decays/(MBq·h) * E_electron (MeV) * 1.602e-13 J/MeV / m_kg``
with the voxel mass from the CT density (:mod:`dosimetry.density`) or a constant density.
Photon energy is ignored (it mostly leaves the voxel), so LED suits beta emitters
(177Lu, 90Y, 166Ho) and is an underestimate where photons matter (131I).
"""

from __future__ import annotations

import numpy as np

from rntflow.dosimetry.density import hu_to_density_g_per_ml
from rntflow.physics.nuclides import nuclide
from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV
from rntflow.core.errors import DosimetryInputError


def led_dose_gy(tia_map_mbq_h: np.ndarray, nuclide_name: str, spacing_mm: tuple[float, float, float], *,
                hu: np.ndarray | None = None, density_g_per_ml: float | np.ndarray = 1.0,
                min_density_g_per_ml: float = 0.01) -> np.ndarray:
    """Local-deposition dose map (Gy).

    Parameters
    ----------
    tia_map_mbq_h : numpy.ndarray
        TIA per voxel (MBq·h).
    nuclide_name : str
        Radionuclide.
    spacing_mm : tuple of float
        Voxel size (mm).
    hu : numpy.ndarray, optional
        CT (HU) resampled to the TIA grid; when given, densities come from it.
    density_g_per_ml : float or numpy.ndarray
        Density when no CT is given (g/cm3).
    min_density_g_per_ml : float
        Floor of the density (avoids huge doses in air voxels).
    """
    tia = np.asarray(tia_map_mbq_h, dtype=float)
    if np.any(np.asarray(spacing_mm) <= 0):
        raise DosimetryInputError("voxel spacing must be > 0 mm")
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    rho = hu_to_density_g_per_ml(hu) if hu is not None else np.asarray(density_g_per_ml, float)
    if hu is not None and np.shape(hu) != tia.shape:
        raise DosimetryInputError("CT and TIA map differ in shape; resample first")
    rho = np.maximum(rho, min_density_g_per_ml)
    mass_kg = rho * voxel_ml * 1e-3
    e_j = nuclide(nuclide_name).electron_energy_mev * J_PER_MEV * DECAYS_PER_MBQ_H
    return tia * e_j / mass_kg
