"""The ``tare`` flow: one radioembolisation study of a TARE arm's site, scout or post-treatment.

The study's radionuclide and administered activity decide its role (the arm's
``study_role``). A scout (99mTc-MAA or 166Ho-scout SPECT/CT) gives each VOI's share of the
liver and lung activity, the lung shunt and the masses, from which the partition model plans
the treatment. A post-treatment study (166Ho SPECT/CT quantified with the camera's 166Ho
calibration, or 90Y PET/CT in Bq/mL corrected by the PET camera's cross-calibration) gives
the delivered local-deposition doses and DVH metrics of the tumours, the normal liver, the
whole liver and the lungs, checked against the product's limits and the administered
activity. Whichever of the two arrives second completes the subject's predicted-versus-
delivered comparison: the plans and comparisons are made again from all the subject's
quantified TARE studies at the end of every run.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from rntflow.core.locks import named_lock
from rntflow.core.qa import FAIL
from rntflow.tasks.common import Context, artifact_key, trial_config
from rntflow.tasks.tare import tare_subject_plans
from rntflow.tasks.tare_quantify import quantify_tare_study
from rntflow.tasks.warehouse import load_rows


@dataclass(frozen=True)
class TareOutcome:
    """How one TARE study's run ended.

    Attributes
    ----------
    role : str or None
        ``scout``, ``post_treatment`` or ``None`` (not of the arm).
    produced : str or None
        What was produced (None when nothing was).
    waiting_for, failed : str or None
        What must arrive first / why the study cannot be processed (with the next action).
    treatment : int or None
    """

    role: str | None
    produced: str | None = None
    waiting_for: str | None = None
    failed: str | None = None
    treatment: int | None = None


def tare_summary_markdown(subject_id: str, plans: dict) -> str:
    """The coordinator's summary of a subject's TARE treatments: plans, then predicted vs delivered."""
    lines = [
        f"# {subject_id}: radioembolisation",
        "",
        "| treatment | scout | LSF (%) | T/N | planned (GBq) | administered (GBq) | broken limits |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in sorted(plans["tare_plans"], key=lambda p: (p["treatment"], p["study_id"])):
        admin = f"{p['administered_activity_gbq']:.2f}" if p["administered_activity_gbq"] is not None else ""
        lines.append(
            f"| {p['treatment']} | {p['study_id']} | {100 * p['lung_shunt_fraction']:.1f} | "
            f"{p['tumour_to_normal_ratio']:.2f} | {p['planned_activity_gbq']:.2f} | {admin} | "
            f"{p['broken_limits'] or 'none'} |"
        )
    lines += [
        "",
        "| treatment | VOI | planned (Gy) | predicted (Gy) | delivered (Gy) | delivered / predicted |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in sorted(plans["tare_predicted_delivered"], key=lambda c: (c["treatment"], c["voi"])):
        ratio = c["delivered_to_predicted_ratio"]
        lines.append(
            f"| {c['treatment']} | {c['voi']} | {c['planned_dose_gy']:.1f} | {c['predicted_dose_gy']:.1f} | "
            f"{c['delivered_dose_gy']:.1f} | {'' if ratio is None else f'{ratio:.2f}'} |"
        )
    issues = [c for c in plans["qa_checks"] if c["status"] != "pass"]
    lines += ["", f"QA: {len(issues)} finding(s)" + (":" if issues else "")]
    lines += [f"- {c['status']}: {c['check_name']} ({c['scope_id']}): {c['message']}" for c in issues]
    lines += ["", "All rows: DuckDB `tare_plans`, `tare_doses`, `tare_predicted_delivered`, `qa_checks`."]
    return "\n".join(lines)


@flow(name="tare", flow_run_name="tare {subject_id} {study_id}")
def tare_flow(config_path: str | None, site_id: str, subject_id: str, study_id: str, study_dir: str) -> TareOutcome:
    """Quantify the study, then plan and compare the subject's treatments, and store it all."""
    config = trial_config(config_path)
    wh = config.warehouse_root
    site = Context(config.trial_id, site_id)
    subject = Context(config.trial_id, site_id, subject_id)
    q = quantify_tare_study(config, site_id, subject_id, study_id, study_dir)
    if q.study is not None:
        load_rows(wh, "studies", [q.study], site.cols())
    load_rows(wh, "qa_checks", q.checks, site.cols())
    if q.record is None:
        return TareOutcome(
            q.role, waiting_for=q.waiting_for, failed=q.failed or (None if q.waiting_for else "no result")
        )
    load_rows(wh, "subjects", [{}], subject.cols())

    # one subject at a time across workers: the run that waits reads the records after the
    # other has saved its own, so the latest rows come from the most studies (core/locks.py)
    with named_lock(config.warehouse_dir / ".locks", "tare", config.trial_id, site_id, subject_id):
        plans = tare_subject_plans(config, site_id, subject_id)
        for table in ("tare_plans", "tare_doses", "tare_predicted_delivered"):
            load_rows(wh, table, plans[table], subject.cols())
        load_rows(wh, "qa_checks", plans["qa_checks"], site.cols())
    create_markdown_artifact(
        tare_summary_markdown(subject_id, plans),
        key=f"tare-{artifact_key(subject_id)}",
        description=f"{subject_id}: TARE plans, predicted vs delivered doses, QA",
    )

    treatment = plans["treatments"][study_id]
    fails = sorted({c["check_name"] for c in q.checks + plans["qa_checks"] if c["status"] == FAIL})
    n_cmp = sum(1 for r in plans["tare_predicted_delivered"] if r["treatment"] == treatment)
    if q.role == "scout":
        produced = f"scout of treatment {treatment}: plan (LSF {100 * q.record.lung_shunt_fraction:.1f} %)"
    else:
        produced = f"post-treatment study of treatment {treatment}: delivered doses of {len(q.record.doses)} VOIs"
    produced += f", {n_cmp} predicted-vs-delivered rows" if n_cmp else ", no paired study yet"
    get_run_logger().info(
        "TARE %s of %s: %s; %s",
        study_id,
        subject_id,
        produced,
        f"QA fails: {', '.join(fails)}" if fails else "QA passed",
    )
    return TareOutcome(q.role, produced=produced, treatment=treatment)
