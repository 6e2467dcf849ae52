"""The ``process-study`` flow: what the listener starts for every stable, de-identified study.

It classifies the study and routes it: a phantom scan to the calibration flow; a patient
time point to the reconstruction check and quantification, then to the dosimetry of its
cycle (which decides whether the cycle has enough time points) and to the subject's QA;
a segmentation-only study (RTSTRUCT/SEG sent on its own) gives its VOIs to the time point
whose CT it was drawn on and re-runs that cycle's dosimetry. A patient study of a site of a
radioembolisation (TARE) arm goes to the ``tare`` flow instead (scout or post-treatment by
its radionuclide and activity; its own CT and RTSTRUCT), and a post-treatment study whose
camera has no calibration yet waits for it like a 177Lu time point.

Every run ends in one of three outcomes, written where the coordinator looks (the study's
``processing`` QA result and the warehouse's ``flow_runs``) and shown by Prefect:

* **processed** (Prefect *Completed*): what it produced is named;
* **waiting** (Prefect *Completed* named *Waiting*): nothing could be produced yet (no
  calibration of the camera, the CT the VOIs were drawn on has not arrived); the reason
  names what must arrive, and when it does the study is processed again by itself;
* **failed** (Prefect *Failed*): the reason and the next action (e.g. fix the fill log,
  then ``rntflow reprocess``).

"Completed with nothing produced" does not exist. When a phantom changes its camera's
calibration, every time point that waited for it or was quantified with another one is
processed again; when a time point arrives, the segmentation studies waiting for its CT
are. A failure does not stop any other study.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from rntflow.core.config import TrialConfig
from rntflow.core.qa import FAIL, PASS, WAITING, WARN, CheckResult, Status, qa_row
from rntflow.flows.calibration import calibration_flow
from rntflow.flows.dosimetry import dosimetry_flow
from rntflow.flows.qa import qa_flow
from rntflow.flows.runners import subflows_without_heartbeats
from rntflow.flows.tare import tare_flow
from rntflow.flows.timepoint import timepoint_flow
from rntflow.tasks.common import Context, trial_config
from rntflow.tasks.dependencies import (
    WAITING_FOR_CT,
    WAITING_FOR_CYLINDER,
    StudyRef,
    dependants_of_calibration,
    dependants_of_timepoint,
    phantoms_waiting_for_calibration,
)
from rntflow.tasks.timepoint import attach_segmentation, classify_study
from rntflow.tasks.warehouse import flow_run_row, load_rows


@dataclass(frozen=True)
class StudyOutcome:
    """How a study's processing ended (see the module docstring).

    Attributes
    ----------
    state : {"processed", "waiting", "failed"}
    message : str
        What was produced, or what the study waits for / why it failed, with the next action.
    """

    state: str
    message: str

    @property
    def qa_status(self) -> Status:
        return {"processed": PASS, WAITING: WARN, "failed": FAIL}[self.state]

    @property
    def run_state(self) -> str:
        return {"processed": "Completed", WAITING: "Waiting", "failed": "Failed"}[self.state]


@flow(name="process-study", flow_run_name="process-study {site_id}/{subject_id}/{study_key} v{handoff_version}")
def process_study(
    site_id: str,
    subject_id: str,
    kind: str,
    study_key: str,
    study_dir: str,
    n_instances: int = 0,
    handoff_version: int = 1,
    config_path: str | None = None,
    defer_cycle_work: bool = False,
) -> State:
    """Classify one study, run the flows it needs, record the outcome (module docstring).

    ``defer_cycle_work`` (the ``campaign`` flow's): a patient time point or segmentation is
    quantified or attached, and its cycle's dosimetry and the subject's QA are left to the
    caller, which runs them once per cycle after all its studies (the state's data names the
    cycle under ``"deferred_cycle"``) instead of once per study.
    """
    started = datetime.now(UTC)
    config = trial_config(config_path)
    log = get_run_logger()
    out: dict = {"kind": None}
    try:
        what = "tare" if kind != "phantom" and config.tare_arm(site_id) is not None else classify_study(study_dir, kind)
        out["kind"] = "patient" if what == "tare" else what
        with subflows_without_heartbeats():
            if what == "tare":
                outcome = _tare(config_path, site_id, subject_id, study_key, study_dir, out)
            elif what == "phantom":
                outcome = _phantom(config, config_path, site_id, subject_id, study_key, study_dir)
            elif what == "patient":
                outcome = _time_point(
                    config, config_path, site_id, subject_id, study_key, study_dir, out, defer_cycle_work
                )
            else:
                outcome = _segmentation(
                    config, config_path, site_id, subject_id, study_key, study_dir, out, defer_cycle_work
                )
    except Exception as exc:
        outcome = StudyOutcome("failed", f"{type(exc).__name__}: {exc}"[:500])
        _record(config, site_id, subject_id, study_key, outcome, started, log)
        raise
    _record(config, site_id, subject_id, study_key, outcome, started, log)
    out.update(state=outcome.state, message=outcome.message)
    if outcome.state == "failed":
        return Failed(message=outcome.message, data=out)
    if outcome.state == WAITING:
        return Completed(name="Waiting", message=outcome.message, data=out)
    return Completed(message=outcome.message, data=out)


def _phantom(
    config: TrialConfig, config_path: str, site_id: str, subject_id: str, study_key: str, study_dir: str
) -> StudyOutcome:
    """Calibrate; then re-process what waited for, or was quantified with another, calibration."""
    res = calibration_flow(config_path, site_id, subject_id, study_key, study_dir)
    if not res.calibrations:
        no_cylinder_yet = any(
            c["check_name"] == "phantom_calibration" and c["value_found"] == "none" for c in res.checks
        )
        if res.phantom_type == "nema_iec_body" and no_cylinder_yet:
            return StudyOutcome(
                WAITING,
                f"{WAITING_FOR_CYLINDER}, which the NEMA phantom's recovery curve "
                "completes; processed again when it arrives",
            )
        fails = "; ".join(f"{c['check_name']}: {c['message']}" for c in res.checks if c["status"] == FAIL)
        return StudyOutcome(
            "failed",
            f"{res.phantom_type} phantom gave no calibration ({fails or 'no result'}); "
            f"fix it (e.g. the fill-log row), then: rntflow reprocess --study {study_key}",
        )
    if res.phantom_type == "uniform_cylinder":
        _rerun(config_path, phantoms_waiting_for_calibration(config, site_id))  # each re-runs its dependants
    _rerun(config_path, dependants_of_calibration(config, site_id))
    return StudyOutcome("processed", f"{res.phantom_type} phantom: calibration registered or updated")


def _time_point(
    config: TrialConfig,
    config_path: str,
    site_id: str,
    subject_id: str,
    study_key: str,
    study_dir: str,
    out: dict,
    defer: bool = False,
) -> StudyOutcome:
    """Quantify; then the cycle's dosimetry, the subject's QA, and segmentations waiting for this CT."""
    q = timepoint_flow(config_path, site_id, subject_id, study_key, study_dir)
    if q.meta is None:
        return (
            StudyOutcome(WAITING, f"waiting for {q.waiting_for}")
            if q.waiting_for
            else StudyOutcome("failed", q.failed or "not quantified")
        )
    cycle = q.meta.cycle
    _cycle_work(config_path, site_id, subject_id, cycle, out, defer)
    _rerun(config_path, dependants_of_timepoint(config, site_id, subject_id))
    # what this study produced (the cycle's dosimetry state is the cycle's: rntflow status shows it)
    then = "; its cycle's dosimetry runs once at the end of the campaign" if defer else ""
    return StudyOutcome("processed", f"time point t = {q.meta.t_h:.1f} h of cycle {cycle} quantified{then}")


def _tare(config_path: str, site_id: str, subject_id: str, study_key: str, study_dir: str, out: dict) -> StudyOutcome:
    """A TARE scout or post-treatment study: quantify, then plan and compare the subject's treatments."""
    t = tare_flow(config_path, site_id, subject_id, study_key, study_dir)
    out["tare_role"] = t.role
    if t.produced is None:
        return (
            StudyOutcome(WAITING, f"waiting for {t.waiting_for}")
            if t.waiting_for
            else StudyOutcome("failed", t.failed or "TARE study not processed")
        )
    out["cycle"] = t.treatment
    return StudyOutcome("processed", t.produced)


def _segmentation(
    config: TrialConfig,
    config_path: str,
    site_id: str,
    subject_id: str,
    study_key: str,
    study_dir: str,
    out: dict,
    defer: bool = False,
) -> StudyOutcome:
    """VOIs join the time point whose CT they were drawn on; else wait for that CT."""
    seg = attach_segmentation(config, site_id, subject_id, study_key, study_dir)
    load_rows(config.warehouse_root, "qa_checks", seg.checks, Context(config.trial_id, site_id).cols())
    if seg.cycle is None:
        return StudyOutcome(
            WAITING,
            f"{WAITING_FOR_CT} (same frame of reference) to arrive with its time point; processed again when it does",
        )
    _cycle_work(config_path, site_id, subject_id, seg.cycle, out, defer)
    then = "runs at the end of the campaign" if defer else "re-run"
    return StudyOutcome(
        "processed", f"VOIs added to time point {seg.target_study_id}; cycle {seg.cycle} dosimetry {then}"
    )


def _cycle_work(config_path: str, site_id: str, subject_id: str, cycle: int, out: dict, defer: bool) -> None:
    """The cycle's dosimetry and the subject's QA now, or (``defer``) the cycle named for the campaign."""
    out["cycle"] = cycle
    if defer:
        out["deferred_cycle"] = cycle
        return
    out["dosimetry"] = dosimetry_flow(config_path, site_id, subject_id, cycle)["status"]
    qa_flow(config_path, subject_ids=[subject_id])


def _rerun(config_path: str, refs: list[StudyRef]) -> None:
    """Process the dependants again (each a run of its own; a failure does not stop the others)."""
    log = get_run_logger()
    for ref in refs:
        log.info("re-processing %s/%s/%s: %s", ref.site_id, ref.subject_id, ref.study_key, ref.why)
        process_study(
            ref.site_id, ref.subject_id, ref.kind, ref.study_key, ref.study_dir, 0, 1, config_path, return_state=True
        )


def _record(
    config: TrialConfig, site_id: str, subject_id: str, study_key: str, outcome: StudyOutcome, started: datetime, log
) -> None:
    """The study's ``processing`` QA result (a later run replaces it) and its ``flow_runs`` row."""
    wh = config.warehouse_root
    value = {"processed": "processed", WAITING: WAITING, "failed": "failed"}[outcome.state]
    row = qa_row(
        CheckResult("processing", outcome.qa_status, value, "processed", outcome.message),
        "study",
        study_key,
        subject_id=subject_id,
        study_id=study_key,
    )
    try:
        load_rows.fn(wh, "qa_checks", [row], Context(config.trial_id, site_id).cols())
        load_rows.fn(
            wh,
            "flow_runs",
            [
                flow_run_row(
                    "process-study",
                    outcome.run_state,
                    started,
                    subject_id=subject_id,
                    study_id=study_key,
                    site_id=site_id,
                    message=outcome.message,
                )
            ],
            {"trial_id": config.trial_id},
        )
    except Exception as exc:  # noqa: BLE001 - the run's own outcome must not be masked by its bookkeeping
        log.warning("could not record the outcome of %s: %s", study_key, exc)
