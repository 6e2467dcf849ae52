"""What must be processed again when something a study depends on arrives or changes.

* A camera's calibration arrives or changes (a phantom study): every patient time point of
  that site that waited for a calibration, and every stored time point whose current
  calibration (as :func:`rntflow.harmonization.calibration.calibration_for` chooses it now)
  is not the one it was quantified with, or whose recovery-curve FWHM changed.
* The first uniform-cylinder calibration of a camera arrives: the NEMA phantom studies
  that arrived before it (their recovery curve completes that calibration).
* A patient time point arrives: the segmentation-only studies of that subject that waited
  for the CT they were drawn on.

Waiting studies are found from their ``processing`` QA result (status ``warn``, value
``waiting``), which ``process-study`` writes for every study it could not finish yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task

from rntflow.core.config import TrialConfig
from rntflow.core.qa import WAITING
from rntflow.harmonization.calibration import calibration_for
from rntflow.listener.handoff import study_dir_for
from rntflow.tasks.common import calibration_history, calibration_id, product_store
from rntflow.warehouse.writer import read_latest

#: How the ``processing`` messages of waiting studies begin (written by flows/process_study.py,
#: matched here to find what to process again).
WAITING_FOR_CALIBRATION = "waiting for calibration of camera"
WAITING_FOR_CYLINDER = "waiting for the camera's uniform-cylinder calibration"
WAITING_FOR_CT = "waiting for the CT the VOIs were drawn on"


@dataclass(frozen=True)
class StudyRef:
    """A spooled study to process again, and why."""

    site_id: str
    subject_id: str
    study_key: str
    study_dir: str
    why: str
    kind: str = "patient"


def _waiting(config: TrialConfig, site_id: str, subject_id: str | None = None) -> list[tuple[str, str, str]]:
    """(subject_id, study_id, message) of the site's studies whose latest processing state is waiting."""
    where = "check_name = 'processing' AND value_found = ? AND site_id = ?"
    params: list = [WAITING, site_id]
    if subject_id is not None:
        where += " AND subject_id = ?"
        params.append(subject_id)
    rows = read_latest(config.warehouse_dir, "qa_checks", where, params)
    return [] if rows.empty else list(rows[["subject_id", "study_id", "message"]].itertuples(index=False, name=None))


def _ref(
    config: TrialConfig, site_id: str, subject_id: str, study_id: str, why: str, kind: str = "patient"
) -> StudyRef:
    return StudyRef(
        site_id,
        subject_id,
        study_id,
        str(study_dir_for(config.spool_dir / "deid", site_id, subject_id, study_id)),
        why,
        kind,
    )


@task(name="phantoms-waiting-for-calibration")
def phantoms_waiting_for_calibration(config: TrialConfig, site_id: str) -> list[StudyRef]:
    """NEMA phantom studies of ``site_id`` that arrived before any uniform-cylinder calibration."""
    return [
        _ref(config, site_id, s, k, "waited for the cylinder calibration", "phantom")
        for s, k, msg in _waiting(config, site_id)
        if (msg or "").startswith(WAITING_FOR_CYLINDER)
    ]


@task(name="dependants-of-calibration")
def dependants_of_calibration(config: TrialConfig, site_id: str) -> list[StudyRef]:
    """Patient time points of ``site_id`` to process again after its calibration changed."""
    out = {
        (s, k): _ref(config, site_id, s, k, "waited for a calibration")
        for s, k, msg in _waiting(config, site_id)
        if (msg or "").startswith(WAITING_FOR_CALIBRATION)
    }
    store = product_store(config)
    histories: dict[str | None, list] = {}
    for m in store.all_timepoints():
        if m.site_id != site_id or (m.subject_id, m.study_id) in out:
            continue
        history = histories.setdefault(m.camera_id, calibration_history(config, m.camera_id))
        cal, _status = calibration_for(
            history, m.camera_id, m.radionuclide, m.acquisition_start, config.calibration.validity_days
        )
        if cal is None:
            continue
        now_id = calibration_id(cal)
        if (
            not (m.calibration_id or "").startswith(now_id)
            or cal.rc_fwhm_mm != m.rc_fwhm_mm
            or (m.calibration_value is not None and cal.value != m.calibration_value)
        ):
            out[(m.subject_id, m.study_id)] = _ref(
                config, site_id, m.subject_id, m.study_id, f"quantified with {m.calibration_id}, now {now_id}"
            )
    return list(out.values())


@task(name="dependants-of-timepoint")
def dependants_of_timepoint(config: TrialConfig, site_id: str, subject_id: str) -> list[StudyRef]:
    """Segmentation-only studies of the subject that waited for the CT they were drawn on."""
    return [
        _ref(config, site_id, s, k, "waited for its CT")
        for s, k, msg in _waiting(config, site_id, subject_id)
        if (msg or "").startswith(WAITING_FOR_CT)
    ]
