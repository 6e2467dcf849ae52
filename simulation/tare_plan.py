"""Ground truth of one TARE subject: uptake, planted Table 1 breaches, partition-model plan, doses.

Per subject (one treatment):

1. **Scout distribution** (the truth the scout images): lung shunt fraction ``L`` and, in the
   perfused liver, tumour-to-normal concentration ratios ``r_i``; activity shares
   ``normal = (1-L) M_N / (M_N + sum r_i M_i)``, ``tumour_i = (1-L) r_i M_i / (...)``, lungs ``L``.
2. **Plan**: the partition model (seed 000, ``A = D_T (M_N + M_T r) / (CF r (1 - L))``) on the
   true scout shares and masses (``M_T = sum M_i``, ``r = sum r_i M_i / M_T``, the lung mass of
   the lung VOI) with the device's lower Table 1 tumour target and the product CF convention;
   planted breaches are planned as they are (the pipeline's planner must flag them). The
   formula is written out here, as the rest of the truth is, independently of the code under
   test (``rntflow.dosimetry.tare.plan_partition``; the tests check they agree).
3. **Administered** activity = planned x (1 - vial residual 2-5 %).
4. **Delivered distribution** (the post-treatment image): 166Ho scout -> per-tumour ``r_i``
   x lognormal(SD 5 %), ``L`` x lognormal(10 %); 99mTc-MAA -> ``r_i`` x lognormal(20 %),
   ``L`` x 0.7 x lognormal(10 %) (MAA over-estimates the shunt; Smits et al 2020 EJNMMI Res,
   DOMAIN.md section 5).
5. **Doses** (Gy) per VOI: ``A [GBq] x share x CF [J/GBq] / mass [kg]``; planned = scout
   shares x planned activity, predicted = scout shares x administered activity, delivered =
   delivered shares x administered activity (microspheres do not move: physical decay only).

Planted breaches (subject index within the site; ``PLANTS``): the 166Ho site's first subject
has one tumour far below the target (``Lesion_2``: r ~2 beside a tumour at r ~5.5: its
planned dose is <= 55 % of the 100 Gy target), the 90Y site's first subject a high MAA lung
shunt (~0.3) that puts the planned lung dose at 33-38 Gy (> 30 Gy), its second subject r ~2.1
so that the planned normal-liver dose is 45-50 Gy (> the SIR-Spheres 40 Gy parenchyma limit).
Subjects without a planted breach have one tumour-to-normal ratio for all their tumours (every
tumour exactly at the planned dose), a lung shunt of 2-8 % and r of 3-5, so that no limit or
target is broken at the planned activity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rntflow.core.constants import PRODUCTS, TARE_PRODUCT_CF_J_PER_GBQ
from rntflow.simulation.tare_anatomy import TareAnatomy, sample_tare_anatomy
from rntflow.simulation.tare_sites import TareSite

#: (arm id, subject index in the site) -> planted Table 1 breach.
PLANTS = {
    ("TARE-HO166", 0): "tumour_below_target",
    ("TARE-Y90", 0): "lung_dose",
    ("TARE-Y90", 1): "normal_liver_dose",
}
CF_CONVENTION = "product"


def draw_subject(site: TareSite, idx: int, rng: np.random.Generator) -> tuple[TareAnatomy, dict]:
    """Anatomy and scout uptake parameters (``r`` per tumour, ``lsf``) with the planted breach."""
    plant = PLANTS.get((site.arm_id, idx), "")
    maa = site.scout_agent == "Tc-99m-MAA"
    if plant == "tumour_below_target":
        anat = sample_tare_anatomy(rng, "right_lobe", 2)
        vols = [t.volume_ml for t in anat.tumours]
        low = int(np.argmin(vols))  # the smaller tumour takes the low ratio
        r = [float(rng.uniform(2.0, 2.3)) if i == low else float(rng.uniform(5.0, 6.0)) for i in range(2)]
        return anat, {"plant": plant, "r": r, "lsf": float(rng.uniform(0.02, 0.05)), "low_lesion": low}
    if plant == "lung_dose":
        anat = sample_tare_anatomy(rng, "whole_liver", 1, max_diameter_mm=45.0)
        r0 = float(rng.uniform(2.7, 2.9))
        return anat, {"plant": plant, "r": [r0], "lsf": None, "target_lung_gy": float(rng.uniform(33.0, 38.0))}
    territory = str(rng.choice(["right_lobe", "whole_liver"]))
    anat = sample_tare_anatomy(rng, territory, int(rng.integers(1, 3)))
    if plant == "normal_liver_dose":
        r0 = float(rng.uniform(2.0, 2.2))
    else:
        r0 = float(rng.uniform(3.0, 5.0))
    lsf = float(rng.uniform(0.04, 0.08)) if maa else float(rng.uniform(0.02, 0.06))
    return anat, {"plant": plant, "r": [r0] * len(anat.tumours), "lsf": lsf}


def shares(masses: dict[str, float], lesions: list[str], r: list[float], lsf: float) -> dict[str, float]:
    """Activity shares per VOI (Lesion_n, Liver_Normal, Liver_Perfused, Liver, Lungs)."""
    m_n = masses["Liver_Normal"]
    denom = m_n + sum(ri * masses[v] for ri, v in zip(r, lesions))
    out = {v: (1 - lsf) * ri * masses[v] / denom for v, ri in zip(lesions, r)}
    out["Liver_Normal"] = (1 - lsf) * m_n / denom
    out["Liver_Perfused"] = out["Liver"] = 1 - lsf
    out["Lungs"] = lsf
    return out


def doses_gy(activity_gbq: float, share: dict[str, float], masses: dict[str, float], cf: float) -> dict[str, float]:
    """``A x share x CF / mass`` per VOI."""
    return {v: activity_gbq * s * cf / masses[v] for v, s in share.items()}


def _lsf_for_lung_dose(target_gy: float, d_t: float, m_n: float, m_t: float, r: float, m_lung: float) -> float:
    """The shunt at which the partition plan for ``d_t`` gives ``target_gy`` to the lungs."""
    x = target_gy * r * m_lung / (d_t * (m_n + m_t * r))  # = L / (1 - L)
    return x / (1 + x)


@dataclass(frozen=True)
class _Plan:
    """The partition-model plan of the truth: activity (GBq) and its mean doses (Gy)."""

    activity_gbq: float
    lung_dose_gy: float
    normal_liver_dose_gy: float


def _partition_plan(d_t: float, m_n: float, m_t: float, r: float, lsf: float, m_lung: float, cf: float) -> _Plan:
    """Partition model (seed 000): activity for mean tumour dose ``d_t`` (Gy), masses in kg, CF in J/GBq."""
    activity = d_t * (m_n + m_t * r) / (cf * r * (1 - lsf))
    return _Plan(activity, cf * activity * lsf / m_lung, cf * activity * (1 - lsf) / (m_n + m_t * r))


def plan_subject(site: TareSite, anat: TareAnatomy, params: dict, rng: np.random.Generator) -> dict:
    """The subject's truth: shares, plan, activities and doses (see the module docstring)."""
    device = PRODUCTS[site.device]
    d_t = device.tumour_target_gy[0]
    cf = TARE_PRODUCT_CF_J_PER_GBQ[device.nuclide]  # the product convention (CF_CONVENTION)
    masses = anat.masses_kg()
    lesions = anat.lesion_names
    r = params["r"]
    m_t = sum(masses[v] for v in lesions)
    r_eff = sum(ri * masses[v] for ri, v in zip(r, lesions)) / m_t
    lsf = params["lsf"]
    if lsf is None:
        lsf = _lsf_for_lung_dose(params["target_lung_gy"], d_t, masses["Liver_Normal"], m_t, r_eff, masses["Lungs"])
    plan = _partition_plan(d_t, masses["Liver_Normal"], m_t, r_eff, lsf, masses["Lungs"], cf)
    residual = float(rng.uniform(0.02, 0.05))
    admin_gbq = plan.activity_gbq * (1 - residual)
    maa = site.scout_agent == "Tc-99m-MAA"
    r_sd, lsf_scale = (0.20, 0.7) if maa else (0.05, 1.0)
    r_del = [ri * float(rng.lognormal(0.0, r_sd)) for ri in r]
    lsf_del = float(min(lsf * lsf_scale * rng.lognormal(0.0, 0.10), 0.5))
    scout_share = shares(masses, lesions, r, lsf)
    del_share = shares(masses, lesions, r_del, lsf_del)
    planted = {}
    if params["plant"] == "tumour_below_target":
        v = lesions[params["low_lesion"]]
        planted[v] = (
            f"{v} planned {doses_gy(plan.activity_gbq, scout_share, masses, cf)[v]:.0f} Gy < {d_t:.0f} Gy target"
        )
    elif params["plant"] == "lung_dose":
        planted["Lungs"] = f"lung {plan.lung_dose_gy:.1f} Gy > {device.lung_limit_gy:.0f} Gy (scout LSF {lsf:.3f})"
    elif params["plant"] == "normal_liver_dose":
        planted["Liver_Normal"] = (
            f"normal liver {plan.normal_liver_dose_gy:.1f} Gy > {device.parenchyma_limit_gy:.0f} Gy ({site.device})"
        )
    return {
        "device": site.device,
        "radionuclide": device.nuclide,
        "cf_j_per_gbq": cf,
        "cf_convention": CF_CONVENTION,
        "masses_kg": masses,
        "volumes_ml": anat.volumes_ml(),
        "territory": anat.territory,
        "geometry_mm": {  # anatomy frame (LPS), ellipsoids as (centre, semi-axes)
            "right_lobe": [list(anat.right_lobe.center_mm), list(anat.right_lobe.semi_axes_mm)],
            "left_lobe": [list(anat.left_lobe.center_mm), list(anat.left_lobe.semi_axes_mm)],
            "lungs": [[list(e.center_mm), list(e.semi_axes_mm)] for e in anat.lungs],
            "tumours": [[list(e.center_mm), list(e.semi_axes_mm)] for e in anat.tumours],
        },
        "tumour_diameters_mm": [2 * t.semi_axes_mm[0] for t in anat.tumours],
        "tumour_lobes": list(anat.tumour_lobes),
        "tumour_to_normal_ratio_scout": dict(zip(lesions, r)),
        "tumour_to_normal_ratio_delivered": dict(zip(lesions, r_del)),
        "tumour_to_normal_ratio_plan": r_eff,
        "tumour_mass_kg": m_t,
        "scout_lung_shunt_fraction": lsf,
        "delivered_lung_shunt_fraction": lsf_del,
        "scout_share": scout_share,
        "delivered_share": del_share,
        "planned_tumour_dose_gy": d_t,
        "plan": {
            "activity_gbq": plan.activity_gbq,
            "tumour_dose_gy": d_t,
            "normal_liver_dose_gy": plan.normal_liver_dose_gy,
            "lung_dose_gy": plan.lung_dose_gy,
            "lung_mass_kg": masses["Lungs"],
        },
        "vial_residual_fraction": residual,
        "planned_activity_gbq": plan.activity_gbq,
        "administered_activity_gbq": admin_gbq,
        "dose_gy": {
            "planned": doses_gy(plan.activity_gbq, scout_share, masses, cf),
            "predicted": doses_gy(admin_gbq, scout_share, masses, cf),
            "delivered": doses_gy(admin_gbq, del_share, masses, cf),
        },
        "planted": planted,
    }


