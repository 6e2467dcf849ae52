"""Prefect task for one phantom scan: load it and the fill log, analyse, update the registry.

The phantom image is the study's NM reconstruction or, at a PET site, its PET series (a 90Y
uniform cylinder in Bq/mL: its cross-calibration is the vendor Bq/mL scale factor).
:func:`quantify_pet` is the PET counterpart for patient studies: the PET in Bq/mL at
acquisition start corrected by the camera's current calibration from the registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC

import numpy as np
import SimpleITK as sitk
from prefect import task

from rntflow.core.calibration_policy import current_calibration
from rntflow.core.config import SiteSettings, TrialConfig
from rntflow.core.errors import DicomInputError
from rntflow.core.fills import PhantomFill, load_phantom_fill
from rntflow.core.qa import CheckResult, qa_row, status_if
from rntflow.dicomio.pet import PetSeries
from rntflow.dicomio.study import LoadedStudy, load_study
from rntflow.harmonization.calibration import Calibration, calibration_for, register_calibration
from rntflow.harmonization.headers import NmHeader, nm_to_image, normalise_radionuclide, parse_nm_header
from rntflow.harmonization.pet_headers import (
    PetVolume,
    pet_activity_concentration_bq_per_ml,
    pet_at_acquisition_start,
    pet_nm_header,
)
from rntflow.harmonization.phantom_study import PhantomCalibrationResult, analyse_nema_study, calibrate_uniform_cylinder
from rntflow.tasks.common import calibration_history, calibration_id, calibration_rows, protocol_name
from rntflow.tasks.timepoint import FACE_VALUE_SUFFIX


@dataclass(frozen=True)
class PhantomResult:
    """What analysing one phantom study produced: the warehouse rows it changes.

    The rows are dicts keyed by warehouse column names (units in the names, e.g.
    ``sensitivity_cps_per_mbq``, ``rc_fwhm_mm``, ``sphere_diameter_mm``); the flow adds the
    trial and site columns when it loads them.

    Attributes
    ----------
    phantom_type : str
        From the phantom fill log: ``uniform_cylinder`` or ``nema_iec_body``; ``unknown``
        when the scan has no fill-log row (then nothing was analysed).
    study : dict
        The ``studies`` row (``kind`` ``phantom``, ``acquired_at`` UTC, ``n_instances``).
    camera : dict or None
        The ``cameras`` row (``camera_id``, ``manufacturer``, ``model``); ``None`` when the
        header names no camera.
    calibrations : list of dict
        The camera's ``calibrations`` registry rows, its history with the new or updated
        calibration (sensitivity in cps/MBq or Bq/mL scale factor, RC and filter FWHM in mm,
        validity ends, supersession, drift in %); empty when the scan gave no calibration.
    phantom_results : list of dict
        ``phantom_results`` rows, one per NEMA sphere (diameter in mm, recovery
        coefficients); empty for a uniform cylinder.
    checks : list of dict
        ``qa_checks`` rows (scope ``calibration``, keyed by the study id).
    """

    phantom_type: str
    study: dict
    camera: dict | None
    calibrations: list[dict] = field(default_factory=list)
    phantom_results: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)


def _phantom_study_rows(header: NmHeader, study: LoadedStudy, study_id: str) -> tuple[dict, dict | None]:
    """The phantom scan's ``studies`` row and its ``cameras`` row (``None`` without a camera id)."""
    study_row = {
        "study_id": study_id,
        "kind": "phantom",
        "camera_id": header.camera_id,
        "acquired_at": header.acquisition_start.replace(tzinfo=UTC) if header.acquisition_start else None,
        "n_instances": study.n_files,
    }
    camera = None
    if header.camera_id:
        camera = {"camera_id": header.camera_id, "manufacturer": header.manufacturer, "model": header.model}
    return study_row, camera


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


def _phantom_image(study: LoadedStudy, site: SiteSettings | None) -> tuple[NmHeader, sitk.Image]:
    """The phantom's header and image: the NM reconstruction, else the PET series.

    A PET series is read in Bq/mL at acquisition start and described by an :class:`NmHeader`
    (units BQML, DecayCorrection START) for the shared cylinder and NEMA analyses.

    Raises
    ------
    DicomInputError
        Neither an NM reconstruction nor a PET series; a PET not in Bq/mL (Units CNTS ...).
    """
    if study.nm is not None:
        header = parse_nm_header(study.nm, site.nm_units if site else None)  # sites[].nm_units: units no header states
        return header, nm_to_image(study.nm)
    if study.pet is not None:
        pet = pet_at_acquisition_start(study.pet)
        return pet_nm_header(pet), pet.image
    raise DicomInputError("phantom study without an NM reconstruction (nor a PET series)")


