"""TARE imaging physics (dosimetry/tare_imaging.py) against analytic cases.

* a uniform sphere gives its analytic dose ``A CF / M``; energy is conserved voxel by voxel;
* a blurred liver/lung/lesion phantom gives back the activities it was built with (lung
  shunt within 0.5 percentage points, lesion and normal liver within a few %);
* the partition-model worked cases: scout activities built from (M_N, M_T, r, L) give back r
  and L, and the plan's activity is ``D_T (M_N + M_T r) / (CF r (1 - L))``;
* predicted doses at the planned activity reproduce the plan's tumour, normal-liver and lung doses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from rntflow.core.errors import DosimetryInputError, VoiError
from rntflow.dosimetry.tare import plan_partition, tare_conversion_factor_j_per_gbq
from rntflow.dosimetry.tare_imaging import (
    decay_factor_to_administration,
    dvh_metrics_gy,
    local_deposition_dose_map_gy,
    mean_dose_gy,
    missing_vois,
    predicted_doses_gy,
    tare_voi_activities,
    tumour_to_normal_ratio,
    voi_masses_kg,
    voxel_mass_kg,
)
from rntflow.physics.recovery import FWHM_PER_SIGMA

CF_Y90 = 49.67
SOFT_HU = 40.0  # 1.04 g/mL through dosimetry.density
LUNG_HU = -800.0 + 0.04 / 0.74 * 800.0  # 0.30 g/mL


def _ball(shape, centre_vox, radius_vox):
    z, y, x = np.indices(shape)
    c = np.asarray(centre_vox, float)
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius_vox**2


def _phantom(spacing=4.0, lesion_radius_mm=20.0):
    """Liver block (left half perfused, one lesion in it), lungs block above, 1 mm gap."""
    shape = (70, 60, 70)
    liver = np.zeros(shape, bool)
    liver[30:60, 10:50, 8:62] = True
    perfused = liver.copy()
    perfused[:, :, 35:] = False
    lungs = np.zeros(shape, bool)
    lungs[2:29, 8:52, 6:64] = True
    lesion = _ball(shape, (45, 30, 20), lesion_radius_mm / spacing) & perfused
    hu = np.full(shape, -1000.0)
    hu[liver] = SOFT_HU
    hu[lungs] = LUNG_HU
    masks = {"Liver": liver, "Liver_Perfused": perfused, "Lungs": lungs, "Lesion_1": lesion}
    return masks, hu, (spacing,) * 3


def _activity(masks, c_normal, c_tumour, c_lung):
    act = np.zeros(masks["Liver"].shape)
    act[masks["Liver_Perfused"]] = c_normal
    act[masks["Lesion_1"]] = c_tumour
    act[masks["Lungs"]] = c_lung
    return act


def test_uniform_sphere_gives_its_analytic_dose_and_energy_is_conserved():
    shape = (40, 40, 40)  # 3 mm voxels
    ball = _ball(shape, (20, 20, 20), 8.0)
    hu = np.where(ball, SOFT_HU, -1000.0)
    voxel_ml = 27.0 / 1000.0
    a_gbq = 1.7
    act = np.where(ball, a_gbq / ball.sum(), 0.0)
    m_vox = voxel_mass_kg(hu, voxel_ml)
    dose = local_deposition_dose_map_gy(act, CF_Y90, m_vox)
    mass = ball.sum() * voxel_ml * 1.04 / 1000.0
    assert dose[ball] == pytest.approx(a_gbq * CF_Y90 / mass, rel=1e-9)  # uniform: every voxel
    assert mean_dose_gy(a_gbq, CF_Y90, mass) == pytest.approx(a_gbq * CF_Y90 / mass)
    assert float((dose * m_vox).sum()) == pytest.approx(a_gbq * CF_Y90, rel=1e-12)
    met = dvh_metrics_gy(dose, ball, m_vox, voxel_ml)
    for v in (met.mean_gy, met.d2_gy, met.d50_gy, met.d70_gy, met.d98_gy):
        assert v == pytest.approx(a_gbq * CF_Y90 / mass, rel=1e-9)


def test_dvh_metrics_of_a_two_level_map():
    """30 % of the mass at 100 Gy, 70 % at 10 Gy: D2 = D30 = 100, D50 = D70 = 10."""
    dose = np.array([100.0] * 3 + [10.0] * 7).reshape(1, 1, 10)
    mask = np.ones_like(dose, bool)
    m = np.full(dose.shape, 1e-3)
    met = dvh_metrics_gy(dose, mask, m, 1.0)
    assert (met.d2_gy, met.d50_gy, met.d70_gy, met.d98_gy) == (100.0, 10.0, 10.0, 10.0)
    assert met.mean_gy == pytest.approx(37.0)


@pytest.mark.parametrize("fwhm_mm", [0.0, 12.0, 16.0])
def test_blurred_phantom_gives_back_its_activities(fwhm_mm):
    masks, hu, sp = _phantom()
    c_n, c_t, c_l = 1.0, 4.0, 1.0 / 30.0
    truth = _activity(masks, c_n, c_t, c_l)
    img = ndimage.gaussian_filter(truth, fwhm_mm / FWHM_PER_SIGMA / sp[0], mode="constant") if fwhm_mm else truth
    res = tare_voi_activities(img, masks, sp, fwhm_mm)
    exact = {
        "Lesion_1": truth[masks["Lesion_1"]].sum(),
        "Liver_Perfused": truth[masks["Liver_Perfused"]].sum(),
        "Lungs": truth[masks["Lungs"]].sum(),
    }
    exact["Liver_Normal"] = exact["Liver_Perfused"] - exact["Lesion_1"]
    exact["Liver"] = exact["Liver_Perfused"]
    lsf = exact["Lungs"] / (exact["Lungs"] + exact["Liver"])
    assert res.lung_shunt_fraction == pytest.approx(lsf, abs=0.005)
    for voi, a in exact.items():
        # the voxelised lesion is not quite a sphere: its RC is that of its volume's sphere
        assert res.activity[voi] == pytest.approx(a, rel=0.05 if voi == "Lesion_1" else 0.02), voi
    if fwhm_mm:
        assert 0.5 < res.recovery_coefficient["Lesion_1"] < 1.0
        naive = img[masks["Lesion_1"]].sum()
        assert abs(naive / exact["Lesion_1"] - 1) > 0.1  # the correction matters
    shares = res.shares()
    assert sum(shares[v] for v in ("Liver", "Lungs")) == pytest.approx(1.0)


def test_lung_spill_from_the_liver_dome_does_not_inflate_the_shunt():
    """Without the core, the liver's blur into the lung base would add percentage points."""
    masks, hu, sp = _phantom()
    truth = _activity(masks, 1.0, 4.0, 1.0 / 30.0)
    img = ndimage.gaussian_filter(truth, 16.0 / FWHM_PER_SIGMA / sp[0], mode="constant")
    lsf_true = truth[masks["Lungs"]].sum() / truth[masks["Lungs"] | masks["Liver"]].sum()
    naive = img[masks["Lungs"]].sum() / (img[masks["Lungs"]].sum() + img[masks["Liver"]].sum())
    assert naive - lsf_true > 0.005
    assert tare_voi_activities(img, masks, sp, 16.0).lung_shunt_fraction == pytest.approx(lsf_true, abs=0.003)


