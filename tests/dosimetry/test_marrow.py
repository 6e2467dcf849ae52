"""Blood-based red-marrow dosimetry: closed-form laws, the S-value approximation, the simulator's truth."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from rntflow.core.constants import (
    DECAYS_PER_MBQ_H,
    J_PER_MEV,
    RED_MARROW_MASS_G,
    S_RM_FROM_RB_LU177_GY_PER_MBQ_H,
)
from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry.marrow import (
    blood_marrow_dose,
    fit_blood_tac,
    marrow_dose_from_tiac,
    prefer_blood_marrow,
    reference_values,
    s_rm_from_remainder_gy_per_mbq_h,
    whole_body_tia_estimate,
)
from rntflow.physics.nuclides import nuclide
from rntflow.simulation import blood as sim_blood
from rntflow.simulation.kinetics import SubjectKinetics, sample_kinetics

LU = nuclide("Lu-177")
#: Gy per (MBq h) of TIA per kg with the electrons absorbed locally.
K_E = DECAYS_PER_MBQ_H * LU.electron_energy_mev * J_PER_MEV
TIMES = (0.5, 1.0, 2.0, 4.0, 24.0, 48.0, 96.0, 168.0)


def test_mono_exponential_blood_curve_gives_the_closed_form_dose():
    """C(t) = C0 exp(-l t): TIAC = C0/l; self-dose = TIAC RMBLR m K_e / m; cross = (WB - TIA_RM) S."""
    c0, t_eff = 0.05, 30.0  # MBq/mL, h
    lam = math.log(2) / t_eff
    t = np.array(TIMES)
    wb = 2.0e5
    dose, fit, source = blood_marrow_dose(t, c0 * np.exp(-lam * t), "Lu-177", whole_body_tia_mbq_h=wb)
    tiac = c0 / lam
    m = RED_MARROW_MASS_G["M"]
    assert source == "measured"
    assert fit.tia_mbq_h == pytest.approx(tiac, rel=1e-4)
    assert fit.effective_half_life_h == pytest.approx(t_eff, rel=1e-4)
    assert dose.red_marrow_tia_mbq_h == pytest.approx(tiac * m, rel=1e-4)
    assert dose.self_dose_gy == pytest.approx(tiac * m * K_E / (m / 1000.0), rel=1e-4)
    s = s_rm_from_remainder_gy_per_mbq_h("Lu-177")
    assert dose.cross_dose_gy == pytest.approx((wb - tiac * m) * s, rel=1e-4)
    assert dose.dose_gy == pytest.approx(dose.self_dose_gy + dose.cross_dose_gy)


def test_bi_exponential_blood_curve_is_fitted_as_such():
    t = np.array(TIMES)
    c = 0.15 * np.exp(-math.log(2) / 5.0 * t) + 0.02 * np.exp(-math.log(2) / 45.0 * t)
    fit = fit_blood_tac(t, c, "Lu-177")
    assert fit.model == "bi_exp"
    assert fit.tia_mbq_h == pytest.approx(0.15 * 5.0 / math.log(2) + 0.02 * 45.0 / math.log(2), rel=1e-3)


def test_self_dose_laws():
    """Linear in TIAC and RMBLR; independent of the marrow mass (TIA and mass both scale with it)."""
    base = marrow_dose_from_tiac(2.0, "Lu-177", whole_body_tia_mbq_h=0.0)
    assert base.cross_dose_gy == 0.0  # WB TIA below the marrow's: no remainder
    assert base.self_dose_gy == pytest.approx(2.0 * 1000.0 * K_E)
    assert marrow_dose_from_tiac(4.0, "Lu-177", whole_body_tia_mbq_h=0.0).self_dose_gy == pytest.approx(
        2 * base.self_dose_gy
    )
    assert marrow_dose_from_tiac(2.0, "Lu-177", whole_body_tia_mbq_h=0.0, rmblr=0.36).self_dose_gy == pytest.approx(
        0.36 * base.self_dose_gy
    )
    female = marrow_dose_from_tiac(2.0, "Lu-177", whole_body_tia_mbq_h=0.0, red_marrow_mass_g=900.0)
    assert female.self_dose_gy == pytest.approx(base.self_dose_gy)
    assert female.red_marrow_tia_mbq_h == pytest.approx(2.0 * 900.0)


def test_s_value_constant_is_the_documented_approximation_and_small():
    s = s_rm_from_remainder_gy_per_mbq_h("Lu-177", 73000.0)
    assert s == pytest.approx(S_RM_FROM_RB_LU177_GY_PER_MBQ_H, rel=2e-3)
    # photons only: far below the electron self-dose S of the marrow itself
    s_self = K_E / (RED_MARROW_MASS_G["M"] / 1000.0)
    assert 0 < s < 1e-2 * s_self
    # a smaller body absorbs less but spreads it over less mass: S rises
    assert s_rm_from_remainder_gy_per_mbq_h("Lu-177", 60000.0) > s


def test_reference_values_and_whole_body_estimate():
    assert reference_values("F")[:2] == ("F", 900.0)
    assert reference_values(None)[0] == "M" and reference_values("O")[0] == "M"
    wb = whole_body_tia_estimate({"Kidney_L": 100.0, "Liver": 50.0, "Bone_Marrow": 999.0}, 2.0, 5000.0)
    assert wb == pytest.approx(150.0 + 2.0 * 5000.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"tiac_mbq_h_per_ml": -1.0}, "tiac_mbq_h_per_ml"),
        ({"tiac_mbq_h_per_ml": math.nan}, "tiac_mbq_h_per_ml"),
        ({"rmblr": 0.0}, "rmblr"),
        ({"red_marrow_mass_g": -5.0}, "red_marrow_mass_g"),
        ({"whole_body_tia_mbq_h": math.inf}, "whole_body_tia_mbq_h"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, name):
    args = {"tiac_mbq_h_per_ml": 1.0, "whole_body_tia_mbq_h": 1e5, **kwargs}
    tiac = args.pop("tiac_mbq_h_per_ml")
    with pytest.raises(DosimetryInputError, match=name):
        marrow_dose_from_tiac(tiac, "Lu-177", **args)


def test_prefer_blood_marrow_replaces_only_the_cycles_with_blood():
    image = {1: (0.3, 0.31), 2: (0.4, 0.41)}
    out, used = prefer_blood_marrow(image, {2: 0.5, 3: 0.6})
    assert out == {1: (0.3, 0.31), 2: (0.5, None), 3: (0.6, None)} and used == [2, 3]
    assert prefer_blood_marrow(image, {}) == (image, [])


# ----------------------------------------------------------------------------- simulator truth
def _truth(n_subjects: int, seed: int = 7) -> dict:
    """A truth.json-like dict of subjects drawn with the simulator's kinetics sampler."""
    rng = np.random.default_rng(seed)
    tissues = {
        "Kidney_L": "Kidney",
        "Kidney_R": "Kidney",
        "Liver": "Liver",
        "Spleen": "Spleen",
        "Parotid_L": "Salivary",
        "Parotid_R": "Salivary",
        "Bone_Marrow": "Bone_Trabecular",
        "Lesion_1": "Lesion",
        "Lesion_2": "Lesion",
    }
    masses = {
        "Kidney_L": 160.0,
        "Kidney_R": 155.0,
        "Liver": 1800.0,
        "Spleen": 150.0,
        "Parotid_L": 25.0,
        "Parotid_R": 25.0,
        "Bone_Marrow": 300.0,
        "Lesion_1": 15.0,
        "Lesion_2": 30.0,
    }
    subjects = {}
    for i in range(n_subjects):
        kin = sample_kinetics(rng, tissues, masses, LU.electron_energy_mev, LU.half_life_h)
        cycles = [
            {
                "cycle": c,
                "administered_mbq": 7400.0 * float(rng.normal(1.0, 0.03)),
                "kinetics": {v: asdict(k) for v, k in kin.compartments.items()},
                "dose_gy": {},
            }
            for c in (1, 2)
        ]
        subjects[f"S-{i:03d}"] = {"site_id": "SITE01", "cycles": cycles}
    return {"electron_energy_mev": LU.electron_energy_mev, "subjects": subjects}


