"""Prefect task of radioembolisation (TARE): read and quantify a scout or post-treatment study.

Load (the de-identified study folder, the calibration registry), call the pure code
(:mod:`rntflow.dosimetry.tare_imaging` for the VOI activities, shares, masses and doses,
:mod:`rntflow.dosimetry.tare_checks` for the verdicts), save (the study's
:class:`rntflow.dosimetry.tare_treatments.TareRecord`, :func:`rntflow.tasks.tare.save_record`)
and return warehouse rows. The subject's plans are made from the records by
:func:`rntflow.tasks.tare.tare_subject_plans`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import SimpleITK as sitk
from prefect import task

from rntflow.core.config import TareArm, TrialConfig
from rntflow.core.errors import ConfigError, DicomInputError, VoiError
from rntflow.core.qa import FAIL, PASS, WARN, CheckResult, qa_row
from rntflow.dicomio.study import LoadedStudy, load_study
from rntflow.dosimetry import tare_checks as tc
from rntflow.dosimetry import tare_imaging as ti
from rntflow.dosimetry.registration import resample
from rntflow.dosimetry.tare import tare_conversion_factor_j_per_gbq
from rntflow.dosimetry.tare_treatments import POST, TareRecord
from rntflow.dosimetry.vois import resample_mask_fraction
from rntflow.harmonization.calibration import Calibration, calibration_for
from rntflow.harmonization.cylinder import to_bq_per_ml
from rntflow.harmonization.headers import NmHeader, nm_to_image, normalise_radionuclide, parse_nm_header
from rntflow.harmonization.pet_headers import PetHeader, pet_at_acquisition_start, pet_nm_header
from rntflow.harmonization.tare_recon_check import check_tare_reconstruction, protocol_compliant
from rntflow.physics.nuclides import nuclide
from rntflow.tasks.calibration import quantify_pet
from rntflow.tasks.common import calibration_history, calibration_id
from rntflow.tasks.tare import save_record
from rntflow.tasks.timepoint import FACE_VALUE_SUFFIX
from rntflow.tasks.voi_masks import rtstruct_rois, seg_masks

#: Dose method of every ``tare_doses`` row.
METHOD = "local_deposition"


# --------------------------------------------------------------------------- reading a study


@dataclass
class _Image:
    """A TARE study's image and the header facts the flows use."""

    modality: str  # NM or PET
    image: sitk.Image  # NM: counts or Bq/mL as nm_to_image gives; PET: Bq/mL at acquisition start
    units: str | None
    radionuclide: str | None
    administered_activity_mbq: float | None
    administration_datetime: datetime | None
    acquisition_start: datetime | None
    acquisition_duration_s: float | None
    half_life_s: float | None
    camera_id: str | None
    manufacturer: str | None
    model: str | None
    header: NmHeader  # PET: its pet_nm_header, for the protocol checks
    pet_header: PetHeader | None = None


def _study_image(config: TrialConfig, site_id: str, study: LoadedStudy) -> _Image:
    """The NM reconstruction or, failing that, the PET series of a study, with its header."""
    if study.nm is not None:
        h = parse_nm_header(study.nm, config.site(site_id).nm_units)
        return _Image(
            "NM",
            nm_to_image(study.nm),
            h.units,
            normalise_radionuclide(h.radionuclide) or h.radionuclide,
            h.administered_activity_mbq,
            h.administration_datetime,
            h.acquisition_start,
            h.acquisition_duration_s,
            h.radionuclide_half_life_s,
            h.camera_id,
            h.manufacturer,
            h.model,
            h,
        )
    if getattr(study, "pet", None) is not None:
        vol = pet_at_acquisition_start(study.pet)
        h = vol.header
        return _Image(
            "PET",
            vol.image,
            "BQML",
            normalise_radionuclide(h.radionuclide) or h.radionuclide,
            h.administered_activity_mbq,
            h.administration_datetime,
            h.acquisition_start,
            h.frame_duration_s,
            h.half_life_s(),
            h.camera_id,
            h.manufacturer,
            h.model,
            pet_nm_header(vol),
            h,
        )
    raise DicomInputError(
        f"TARE study without an NM reconstruction or a PET series ({study.n_files} files; "
        f"unused: {', '.join(study.unused[:3]) or 'none'})"
    )