def test_masses_from_ct_and_normal_liver():
    masks, hu, sp = _phantom()
    voxel_ml = 0.064
    mass, vol = voi_masses_kg(masks, hu, voxel_ml)
    n_normal = (masks["Liver_Perfused"] & ~masks["Lesion_1"]).sum()
    assert vol["Liver_Normal"] == pytest.approx(n_normal * voxel_ml)
    assert mass["Liver_Normal"] == pytest.approx(n_normal * voxel_ml * 1.04 / 1000)
    assert mass["Lungs"] == pytest.approx(masks["Lungs"].sum() * voxel_ml * 0.30 / 1000, rel=1e-6)


#: Partition-model worked cases (DOMAIN.md section 5 formula): (product, D_T Gy, M_N kg,
#: M_T kg, r, L, expected activity GBq computed by hand).
WORKED = [
    # SIR-Spheres, 120 Gy: A = 120 (1.5 + 0.2*3) / (49.67*3*0.95) = 1.7802 GBq
    ("SIR-Spheres", 120.0, 1.5, 0.2, 3.0, 0.05, 1.7802),
    # TheraSphere, 200 Gy, r 4, L 0.10: A = 200 (1.2 + 0.3*4) / (49.67*4*0.9) = 2.6843 GBq
    ("TheraSphere", 200.0, 1.2, 0.3, 4.0, 0.10, 2.6843),
    # QuiremSpheres, 100 Gy, r 2.5, L 0.03: A = 100 (1.6 + 0.15*2.5) / (15.85*2.5*0.97) = 5.1384 GBq
    ("QuiremSpheres", 100.0, 1.6, 0.15, 2.5, 0.03, 5.1384),
]


