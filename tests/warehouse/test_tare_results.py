"""Radioembolisation results beyond the flows: the subject report, the dose-effect view, the truth comparison."""

from __future__ import annotations

import pandas as pd
import pytest

from rntflow.analysis.tare_report import tare_subject_report_html
from rntflow.evaluation import compare_tare_with_truth
from rntflow.warehouse.catalog import TARE_ENGINE, dose_effect_frame
from rntflow.warehouse.writer import load_table

TRIAL = "RNT-T"
BASE = {"trial_id": TRIAL, "site_id": "SITE05"}


def _plans() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                **BASE,
                "subject_id": "RNT-05001",
                "treatment": 1,
                "study_id": "SC1",
                "arm_id": "TARE-Y90",
                "device": "SIR-Spheres",
                "radionuclide": "Y-90",
                "scout_agent": "Tc-99m-MAA",
                "lung_shunt_fraction": 0.3195,
                "tumour_to_normal_ratio": 3.1,
                "tumour_mass_kg": 0.12,
                "normal_liver_mass_kg": 1.4,
                "lung_mass_kg": 0.86,
                "planned_tumour_dose_gy": 100.0,
                "planned_activity_gbq": 1.892,
                "predicted_tumour_dose_gy": 100.0,
                "predicted_normal_liver_dose_gy": 36.3,
                "predicted_lung_dose_gy": 34.1,
                "cf_j_per_gbq": 49.67,
                "cf_convention": "product",
                "broken_limits": "lung 34.1 Gy > 30 Gy <script>",
                "notes": "",
            }
        ]
    )


def _doses() -> pd.DataFrame:
    rows = [("Lesion_1", 107.9), ("Liver_Normal", 40.8), ("Lungs", 22.9), ("Liver", 45.0), ("Liver_Perfused", 45.0)]
    return pd.DataFrame(
        [
            {
                **BASE,
                "subject_id": "RNT-05001",
                "treatment": 1,
                "study_id": "PT1",
                "voi": v,
                "administered_activity_gbq": 1.853,
                "activity_mbq": 100.0,
                "mass_kg": 0.1,
                "mean_dose_gy": d,
                "d2_gy": d * 1.5,
                "d50_gy": d,
                "d70_gy": d * 0.8,
                "d98_gy": d * 0.4,
                "method": "local_deposition",
            }
            for v, d in rows
        ]
    )


def _pvd() -> pd.DataFrame:
    rows = [("Lesion_1", 98.0, 107.9), ("Liver_Normal", 35.5, 40.8), ("Lungs", 33.5, 22.9)]
    return pd.DataFrame(
        [
            {
                **BASE,
                "subject_id": "RNT-05001",
                "treatment": 1,
                "voi": v,
                "scout_study_id": "SC1",
                "post_study_id": "PT1",
                "planned_dose_gy": p * 1.02,
                "predicted_dose_gy": p,
                "delivered_dose_gy": d,
                "delivered_to_predicted_ratio": d / p,
            }
            for v, p, d in rows
        ]
    )


def test_tare_subject_report_shows_plan_doses_and_predicted_vs_delivered():
    html = tare_subject_report_html(
        trial_id=TRIAL,
        site_id="SITE05",
        subject_id="RNT-05001",
        plans=_plans(),
        doses=_doses(),
        predicted_delivered=_pvd(),
        qa_checks=pd.DataFrame(
            [{"check_name": "tare_lung_dose", "status": "fail", "scope_id": "SC1", "subject_id": "RNT-05001"}]
        ),
        calibrations=pd.DataFrame([{"calibration_id": "SITE05-PET-1", "site_id": "SITE05", "radionuclide": "Y-90"}]),
        software_version="9.9",
        generated_at="now",
    )
    assert "Treatment 1" in html and "SIR-Spheres (Y-90)" in html
    assert ">0.320<" in html and ">1.892<" in html  # lung shunt, planned activity
    assert ">107.9<" in html and ">98.0<" in html and ">1.10<" in html  # delivered, predicted, ratio
    assert html.count("<svg") == 1  # the predicted-vs-delivered figure
    assert "<script>" not in html and "&lt;script&gt;" in html  # text escaped
    assert "SITE05-PET-1" in html and "tare_lung_dose" in html


def test_dose_effect_joins_tare_outcomes_to_their_targets_under_their_own_engine(tmp_path):
    wh = tmp_path / "wh"
    load_table(wh, "tare_doses", _doses())
    outcomes = pd.DataFrame(
        [
            {
                "trial_id": TRIAL,
                "site_id": "SITE05",
                "subject_id": "RNT-05001",
                "endpoint": "liver_toxicity",
                "grade": 3,
            },
            {
                "trial_id": TRIAL,
                "site_id": "SITE05",
                "subject_id": "RNT-05001",
                "endpoint": "lesion_response",
                "lesion_voi": "Lesion_1",
                "response": "PR",
            },
        ]
    )
    load_table(wh, "outcomes", outcomes)
    tare = dose_effect_frame(wh, engines=(TARE_ENGINE,)).set_index("endpoint")
    assert tare.loc["liver_toxicity", "target_voi"] == "Liver_Normal"
    assert tare.loc["liver_toxicity", "cumulative_dose_gy"] == pytest.approx(40.8)
    assert tare.loc["liver_toxicity", "effect"] == 1  # grade >= 3
    assert tare.loc["lesion_response", "cumulative_dose_gy"] == pytest.approx(107.9)
    assert tare.loc["lesion_response", "effect"] == 1
    assert dose_effect_frame(wh).empty  # the 177Lu analysis (organ/sphere engines) never sees them


def test_compare_tare_with_truth_reports_dose_errors_in_percent_and_shunt_in_points(tmp_path):
    wh = tmp_path / "wh"
    load_table(wh, "tare_plans", _plans())
    load_table(wh, "tare_predicted_delivered", _pvd())
    truth = tmp_path / "truth_tare.csv"
    pd.DataFrame(
        [
            {"subject_id": "RNT-05001", "treatment": 1, "voi": "Lesion_1", "predicted_dose_gy": 98.0,
             "delivered_dose_gy": 100.0, "scout_lung_shunt_fraction": 0.32},
            {"subject_id": "RNT-05001", "treatment": 1, "voi": "Lungs", "predicted_dose_gy": 33.5,
             "delivered_dose_gy": 22.9, "scout_lung_shunt_fraction": 0.32},
        ]
    ).to_csv(truth, index=False)  # fmt: skip
    cmp = compare_tare_with_truth(wh, truth).set_index(["quantity", "voi"])
    assert cmp.loc[("delivered", "Lesion_1"), "error_pct"] == pytest.approx(7.9)
    assert cmp.loc[("predicted", "Lesion_1"), "error_pct"] == pytest.approx(0.0)
    assert cmp.loc[("lung_shunt_fraction", "Lungs"), "error_pp"] == pytest.approx(-0.05)
    assert ("predicted", "Liver_Normal") not in cmp.index  # not in the truth file
    assert compare_tare_with_truth(wh, tmp_path / "missing.csv").empty
