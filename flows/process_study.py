"""The ``process-study`` flow: what the listener starts for every stable, de-identified study.

It classifies the study and routes it: a phantom scan to the calibration flow; a patient
time point to the reconstruction check and quantification, then to the dosimetry of its
cycle (which decides whether the cycle has enough time points) and to the subject's QA;
a segmentation-only study (RTSTRUCT/SEG sent on its own) gives its VOIs to the time point
whose CT it was drawn on and re-runs that cycle's dosimetry. Whatever happens, the run is recorded in the
warehouse's ``flow_runs`` (the coordinator's status reads it); a failure is recorded as a
QA result of the subject and re-raised so that Prefect shows the run as failed, without
stopping any other study.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger

from rntflow.core.qa import FAIL, PASS, CheckResult, Status, qa_row
from rntflow.flows.calibration import calibration_flow
from rntflow.flows.dosimetry import dosimetry_flow
from rntflow.flows.qa import qa_flow
from rntflow.flows.timepoint import timepoint_flow
from rntflow.tasks.common import Context, trial_config
from rntflow.tasks.timepoint import attach_segmentation, classify_study
from rntflow.tasks.warehouse import flow_run_row, load_rows


@flow(name="process-study", flow_run_name="process-study {site_id}/{subject_id}/{study_key} v{handoff_version}")
def process_study(site_id: str, subject_id: str, kind: str, study_key: str, study_dir: str,
                  n_instances: int = 0, handoff_version: int = 1, config_path: str | None = None) -> dict:
    """Classify one study and run the flows it needs (see module docstring)."""
    started = datetime.now(timezone.utc)
    config = trial_config(config_path)
    log = get_run_logger()
    wh = str(config.warehouse_dir)
    state, message, out = "Failed", None, {"kind": None}
    try:
        what = classify_study(study_dir, kind)
        out["kind"] = what
        if what == "phantom":
            calibration_flow(config_path, site_id, subject_id, study_key, study_dir)
        elif what == "patient":
            q = timepoint_flow(config_path, site_id, subject_id, study_key, study_dir)
            if q["meta"] is not None:
                out["cycle"] = cycle = q["meta"]["cycle"]
                out["dosimetry"] = dosimetry_flow(config_path, site_id, subject_id, cycle)["status"]
                qa_flow(config_path, subject_ids=[subject_id])
        else:
            seg = attach_segmentation(config_path, site_id, subject_id, study_key, study_dir)
            load_rows(wh, "qa_checks", seg["checks"], Context(config.trial_id, site_id).cols())
            if seg["cycle"] is not None:
                out["cycle"] = seg["cycle"]
                out["dosimetry"] = dosimetry_flow(config_path, site_id, subject_id, seg["cycle"])["status"]
                qa_flow(config_path, subject_ids=[subject_id])
        state, message = "Completed", f"{what} study processed"
        _record_processing(wh, config.trial_id, site_id, subject_id, study_key, PASS, message)
        return out
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"[:500]
        _record_processing(wh, config.trial_id, site_id, subject_id, study_key, FAIL, message)
        raise
    finally:
        try:
            load_rows(wh, "flow_runs", [flow_run_row("process-study", state, started, subject_id=subject_id,
                                                     study_id=study_key, site_id=site_id, message=message)],
                      {"trial_id": config.trial_id})
        except Exception as exc:  # the run's own outcome must not be masked by its bookkeeping
            log.warning("could not record the flow run: %s", exc)


def _record_processing(wh: str, trial_id: str, site_id: str, subject_id: str, study_id: str, status: Status,
                       message: str) -> None:
    """The study's ``processing`` QA result: a later successful run replaces a failure."""
    row = qa_row(CheckResult("processing", status, "processed" if status == PASS else "failed", "processed", message),
                 "study", study_id, subject_id=subject_id, study_id=study_id)
    try:
        load_rows.fn(wh, "qa_checks", [row], Context(trial_id, site_id).cols())
    except Exception:  # noqa: BLE001 - recorded in flow_runs regardless
        pass