def test_simulated_blood_samples_reproduce_the_truth_marrow_dose():
    """The simulator's noisy samples, through the pipeline's code path, within 15 % of its truth.

    The whole-body TIA comes from the image VOIs (here their exact TIAs) plus the blood pool,
    as the pipeline does; with the exact whole-body TIA (``measured``) the error is the blood
    fit's alone, a few per cent.
    """
    truth = _truth(8)
    samples, truths = sim_blood.blood_tables(truth, seed=20261123)
    errs, errs_measured = [], []
    for row in truths:
        cyc = next(c for c in truth["subjects"][row["subject_id"]]["cycles"] if c["cycle"] == row["cycle"])
        kin = SubjectKinetics({v: sim_blood.CompartmentKinetics(**k) for v, k in cyc["kinetics"].items()})
        voi_tia = {
            v: k.fraction * cyc["administered_mbq"] * (1 / k.l_eff_per_h - 1 / k.l_up_per_h)
            for v, k in kin.compartments.items()
        }
        mine = [s for s in samples if s["subject_id"] == row["subject_id"] and s["cycle"] == row["cycle"]]
        assert len(mine) == len(sim_blood.BLOOD_SAMPLE_TIMES_H)
        t = [float(s["t_h"]) for s in mine]
        c = [float(s["activity_concentration_bq_per_ml"]) / 1e6 for s in mine]
        dose, fit, source = blood_marrow_dose(t, c, "Lu-177", voi_tia_mbq_h=voi_tia)
        assert source == "image_vois+blood_pool"
        errs.append(dose.dose_gy / row["dose_gy"] - 1.0)
        measured, _, _ = blood_marrow_dose(t, c, "Lu-177", whole_body_tia_mbq_h=row["whole_body_tia_mbq_h"])
        errs_measured.append(measured.dose_gy / row["dose_gy"] - 1.0)
        assert 0.03 < row["cross_dose_gy"] / row["dose_gy"] < 0.2  # the cross-dose is a minor term
    errs, errs_measured = np.abs(errs), np.abs(errs_measured)
    assert errs.max() < 0.15, errs
    assert errs_measured.max() < 0.08, errs_measured