def label_activity(anat: TareAnatomy, share: dict[str, float], total_mbq: float) -> np.ndarray:
    """Activity (MBq) per label of :meth:`TareAnatomy.label_anatomy`: air, body, right lobe,
    left lobe, lungs, tumours (the normal share split over the perfused lobes by volume)."""
    vol = anat.volumes_ml()
    perfused = ["right"] if anat.territory == "right_lobe" else ["right", "left"]
    normal_ml = sum(vol[f"normal_{lobe}_lobe"] for lobe in perfused)
    lobe_act = [
        share["Liver_Normal"] * vol[f"normal_{lobe}_lobe"] / normal_ml if lobe in perfused else 0.0
        for lobe in ("right", "left")
    ]
    acts = [0.0, 0.0, *lobe_act, share["Lungs"]] + [share[v] for v in anat.lesion_names]
    return np.asarray(acts) * total_mbq


TRUTH_TARE_COLUMNS = (
    "subject_id",
    "site_id",
    "arm_id",
    "treatment",
    "voi",
    "mass_kg",
    "scout_share",
    "delivered_share",
    "scout_lung_shunt_fraction",
    "delivered_lung_shunt_fraction",
    "planned_activity_gbq",
    "administered_activity_gbq",
    "planned_dose_gy",
    "predicted_dose_gy",
    "delivered_dose_gy",
    "planted",
)


