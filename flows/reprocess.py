"""The ``reprocess`` flow: run ``process-study`` again for spooled studies, without a re-push.

After a correction (a fill-log row, the trial config, a calibration policy) the coordinator
selects studies by site, subject, study or arrival date; each is processed again from its
de-identified copy in the spool, per site phantoms first so that time points are quantified
with the corrected calibration, and every result is written as a new version (the warehouse
keeps the old ones). The subjects touched get their QA again. A study that fails does not
stop the others; the flow fails at the end if any did, naming them.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger

from rntflow.core.errors import ReprocessError
from rntflow.flows.process_study import process_study
from rntflow.flows.qa import qa_flow
from rntflow.tasks.common import trial_config
from rntflow.tasks.reprocess import studies_to_reprocess


@flow(name="reprocess", flow_run_name="reprocess")
def reprocess_flow(
    config_path: str,
    site_ids: list[str] | None = None,
    subject_ids: list[str] | None = None,
    study_keys: list[str] | None = None,
    since: datetime | None = None,
) -> dict:
    """Re-process the selected spooled studies (module docstring); returns counts and failures."""
    log = get_run_logger()
    config = trial_config(config_path)
    studies = studies_to_reprocess(config, site_ids or [], subject_ids or [], study_keys or [], since)
    log.info("re-processing %d studies", len(studies))
    failed: list[str] = []
    for h in studies:
        state = process_study(**h.parameters(config_path), return_state=True)
        if not state.is_completed():
            failed.append(f"{h.site_id}/{h.subject_id}/{h.study_key}: {state.message or state.name}")
    subjects = sorted({h.subject_id for h in studies if h.kind == "patient"})
    if subjects:
        qa_flow(config_path, subject_ids=subjects)
    if failed:
        raise ReprocessError(f"{len(failed)} of {len(studies)} re-processed studies failed: " + "; ".join(failed))
    return {"n_studies": len(studies), "subjects": subjects, "failed": failed}