def test_simulated_truth_is_plausible_and_exact():
    """Per 7.4 GBq cycle the blood-based truth is in the published range; its TIAC is the exact integral."""
    truth = _truth(4, seed=3)
    samples, truths = sim_blood.blood_tables(truth, seed=1)
    for row in truths:
        per_cycle = row["dose_gy"] * 7400.0 / truth["subjects"][row["subject_id"]]["cycles"][0]["administered_mbq"]
        assert 0.1 < per_cycle < 0.6
    # the truth's TIAC is the integral of the true curve (checked numerically)
    cyc = truth["subjects"]["S-000"]["cycles"][0]
    kin = SubjectKinetics({v: sim_blood.CompartmentKinetics(**k) for v, k in cyc["kinetics"].items()})
    t = np.linspace(0.0, 5000.0, 400001)
    args = (kin, cyc["administered_mbq"], 5300.0, 0.25, 0.05)
    numeric = np.trapezoid(sim_blood.blood_concentration_mbq_per_ml(*args, t), t)
    assert sim_blood.blood_tiac_mbq_h_per_ml(*args) == pytest.approx(numeric, rel=1e-5)
    # blood never holds more than the remainder of body
    v_blood = 5300.0 * sim_blood.blood_concentration_mbq_per_ml(*args, t[:2000])
    assert np.all(v_blood <= kin.remainder_activity_mbq(cyc["administered_mbq"], t[:2000]) + 1e-9)