def _ct_vois(config: TrialConfig, site_id: str, study: LoadedStudy) -> tuple[dict[str, np.ndarray], list[str]]:
    """TG-263 name -> mask on the study's CT, and the problems met (unmapped names, skipped ROIs)."""
    vois: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for obj in study.rtstructs + study.segs:
        try:
            if getattr(obj, "Modality", "") == "SEG":
                raw = seg_masks(obj, study.ct, study.ct_frame_of_reference_uid)
            else:
                res = rtstruct_rois(obj, study.ct, study.ct_frame_of_reference_uid)
                raw = res.masks
                problems += [f"ROI {n} skipped: {why}" for n, why in res.skipped.items()]
        except VoiError as exc:  # drawn on another CT: these VOIs are unusable
            problems.append(str(exc))
            continue
        for name, mask in raw.items():
            try:
                tg = config.map_voi_name(name, site_id)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            vois[tg] = np.logical_or(vois[tg], mask) if tg in vois else np.asarray(mask, bool)
    return vois, problems


def _fwhm_mm(config: TrialConfig, site_id: str, img: _Image, cal: Calibration | None) -> float | None:
    """System FWHM (mm): the calibration's recovery FWHM, else the camera profile's system_fwhm_mm."""
    if cal is not None and cal.rc_fwhm_mm:
        return float(cal.rc_fwhm_mm)
    profile = config.site(site_id).camera_profile(img.manufacturer, img.model)
    return profile.system_fwhm_mm if profile is not None else None


def _on_image_grid(masks: dict[str, np.ndarray], ct: sitk.Image, image: sitk.Image) -> dict[str, np.ndarray]:
    """CT-grid masks on the image grid (voxels at least half inside)."""
    return {k: resample_mask_fraction(m, ct, image) >= 0.5 for k, m in masks.items()}


def _qa(check: CheckResult, study_id: str, cols: dict) -> dict:
    """The ``qa_checks`` row of a study-scoped check."""
    return qa_row(check, "study", study_id, **cols)


def _protocol_checks(config: TrialConfig, site_id: str, img: _Image) -> list[CheckResult]:
    """The reconstruction checked against the trial's protocol for its radionuclide and modality.

    ``config.imaging_protocol(radionuclide, NM|PT)`` with the site's camera vocabulary
    (:func:`rntflow.harmonization.tare_recon_check.check_tare_reconstruction`).
    """
    modality = "PT" if img.modality == "PET" else "NM"
    protocol = config.imaging_protocol(img.radionuclide, modality)
    camera = config.site(site_id).camera_profile(img.manufacturer, img.model)
    return check_tare_reconstruction(img.header, modality, protocol, camera, img.pet_header)


# --------------------------------------------------------------------------- quantification


@dataclass
class TareStudyResult:
    """What quantifying one TARE study produced.

    Attributes
    ----------
    role : str or None
        ``scout``, ``post_treatment``, or ``None`` (not of the arm).
    study : dict or None
        The ``studies`` row.
    checks : list of dict
        ``qa_checks`` rows.
    doses : list of dict
        ``tare_doses`` rows (post-treatment).
    record : TareRecord or None
    waiting_for, failed : str or None
        Why nothing was produced yet / ever (with the next action).
    """

    role: str | None
    study: dict | None
    checks: list[dict]
    doses: list[dict] = field(default_factory=list)
    record: TareRecord | None = None
    waiting_for: str | None = None
    failed: str | None = None


