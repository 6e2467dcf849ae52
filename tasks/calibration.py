"""Prefect task for one phantom scan: load it and the fill log, analyse, update the registry."""

from __future__ import annotations

import dataclasses
from datetime import UTC

import numpy as np
import SimpleITK as sitk
from prefect import task

from rntflow.core.calibration_policy import current_calibration
from rntflow.core.config import SiteSettings, TrialConfig
from rntflow.core.errors import DicomInputError
from rntflow.core.fills import PhantomFill, load_phantom_fill
from rntflow.core.qa import CheckResult, qa_row, status_if
from rntflow.dicomio.study import LoadedStudy, load_study
from rntflow.harmonization.calibration import Calibration, register_calibration
from rntflow.harmonization.headers import NmHeader, nm_to_image, parse_nm_header
from rntflow.harmonization.phantom_study import PhantomCalibrationResult, analyse_nema_study, calibrate_uniform_cylinder
from rntflow.tasks.common import calibration_history, calibration_id, calibration_rows, protocol_name


def _phantom_outputs(header: NmHeader, study: LoadedStudy, study_id: str, fill: PhantomFill | None) -> dict:
    """The task's output before analysis: the ``studies`` and ``camera`` rows, no calibrations or checks yet."""
    out = {
        "phantom_type": fill.phantom_type if fill else "unknown",
        "calibrations": [],
        "phantom_results": [],
        "checks": [],
        "camera": None,
        "study": {
            "study_id": study_id,
            "kind": "phantom",
            "camera_id": header.camera_id,
            "acquired_at": header.acquisition_start.replace(tzinfo=UTC) if header.acquisition_start else None,
            "n_instances": study.n_files,
        },
    }
    if header.camera_id:
        out["camera"] = {"camera_id": header.camera_id, "manufacturer": header.manufacturer, "model": header.model}
    return out


def _no_fill_log_check(subject_id: str, study_id: str) -> dict:
    """The qa row of a phantom scan without a fill-log entry (not analysed)."""
    return qa_row(
        CheckResult(
            "phantom_fill_log",
            "fail",
            "no entry",
            f"a row for {subject_id} in the phantom fill log",
            "phantom scan without a fill-log entry: activity unknown, not analysed",
        ),
        "calibration",
        study_id,
        study_id=study_id,
    )


def _drift_check(drift_flag: bool, drift_pct: float | None, tolerance_pct: float, study_id: str) -> dict:
    """The ``calibration_drift`` qa row of a new calibration against the previous one."""
    return qa_row(
        CheckResult(
            "calibration_drift",
            status_if(not drift_flag, "warn"),
            "first calibration" if drift_pct is None else f"{drift_pct:+.1f}%",
            f"within +/-{tolerance_pct:g}% of the previous",
            "calibration drift beyond tolerance" if drift_flag else "no drift",
        ),
        "calibration",
        study_id,
        study_id=study_id,
    )


def _calibrate_cylinder(
    config: TrialConfig,
    site: SiteSettings | None,
    site_id: str,
    header: NmHeader,
    values: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    fill: PhantomFill,
    history: list[Calibration],
    pname: str,
    study_id: str,
) -> tuple[PhantomCalibrationResult, list[Calibration], list[dict]]:
    """Uniform cylinder: the analysis, the camera's history with the new calibration, and its drift check."""
    profile = site.camera_profile(header.manufacturer, header.model) if site else None
    res = calibrate_uniform_cylinder(
        header,
        values,
        spacing_zyx,
        fill,
        site_id=site_id,
        protocol_name=pname,
        configured_fwhm_mm=profile.system_fwhm_mm if profile else None,
    )
    new = res.calibration
    if new is None:
        return res, history, []
    same = [c for c in history if c.valid_from == new.valid_from]
    if same and same[-1].rc_fwhm_source == "nema":  # the same scan again: keep its NEMA results
        new = dataclasses.replace(
            new, rc_fwhm_mm=same[-1].rc_fwhm_mm, rc_fwhm_source="nema", filter_fwhm_mm=same[-1].filter_fwhm_mm
        )
    history = [c for c in history if c.valid_from != new.valid_from]
    tolerance_pct = config.calibration.drift_tolerance_pct
    history, drift_flag, drift_pct = register_calibration(history, new, tolerance_pct)
    return res, history, [_drift_check(drift_flag, drift_pct, tolerance_pct, study_id)]


def _analyse_nema(
    config: TrialConfig,
    site_id: str,
    header: NmHeader,
    values: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    fill: PhantomFill,
    history: list[Calibration],
    pname: str,
) -> tuple[PhantomCalibrationResult, list[Calibration], list[dict]]:
    """NEMA phantom: the analysis, the history with the current calibration's RC FWHM, and the sphere rows."""
    current = current_calibration(history)  # the camera's latest, whenever made: NEMA results complete it
    res = analyse_nema_study(
        header,
        values,
        spacing_zyx,
        fill,
        site_id=site_id,
        calibration=current,
        reference_rc_band=config.calibration.reference_rc_band,
        protocol_name=pname,
    )
    rc_fwhm = res.nema.rc_curve.fwhm_mm if res.nema is not None else None
    filt = res.harmonising_filter.fwhm_mm if res.harmonising_filter is not None else None
    if current is not None and rc_fwhm is not None:
        history = [c for c in history if c is not current] + [
            dataclasses.replace(current, rc_fwhm_mm=rc_fwhm, rc_fwhm_source="nema", filter_fwhm_mm=filt)
        ]
    cid = calibration_id(current) if current is not None else f"{site_id}-uncalibrated"
    spheres = [{**dataclasses.asdict(r), "calibration_id": cid, "camera_id": header.camera_id} for r in res.spheres]
    return res, history, spheres


@task(name="calibrate-phantom", retries=2, retry_delay_seconds=2)
def calibrate_phantom(config: TrialConfig, site_id: str, subject_id: str, study_id: str, study_dir: str) -> dict:
    """Analyse one phantom study and return the rows it changes.

    Returns
    -------
    dict
        ``phantom_type``, ``calibrations`` (the camera's registry rows: the new or updated
        calibration and the one it supersedes), ``phantom_results`` (per sphere),
        ``checks`` (qa rows), ``study`` and ``camera`` rows.
    """
    study = load_study(study_dir)
    if study.nm is None:
        raise DicomInputError("phantom study without an NM reconstruction")
    site = next((s for s in config.sites if s.id == site_id), None)
    header = parse_nm_header(study.nm, site.nm_units if site else None)  # sites[].nm_units: units no header states
    image = nm_to_image(study.nm)
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    sx, sy, sz = image.GetSpacing()
    spacing_zyx = (sz, sy, sx)
    fill = load_phantom_fill(config.phantom_fills_file, subject_id)
    out = _phantom_outputs(header, study, study_id, fill)
    if fill is None:
        out["checks"].append(_no_fill_log_check(subject_id, study_id))
        return out
    history = calibration_history(config, header.camera_id)
    pname = protocol_name(config)
    if fill.phantom_type == "uniform_cylinder":
        res, history, drift_checks = _calibrate_cylinder(
            config, site, site_id, header, values, spacing_zyx, fill, history, pname, study_id
        )
        out["checks"] += drift_checks
    else:
        res, history, out["phantom_results"] = _analyse_nema(
            config, site_id, header, values, spacing_zyx, fill, history, pname
        )
    out["checks"] += [qa_row(c, "calibration", study_id, study_id=study_id) for c in res.checks]
    out["calibrations"] = calibration_rows(config, history) if history else []
    return out
