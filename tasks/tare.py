"""Prefect tasks of radioembolisation (TARE): the subject's TARE records, plans and comparisons.

TARE records (:class:`rntflow.dosimetry.tare_treatments.TareRecord`, one per quantified study,
:func:`rntflow.tasks.tare_quantify.quantify_tare_study`) live beside the 177Lu time points,
under their own folder so the 177Lu flows never see them::

    <products_dir>/tare/<site_id>/<subject_id>/<study_id>/record.json

A record holds what the plan and the predicted-vs-delivered comparison need: the study's
role, times and administered activity, and per VOI its activity, share, mass and (post-
treatment) delivered dose. :func:`tare_subject_plans` loads a subject's records, calls the
pure code (:func:`rntflow.dosimetry.tare_treatments.plan_treatments`: numbering, pairing,
plans; :mod:`rntflow.dosimetry.tare_checks`: the verdicts) and returns warehouse rows.
Treatments are numbered from the records each time, so the result does not depend on the
order the studies arrived in.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from rntflow.core.config import TareArm, TrialConfig
from rntflow.core.errors import ConfigError
from rntflow.core.files import write_text_atomic
from rntflow.core.qa import qa_row
from rntflow.dosimetry import tare_checks as tc
from rntflow.dosimetry.tare_imaging import NORMAL
from rntflow.dosimetry.tare_treatments import (
    POST,
    DoseComparison,
    ScoutPlan,
    TareRecord,
    Treatment,
    plan_treatments,
    predicted_vs_delivered,
    tumour_mass_kg,
)

RECORD = "record.json"


def tare_dir(config: TrialConfig) -> Path:
    return config.products_dir / "tare"


def save_record(config: TrialConfig, rec: TareRecord) -> Path:
    """Write a study's record atomically (a later run replaces it)."""
    return write_text_atomic(tare_dir(config) / rec.site_id / rec.subject_id / rec.study_id / RECORD, rec.to_json())


def subject_records(config: TrialConfig, site_id: str, subject_id: str) -> list[TareRecord]:
    """Every TARE record of a subject, by acquisition time."""
    folder = tare_dir(config) / site_id / subject_id
    recs = [TareRecord.from_json(p.read_text()) for p in sorted(folder.glob(f"*/{RECORD}"))] if folder.exists() else []
    return sorted(recs, key=lambda r: r.acquisition_start)


def site_records(config: TrialConfig, site_id: str) -> list[TareRecord]:
    """Every TARE record of a site (all its subjects), by subject and acquisition time."""
    folder = tare_dir(config) / site_id
    if not folder.exists():
        return []
    return [
        r for d in sorted(p for p in folder.iterdir() if p.is_dir()) for r in subject_records(config, site_id, d.name)
    ]


def _plan_row(arm: TareArm, t: Treatment, sp: ScoutPlan) -> dict:
    """The ``tare_plans`` row of a scout's plan."""
    r, plan, post = sp.scout, sp.plan, t.post
    return {
        "treatment": t.number,
        "study_id": r.study_id,
        "arm_id": arm.id,
        "device": arm.device,
        "radionuclide": arm.radionuclide,
        "scout_agent": arm.scout_agent,
        "lung_shunt_fraction": r.lung_shunt_fraction,
        "tumour_to_normal_ratio": sp.tumour_to_normal_ratio,
        "tumour_mass_kg": tumour_mass_kg(r),
        "normal_liver_mass_kg": r.masses_kg[NORMAL],
        "lung_mass_kg": sp.lung_mass_kg,
        "planned_tumour_dose_gy": tc.planned_tumour_dose_gy(arm),
        "planned_activity_gbq": plan.activity_gbq,
        "administered_activity_gbq": post.administered_activity_mbq / 1000.0 if sp.predicted_dose_gy else None,
        "post_study_id": post.study_id if post is not None else None,
        "predicted_tumour_dose_gy": plan.tumour_dose_gy,
        "predicted_normal_liver_dose_gy": plan.normal_liver_dose_gy,
        "predicted_lung_dose_gy": plan.lung_dose_gy,
        "prior_lung_dose_gy": t.prior_lung_dose_gy,
        "cf_j_per_gbq": plan.cf_j_per_gbq,
        "cf_convention": plan.cf_convention,
        "broken_limits": "; ".join(plan.broken_limits),
        "notes": "; ".join(sp.notes),
    }


def _comparison_row(t: Treatment, sp: ScoutPlan, c: DoseComparison) -> dict:
    """The ``tare_predicted_delivered`` row of one VOI."""
    return {
        "treatment": t.number,
        "voi": c.voi,
        "scout_study_id": sp.scout.study_id,
        "post_study_id": t.post.study_id,
        "planned_dose_gy": c.planned_dose_gy,
        "predicted_dose_gy": c.predicted_dose_gy,
        "delivered_dose_gy": c.delivered_dose_gy,
        "delivered_to_predicted_ratio": c.delivered_to_predicted_ratio,
    }


@task(name="tare-subject-plans", retries=2, retry_delay_seconds=2)
def tare_subject_plans(config: TrialConfig, site_id: str, subject_id: str) -> dict:
    """Plans, predicted-vs-delivered rows and their QA for every treatment of a subject.

    Computed from the subject's TARE records each time (whichever of scout and
    post-treatment study arrived second completes the comparison).

    Returns
    -------
    dict
        ``tare_plans``, ``tare_doses``, ``tare_predicted_delivered``, ``qa_checks`` (rows) and
        ``treatments`` (study_id -> treatment number).
    """
    arm = config.tare_arm(site_id)
    if arm is None:
        raise ConfigError(f"site {site_id} belongs to no TARE arm")
    records = subject_records(config, site_id, subject_id)
    numbers, treatments = plan_treatments(arm, records)
    plans, comparisons, checks = [], [], []
    doses = [{**d, "treatment": numbers[r.study_id]} for r in records if r.role == POST for d in r.doses]
    for t in treatments:
        if t.post is not None:
            cum = tc.delivered_cumulative_lung_check(arm, t.delivered_cumulative_lung_dose_gy, t.number)
            cols = {"subject_id": subject_id, "study_id": t.post.study_id, "cycle": t.number}
            checks.append(qa_row(cum, "study", t.post.study_id, **cols))
        for sp in t.scouts:
            sid = sp.scout.study_id
            cols = {"subject_id": subject_id, "study_id": sid, "cycle": t.number}
            plans.append(_plan_row(arm, t, sp))
            plan_checks = tc.plan_checks(arm, sp.plan, sp.scout.lung_shunt_fraction, t.prior_lung_dose_gy)
            checks += [qa_row(c, "study", sid, **cols) for c in plan_checks]
            lesion_checks = tc.planned_lesion_checks(arm, sp.lesion_dose_gy)
            scope = f"{sp.scout.subject_id}/{sid}"
            checks += [qa_row(c, "voi", f"{scope}/{les}", **cols) for les, c in lesion_checks.items()]
            if t.post is not None:
                comparisons += [_comparison_row(t, sp, c) for c in predicted_vs_delivered(sp, t.post)]
    return {
        "tare_plans": plans,
        "tare_doses": doses,
        "tare_predicted_delivered": comparisons,
        "qa_checks": checks,
        "treatments": numbers,
    }