def _waiting_message(img: _Image, nuc: str) -> str:
    kind = "PET uniform-cylinder" if img.modality == "PET" else "uniform-cylinder"
    return (
        f"calibration of camera {img.camera_id} for {nuc}: send the site's {kind} phantom scan "
        "(with its fill-log row); the study is re-processed when it arrives"
    )


def _quantified_post(
    config: TrialConfig, site_id: str, study: LoadedStudy, img: _Image, nuc: str
) -> tuple[sitk.Image | None, Calibration | None, str | None, CheckResult]:
    """(Bq/mL at acquisition start or None when the camera has no calibration yet, the
    calibration, its id, the ``tare_calibration`` check) of a post-treatment image.

    PET: :func:`rntflow.tasks.calibration.quantify_pet` (the PET camera's cross-calibration).
    NM: the camera's calibration for the radionuclide (sensitivity for counts; a vendor Bq/mL
    scale factor, taken at face value when cross-calibration is off).
    """
    if img.modality == "PET":
        qp = quantify_pet(config, site_id, study.pet, nuc)
        return qp.image, qp.calibration, qp.calibration_id, qp.check
    days = config.calibration.validity_days
    cal, status = calibration_for(
        calibration_history(config, img.camera_id, site_id), site_id, img.camera_id, nuc, img.acquisition_start, days
    )
    expected = f"a {nuc} calibration of camera {img.camera_id} within {days} days before the scan"
    if cal is None:
        msg = "camera never calibrated for this radionuclide before the scan: the study is not quantified"
        return None, None, None, CheckResult("tare_calibration", FAIL, "missing", expected, msg)
    cid = calibration_id(cal)
    check = CheckResult(
        "tare_calibration",
        PASS if status == "valid" else WARN,
        f"{status} ({cid})",
        expected,
        "calibration valid" if status == "valid" else "calibration expired: doses computed with it are flagged",
    )
    if (img.units or "").upper() == "CNTS" and cal.kind != "sensitivity":
        raise DicomInputError(f"counts image but the camera's {nuc} calibration is a {cal.kind}")
    if cal.kind == "vendor_scale_factor" and not config.calibration.cross_calibration:
        cal, cid = dataclasses.replace(cal, vendor_scale_factor=1.0), cid + FACE_VALUE_SUFFIX
        check = dataclasses.replace(
            check, status=WARN, message="cross-calibration switched off: the vendor's Bq/mL taken at face value"
        )
    voxel_ml = float(np.prod(img.image.GetSpacing())) / 1000.0
    bqml = to_bq_per_ml(
        sitk.GetArrayFromImage(img.image).astype(np.float64),
        img.units or "",
        voxel_ml,
        img.acquisition_duration_s,
        img.half_life_s or nuclide(nuc).half_life_h * 3600.0,
        cal.sensitivity_cps_per_mbq,
        cal.vendor_scale_factor,
    )
    out = sitk.GetImageFromArray(bqml)
    out.CopyInformation(img.image)
    return out, cal, cid, check


def _scout_calibration(
    config: TrialConfig, site_id: str, img: _Image, nuc: str
) -> tuple[Calibration | None, str | None]:
    """The camera's calibration for the scout's radionuclide, if any (its recovery FWHM only).

    A scout needs no activity scale (shares of counts), so it never waits for one; but when
    the camera has a calibration for the nuclide (a 166Ho scout at a 166Ho site), its
    recovery FWHM corrects partial volume, as for the post-treatment study, and the scout
    is processed again when that calibration changes (:mod:`rntflow.tasks.dependencies`).
    """
    if img.acquisition_start is None:
        return None, None
    cal, _status = calibration_for(
        calibration_history(config, img.camera_id, site_id),
        site_id,
        img.camera_id,
        nuc,
        img.acquisition_start,
        config.calibration.validity_days,
    )
    return (cal, calibration_id(cal)) if cal is not None else (None, None)


