"""The ``timepoint`` flow: a patient time point is checked against the protocol and quantified."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger

from rntflow.tasks.common import Context, trial_config
from rntflow.tasks.timepoint import quantify_timepoint
from rntflow.tasks.warehouse import load_rows


@flow(name="timepoint", flow_run_name="timepoint {subject_id} {study_id}")
def timepoint_flow(config_path: str | None, site_id: str, subject_id: str, study_id: str, study_dir: str) -> dict:
    """Check the reconstruction, quantify it with the camera's calibration, store the time point."""
    config = trial_config(config_path)
    wh = str(config.warehouse_dir)
    q = quantify_timepoint(config_path, site_id, subject_id, study_id, study_dir)
    site = Context(config.trial_id, site_id)
    load_rows(wh, "studies", [q["study"]], site.cols())
    load_rows(wh, "qa_checks", q["checks"], site.cols())
    meta = q["meta"]
    if meta is not None:
        load_rows(wh, "subjects", [{}], Context(config.trial_id, site_id, subject_id).cols())
        if meta["administered_activity_mbq"]:
            load_rows(wh, "administrations", [{
                "cycle": meta["cycle"], "radionuclide": meta["radionuclide"],
                "administered_activity_mbq": meta["administered_activity_mbq"],
                "administration_datetime": datetime.fromisoformat(meta["administration_datetime"]).replace(
                    tzinfo=timezone.utc)}], Context(config.trial_id, site_id, subject_id).cols())
    fails = [c["check_name"] for c in q["checks"] if c["status"] == "fail"]
    get_run_logger().info("time point %s of %s: t = %s h, cycle %s, %s", study_id, subject_id,
                          f"{meta['t_h']:.1f}" if meta else "?", meta["cycle"] if meta else "?",
                          f"QA fails: {', '.join(fails)}" if fails else "QA passed")
    return q
