"""Ground-truth dosimetry of the synthetic trial, computed analytically.

This module shares no code with the pipeline's dose engine (``dosimetry/``) beyond the
physical constants (``rntflow.core.constants``) and the nuclide's mean electron energy
(``rntflow.physics.nuclides``, read from ICRP-107). The method, per VOI and cycle:

1. **TIA** is the exact integral from administration to infinity of the true curve
   ``A(t) = A_adm f (exp(-l_eff t) - exp(-l_up t))``: ``TIA = A_adm f (1/l_eff - 1/l_up)``.
2. **Absorbed dose** is the MIRD self-dose with electrons (beta, internal conversion,
   Auger) absorbed locally (absorbed fraction 1) and photons neglected:
   ``D = TIA [MBq h] * 3.6e9 * E_e [MeV] * 1.602e-13 [J/MeV] / m [kg]``, with the mass
   ``m`` the analytic volume of the VOI times its ICRP-89 density. For 177Lu the photons
   carry 19% of the emitted energy but deposit only ~1-3% extra in organs the size of a
   kidney; a dose engine that includes photon and cross-irradiation will therefore read
   a few percent higher than this truth (see README, "Ground truth").
3. **BED** uses the Lea-Catcheside dose-protraction factor of the exact (uptake and
   clearance) dose-rate curve: for ``R(t) = sum_i c_i exp(-k_i t)`` and repair rate
   ``mu``, ``G = 2 sum_ij c_i c_j / ((k_i + k_j)(k_i + mu)) / (sum_i c_i / k_i)^2``
   (reduces to ``l/(l + mu)`` for a mono-exponential), ``BED = D (1 + G D / (a/b))``.
   Cycles add (full repair between cycles).
4. **Recovery coefficients** of a hot sphere of diameter ``d`` in a cold background,
   imaged with a Gaussian PSF of standard deviation ``s``: the mean of the blurred sphere
   over the sphere, ``RC = (1/V) int_0^{2R} 4 pi r^2 g(r) V_ov(r) dr`` with ``g`` the 3-D
   Gaussian and ``V_ov(r) = pi (4R + r)(2R - r)^2 / 12`` the overlap of two spheres.
"""

from __future__ import annotations

import math

from scipy import integrate

from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV
from rntflow.simulation.kinetics import CompartmentKinetics


def tia_mbq_h(kin: CompartmentKinetics, administered_mbq: float) -> float:
    """Exact time-integrated activity (MBq·h) from 0 to infinity."""
    return administered_mbq * kin.fraction * (1.0 / kin.l_eff_per_h - 1.0 / kin.l_up_per_h)


def self_dose_gy(tia: float, mass_g: float, electron_energy_mev: float) -> float:
    """Electron self-dose (Gy) for ``tia`` MBq·h in ``mass_g`` grams (absorbed fraction 1)."""
    return tia * DECAYS_PER_MBQ_H * electron_energy_mev * J_PER_MEV / (mass_g / 1000.0)


def protraction_factor(kins: list[CompartmentKinetics], t_rep_h: float) -> float:
    """Lea-Catcheside G for the summed dose-rate curve of ``kins`` (same target mass)."""
    mu = math.log(2) / t_rep_h
    coeffs: list[tuple[float, float]] = []
    for k in kins:
        coeffs += [(k.fraction, k.l_eff_per_h), (-k.fraction, k.l_up_per_h)]
    num = sum(ci * cj / ((ki + kj) * (ki + mu)) for ci, ki in coeffs for cj, kj in coeffs)
    den = sum(c / k for c, k in coeffs) ** 2
    return 2.0 * num / den


def bed_gy(dose_gy: float, g_factor: float, alpha_beta_gy: float) -> float:
    """Biologically effective dose for one cycle."""
    return dose_gy * (1.0 + g_factor * dose_gy / alpha_beta_gy)


def sphere_rc(diameter_mm: float, fwhm_mm: float) -> float:
    """Mean recovery of a uniform hot sphere in a cold background (Gaussian PSF)."""
    r_s = diameter_mm / 2.0
    sigma = fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    vol = 4.0 / 3.0 * math.pi * r_s**3

    def integrand(r: float) -> float:
        g = math.exp(-r * r / (2 * sigma * sigma)) / (2 * math.pi * sigma * sigma) ** 1.5
        v_ov = math.pi * (4 * r_s + r) * (2 * r_s - r) ** 2 / 12.0
        return 4 * math.pi * r * r * g * v_ov

    val, _err = integrate.quad(integrand, 0.0, 2 * r_s, limit=200)
    return val / vol
