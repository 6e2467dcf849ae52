"""The ``timepoint`` flow: a patient time point is checked against the protocol and quantified."""

from __future__ import annotations

from datetime import UTC

from prefect import flow, get_run_logger

from rntflow.core.qa import FAIL
from rntflow.tasks.common import Context, trial_config
from rntflow.tasks.timepoint import TimepointResult, quantify_timepoint
from rntflow.tasks.warehouse import load_rows


@flow(name="timepoint", flow_run_name="timepoint {subject_id} {study_id}")
def timepoint_flow(
    config_path: str | None, site_id: str, subject_id: str, study_id: str, study_dir: str
) -> TimepointResult:
    """Check the reconstruction, quantify it with the camera's calibration, store the time point."""
    config = trial_config(config_path)
    wh = config.warehouse_root
    q = quantify_timepoint(config, site_id, subject_id, study_id, study_dir)
    site = Context(config.trial_id, site_id)
    load_rows(wh, "studies", [q.study], site.cols())
    load_rows(wh, "qa_checks", q.checks, site.cols())
    meta = q.meta
    if meta is not None:
        subject = Context(config.trial_id, site_id, subject_id).cols()
        load_rows(wh, "subjects", [{}], subject)
        if meta.administered_activity_mbq:
            load_rows(
                wh,
                "administrations",
                [
                    {
                        "cycle": meta.cycle,
                        "radionuclide": meta.radionuclide,
                        "administered_activity_mbq": meta.administered_activity_mbq,
                        "administration_datetime": meta.administration_datetime.replace(tzinfo=UTC),
                    }
                ],
                subject,
            )
    fails = [c["check_name"] for c in q.checks if c["status"] == FAIL]
    get_run_logger().info(
        "time point %s of %s: %s, %s",
        study_id,
        subject_id,
        f"t = {meta.t_h:.1f} h, cycle {meta.cycle}" if meta else q.waiting_for or q.failed,
        f"QA fails: {', '.join(fails)}" if fails else "QA passed",
    )
    return q