@task(name="calibrate-phantom", retries=2, retry_delay_seconds=2)
def calibrate_phantom(
    config: TrialConfig, site_id: str, subject_id: str, study_id: str, study_dir: str
) -> PhantomResult:
    """Analyse one phantom study and return the rows it changes.

    Returns
    -------
    PhantomResult
        The phantom type, the ``studies`` and ``cameras`` rows, the camera's registry rows
        (its history with the new or updated calibration), the per-sphere rows and the qa
        rows.
    """
    study = load_study(study_dir)
    site = next((s for s in config.sites if s.id == site_id), None)
    header, image = _phantom_image(study, site)
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    sx, sy, sz = image.GetSpacing()
    spacing_zyx = (sz, sy, sx)
    fill = load_phantom_fill(config.phantom_fills_file, subject_id)
    study_row, camera = _phantom_study_rows(header, study, study_id)
    if fill is None:
        return PhantomResult("unknown", study_row, camera, checks=[_no_fill_log_check(subject_id, study_id)])
    history = calibration_history(config, header.camera_id, site_id)  # this site's camera only
    pname = protocol_name(config, header.radionuclide)  # a 166Ho or 90Y phantom: that nuclide's protocol
    spheres: list[dict] = []
    if fill.phantom_type == "uniform_cylinder":
        res, history, checks = _calibrate_cylinder(
            config, site, site_id, header, values, spacing_zyx, fill, history, pname, study_id
        )
    else:
        res, history, spheres = _analyse_nema(config, site_id, header, values, spacing_zyx, fill, history, pname)
        checks = []
    checks += [qa_row(c, "calibration", study_id, study_id=study_id) for c in res.checks]
    return PhantomResult(
        fill.phantom_type,
        study_row,
        camera,
        calibrations=calibration_rows(config, history) if history else [],
        phantom_results=spheres,
        checks=checks,
    )


# --------------------------------------------------------------------------- PET quantification


@dataclass(frozen=True)
class QuantifiedPet:
    """A patient PET series in Bq/mL at acquisition start, cross-calibrated.

    Attributes
    ----------
    image : SimpleITK.Image or None
        float64 Bq/mL at ``volume.header.acquisition_start``, divided by the camera's
        ``bqml_scale_factor``; ``None`` when the camera has no calibration for the
        radionuclide before the scan (``status`` ``missing``).
    volume : PetVolume
        The vendor Bq/mL at acquisition start, the parsed :class:`PetHeader` and the notes.
    calibration : Calibration or None
        As applied (scale factor 1 when ``calibration.cross_calibration`` is off).
    calibration_id : str or None
        :func:`rntflow.tasks.common.calibration_id` of it (with the time points' face-value
        suffix when cross-calibration is off).
    status : {"valid", "expired", "missing"}
    check : CheckResult
        ``tare_calibration``: pass (valid), warn (expired, or cross-calibration off), fail (missing).
    """

    image: sitk.Image | None
    volume: PetVolume
    calibration: Calibration | None
    calibration_id: str | None
    status: str
    check: CheckResult


def quantify_pet(
    config: TrialConfig, site_id: str, pet: PetSeries | PetVolume, radionuclide: str | None = None
) -> QuantifiedPet:
    """The PET of a study (``LoadedStudy.pet``) in Bq/mL at acquisition start, corrected by
    the PET camera's calibration current at the scan (warehouse ``calibrations``).

    Parameters
    ----------
    config : TrialConfig
    site_id : str
        The site that acquired the PET (its camera's calibration, not another site's with
        the same camera id).
    pet : PetSeries or PetVolume
        ``LoadedStudy.pet``, or its :func:`~rntflow.harmonization.pet_headers.pet_at_acquisition_start`
        when the caller already has it (not recomputed).
    radionuclide : str, optional
        Used when the header names none (e.g. the TARE arm's ``Y-90``).

    Raises
    ------
    DicomInputError
        The PET is not in Bq/mL, or its reference time cannot be determined
        (:func:`rntflow.harmonization.pet_headers.pet_at_acquisition_start`).
    """
    volume = pet if isinstance(pet, PetVolume) else pet_at_acquisition_start(pet)
    h = volume.header
    nuc = normalise_radionuclide(h.radionuclide) or normalise_radionuclide(radionuclide)
    if nuc is None:
        raise DicomInputError(f"PET series {h.series_uid}: no radionuclide in the header and none given")
    days = config.calibration.validity_days
    history = calibration_history(config, h.camera_id, site_id)
    cal, status = calibration_for(history, site_id, h.camera_id, nuc, h.acquisition_start, days)
    cid = calibration_id(cal) if cal is not None else None
    exp = f"a {nuc} Bq/mL scale factor calibration of PET camera {h.camera_id} within {days} days before the scan"
    messages = {
        "valid": "PET cross-calibration valid",
        "expired": "PET cross-calibration expired: doses computed with it are flagged",
        "missing": "PET camera never cross-calibrated for this radionuclide before the scan: send the site's "
        "uniform-cylinder phantom scan (with its fill-log row); the PET is not quantified",
    }
    check = CheckResult(
        "tare_calibration",
        {"valid": "pass", "expired": "warn", "missing": "fail"}[status],
        f"{status} ({cid})" if cid else status,
        exp,
        messages[status],
    )
    if cal is None:
        return QuantifiedPet(None, volume, None, None, status, check)
    if not config.calibration.cross_calibration and cal.kind == "vendor_scale_factor":
        cal = dataclasses.replace(cal, vendor_scale_factor=1.0)
        cid += FACE_VALUE_SUFFIX
        check = dataclasses.replace(
            check,
            status="warn",
            value_found=f"{status} ({cid})",
            message="cross-calibration switched off: the vendor's Bq/mL taken at face value",
        )
    image = pet_activity_concentration_bq_per_ml(volume, cal)
    return QuantifiedPet(image, volume, cal, cid, status, check)
