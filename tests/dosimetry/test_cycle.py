"""One subject-cycle (dosimetry/cycle.py): laws of physics on synthetic images with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV
from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry.cycle import compute_cycle_dosimetry
from rntflow.dosimetry.cycle_types import CycleSettings, TimePoint, Voi
from rntflow.dosimetry.voi_activity import recovery_coefficient
from rntflow.physics.nuclides import nuclide

SP = (4.8, 4.8, 4.8)
VOXEL_ML = 4.8**3 / 1000.0
FWHM_TO_SIGMA = 1 / (2 * math.sqrt(2 * math.log(2)))


def _ball(shape, centre, radius_vox):
    z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius_vox**2


def _images(conc_of_t, t_h, mask, background_of_t=lambda t: 0.0, fwhm_mm=0.0):
    out = []
    for i, t in enumerate(t_h):
        img = np.where(mask, conc_of_t(t), background_of_t(t)).astype(float)
        if fwhm_mm:
            img = ndimage.gaussian_filter(img, fwhm_mm * FWHM_TO_SIGMA / SP[0], mode="nearest")
        out.append(TimePoint(f"S{i}", t, img, 0.03, "CAL1"))
    return out


def test_mono_exponential_organ_gives_the_analytic_tia_and_dose():
    # law: TIA = A0 / lambda_eff for A(t) = A0 exp(-lambda t); electron self-dose = TIA E / m.
    # Four noise-free points on the model itself: the fit is exact to optimiser precision (0.5%).
    mask = _ball((40, 40, 40), (20, 20, 20), 8)
    volume_ml = mask.sum() * VOXEL_ML
    t_eff_h, a0_mbq = 50.0, 1000.0
    lam = math.log(2) / t_eff_h
    tps = _images(lambda t: a0_mbq * math.exp(-lam * t) * 1e6 / volume_ml, (4.0, 24.0, 96.0, 168.0), mask)
    voi = Voi("Kidney_L", mask.astype(np.float32), volume_ml, volume_ml * 1.05)
    res = compute_cycle_dosimetry(
        tps, [voi], CycleSettings("Lu-177", 7400.0, SP, voxel_engine="organ", partial_volume_correction=False)
    )
    fit = res.tac_fits[0]
    assert fit["model"] == "mono_exp"
    assert fit["tia_mbq_h"] == pytest.approx(a0_mbq / lam, rel=0.005)
    assert fit["effective_half_life_h"] == pytest.approx(t_eff_h, rel=0.005)
    dose = next(r for r in res.voi_doses if r["voi"] == "Kidney_L")
    e_only = a0_mbq / lam * DECAYS_PER_MBQ_H * nuclide("Lu-177").electron_energy_mev * J_PER_MEV / (voi.mass_g / 1e3)
    # photons add their self-absorbed part: between 0 and the whole photon/electron energy ratio
    ratio = nuclide("Lu-177").photon_energy_mev / nuclide("Lu-177").electron_energy_mev
    assert e_only < dose["dose_gy"] < e_only * (1 + ratio)
    assert dose["dose_sd_gy"] / dose["dose_gy"] == pytest.approx(math.hypot(0.03, 0.05), rel=0.2)


def test_background_aware_recovery_restores_a_blurred_sphere_in_a_warm_background():
    # law: a hot sphere blurred in a warm background images as RC0 C + (1 - RC0) C_bg.
    # Without the background term the activity reads high; with it within 5 %
    # (RC0 from the analytic blurred-sphere integral, the shell median from the same image).
    shape = (60, 60, 60)
    mask = _ball(shape, (30, 30, 30), 5.2)  # 25 mm radius
    fwhm = 12.0
    volume_ml = mask.sum() * VOXEL_ML
    c_bq_per_ml, bg = 50_000.0, 10_000.0
    tps = _images(
        lambda t: c_bq_per_ml * math.exp(-0.02 * t),
        (4.0, 24.0, 96.0, 168.0),
        mask,
        lambda t: bg * math.exp(-0.05 * t),
        fwhm,
    )
    frac = mask.astype(np.float32)
    voi = Voi("Lesion_1", frac, volume_ml, volume_ml)
    settings = CycleSettings("Lu-177", 7400.0, SP, voxel_engine="organ", rc_fwhm_mm=fwhm)
    res = compute_cycle_dosimetry(tps, [voi], settings)
    for row, t in zip(res.voi_timepoints, (4.0, 24.0, 96.0, 168.0)):
        true_mbq = c_bq_per_ml * math.exp(-0.02 * t) * volume_ml / 1e6
        assert row["activity_mbq"] == pytest.approx(true_mbq, rel=0.05)
        assert row["recovery_coefficient"] == pytest.approx(recovery_coefficient(volume_ml, fwhm))
    naive = float((tps[0].bq_per_ml * frac).sum()) * VOXEL_ML / 1e6 / recovery_coefficient(volume_ml, fwhm)
    assert naive > 1.05 * c_bq_per_ml * math.exp(-0.08) * volume_ml / 1e6  # spill-in would read high


def test_three_points_use_the_trapezoid_with_a_fitted_tail_and_one_point_a_single_time_point_method():
    mask = _ball((30, 30, 30), (15, 15, 15), 6)
    v = mask.sum() * VOXEL_ML
    lam = math.log(2) / 60.0
    voi = Voi("Liver", mask.astype(np.float32), v, v)
    s = CycleSettings("Lu-177", 7400.0, SP, voxel_engine="organ", partial_volume_correction=False)
    three = compute_cycle_dosimetry(_images(lambda t: 1e5 * math.exp(-lam * t), (4.0, 24.0, 96.0), mask), [voi], s)
    assert three.tac_fits[0]["model"] == "trapezoid" and three.method == "multi_time_point"
    # trapezoid under-reads the first segment (linear from 0) and is exact in the fitted tail
    exact = 1e5 * v / 1e6 / lam
    assert three.tac_fits[0]["tia_mbq_h"] == pytest.approx(exact, rel=0.05)
    one = compute_cycle_dosimetry(_images(lambda t: 1e5 * math.exp(-lam * t), (60.0,), mask), [voi], s)
    assert one.method == "single_time_point" and one.tac_fits[0]["model"] == "hanscheid"
    # Hänscheid is exact for a mono-exponential scanned at t = T_eff
    assert one.tac_fits[0]["tia_mbq_h"] == pytest.approx(exact, rel=1e-6)
    madsen = compute_cycle_dosimetry(
        _images(lambda t: 1e5 * math.exp(-lam * t), (100.0,), mask),
        [voi],
        CycleSettings(
            "Lu-177",
            7400.0,
            SP,
            voxel_engine="organ",
            partial_volume_correction=False,
            population_t_eff_h={"Liver": 60.0},
        ),
    )
    assert madsen.voi_doses[0]["method"] == "single_time_point_madsen"
    assert madsen.tac_fits[0]["tia_mbq_h"] == pytest.approx(exact, rel=1e-6)


def test_bad_inputs_give_clear_errors_or_findings():
    shape, mask = (20, 20, 20), _ball((20, 20, 20), (10, 10, 10), 4)
    voi = Voi("Spleen", mask.astype(np.float32), 1.0, 1.0)
    s = CycleSettings("Lu-177", 7400.0, SP, voxel_engine="organ")
    with pytest.raises(DosimetryInputError, match="not after the administration"):
        compute_cycle_dosimetry(_images(lambda t: 1.0, (-1.0, 24.0), mask), [voi], s)
    with pytest.raises(DosimetryInputError, match="at least one"):
        compute_cycle_dosimetry([], [voi], s)
    empty = Voi("Lesion_9", np.zeros(shape, np.float32), 1.0, 1.0)
    res = compute_cycle_dosimetry(
        _images(lambda t: 1e5 * math.exp(-0.01 * t), (4.0, 24.0, 96.0, 168.0), mask), [voi, empty], s
    )
    f = [x for x in res.findings if x.scope_id == "Lesion_9"]
    assert f and f[0].status == "fail" and "no voxel" in f[0].message
    # a curve that does not decay: no fit, the conservative physical-decay fallback, and why
    flat = compute_cycle_dosimetry(_images(lambda t: 1e5, (4.0, 24.0, 96.0, 168.0), mask), [voi], s)
    tac = [x for x in flat.findings if x.check_name == "tac_fit"][0]
    assert tac.status == "warn" and flat.tac_fits[0]["fallback_reason"]


def test_recovery_uncertainty_from_a_non_nema_fwhm_widens_the_dose_sd_to_cover_its_error():
    # issue 13 part 3: with a FWHM from the cylinder edge (or configured), +-15 %, the dose SD
    # includes the recovery coefficient's change over FWHM (1 +- 0.15), so a 15 % FWHM error
    # moves the dose by less than its stated SD; an organ-sized VOI hardly changes
    from rntflow.dosimetry.uncertainty import RC_FWHM_REL_SD, recovery_rel_sd

    assert RC_FWHM_REL_SD["nema"] == 0.0 and RC_FWHM_REL_SD["cylinder_edge"] == 0.15
    assert recovery_rel_sd(10.0, 12.5, 0.0) == 0.0 and recovery_rel_sd(10.0, None, 0.15) == 0.0
    lesion, liver = recovery_rel_sd(10.0, 12.5, 0.15), recovery_rel_sd(1800.0, 12.5, 0.15)
    assert 0.05 < lesion < 0.2 and liver < 0.02
    rc = recovery_coefficient(10.0, 12.5)
    assert lesion == pytest.approx(max(abs(recovery_coefficient(10.0, 12.5 * k) / rc - 1) for k in (0.85, 1.15)))

    shape = (60, 60, 60)
    mask = _ball(shape, (30, 30, 30), 3.0)  # 14.4 mm radius, 12.5 mL
    fwhm = 12.0
    volume_ml = mask.sum() * VOXEL_ML
    tps = _images(
        lambda t: 50_000.0 * math.exp(-0.02 * t),
        (4.0, 24.0, 96.0, 168.0),
        mask,
        lambda t: 5_000.0 * math.exp(-0.05 * t),
        fwhm,
    )
    voi = Voi("Lesion_1", mask.astype(np.float32), volume_ml, volume_ml)

    def dose(fwhm_mm: float, rel_sd: float) -> dict:
        s = CycleSettings("Lu-177", 7400.0, SP, voxel_engine="organ", rc_fwhm_mm=fwhm_mm, rc_fwhm_rel_sd=rel_sd)
        return compute_cycle_dosimetry(tps, [voi], s).voi_doses[0]

    nema, edge, edge_wrong = dose(fwhm, 0.0), dose(fwhm, 0.15), dose(fwhm * 1.15, 0.15)
    assert edge["dose_gy"] == nema["dose_gy"] and edge["dose_sd_gy"] > nema["dose_sd_gy"]
    assert edge["dose_sd_gy"] / edge["dose_gy"] == pytest.approx(
        math.hypot(nema["dose_sd_gy"] / nema["dose_gy"], recovery_rel_sd(volume_ml, fwhm, 0.15)), rel=1e-6
    )
    assert abs(edge_wrong["dose_gy"] - nema["dose_gy"]) < edge_wrong["dose_sd_gy"]
    assert abs(edge_wrong["dose_gy"] - nema["dose_gy"]) > nema["dose_sd_gy"]  # the old SD would not cover it
