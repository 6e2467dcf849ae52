"""Radioembolisation (TARE): partition-model planning and post-treatment dose maps.

Partition model (seed 000, de Wit - van der Veen et al; DOMAIN.md sec. 5):
``A[GBq] = D_T (M_N + M_T r) / (CF r (1 - L))`` with masses in kg, tumour-to-normal
uptake ratio r, lung shunt fraction L. Predicted doses: tumour ``CF A (1-L) r/(M_N + M_T r)``,
normal liver ``CF A (1-L)/(M_N + M_T r)``, lungs ``CF A L / M_lung`` (1 kg default).
CF (J/GBq) = mean electron energy per decay (ICRP-107) x decays in 1 GBq to infinity
(microspheres do not move: physical decay only, all electron energy absorbed locally).
Computed: 90Y 49.77 J/GBq (seed 000: 49.67, +0.2%); 166Ho 15.53 J/GBq (seed 000: 15.85,
-2.0%: the seed value rests on older 166Ho beta data; ICRP-107 is used here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rntflow.dosimetry.kernel import VoxelKernel, convolve_dose_gy, voxel_s_kernel
from rntflow.dosimetry.led import led_dose_gy
from rntflow.physics.nuclides import nuclide
from rntflow.core.constants import J_PER_MEV
from rntflow.core.errors import DosimetryInputError


@dataclass(frozen=True)
class ProductLimits:
    """Dose limits of one microsphere product, seed 000 Table 1 (de Wit - van der Veen et
    al, "Current status of clinical dosimetry and personalized radionuclide therapy").

    Attributes
    ----------
    nuclide : str
    parenchyma_limit_gy : float
        Normal liver parenchyma limit (Gy).
    parenchyma_pretreated_limit_gy : float or None
        Limit for pre-treated / compromised liver (Gy); None where Table 1 says "not
        mentioned" (the plain limit then applies).
    lung_limit_gy : float
        Single-treatment lung limit (Gy).
    tumour_target_gy : tuple of float
        Typical tumour target range (Gy; upper bound inf for "> x").
    """

    nuclide: str
    parenchyma_limit_gy: float
    parenchyma_pretreated_limit_gy: float | None
    lung_limit_gy: float
    tumour_target_gy: tuple[float, float]


#: Seed 000 Table 1.
PRODUCTS: dict[str, ProductLimits] = {
    "SIR-Spheres": ProductLimits("Y-90", 40.0, 30.0, 30.0, (100.0, 120.0)),
    "TheraSphere": ProductLimits("Y-90", 120.0, None, 30.0, (200.0, 250.0)),
    "QuiremSpheres": ProductLimits("Ho-166", 60.0, None, 30.0, (100.0, 150.0)),
}


def conversion_factor_j_per_gbq(nuclide_name: str) -> float:
    """Energy (J) released as electrons by 1 GBq decaying completely."""
    nuc = nuclide(nuclide_name)
    decays = 1e9 * nuc.half_life_h * 3600.0 / math.log(2.0)
    return nuc.electron_energy_mev * J_PER_MEV * decays


@dataclass
class TarePlan:
    """Partition-model plan (activities GBq, masses kg, doses Gy)."""

    product: str
    nuclide: str
    activity_gbq: float
    tumour_dose_gy: float
    normal_liver_dose_gy: float
    lung_dose_gy: float
    cf_j_per_gbq: float
    broken_limits: list[str] = field(default_factory=list)


def _check(normal_mass_kg: float, tumour_mass_kg: float, ratio: float, shunt: float, lung_mass_kg: float) -> None:
    if not (0.0 <= shunt < 1.0):
        raise DosimetryInputError(f"lung shunt fraction must be in [0, 1), got {shunt}")
    if normal_mass_kg <= 0 or tumour_mass_kg <= 0 or lung_mass_kg <= 0:
        raise DosimetryInputError("normal liver, tumour and lung masses must be > 0 kg")
    if ratio <= 0:
        raise DosimetryInputError(f"tumour-to-normal ratio must be > 0, got {ratio}")


def partition_activity_gbq(tumour_dose_gy: float, normal_mass_kg: float, tumour_mass_kg: float,
                           ratio: float, lung_shunt_fraction: float, cf_j_per_gbq: float) -> float:
    """``A = D_T (M_N + M_T r) / (CF r (1 - L))`` (GBq)."""
    _check(normal_mass_kg, tumour_mass_kg, ratio, lung_shunt_fraction, 1.0)
    if tumour_dose_gy <= 0 or cf_j_per_gbq <= 0:
        raise DosimetryInputError("tumour dose and CF must be > 0")
    return tumour_dose_gy * (normal_mass_kg + tumour_mass_kg * ratio) / (cf_j_per_gbq * ratio * (1.0 - lung_shunt_fraction))


def plan_partition(tumour_dose_gy: float, normal_mass_kg: float, tumour_mass_kg: float, ratio: float,
                   lung_shunt_fraction: float, *, product: str = "SIR-Spheres",
                   lung_mass_kg: float = 1.0, pretreated: bool = False,
                   raise_on_limit: bool = True) -> TarePlan:
    """Plan the activity for a tumour dose and predict normal-liver and lung doses.

    Raises
    ------
    DosimetryInputError
        Impossible input, unknown product, or (``raise_on_limit``) a broken limit; the
        message names every broken limit.
    """
    if product not in PRODUCTS:
        raise DosimetryInputError(f"unknown product {product!r}; known: {', '.join(PRODUCTS)}")
    lim = PRODUCTS[product]
    _check(normal_mass_kg, tumour_mass_kg, ratio, lung_shunt_fraction, lung_mass_kg)
    cf = conversion_factor_j_per_gbq(lim.nuclide)
    a = partition_activity_gbq(tumour_dose_gy, normal_mass_kg, tumour_mass_kg, ratio, lung_shunt_fraction, cf)
    liver_j = cf * a * (1 - lung_shunt_fraction)
    denom = normal_mass_kg + tumour_mass_kg * ratio
    plan = TarePlan(product, lim.nuclide, a, liver_j * ratio / denom, liver_j / denom,
                    cf * a * lung_shunt_fraction / lung_mass_kg, cf)
    par_limit = lim.parenchyma_pretreated_limit_gy if (pretreated and lim.parenchyma_pretreated_limit_gy) else lim.parenchyma_limit_gy
    if plan.normal_liver_dose_gy > par_limit:
        plan.broken_limits.append(f"normal liver {plan.normal_liver_dose_gy:.1f} Gy > {par_limit:.0f} Gy ({product})")
    if plan.lung_dose_gy > lim.lung_limit_gy:
        plan.broken_limits.append(f"lung {plan.lung_dose_gy:.1f} Gy > {lim.lung_limit_gy:.0f} Gy")
    if plan.broken_limits and raise_on_limit:
        raise DosimetryInputError("plan breaks limit(s): " + "; ".join(plan.broken_limits))
    return plan


def post_treatment_tia_map_mbq_h(activity_map_mbq: np.ndarray, nuclide_name: str, t_since_admin_h: float) -> np.ndarray:
    """TIA per voxel (MBq·h) from an activity map measured ``t_since_admin_h`` after
    administration, physical decay only: ``A(t) exp(l t) / l``."""
    if t_since_admin_h < 0:
        raise DosimetryInputError("image time before administration")
    lam = nuclide(nuclide_name).decay_constant_per_h
    return np.asarray(activity_map_mbq, float) * math.exp(lam * t_since_admin_h) / lam


def post_treatment_dose_maps_gy(activity_map_mbq: np.ndarray, nuclide_name: str, spacing_mm: tuple[float, float, float],
                                t_since_admin_h: float, *, hu: np.ndarray | None = None,
                                kernel: VoxelKernel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(LED dose map, kernel dose map) in Gy for a post-treatment activity map."""
    tia = post_treatment_tia_map_mbq_h(activity_map_mbq, nuclide_name, t_since_admin_h)
    led = led_dose_gy(tia, nuclide_name, spacing_mm, hu=hu)
    k = kernel if kernel is not None else voxel_s_kernel(nuclide_name, spacing_mm, include_photons=False)
    return led, convolve_dose_gy(tia, k)