def _studies_row(study_id: str, subject_id: str, img: _Image, n_files: int) -> dict:
    t_h = (
        (img.acquisition_start - img.administration_datetime).total_seconds() / 3600.0
        if img.acquisition_start and img.administration_datetime
        else None
    )
    return {
        "study_id": study_id,
        "subject_id": subject_id,
        "kind": "patient",
        "camera_id": img.camera_id,
        "acquired_at": img.acquisition_start.replace(tzinfo=UTC) if img.acquisition_start else None,
        "t_h": t_h,
        "n_instances": n_files,
        "protocol_compliant": None,  # set from the protocol checks of the study's radionuclide
    }


def _header_failure(
    role: str | None,
    role_check: CheckResult,
    img: _Image,
    row: dict,
    checks: list[dict],
    study_id: str,
    cols: dict,
) -> TareStudyResult | None:
    """The failed result of a study whose header cannot be used, else ``None``.

    Parameters
    ----------
    role : str or None
        The study's role (``None``: not of the arm).
    role_check : CheckResult
        The check that decided the role.
    img : _Image
        The study's image and header facts.
    row : dict
        The ``studies`` row.
    checks : list of dict
        ``qa_checks`` rows so far; the failing check is appended.
    study_id : str
        The study.
    cols : dict
        ``subject_id`` and ``study_id`` columns of the check rows.

    Returns
    -------
    TareStudyResult or None
        Failed (no role, no date-times, a post-treatment study without administered
        activity, with the next action), or ``None`` when the header is usable.
    """
    if role is None:
        return TareStudyResult(
            None,
            row,
            checks,
            failed=f"{role_check.message}: check the study's RadiopharmaceuticalInformationSequence and re-send",
        )
    if img.acquisition_start is None or img.administration_datetime is None:
        msg = "no acquisition or administration date-time: the study cannot be placed in time"
        checks.append(_qa(CheckResult("timing", FAIL, "missing", "both date-times", msg), study_id, cols))
        return TareStudyResult(role, row, checks, failed=f"{msg}; correct the header at the site and re-send")
    if role == POST and not img.administered_activity_mbq:
        msg = "post-treatment study without RadionuclideTotalDose: the administered activity is unknown"
        checks.append(
            _qa(CheckResult("tare_residual_activity", FAIL, "missing", "administered MBq", msg), study_id, cols)
        )
        return TareStudyResult(role, row, checks, failed=f"{msg}; correct the header at the site and re-send")
    return None


def _voi_activity_array(role: str, img: _Image, bqml: sitk.Image | None, nuc: str, t_h: float) -> np.ndarray:
    """Activity per voxel for :func:`rntflow.dosimetry.tare_imaging.tare_voi_activities`.

    Parameters
    ----------
    role : str
        ``post_treatment``: MBq per voxel decay-corrected to administration; a scout: the
        image's values as they are (counts).
    img : _Image
        The study's image.
    bqml : SimpleITK.Image or None
        The quantified image (Bq/mL at acquisition start), post-treatment only.
    nuc : str
        Radionuclide (its half-life when the header has none).
    t_h : float
        Acquisition start after administration (h).

    Returns
    -------
    numpy.ndarray (z, y, x)
    """
    if role == POST:
        to_admin = ti.decay_factor_to_administration(
            (img.half_life_s / 3600.0) if img.half_life_s else nuclide(nuc).half_life_h, t_h
        )
        voxel_ml = float(np.prod(img.image.GetSpacing())) / 1000.0
        return sitk.GetArrayFromImage(bqml).astype(np.float64) * voxel_ml / 1e6 * to_admin  # MBq at administration
    return sitk.GetArrayFromImage(img.image).astype(np.float64)