def truth_rows(tare_truth: dict) -> list[dict]:
    """truth_tare.csv: one row per subject, treatment and VOI."""
    rows = []
    for sid, subj in tare_truth.items():
        for tr in subj["treatments"]:
            lesions = sorted((v for v in tr["scout_share"] if v.startswith("Lesion_")), key=lambda v: int(v[7:]))
            for voi in [*lesions, "Liver_Normal", "Liver_Perfused", "Liver", "Lungs"]:
                d = tr["dose_gy"]
                rows.append(
                    {
                        "subject_id": sid,
                        "site_id": subj["site_id"],
                        "arm_id": subj["arm_id"],
                        "treatment": tr["treatment"],
                        "voi": voi,
                        "mass_kg": round(tr["masses_kg"][voi], 6),
                        "scout_share": round(tr["scout_share"][voi], 6),
                        "delivered_share": round(tr["delivered_share"][voi], 6),
                        "scout_lung_shunt_fraction": round(tr["scout_lung_shunt_fraction"], 6),
                        "delivered_lung_shunt_fraction": round(tr["delivered_lung_shunt_fraction"], 6),
                        "planned_activity_gbq": round(tr["planned_activity_gbq"], 6),
                        "administered_activity_gbq": round(tr["administered_activity_gbq"], 6),
                        "planned_dose_gy": round(d["planned"][voi], 4),
                        "predicted_dose_gy": round(d["predicted"][voi], 4),
                        "delivered_dose_gy": round(d["delivered"][voi], 4),
                        "planted": tr["planted"].get(voi, ""),
                    }
                )
    return rows


def decay_factor(half_life_h: float, t_h: float) -> float:
    return math.exp(-math.log(2.0) / half_life_h * t_h)
