"""The coordinator's status flags a TARE treatment whose scout or post-treatment
reconstruction failed its radionuclide's protocol (issue 18): not silently accepted."""

from __future__ import annotations

from rntflow.status.tare import tare_lines, tare_treatments


def _rows(post_compliant):
    return {
        "studies": [
            {"subject_id": "S1", "study_id": "SC1", "protocol_compliant": True},
            {"subject_id": "S1", "study_id": "PT1", "protocol_compliant": post_compliant},
        ],
        "tare_plans": [
            {
                "site_id": "SITE05",
                "subject_id": "S1",
                "treatment": 1,
                "study_id": "SC1",
                "lung_shunt_fraction": 0.05,
                "planned_activity_gbq": 1.6,
                "broken_limits": "",
            }
        ],
        "tare_doses": [
            {
                "site_id": "SITE05",
                "subject_id": "S1",
                "treatment": 1,
                "study_id": "PT1",
                "voi": "Lungs",
                "administered_activity_gbq": 1.5,
                "mean_dose_gy": 2.0,
            }
        ],
        "tare_predicted_delivered": [
            {"site_id": "SITE05", "subject_id": "S1", "treatment": 1, "voi": "Lungs", "predicted_dose_gy": 2.1}
        ],
    }


def test_a_non_compliant_post_treatment_study_is_shown():
    (t,) = tare_treatments(_rows(False))["S1"]
    assert t["non_compliant"] == ["PT1"] and t["complete"]
    assert any("not protocol-compliant: PT1" in line for line in tare_lines([t]))


def test_compliant_or_unchecked_studies_are_not_flagged():
    for verdict in (True, None):
        (t,) = tare_treatments(_rows(verdict))["S1"]
        assert t["non_compliant"] == []
        assert not any("protocol-compliant" in line for line in tare_lines([t]))
