"""What must be processed again when something a study depends on arrives or changes.

* A camera's calibration arrives or changes (a phantom study): every patient time point of
  that site that waited for a calibration, and every stored time point whose current
  calibration (as :func:`rntflow.harmonization.calibration.calibration_for` chooses it now)
  is not the one it was quantified with, or whose recovery-curve FWHM changed. The same for
  the radioembolisation (TARE) studies of the site: a post-treatment study that waited for
  its camera's calibration, and every TARE record (scout or post-treatment,
  :class:`rntflow.dosimetry.tare_treatments.TareRecord`) whose calibration is not the
  current one (a scout uses only its FWHM, and is re-run only when the camera has a
  calibration for its radionuclide).
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
from rntflow.harmonization.calibration import Calibration, calibration_for
from rntflow.listener.handoff import study_dir_for
from rntflow.tasks.common import calibration_history, calibration_id, product_store
from rntflow.tasks.tare import site_records
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
    rows = read_latest(config.warehouse_root, "qa_checks", where, params)
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


def _stale(
    cal: Calibration,
    used_id: str | None,
    used_fwhm_mm: float | None,
    used_value: float | None,
    fwhm_from_calibration: bool = True,
) -> bool:
    """Whether a result quantified with calibration ``used_id`` (FWHM, value) must be redone now
    that :func:`calibration_for` chooses ``cal``: another calibration, or the same one with
    another recovery FWHM or value (a face-value id carries a suffix: ``startswith``)."""
    return (
        not (used_id or "").startswith(calibration_id(cal))
        or (fwhm_from_calibration and cal.rc_fwhm_mm != used_fwhm_mm)
        or (used_value is not None and cal.value != used_value)
    )


#: Calibration registries already read, per ``(site_id, camera_id)`` (a camera id is unique
#: only within a site).
_Histories = dict[tuple[str, str | None], list[Calibration]]


def _history(config: TrialConfig, histories: _Histories, site_id: str, camera_id: str | None) -> list[Calibration]:
    """The registry of ``camera_id`` at ``site_id``, read once per dependants' search."""
    key = (site_id, camera_id)
    if key not in histories:
        histories[key] = calibration_history(config, camera_id, site_id) if camera_id else []
    return histories[key]


def _tare_dependants(
    config: TrialConfig, site_id: str, skip: set[tuple[str, str]], histories: _Histories
) -> dict[tuple[str, str], StudyRef]:
    """TARE records of ``site_id`` quantified with another calibration than the current one."""
    out = {}
    for r in site_records(config, site_id):
        if (r.subject_id, r.study_id) in skip:
            continue
        history = _history(config, histories, site_id, r.camera_id)
        cal, _status = calibration_for(
            history, site_id, r.camera_id, r.radionuclide, r.acquisition_start, config.calibration.validity_days
        )
        # the FWHM of a TARE study is the calibration's when it has one, else the camera profile's
        if cal is not None and _stale(cal, r.calibration_id, r.fwhm_mm, r.calibration_value, bool(cal.rc_fwhm_mm)):
            why = f"TARE {r.role} quantified with {r.calibration_id or 'no calibration'}, now {calibration_id(cal)}"
            out[(r.subject_id, r.study_id)] = _ref(config, site_id, r.subject_id, r.study_id, why)
    return out


@task(name="dependants-of-calibration")
def dependants_of_calibration(config: TrialConfig, site_id: str) -> list[StudyRef]:
    """Patient time points and TARE studies of ``site_id`` to process again after its calibration changed."""
    out = {
        (s, k): _ref(config, site_id, s, k, "waited for a calibration")
        for s, k, msg in _waiting(config, site_id)
        if (msg or "").startswith(WAITING_FOR_CALIBRATION)
    }
    store = product_store(config)
    histories: _Histories = {}
    out.update(_tare_dependants(config, site_id, set(out), histories))
    for m in store.all_timepoints():
        if m.site_id != site_id or (m.subject_id, m.study_id) in out:
            continue
        history = _history(config, histories, site_id, m.camera_id)
        cal, _status = calibration_for(
            history, site_id, m.camera_id, m.radionuclide, m.acquisition_start, config.calibration.validity_days
        )
        if cal is None:
            continue
        if _stale(cal, m.calibration_id, m.rc_fwhm_mm, m.calibration_value):
            out[(m.subject_id, m.study_id)] = _ref(
                config,
                site_id,
                m.subject_id,
                m.study_id,
                f"quantified with {m.calibration_id}, now {calibration_id(cal)}",
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
