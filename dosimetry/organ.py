"""Organ- and sphere-level self-dose (MIRD schema, self-irradiation only).

``D = TIA * 3.6e9 decays/(MBq·h) * sum_i(E_i phi_i) * 1.602e-13 J/MeV / m``.

* Organs: electrons absorbed locally (phi = 1, valid for organ-sized volumes: ranges of
  177Lu/90Y betas are << organ size), photons with the self-absorbed fraction of a
  sphere of the organ's mass and density (``density_g_per_ml``).
* Lesions: sphere model (OLINDA/EXM sphere model, Stabin & Konijnenberg 2000, J Nucl Med
  41:149, which is unit density; here the one default soft-tissue density,
  :data:`rntflow.core.constants.SOFT_TISSUE_DENSITY_G_PER_ML`, as for every engine). Electron absorbed fraction of a uniform sphere from the beta
  point kernel of :mod:`dosimetry.kernel` and the sphere geometric reduction factor
  ``1 - 3x/4 + x^3/16`` (Berger 1971, MIRD Pamphlet 7): ``phi = int f(r) g(r/R) dr / E``.
  For 177Lu this gives phi > 0.95 above 1 mL, as Stabin & Konijnenberg's Monte Carlo
  values (about 0.95-0.97 at 1 g).
* Photon self-absorbed fraction of a sphere: the same geometric integral over the
  mu_en point kernel (Berger 1968, MIRD Pamphlet 2 "mu_en approximation"), which reproduces
  Monte Carlo sphere photon AFs within about 20% for 0.05-1 MeV; the photon term is a small
  part of the self-dose of 177Lu/90Y organs (<3%), larger for 131I.

Mass scaling from CT: pass the CT-derived mass (:func:`dosimetry.density.mass_g`); the
self-dose S-value scales as 1/mass (:func:`scale_s_value_by_mass`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV, SOFT_TISSUE_DENSITY_G_PER_ML
from rntflow.dosimetry import _checks as chk
from rntflow.dosimetry.attenuation import mu_en_over_rho_cm2_per_g
from rntflow.dosimetry.kernel import (
    beta_mean_energy_mev,
    beta_radial_energy_mev_per_cm,
    local_electron_energy_mev,
    loevinger_parameters,
    sphere_geometric_factor,
)
from rntflow.physics.nuclides import nuclide


@dataclass(frozen=True)
class SelfDose:
    """Self-dose of an organ or sphere.

    Attributes
    ----------
    dose_gy, dose_sd_gy : float
        Mean absorbed dose (Gy) and its standard deviation (nan when no inputs' sd given).
    electron_dose_gy, photon_dose_gy : float
        Parts of the dose (Gy).
    electron_absorbed_fraction, photon_absorbed_fraction : float
        Energy-weighted self-absorbed fractions.
    mass_g : float
    """

    dose_gy: float
    dose_sd_gy: float
    electron_dose_gy: float
    photon_dose_gy: float
    electron_absorbed_fraction: float
    photon_absorbed_fraction: float
    mass_g: float


def _radius_cm(mass_g: float, density_g_per_ml: float) -> float:
    return (3.0 * mass_g / density_g_per_ml / (4.0 * math.pi)) ** (1.0 / 3.0)


def photon_absorbed_fraction_sphere(
    nuclide_name: str, mass_g: float, density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML
) -> float:
    """Energy-weighted photon self-absorbed fraction of a uniform sphere (mu_en approx.)
    of ``mass_g`` (g, > 0) and ``density_g_per_ml`` (g/cm3, > 0)."""
    mass_g = chk.positive("mass_g", mass_g)
    density_g_per_ml = chk.positive("density_g_per_ml", density_g_per_ml)
    nuc = nuclide(nuclide_name)
    e_tot = sum(e * y for e, y in nuc.photon_lines)
    if e_tot == 0:
        return 0.0
    radius = _radius_cm(mass_g, density_g_per_ml)
    r = np.linspace(0.0, 2.0 * radius, 4001)
    g = sphere_geometric_factor(r, radius)
    absorbed = 0.0
    for e, y in nuc.photon_lines:
        mu = float(mu_en_over_rho_cm2_per_g(e)) * density_g_per_ml
        absorbed += e * y * float(np.trapezoid(mu * np.exp(-mu * r) * g, r))
    return absorbed / e_tot


def electron_absorbed_fraction_sphere(
    nuclide_name: str, volume_ml: float, density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML
) -> float:
    """Electron self-absorbed fraction of a uniform sphere of ``volume_ml`` (mL, > 0) and
    ``density_g_per_ml`` (g/cm3, > 0): betas by point kernel, IC/Auger locally absorbed."""
    volume_ml = chk.positive("volume_ml", volume_ml)
    density_g_per_ml = chk.positive("density_g_per_ml", density_g_per_ml)
    nuc = nuclide(nuclide_name)
    radius = (3.0 * volume_ml / (4.0 * math.pi)) ** (1.0 / 3.0)
    e_local = local_electron_energy_mev(nuc.name)
    absorbed = e_local
    if nuc.beta_spectrum:
        p = loevinger_parameters(nuc.name)
        r = np.linspace(0.0, p.max_range_g_per_cm2 / density_g_per_ml, 4001)
        f = beta_radial_energy_mev_per_cm(nuc.name, r, density_g_per_ml)
        absorbed += float(np.trapezoid(f * sphere_geometric_factor(r, radius), r))
    total = e_local + beta_mean_energy_mev(nuc)
    return absorbed / total if total > 0 else 0.0


def _tia(tia_mbq_h: float, tia_sd_mbq_h: float | None) -> tuple[float, float | None]:
    """Checked TIA (MBq·h, >= 0) and its standard deviation (>= 0 or None)."""
    tia = chk.non_negative("tia_mbq_h", tia_mbq_h)
    return tia, None if tia_sd_mbq_h is None else chk.non_negative("tia_sd_mbq_h", tia_sd_mbq_h)


def _dose(
    tia_mbq_h: float,
    nuclide_name: str,
    mass_g: float,
    phi_e: float,
    phi_p: float,
    tia_sd_mbq_h: float | None,
    mass_sd_g: float | None,
) -> SelfDose:
    nuc = nuclide(nuclide_name)
    e_ph = sum(e * y for e, y in nuc.photon_lines)
    k = tia_mbq_h * DECAYS_PER_MBQ_H * J_PER_MEV / (mass_g * 1e-3)
    d_e = k * nuc.electron_energy_mev * phi_e
    d_p = k * e_ph * phi_p
    dose = d_e + d_p
    if tia_sd_mbq_h is None and mass_sd_g is None:
        sd = math.nan
    else:
        rel_t = (tia_sd_mbq_h or 0.0) / tia_mbq_h if tia_mbq_h > 0 else 0.0
        rel_m = (mass_sd_g or 0.0) / mass_g
        sd = dose * math.hypot(rel_t, rel_m)
    return SelfDose(dose, sd, d_e, d_p, phi_e, phi_p, mass_g)


def organ_self_dose_gy(
    tia_mbq_h: float,
    nuclide_name: str,
    mass_g: float,
    *,
    tia_sd_mbq_h: float | None = None,
    mass_sd_g: float | None = None,
    include_photons: bool = True,
    density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML,
) -> SelfDose:
    """Organ self-dose: electrons fully absorbed, photons by the sphere of same mass.

    Parameters
    ----------
    tia_mbq_h : float
        Organ TIA (MBq·h).
    nuclide_name : str
    mass_g : float
        Patient organ mass (g), e.g. from CT (mass scaling).
    tia_sd_mbq_h, mass_sd_g : float, optional
        Standard deviations, combined in quadrature (independent).
    include_photons : bool
        Add the photon self-dose term.
    density_g_per_ml : float
        Organ density for the photon sphere radius (g/cm3; default soft tissue).

    Raises
    ------
    DosimetryInputError
        NaN/inf anywhere, negative TIA or standard deviation, mass or density <= 0,
        unknown nuclide; the message names the argument and its value.
    """
    tia_mbq_h, tia_sd_mbq_h = _tia(tia_mbq_h, tia_sd_mbq_h)
    mass_g = chk.positive("mass_g", mass_g)
    mass_sd_g = None if mass_sd_g is None else chk.non_negative("mass_sd_g", mass_sd_g)
    density_g_per_ml = chk.positive("density_g_per_ml", density_g_per_ml)
    phi_p = photon_absorbed_fraction_sphere(nuclide_name, mass_g, density_g_per_ml) if include_photons else 0.0
    return _dose(tia_mbq_h, nuclide_name, mass_g, 1.0, phi_p, tia_sd_mbq_h, mass_sd_g)


def sphere_dose_gy(
    tia_mbq_h: float,
    nuclide_name: str,
    volume_ml: float,
    *,
    density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML,
    tia_sd_mbq_h: float | None = None,
    volume_sd_ml: float | None = None,
    include_photons: bool = True,
) -> SelfDose:
    """Lesion self-dose (Gy) with the sphere model: TIA (MBq·h, >= 0) in a sphere of
    ``volume_ml`` (mL, > 0) and ``density_g_per_ml`` (g/cm3, > 0, default soft tissue).

    Raises
    ------
    DosimetryInputError
        As :func:`organ_self_dose_gy`, naming the argument and its value.
    """
    tia_mbq_h, tia_sd_mbq_h = _tia(tia_mbq_h, tia_sd_mbq_h)
    volume_ml = chk.positive("volume_ml", volume_ml)
    volume_sd_ml = None if volume_sd_ml is None else chk.non_negative("volume_sd_ml", volume_sd_ml)
    density_g_per_ml = chk.positive("density_g_per_ml", density_g_per_ml)
    mass = volume_ml * density_g_per_ml
    phi_e = electron_absorbed_fraction_sphere(nuclide_name, volume_ml, density_g_per_ml)
    phi_p = photon_absorbed_fraction_sphere(nuclide_name, mass, density_g_per_ml) if include_photons else 0.0
    return _dose(
        tia_mbq_h,
        nuclide_name,
        mass,
        phi_e,
        phi_p,
        tia_sd_mbq_h,
        None if volume_sd_ml is None else volume_sd_ml * density_g_per_ml,
    )


def scale_s_value_by_mass(s_ref_gy_per_mbq_h: float, mass_ref_g: float, mass_g: float) -> float:
    """Self-dose S-value (Gy/(MBq·h), >= 0) of a phantom organ of ``mass_ref_g`` (g, > 0)
    rescaled to the patient's organ mass ``mass_g`` (g, > 0): S scales as 1/m."""
    s_ref_gy_per_mbq_h = chk.non_negative("s_ref_gy_per_mbq_h", s_ref_gy_per_mbq_h)
    mass_ref_g = chk.positive("mass_ref_g", mass_ref_g)
    mass_g = chk.positive("mass_g", mass_g)
    return s_ref_gy_per_mbq_h * mass_ref_g / mass_g
