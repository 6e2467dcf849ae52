"""Local energy deposition (LED) dose maps: all electron energy stays in its voxel.

``dose_gy = TIA_mbq_h * 3.6e9 decays/(MBq·h) * E_electron (MeV) * 1.602e-13 J/MeV / m_kg``
with the voxel mass from the CT density (:mod:`dosimetry.density`) or a constant density.
Photon energy is ignored (it mostly leaves the voxel), so LED suits beta emitters
(177Lu, 90Y, 166Ho) and is an underestimate where photons matter (131I).
"""

from __future__ import annotations

import numpy as np

from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV, SOFT_TISSUE_DENSITY_G_PER_ML
from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry import _checks as chk
from rntflow.dosimetry.density import hu_to_density_g_per_ml
from rntflow.physics.nuclides import nuclide


def led_dose_gy(
    tia_map_mbq_h: np.ndarray,
    nuclide_name: str,
    spacing_mm: tuple[float, float, float],
    *,
    hu: np.ndarray | None = None,
    density_g_per_ml: float | np.ndarray = SOFT_TISSUE_DENSITY_G_PER_ML,
    min_ct_density_g_per_ml: float = 0.01,
) -> np.ndarray:
    """Local-deposition dose map (Gy).

    Parameters
    ----------
    tia_map_mbq_h : numpy.ndarray
        TIA per voxel (MBq·h); finite and >= 0.
    nuclide_name : str
        Radionuclide.
    spacing_mm : tuple of float
        Voxel size (mm), finite and > 0.
    hu : numpy.ndarray, optional
        CT (HU) resampled to the TIA grid; when given, densities come from it.
    density_g_per_ml : float or numpy.ndarray
        Density when no CT is given (g/cm3; default soft tissue). Every value must be
        finite and > 0: a density of 0 or below is an input error, never floored.
    min_ct_density_g_per_ml : float
        Floor (g/cm3, > 0) of CT-derived densities only: air voxels (0.0012 g/cm3) that
        hold spill-out activity would otherwise get ~800 times the soft-tissue dose.

    Raises
    ------
    DosimetryInputError
        NaN/inf or negative TIA voxels, NaN HU, density <= 0, spacing <= 0, CT and TIA
        map of different shapes, unknown nuclide; the message names the argument.
    """
    tia = chk.non_negative_array("tia_map_mbq_h", tia_map_mbq_h)
    sp = chk.spacing_mm("spacing_mm", spacing_mm)
    e_j = nuclide(nuclide_name).electron_energy_mev * J_PER_MEV * DECAYS_PER_MBQ_H
    voxel_ml = float(np.prod(sp)) / 1000.0
    if hu is not None:
        hu_arr = chk.finite_array("hu", hu)
        if hu_arr.shape != tia.shape:
            raise DosimetryInputError(
                f"hu: shape {hu_arr.shape} differs from the TIA map's {tia.shape}; resample first"
            )
        floor = chk.positive("min_ct_density_g_per_ml", min_ct_density_g_per_ml)
        rho = np.maximum(hu_to_density_g_per_ml(hu_arr), floor)
    else:
        rho = chk.positive_array("density_g_per_ml", density_g_per_ml)
        if rho.ndim and rho.shape != tia.shape:
            raise DosimetryInputError(f"density_g_per_ml: shape {rho.shape} differs from the TIA map's {tia.shape}")
    mass_kg = rho * voxel_ml * 1e-3
    return tia * e_j / mass_kg