def _post_dose_rows(
    arm: TareArm,
    study: LoadedStudy,
    img: _Image,
    masks: dict[str, np.ndarray],
    masses_kg: dict[str, float],
    res: ti.VoiActivities,
    act_mbq: np.ndarray,
    rec: TareRecord,
    study_id: str,
    cal_id: str | None,
) -> list[dict]:
    """``tare_doses`` rows of a post-treatment study (local deposition, mean dose and DVH).

    Sets ``rec.cf_j_per_gbq`` and ``rec.mean_dose_gy``.

    Parameters
    ----------
    arm : TareArm
        The study's TARE arm (radionuclide, CF convention).
    study : LoadedStudy
        The study (its CT gives the voxel masses).
    img : _Image
        The post-treatment image.
    masks : dict of str to numpy.ndarray
        VOI masks on the image grid.
    masses_kg : dict of str to float
        VOI masses (kg) from the CT.
    res : VoiActivities
        The VOI activities (MBq at administration).
    act_mbq : numpy.ndarray (z, y, x)
        MBq per voxel at administration.
    rec : TareRecord
        The study's record, updated.
    study_id : str
        The study.
    cal_id : str or None
        The calibration used.

    Returns
    -------
    list of dict
    """
    cf = tare_conversion_factor_j_per_gbq(arm.radionuclide, arm.cf_convention)
    rec.cf_j_per_gbq = cf
    hu = sitk.GetArrayFromImage(
        resample(study.ct, img.image, sitk.Transform(3, sitk.sitkIdentity), default_value=-1000.0)
    ).astype(np.float64)
    voxel_ml = float(np.prod(img.image.GetSpacing())) / 1000.0
    m_vox = ti.voxel_mass_kg(hu, voxel_ml)
    dose = ti.local_deposition_dose_map_gy(act_mbq / 1000.0, cf, m_vox)
    grid_masks = {**masks, ti.NORMAL: ti.normal_liver_mask(masks)}
    doses: list[dict] = []
    for voi, a_mbq in res.activity.items():
        mean = ti.mean_dose_gy(a_mbq / 1000.0, cf, masses_kg[voi])
        rec.mean_dose_gy[voi] = mean
        met = ti.dvh_metrics_gy(dose, grid_masks[voi], m_vox, voxel_ml) if grid_masks[voi].any() else None
        doses.append(
            {
                "voi": voi,
                "study_id": study_id,
                "administered_activity_gbq": img.administered_activity_mbq / 1000.0,
                "activity_mbq": a_mbq,
                "mass_kg": masses_kg[voi],
                "mean_dose_gy": mean,
                "d2_gy": met.d2_gy if met else None,
                "d50_gy": met.d50_gy if met else None,
                "d70_gy": met.d70_gy if met else None,
                "d98_gy": met.d98_gy if met else None,
                "recovery_coefficient": res.recovery_coefficient.get(voi, 1.0),
                "cf_j_per_gbq": cf,
                "calibration_id": cal_id,
                "method": METHOD,
            }
        )
    return doses


def _post_dose_checks(
    arm: TareArm,
    res: ti.VoiActivities,
    img: _Image,
    rec: TareRecord,
    subject_id: str,
    study_id: str,
    cols: dict,
) -> list[dict]:
    """``qa_checks`` rows of a post-treatment study: residual activity, delivered doses, tumours."""
    checks = [_qa(tc.residual_activity_check(arm, res.total, img.administered_activity_mbq), study_id, cols)]
    checks += [_qa(c, study_id, cols) for c in tc.delivered_dose_checks(arm, rec.mean_dose_gy)]
    checks += [
        qa_row(c, "voi", f"{subject_id}/{study_id}/{les}", **cols)
        for les, c in tc.delivered_tumour_checks(arm, rec.mean_dose_gy).items()
    ]
    return checks


