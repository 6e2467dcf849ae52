"""Radioembolisation (TARE): partition-model planning and post-treatment dose maps.

Partition model (as given by de Wit-van der Veen, de Vries-Huizing and Stokkel, "Current
status of clinical dosimetry and personalized radionuclide therapy", NKI Amsterdam review):
``A[GBq] = D_T (M_N + M_T r) / (CF r (1 - L))`` with masses in kg, tumour-to-normal
uptake ratio r, lung shunt fraction L. Predicted doses: tumour ``CF A (1-L) r/(M_N + M_T r)``,
normal liver ``CF A (1-L)/(M_N + M_T r)``, lungs ``CF A L / M_lung`` (1 kg default).

The conversion factor CF (J/GBq) is a trial choice (``cf_convention``), recorded in
every plan:

* ``"product"`` (default): the convention the product dose limits of that review's
  Table 1 were written in, :data:`rntflow.core.constants.TARE_PRODUCT_CF_J_PER_GBQ` (90Y 49.67,
  166Ho 15.85 J/GBq). A limit is only meaningful in the CF it was derived with.
* ``"icrp107"``: mean electron energy per decay (ICRP-107) x decays of 1 GBq to infinity
  (microspheres do not move: physical decay only, all electron energy absorbed locally):
  90Y 49.77 J/GBq (+0.2 %), 166Ho 15.53 J/GBq (-2.0 %: the product value rests on older
  166Ho beta data). A QuiremSpheres plan at the 60 Gy limit with the ICRP-107 factor is
  about 61.2 Gy in the product convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rntflow.core.constants import J_PER_MEV, PRODUCTS, TARE_PRODUCT_CF_J_PER_GBQ, ProductLimits
from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry import _checks as chk
from rntflow.dosimetry.kernel import VoxelKernel, convolve_dose_gy, voxel_s_kernel
from rntflow.dosimetry.led import led_dose_gy
from rntflow.physics.nuclides import nuclide

#: CF conventions a trial may choose (see the module docstring).
CF_CONVENTIONS = ("product", "icrp107")
#: Treatment intents: whole-liver/lobar ("standard") or radiation segmentectomy ("ablative").
TREATMENTS = ("standard", "ablative")


def conversion_factor_j_per_gbq(nuclide_name: str) -> float:
    """ICRP-107 CF: energy (J) released as electrons by 1 GBq decaying completely."""
    nuc = nuclide(nuclide_name)
    decays = 1e9 * nuc.half_life_h * 3600.0 / math.log(2.0)
    return nuc.electron_energy_mev * J_PER_MEV * decays


def tare_conversion_factor_j_per_gbq(nuclide_name: str, convention: str = "product") -> float:
    """CF (J/GBq) of ``nuclide_name`` in ``convention`` (``product`` or ``icrp107``)."""
    if convention not in CF_CONVENTIONS:
        raise DosimetryInputError(f"cf_convention={convention!r}: must be one of {', '.join(CF_CONVENTIONS)}")
    name = nuclide(nuclide_name).name
    if convention == "icrp107":
        return conversion_factor_j_per_gbq(name)
    if name not in TARE_PRODUCT_CF_J_PER_GBQ:
        raise DosimetryInputError(
            f"nuclide_name={name!r}: no product CF convention (known: {', '.join(TARE_PRODUCT_CF_J_PER_GBQ)})"
        )
    return TARE_PRODUCT_CF_J_PER_GBQ[name]


@dataclass
class TarePlan:
    """Partition-model plan (activities GBq, masses kg, doses Gy).

    ``cf_j_per_gbq`` and ``cf_convention`` record the conversion factor used;
    ``broken_limits`` the safety limits exceeded; ``notes`` target checks and what
    could not be checked (e.g. a target Table 1 does not give).
    """

    product: str
    nuclide: str
    activity_gbq: float
    tumour_dose_gy: float
    normal_liver_dose_gy: float
    lung_dose_gy: float
    cf_j_per_gbq: float
    cf_convention: str = "product"
    treatment: str = "standard"
    cumulative_lung_dose_gy: float = 0.0
    broken_limits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check(
    normal_mass_kg: float, tumour_mass_kg: float, ratio: float, shunt: float, lung_mass_kg: float
) -> tuple[float, float, float, float, float]:
    return (
        chk.positive("normal_mass_kg", normal_mass_kg),
        chk.positive("tumour_mass_kg", tumour_mass_kg),
        chk.positive("ratio", ratio),
        chk.in_range("lung_shunt_fraction", shunt, 0.0, 1.0, high_open=True),
        chk.positive("lung_mass_kg", lung_mass_kg),
    )


def partition_activity_gbq(
    tumour_dose_gy: float,
    normal_mass_kg: float,
    tumour_mass_kg: float,
    ratio: float,
    lung_shunt_fraction: float,
    cf_j_per_gbq: float,
) -> float:
    """``A = D_T (M_N + M_T r) / (CF r (1 - L))`` (GBq).

    Raises
    ------
    DosimetryInputError
        NaN/inf, dose/masses/ratio/CF <= 0, shunt outside [0, 1); names the argument.
    """
    m_n, m_t, r, lsf, _ = _check(normal_mass_kg, tumour_mass_kg, ratio, lung_shunt_fraction, 1.0)
    d_t = chk.positive("tumour_dose_gy", tumour_dose_gy)
    cf = chk.positive("cf_j_per_gbq", cf_j_per_gbq)
    return d_t * (m_n + m_t * r) / (cf * r * (1.0 - lsf))


#: Relative tolerance of every comparison of a plan with a limit or a target: the partition
#: model's algebra reproduces a plan made AT a limit or target only to floating-point
#: round-off, and such a plan neither breaks the limit nor misses the target.
ROUND_OFF_REL_TOL = 1e-9


def exceeds(value: float, limit: float) -> bool:
    """``value > limit`` beyond round-off (:data:`ROUND_OFF_REL_TOL`): a plan at the limit passes."""
    return value > limit * (1.0 + ROUND_OFF_REL_TOL)


def falls_short(value: float, target: float) -> bool:
    """``value < target`` beyond round-off (:data:`ROUND_OFF_REL_TOL`): a plan at the target reaches it."""
    return value < target * (1.0 - ROUND_OFF_REL_TOL)


def _limit_checks(
    plan: TarePlan,
    lim: ProductLimits,
    lsf: float,
    *,
    pretreated: bool,
    lung_cumulative_limit_gy: float | None,
    max_lung_shunt_fraction: float | None,
) -> None:
    """Fill ``plan.broken_limits`` and ``plan.notes`` (de Wit-van der Veen et al Table 1 plus trial settings)."""
    product = plan.product
    if plan.treatment == "ablative":
        plan.notes.append(
            "ablative (segmentectomy): the perfused-parenchyma limit is not applied to the "
            "treated segment; the remaining liver's function must suffice (de Wit-van der Veen et al)"
        )
        if lim.ablative_target_min_gy is None:
            plan.notes.append(
                f"ablative target: not given for {product} (de Wit-van der Veen et al Table 1: not mentioned)"
            )
        elif falls_short(plan.tumour_dose_gy, lim.ablative_target_min_gy):
            plan.notes.append(
                f"tumour {plan.tumour_dose_gy:.1f} Gy below the ablative target "
                f"> {lim.ablative_target_min_gy:.0f} Gy ({product})"
            )
    else:
        par = (
            lim.parenchyma_pretreated_limit_gy
            if (pretreated and lim.parenchyma_pretreated_limit_gy)
            else lim.parenchyma_limit_gy
        )
        if exceeds(plan.normal_liver_dose_gy, par):
            plan.broken_limits.append(f"normal liver {plan.normal_liver_dose_gy:.1f} Gy > {par:.0f} Gy ({product})")
        lo, hi = lim.tumour_target_gy
        if falls_short(plan.tumour_dose_gy, lo):
            plan.notes.append(f"tumour {plan.tumour_dose_gy:.1f} Gy below the target {lo:.0f}-{hi:.0f} Gy ({product})")
    if exceeds(plan.lung_dose_gy, lim.lung_limit_gy):
        plan.broken_limits.append(f"lung {plan.lung_dose_gy:.1f} Gy > {lim.lung_limit_gy:.0f} Gy (single treatment)")
    if lung_cumulative_limit_gy is not None and exceeds(plan.cumulative_lung_dose_gy, lung_cumulative_limit_gy):
        plan.broken_limits.append(
            f"cumulative lung {plan.cumulative_lung_dose_gy:.1f} Gy > {lung_cumulative_limit_gy:.0f} Gy (trial setting)"
        )
    if max_lung_shunt_fraction is not None and exceeds(lsf, max_lung_shunt_fraction):
        plan.broken_limits.append(f"lung shunt fraction {lsf:.3f} > {max_lung_shunt_fraction:.3f} (trial setting)")


def plan_partition(
    tumour_dose_gy: float,
    normal_mass_kg: float,
    tumour_mass_kg: float,
    ratio: float,
    lung_shunt_fraction: float,
    *,
    product: str = "SIR-Spheres",
    lung_mass_kg: float = 1.0,
    pretreated: bool = False,
    cf_convention: str = "product",
    treatment: str = "standard",
    prior_lung_dose_gy: float = 0.0,
    lung_cumulative_limit_gy: float | None = None,
    max_lung_shunt_fraction: float | None = None,
    raise_on_limit: bool = True,
) -> TarePlan:
    """Plan the activity for a tumour dose and predict normal-liver and lung doses.

    Parameters
    ----------
    tumour_dose_gy : float
        Planned mean tumour dose (Gy, > 0).
    normal_mass_kg, tumour_mass_kg, lung_mass_kg : float
        Perfused normal liver, tumour and lung masses (kg, > 0).
    ratio : float
        Tumour-to-normal uptake ratio (> 0).
    lung_shunt_fraction : float
        In [0, 1).
    product : str
        A key of :data:`PRODUCTS`.
    pretreated : bool
        Pre-treated or compromised liver (the lower parenchyma limit where Table 1 has one).
    cf_convention : str
        ``product`` (default: the CF the product limits were written in) or ``icrp107``.
    treatment : str
        ``standard`` (whole-liver/lobar: parenchyma limit, tumour target) or ``ablative``
        (radiation segmentectomy: ablative target instead of the parenchyma limit).
    prior_lung_dose_gy : float
        Lung dose of earlier TARE treatments (Gy, >= 0), added for the cumulative check.
    lung_cumulative_limit_gy : float, optional
        Trial's cumulative lung limit (Gy); the review's Table 1 gives none (off by default).
    max_lung_shunt_fraction : float, optional
        Trial's lung shunt cap, independent of the lung dose; not in Table 1 (off by default).
    raise_on_limit : bool
        Raise when a safety limit is broken (targets only add notes).

    Raises
    ------
    DosimetryInputError
        Impossible input (named with its value), unknown product, convention or
        treatment, or (``raise_on_limit``) a broken limit; the message names every one.
    """
    if product not in PRODUCTS:
        raise DosimetryInputError(f"product={product!r}: unknown; known: {', '.join(PRODUCTS)}")
    if treatment not in TREATMENTS:
        raise DosimetryInputError(f"treatment={treatment!r}: must be one of {', '.join(TREATMENTS)}")
    lim = PRODUCTS[product]
    m_n, m_t, r, lsf, m_lung = _check(normal_mass_kg, tumour_mass_kg, ratio, lung_shunt_fraction, lung_mass_kg)
    prior = chk.non_negative("prior_lung_dose_gy", prior_lung_dose_gy)
    if lung_cumulative_limit_gy is not None:
        lung_cumulative_limit_gy = chk.positive("lung_cumulative_limit_gy", lung_cumulative_limit_gy)
    if max_lung_shunt_fraction is not None:
        max_lung_shunt_fraction = chk.in_range("max_lung_shunt_fraction", max_lung_shunt_fraction, 0.0, 1.0)
    cf = tare_conversion_factor_j_per_gbq(lim.nuclide, cf_convention)
    a = partition_activity_gbq(tumour_dose_gy, m_n, m_t, r, lsf, cf)
    liver_j = cf * a * (1 - lsf)
    denom = m_n + m_t * r
    lung = cf * a * lsf / m_lung
    plan = TarePlan(
        product,
        lim.nuclide,
        a,
        liver_j * r / denom,
        liver_j / denom,
        lung,
        cf,
        cf_convention=cf_convention,
        treatment=treatment,
        cumulative_lung_dose_gy=prior + lung,
    )
    _limit_checks(
        plan,
        lim,
        lsf,
        pretreated=pretreated,
        lung_cumulative_limit_gy=lung_cumulative_limit_gy,
        max_lung_shunt_fraction=max_lung_shunt_fraction,
    )
    if plan.broken_limits and raise_on_limit:
        raise DosimetryInputError("plan breaks limit(s): " + "; ".join(plan.broken_limits))
    return plan


def post_treatment_tia_map_mbq_h(activity_map_mbq: np.ndarray, nuclide_name: str, t_since_admin_h: float) -> np.ndarray:
    """TIA per voxel (MBq·h) from an activity map measured ``t_since_admin_h`` after
    administration, physical decay only: ``A(t) exp(l t) / l``.

    Raises
    ------
    DosimetryInputError
        NaN/inf or negative activity voxels (count and first index given), a time
        before administration, unknown nuclide.
    """
    act = chk.non_negative_array("activity_map_mbq", activity_map_mbq)
    t = chk.time_after_admin("t_since_admin_h", t_since_admin_h)
    lam = nuclide(nuclide_name).decay_constant_per_h
    return act * math.exp(lam * t) / lam


def post_treatment_dose_maps_gy(
    activity_map_mbq: np.ndarray,
    nuclide_name: str,
    spacing_mm: tuple[float, float, float],
    t_since_admin_h: float,
    *,
    hu: np.ndarray | None = None,
    kernel: VoxelKernel | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(LED dose map, kernel dose map) in Gy for a post-treatment activity map (MBq per
    voxel, >= 0) imaged ``t_since_admin_h`` (h, >= 0) after administration; inputs are
    checked as in :func:`post_treatment_tia_map_mbq_h` and :func:`led_dose_gy`."""
    tia = post_treatment_tia_map_mbq_h(activity_map_mbq, nuclide_name, t_since_admin_h)
    led = led_dose_gy(tia, nuclide_name, spacing_mm, hu=hu)
    k = kernel if kernel is not None else voxel_s_kernel(nuclide_name, spacing_mm, include_photons=False)
    return led, convolve_dose_gy(tia, k)