def _scout_from_partition(m_n, m_t, r, lsf, total=1000.0):
    """Activities of a scout with these partition parameters (liver and lungs only)."""
    liver = total * (1 - lsf)
    a_t = liver * m_t * r / (m_n + m_t * r)
    return {"Lesion_1": a_t, "Liver_Normal": liver - a_t, "Liver_Perfused": liver, "Liver": liver, "Lungs": total * lsf}


@pytest.mark.parametrize(("product", "d_t", "m_n", "m_t", "r", "lsf", "a_expected"), WORKED)
def test_partition_model_worked_cases(product, d_t, m_n, m_t, r, lsf, a_expected):
    act = _scout_from_partition(m_n, m_t, r, lsf)
    masses = {"Lesion_1": m_t, "Liver_Normal": m_n, "Liver_Perfused": m_n + m_t, "Liver": m_n + m_t, "Lungs": 1.0}
    assert tumour_to_normal_ratio(act, masses) == pytest.approx(r)
    plan = plan_partition(d_t, m_n, m_t, r, lsf, product=product, raise_on_limit=False)
    assert plan.activity_gbq == pytest.approx(a_expected, abs=5e-4)
    cf = tare_conversion_factor_j_per_gbq(plan.nuclide)
    shares = {k: v / (act["Liver"] + act["Lungs"]) for k, v in act.items()}
    planned = predicted_doses_gy(shares, masses, plan.activity_gbq, cf)
    assert planned["Lesion_1"] == pytest.approx(d_t)
    assert planned["Liver_Normal"] == pytest.approx(plan.normal_liver_dose_gy)
    assert planned["Lungs"] == pytest.approx(plan.lung_dose_gy)


@pytest.mark.parametrize(
    ("product", "treatment", "d_t"),
    [("SIR-Spheres", "standard", 100.0), ("SIR-Spheres", "ablative", 150.0), ("TheraSphere", "ablative", 400.0)],
)
def test_a_plan_at_the_target_is_not_below_it(product, treatment, d_t):
    """The algebra gives back the planned dose only to round-off (a hair below for some masses
    and ratios): no "below the target" note for a plan made AT the target; one just below it."""
    for m_t in (0.1, 0.2, 0.33, 0.7):
        for r in (1.3, 2.0, 3.0, 4.7):
            for lsf in (0.0, 0.05, 0.13):
                plan = plan_partition(d_t, 1.5, m_t, r, lsf, product=product, treatment=treatment, raise_on_limit=False)
                assert not [n for n in plan.notes if n.startswith("tumour ")], (m_t, r, lsf, plan.notes)
    low = plan_partition(
        d_t * (1 - 1e-6), 1.5, 0.2, 3.0, 0.05, product=product, treatment=treatment, raise_on_limit=False
    )
    assert [n for n in low.notes if n.startswith("tumour ")]


def test_decay_to_administration():
    assert decay_factor_to_administration(26.8, 26.8) == pytest.approx(2.0)
    assert decay_factor_to_administration(64.1, 0.0) == 1.0
    with pytest.raises(DosimetryInputError, match="before administration"):
        decay_factor_to_administration(64.1, -2.0)


def test_missing_vois_are_named():
    masks, _, sp = _phantom()
    del masks["Lungs"], masks["Lesion_1"]
    assert missing_vois(masks) == ["Lungs", "Lesion_n (at least one)"]
    with pytest.raises(VoiError, match="Lungs"):
        tare_voi_activities(np.zeros(masks["Liver"].shape), masks, sp, 10.0)


def test_bad_inputs():
    masks, _, sp = _phantom()
    img = np.zeros(masks["Liver"].shape)
    img[0, 0, 0] = math.nan
    with pytest.raises(DosimetryInputError, match="activity"):
        tare_voi_activities(img, masks, sp, 10.0)
    with pytest.raises(DosimetryInputError, match="mass_kg"):
        local_deposition_dose_map_gy(np.ones(3), CF_Y90, np.zeros(3))