@task(name="tare-quantify-study", retries=2, retry_delay_seconds=2)
def quantify_tare_study(
    config: TrialConfig, site_id: str, subject_id: str, study_id: str, study_dir: str
) -> TareStudyResult:
    """Read a TARE study, decide its role, quantify its VOIs and (post-treatment) its doses.

    Returns
    -------
    TareStudyResult
        Rows and the study's record, or why there is none (``waiting_for`` / ``failed``).
    """
    arm = config.tare_arm(site_id)
    if arm is None:
        raise ConfigError(f"site {site_id} belongs to no TARE arm")
    cols = {"subject_id": subject_id, "study_id": study_id}
    study = load_study(study_dir)
    img = _study_image(config, site_id, study)
    row = _studies_row(study_id, subject_id, img, study.n_files)
    role, role_check = tc.study_role_check(arm, img.radionuclide, img.administered_activity_mbq, img.modality)
    checks = [_qa(role_check, study_id, cols)]
    if role is not None:
        recon = _protocol_checks(config, site_id, img)
        checks += [_qa(c, study_id, cols) for c in recon]
        row["protocol_compliant"] = protocol_compliant(recon)
    failure = _header_failure(role, role_check, img, row, checks, study_id, cols)
    if failure is not None:
        return failure
    nuc = img.radionuclide or arm.radionuclide

    cal, cal_id, bqml = None, None, None
    if role == POST:
        bqml, cal, cal_id, cal_check = _quantified_post(config, site_id, study, img, nuc)
        checks.append(qa_row(cal_check, "study", study_id, **cols))
        if bqml is None:
            return TareStudyResult(role, row, checks, waiting_for=_waiting_message(img, nuc))
    else:
        cal, cal_id = _scout_calibration(config, site_id, img, nuc)

    if study.ct is None:
        return TareStudyResult(role, row, checks, failed="no CT in the study: VOIs and masses need it; re-send with CT")
    masks_ct, problems = _ct_vois(config, site_id, study)
    missing = ti.missing_vois(masks_ct)
    if missing:
        msg = f"VOI(s) missing: {', '.join(missing)} (found: {', '.join(sorted(masks_ct)) or 'none'})"
        if problems:
            msg += f"; {'; '.join(problems[:3])}"
        expected = "Liver, Liver_Perfused, Lungs, Lesion_n"
        checks.append(_qa(CheckResult("voi_names", FAIL, "missing", expected, msg), study_id, cols))
        return TareStudyResult(role, row, checks, failed=f"{msg}: re-send the study with its RTSTRUCT")

    ct_arr = sitk.GetArrayFromImage(study.ct).astype(np.float64)
    masses, volumes = ti.voi_masses_kg(masks_ct, ct_arr, float(np.prod(study.ct.GetSpacing())) / 1000.0)
    masks = _on_image_grid(masks_ct, study.ct, img.image)
    spacing_zyx = tuple(float(s) for s in img.image.GetSpacing()[::-1])
    fwhm = _fwhm_mm(config, site_id, img, cal)
    t_h = (img.acquisition_start - img.administration_datetime).total_seconds() / 3600.0
    act = _voi_activity_array(role, img, bqml, nuc, t_h)
    res = ti.tare_voi_activities(act, masks, spacing_zyx, fwhm, volumes_ml=volumes)
    notes = list(res.notes) + ([] if fwhm else ["no system FWHM (camera profile or calibration): no PV correction"])
    rec = TareRecord(
        site_id,
        subject_id,
        study_id,
        role,
        nuc,
        img.acquisition_start,
        img.administration_datetime,
        img.administered_activity_mbq,
        img.camera_id,
        activity=res.activity,
        shares=res.shares(),
        masses_kg={k: v for k, v in masses.items() if k in res.activity},
        volumes_ml={k: v for k, v in volumes.items() if k in res.activity},
        lung_shunt_fraction=res.lung_shunt_fraction,
        calibration_id=cal_id,
        calibration_value=cal.value if role == POST and not (cal_id or "").endswith(FACE_VALUE_SUFFIX) else None,
        fwhm_mm=fwhm,
        notes=notes,
    )
    doses: list[dict] = []
    if role == POST:
        doses = _post_dose_rows(arm, study, img, masks, masses, res, act, rec, study_id, cal_id)
        checks += _post_dose_checks(arm, res, img, rec, subject_id, study_id, cols)
        rec.doses = doses
    save_record(config, rec)
    return TareStudyResult(role, row, checks, doses, rec)
