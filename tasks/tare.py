"""Prefect tasks of radioembolisation (TARE): quantify a scout or post-treatment study, plan, compare.

Load (the de-identified study folder, the calibration registry, the TARE records of the
subject), call the pure code (:mod:`rntflow.dosimetry.tare_imaging`,
:mod:`rntflow.dosimetry.tare`), save (a TARE record per study in the product store) and
return warehouse rows.

TARE records live beside the 177Lu time points, under their own folder so the 177Lu flows
never see them::

    <products_dir>/tare/<site_id>/<subject_id>/<study_id>/record.json

A record holds what the plan and the predicted-vs-delivered comparison need: the study's
role, times and administered activity, and per VOI its activity, share, mass and (post-
treatment) delivered dose. Treatments are numbered from the records each time (post-treatment
studies in acquisition order; a scout plans the first post-treatment study after it), so the
result does not depend on the order the studies arrived in.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from prefect import task

from rntflow.core.config import TareArm, TrialConfig
from rntflow.core.errors import ConfigError, DicomInputError, VoiError
from rntflow.core.files import write_text_atomic
from rntflow.core.qa import FAIL, PASS, WARN, CheckResult, qa_row
from rntflow.dicomio.study import LoadedStudy, load_study
from rntflow.dosimetry import tare_imaging as ti
from rntflow.dosimetry.registration import resample
from rntflow.dosimetry.tare import PRODUCTS, TarePlan, plan_partition, tare_conversion_factor_j_per_gbq
from rntflow.dosimetry.vois import resample_mask_fraction
from rntflow.harmonization.calibration import Calibration, calibration_for
from rntflow.harmonization.cylinder import to_bq_per_ml
from rntflow.harmonization.headers import nm_to_image, normalise_radionuclide, parse_nm_header
from rntflow.harmonization.pet_headers import pet_at_acquisition_start
from rntflow.physics.nuclides import nuclide
from rntflow.tasks.calibration import quantify_pet
from rntflow.tasks.common import calibration_history, calibration_id
from rntflow.tasks.timepoint import FACE_VALUE_SUFFIX
from rntflow.tasks.voi_masks import rtstruct_rois, seg_masks

SCOUT, POST = "scout", "post_treatment"
RECORD = "record.json"
#: Dose method of every ``tare_doses`` row.
METHOD = "local_deposition"


# --------------------------------------------------------------------------- records


@dataclass
class TareRecord:
    """What one quantified TARE study leaves for planning and comparison (pseudonymous).

    Attributes
    ----------
    site_id, subject_id, study_id : str
    role : {"scout", "post_treatment"}
    radionuclide : str
        Imaged radionuclide (``Tc-99m``, ``Ho-166``, ``Y-90``).
    acquisition_start, administration_datetime : datetime
        Naive, as de-identified (ISO text in the JSON).
    administered_activity_mbq : float or None
    camera_id : str or None
    activity : dict of str to float
        VOI -> activity: scout in the image's unit (counts), post-treatment in MBq at
        administration.
    shares : dict of str to float
        VOI -> share of the liver + lung activity.
    masses_kg, volumes_ml : dict of str to float
    lung_shunt_fraction : float
    mean_dose_gy : dict of str to float
        Post-treatment: delivered mean dose per VOI (empty for a scout).
    doses : list of dict
        Post-treatment: the ``tare_doses`` rows, without the treatment number (numbered
        when the subject's plans are made).
    cf_j_per_gbq : float or None
    calibration_id : str or None
    fwhm_mm : float or None
    notes : list of str
    """

    site_id: str
    subject_id: str
    study_id: str
    role: str
    radionuclide: str
    acquisition_start: datetime
    administration_datetime: datetime
    administered_activity_mbq: float | None
    camera_id: str | None
    activity: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    masses_kg: dict[str, float] = field(default_factory=dict)
    volumes_ml: dict[str, float] = field(default_factory=dict)
    lung_shunt_fraction: float = 0.0
    mean_dose_gy: dict[str, float] = field(default_factory=dict)
    doses: list[dict] = field(default_factory=list)
    cf_j_per_gbq: float | None = None
    calibration_id: str | None = None
    fwhm_mm: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        d = asdict(self)
        d["acquisition_start"] = self.acquisition_start.isoformat()
        d["administration_datetime"] = self.administration_datetime.isoformat()
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TareRecord:
        d = json.loads(text)
        d["acquisition_start"] = datetime.fromisoformat(d["acquisition_start"])
        d["administration_datetime"] = datetime.fromisoformat(d["administration_datetime"])
        return cls(**d)


def tare_dir(config: TrialConfig) -> Path:
    return config.products_dir / "tare"


def save_record(config: TrialConfig, rec: TareRecord) -> Path:
    """Write a study's record atomically (a later run replaces it)."""
    return write_text_atomic(tare_dir(config) / rec.site_id / rec.subject_id / rec.study_id / RECORD, rec.to_json())


def subject_records(config: TrialConfig, site_id: str, subject_id: str) -> list[TareRecord]:
    """Every TARE record of a subject, by acquisition time."""
    folder = tare_dir(config) / site_id / subject_id
    recs = [TareRecord.from_json(p.read_text()) for p in sorted(folder.glob(f"*/{RECORD}"))] if folder.exists() else []
    return sorted(recs, key=lambda r: r.acquisition_start)


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


def _qa(check: str, status: str, found: str, expected: str, message: str, study_id: str, cols: dict) -> dict:
    return qa_row(CheckResult(check, status, found, expected, message), "study", study_id, **cols)


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
    config: TrialConfig, study: LoadedStudy, img: _Image, nuc: str
) -> tuple[sitk.Image | None, Calibration | None, str | None, CheckResult]:
    """(Bq/mL at acquisition start or None when the camera has no calibration yet, the
    calibration, its id, the ``tare_calibration`` check) of a post-treatment image.

    PET: :func:`rntflow.tasks.calibration.quantify_pet` (the PET camera's cross-calibration).
    NM: the camera's calibration for the radionuclide (sensitivity for counts; a vendor Bq/mL
    scale factor, taken at face value when cross-calibration is off).
    """
    if img.modality == "PET":
        qp = quantify_pet(config, study.pet, nuc)
        return qp.image, qp.calibration, qp.calibration_id, qp.check
    days = config.calibration.validity_days
    cal, status = calibration_for(
        calibration_history(config, img.camera_id), img.camera_id, nuc, img.acquisition_start, days
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
        "protocol_compliant": None,  # the 177Lu protocol does not apply; TARE QA rows instead
    }


def _limit_checks_delivered(arm: TareArm, rec: TareRecord, study_id: str, cols: dict, subject_id: str) -> list[dict]:
    """Delivered lung, normal-liver and per-lesion tumour dose checks of a post-treatment study."""
    lim = PRODUCTS[arm.device]
    out = []
    lung = rec.mean_dose_gy.get(ti.LUNGS)
    if lung is not None:
        ok = lung <= lim.lung_limit_gy
        out.append(
            _qa(
                "tare_lung_dose",
                PASS if ok else FAIL,
                f"{lung:.1f} Gy (delivered)",
                f"<= {lim.lung_limit_gy:.0f} Gy per treatment ({arm.device})",
                "delivered lung dose within the limit"
                if ok
                else "delivered lung dose above the single-treatment limit",
                study_id,
                cols,
            )
        )
    normal = rec.mean_dose_gy.get(ti.NORMAL)
    if normal is not None:
        if arm.treatment == "ablative":
            out.append(
                _qa(
                    "tare_normal_liver_dose",
                    PASS,
                    f"{normal:.1f} Gy (delivered)",
                    "not applied (ablative)",
                    "ablative treatment: the parenchyma limit does not apply to the treated segment",
                    study_id,
                    cols,
                )
            )
        else:
            par = _parenchyma_limit(arm)
            ok = normal <= par
            out.append(
                _qa(
                    "tare_normal_liver_dose",
                    PASS if ok else FAIL,
                    f"{normal:.1f} Gy (delivered)",
                    f"<= {par:.0f} Gy ({arm.device})",
                    "delivered normal-liver dose within the limit"
                    if ok
                    else "delivered normal-liver dose above the parenchyma limit",
                    study_id,
                    cols,
                )
            )
    target = _tumour_target_gy(arm)
    for les in ti.lesion_names(rec.mean_dose_gy):
        d = rec.mean_dose_gy[les]
        ok = d >= target
        out.append(
            qa_row(
                CheckResult(
                    "tare_tumour_dose",
                    PASS if ok else WARN,
                    f"{d:.1f} Gy (delivered)",
                    f">= {target:.0f} Gy ({arm.device} target)",
                    "tumour dose reaches the target" if ok else "tumour dose below the product's target",
                ),
                "voi",
                f"{subject_id}/{study_id}/{les}",
                **cols,
            )
        )
    return out


def _parenchyma_limit(arm: TareArm) -> float:
    lim = PRODUCTS[arm.device]
    if arm.pretreated_liver and lim.parenchyma_pretreated_limit_gy:
        return lim.parenchyma_pretreated_limit_gy
    return lim.parenchyma_limit_gy


def _tumour_target_gy(arm: TareArm) -> float:
    """The lower end of the device's tumour target (ablative: the ablative minimum where given)."""
    lim = PRODUCTS[arm.device]
    if arm.treatment == "ablative" and lim.ablative_target_min_gy is not None:
        return lim.ablative_target_min_gy
    return lim.tumour_target_gy[0]


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
    role = arm.study_role(img.radionuclide, img.administered_activity_mbq)
    expected = (
        f"{arm.scout_radionuclide} scout or {arm.radionuclide} post-treatment "
        f"(scout <= {arm.scout_max_activity_mbq:.0f} MBq)"
        if arm.scout_agent == "Ho-166-scout"
        else f"{arm.scout_radionuclide} scout or {arm.radionuclide} post-treatment"
    )
    found = f"{img.radionuclide or 'no radionuclide'}, {img.administered_activity_mbq or 0:.0f} MBq, {img.modality}"
    if role is None:
        msg = f"{img.radionuclide or 'an unknown radionuclide'} does not belong to arm {arm.id} ({arm.device})"
        checks = [_qa("tare_study_role", FAIL, found, expected, msg, study_id, cols)]
        return TareStudyResult(
            None, row, checks, failed=f"{msg}: check the study's RadiopharmaceuticalInformationSequence and re-send"
        )
    checks = [
        _qa("tare_study_role", PASS, f"{role}: {found}", expected, f"{role} study of arm {arm.id}", study_id, cols)
    ]
    if img.acquisition_start is None or img.administration_datetime is None:
        msg = "no acquisition or administration date-time: the study cannot be placed in time"
        checks.append(_qa("timing", FAIL, "missing", "both date-times", msg, study_id, cols))
        return TareStudyResult(role, row, checks, failed=f"{msg}; correct the header at the site and re-send")
    if role == POST and not img.administered_activity_mbq:
        msg = "post-treatment study without RadionuclideTotalDose: the administered activity is unknown"
        checks.append(_qa("tare_residual_activity", FAIL, "missing", "administered MBq", msg, study_id, cols))
        return TareStudyResult(role, row, checks, failed=f"{msg}; correct the header at the site and re-send")
    nuc = img.radionuclide or arm.radionuclide

    cal, cal_id, bqml = None, None, None
    if role == POST:
        bqml, cal, cal_id, cal_check = _quantified_post(config, study, img, nuc)
        checks.append(qa_row(cal_check, "study", study_id, **cols))
        if bqml is None:
            return TareStudyResult(role, row, checks, waiting_for=_waiting_message(img, nuc))

    if study.ct is None:
        return TareStudyResult(role, row, checks, failed="no CT in the study: VOIs and masses need it; re-send with CT")
    masks_ct, problems = _ct_vois(config, site_id, study)
    missing = ti.missing_vois(masks_ct)
    if missing:
        msg = f"VOI(s) missing: {', '.join(missing)} (found: {', '.join(sorted(masks_ct)) or 'none'})"
        if problems:
            msg += f"; {'; '.join(problems[:3])}"
        checks.append(_qa("voi_names", FAIL, "missing", "Liver, Liver_Perfused, Lungs, Lesion_n", msg, study_id, cols))
        return TareStudyResult(role, row, checks, failed=f"{msg}: re-send the study with its RTSTRUCT")

    ct_arr = sitk.GetArrayFromImage(study.ct).astype(np.float64)
    masses, volumes = ti.voi_masses_kg(masks_ct, ct_arr, float(np.prod(study.ct.GetSpacing())) / 1000.0)
    masks = _on_image_grid(masks_ct, study.ct, img.image)
    spacing_zyx = tuple(float(s) for s in img.image.GetSpacing()[::-1])
    fwhm = _fwhm_mm(config, site_id, img, cal)
    t_h = (img.acquisition_start - img.administration_datetime).total_seconds() / 3600.0
    if role == POST:
        to_admin = ti.decay_factor_to_administration(
            (img.half_life_s / 3600.0) if img.half_life_s else nuclide(nuc).half_life_h, t_h
        )
        voxel_ml = float(np.prod(img.image.GetSpacing())) / 1000.0
        act = sitk.GetArrayFromImage(bqml).astype(np.float64) * voxel_ml / 1e6 * to_admin  # MBq at administration
    else:
        act = sitk.GetArrayFromImage(img.image).astype(np.float64)
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
        fwhm_mm=fwhm,
        notes=notes,
    )
    doses: list[dict] = []
    if role == POST:
        cf = tare_conversion_factor_j_per_gbq(arm.radionuclide, arm.cf_convention)
        rec.cf_j_per_gbq = cf
        hu = sitk.GetArrayFromImage(
            resample(study.ct, img.image, sitk.Transform(3, sitk.sitkIdentity), default_value=-1000.0)
        ).astype(np.float64)
        voxel_ml = float(np.prod(img.image.GetSpacing())) / 1000.0
        m_vox = ti.voxel_mass_kg(hu, voxel_ml)
        dose = ti.local_deposition_dose_map_gy(act / 1000.0, cf, m_vox)
        grid_masks = {**masks, ti.NORMAL: ti.normal_liver_mask(masks)}
        for voi, a_mbq in res.activity.items():
            mean = ti.mean_dose_gy(a_mbq / 1000.0, cf, masses[voi])
            rec.mean_dose_gy[voi] = mean
            met = ti.dvh_metrics_gy(dose, grid_masks[voi], m_vox, voxel_ml) if grid_masks[voi].any() else None
            doses.append(
                {
                    "voi": voi,
                    "study_id": study_id,
                    "administered_activity_gbq": img.administered_activity_mbq / 1000.0,
                    "activity_mbq": a_mbq,
                    "mass_kg": masses[voi],
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
        diff_pct = 100.0 * (res.total / img.administered_activity_mbq - 1.0)
        ok = abs(diff_pct) <= arm.residual_tolerance_pct
        checks.append(
            _qa(
                "tare_residual_activity",
                PASS if ok else WARN,
                f"{res.total:.0f} MBq imaged at administration ({diff_pct:+.1f} %)",
                f"{img.administered_activity_mbq:.0f} MBq administered +- {arm.residual_tolerance_pct:.0f} %",
                "imaged activity matches the administered activity"
                if ok
                else "imaged activity differs from the administered activity (vial residual, calibration?)",
                study_id,
                cols,
            )
        )
        checks += _limit_checks_delivered(arm, rec, study_id, cols, subject_id)
        rec.doses = doses
    save_record(config, rec)
    return TareStudyResult(role, row, checks, doses, rec)


# --------------------------------------------------------------------------- plans and comparison


def treatment_numbers(records: list[TareRecord]) -> dict[str, int]:
    """study_id -> treatment: post-treatment studies in acquisition order; a scout the first
    post-treatment study acquired after it (or the next number when none is)."""
    posts = sorted((r for r in records if r.role == POST), key=lambda r: r.acquisition_start)
    out = {r.study_id: i + 1 for i, r in enumerate(posts)}
    for r in records:
        if r.role == SCOUT:
            out[r.study_id] = 1 + sum(1 for p in posts if p.acquisition_start <= r.acquisition_start)
    return out


def _pairs(
    records: list[TareRecord], numbers: dict[str, int]
) -> dict[int, tuple[TareRecord | None, TareRecord | None]]:
    """treatment -> (latest scout planning it, its post-treatment study)."""
    out: dict[int, list] = {}
    for r in records:  # by acquisition time: a later scout of the same treatment replaces the earlier
        slot = out.setdefault(numbers[r.study_id], [None, None])
        slot[0 if r.role == SCOUT else 1] = r
    return {k: (v[0], v[1]) for k, v in out.items()}


def _planned_tumour_dose_gy(arm: TareArm) -> float:
    return arm.planned_tumour_dose_gy or _tumour_target_gy(arm)


def _tumour_mass_kg(rec: TareRecord) -> float:
    return sum(rec.masses_kg[n] for n in ti.lesion_names(rec.masses_kg))


def plan_for_scout(arm: TareArm, scout: TareRecord, prior_lung_dose_gy: float) -> tuple[TarePlan, float, float]:
    """(partition-model plan, tumour-to-normal ratio, lung mass kg) of a scout record."""
    lung_mass = scout.masses_kg.get(ti.LUNGS) or arm.lung_mass_kg
    ratio = ti.tumour_to_normal_ratio(scout.activity, scout.masses_kg)
    plan = plan_partition(
        _planned_tumour_dose_gy(arm),
        scout.masses_kg[ti.NORMAL],
        _tumour_mass_kg(scout),
        ratio,
        scout.lung_shunt_fraction,
        product=arm.device,
        lung_mass_kg=lung_mass,
        pretreated=arm.pretreated_liver,
        cf_convention=arm.cf_convention,
        treatment=arm.treatment,
        prior_lung_dose_gy=prior_lung_dose_gy,
        lung_cumulative_limit_gy=arm.lung_cumulative_limit_gy,
        max_lung_shunt_fraction=arm.max_lung_shunt_fraction,
        raise_on_limit=False,
    )
    return plan, ratio, lung_mass


def _plan_checks(
    arm: TareArm, plan: TarePlan, row: dict, scout: TareRecord, per_voi_gy: dict[str, float], cols: dict
) -> list[dict]:
    """The plan's QA rows at the planned activity: shunt, lung dose (single and cumulative),
    normal liver, tumour target (all lesions, and each lesion at ``per_voi_gy``). The delivered
    doses are checked on the post-treatment study."""
    sid, lim = scout.study_id, PRODUCTS[arm.device]
    at = "planned"
    lung, normal, tumour = plan.lung_dose_gy, plan.normal_liver_dose_gy, plan.tumour_dose_gy
    cum = row["prior_lung_dose_gy"] + lung
    cap = arm.max_lung_shunt_fraction
    out = [
        _qa(
            "tare_lung_shunt",
            PASS if cap is None or plan_lsf_ok(scout.lung_shunt_fraction, cap) else FAIL,
            f"{100 * scout.lung_shunt_fraction:.1f} %",
            f"<= {100 * cap:.0f} % (trial cap)" if cap is not None else "no trial cap (lung dose checked)",
            "lung shunt fraction within the trial cap"
            if cap is None or plan_lsf_ok(scout.lung_shunt_fraction, cap)
            else "lung shunt fraction above the trial cap",
            sid,
            cols,
        ),
        _qa(
            "tare_lung_dose",
            PASS if lung <= lim.lung_limit_gy * (1 + 1e-9) else FAIL,
            f"{lung:.1f} Gy ({at} activity)",
            f"<= {lim.lung_limit_gy:.0f} Gy per treatment ({arm.device})",
            "lung dose within the limit" if lung <= lim.lung_limit_gy * (1 + 1e-9) else "lung dose above the limit",
            sid,
            cols,
        ),
    ]
    cum_limit = arm.lung_cumulative_limit_gy
    cum_ok = cum_limit is None or cum <= cum_limit * (1 + 1e-9)
    out.append(
        _qa(
            "tare_lung_dose_cumulative",
            PASS if cum_ok else FAIL,
            f"{cum:.1f} Gy (prior {row['prior_lung_dose_gy']:.1f} Gy + this treatment)",
            f"<= {cum_limit:.0f} Gy (trial setting)" if cum_limit is not None else "no cumulative limit set",
            "cumulative lung dose within the limit" if cum_ok else "cumulative lung dose above the trial limit",
            sid,
            cols,
        )
    )
    if arm.treatment != "ablative":
        par = _parenchyma_limit(arm)
        ok = normal <= par * (1 + 1e-9)
        out.append(
            _qa(
                "tare_normal_liver_dose",
                PASS if ok else FAIL,
                f"{normal:.1f} Gy ({at} activity)",
                f"<= {par:.0f} Gy ({arm.device})",
                "normal-liver dose within the limit" if ok else "normal-liver dose above the parenchyma limit",
                sid,
                cols,
            )
        )
    target = _tumour_target_gy(arm)
    ok = tumour >= target * (1 - 1e-9)
    out.append(
        _qa(
            "tare_tumour_dose",
            PASS if ok else WARN,
            f"{tumour:.1f} Gy ({at} activity, all lesions)",
            f">= {target:.0f} Gy ({arm.device} target)",
            "tumour dose reaches the target" if ok else "tumour dose below the product's target",
            sid,
            cols,
        )
    )
    for les in ti.lesion_names(per_voi_gy):
        d = per_voi_gy[les]
        ok = d >= target * (1 - 1e-9)
        out.append(
            qa_row(
                CheckResult(
                    "tare_tumour_dose",
                    PASS if ok else WARN,
                    f"{d:.1f} Gy ({at} activity)",
                    f">= {target:.0f} Gy ({arm.device} target)",
                    f"{les} reaches the target" if ok else f"{les} below the product's target",
                ),
                "voi",
                f"{scout.subject_id}/{sid}/{les}",
                **cols,
            )
        )
    return out


def _plan_notes(plan: TarePlan, arm: TareArm) -> list[str]:
    """The plan's notes, without a "below the target" note of a plan AT the target (floating-point
    round-off of :func:`rntflow.dosimetry.tare.plan_partition`'s check)."""
    lo = PRODUCTS[arm.device].tumour_target_gy[0]
    at_target = plan.tumour_dose_gy >= lo * (1 - 1e-9)
    return [n for n in plan.notes if not (at_target and n.startswith("tumour ") and "below the target" in n)]


def plan_lsf_ok(lsf: float, cap: float) -> bool:
    return lsf <= cap * (1 + 1e-9)


@task(name="tare-subject-plans", retries=2, retry_delay_seconds=2)
def tare_subject_plans(config: TrialConfig, site_id: str, subject_id: str) -> dict:
    """Plans, predicted-vs-delivered rows and their QA for every treatment of a subject.

    Computed from the subject's TARE records each time (whichever of scout and
    post-treatment study arrived second completes the comparison).

    Returns
    -------
    dict
        ``tare_plans``, ``tare_doses``, ``tare_predicted_delivered``, ``qa_checks`` (rows) and
        ``treatments`` (study_id -> treatment number).
    """
    arm = config.tare_arm(site_id)
    if arm is None:
        raise ConfigError(f"site {site_id} belongs to no TARE arm")
    records = subject_records(config, site_id, subject_id)
    numbers = treatment_numbers(records)
    pairs = _pairs(records, numbers)
    plans, comparisons, checks = [], [], []
    doses = [{**d, "treatment": numbers[r.study_id]} for r in records if r.role == POST for d in r.doses]
    delivered_lung = {t: p.mean_dose_gy.get(ti.LUNGS, 0.0) for t, (_s, p) in pairs.items() if p is not None}
    for t in sorted(pairs):
        scout, post = pairs[t]
        prior = sum(v for k, v in delivered_lung.items() if k < t)
        if post is not None:
            cum = prior + delivered_lung[t]
            lim = arm.lung_cumulative_limit_gy
            ok = lim is None or cum <= lim * (1 + 1e-9)
            checks.append(
                _qa(
                    "tare_lung_dose_cumulative",
                    PASS if ok else FAIL,
                    f"{cum:.1f} Gy delivered over treatments 1-{t}",
                    f"<= {lim:.0f} Gy (trial setting)" if lim is not None else "no cumulative limit set",
                    "cumulative lung dose within the limit" if ok else "cumulative lung dose above the trial limit",
                    post.study_id,
                    {"subject_id": subject_id, "study_id": post.study_id, "cycle": t},
                )
            )
        for r in records:  # superseded scouts of the same treatment still get their plan row
            if r.role != SCOUT or numbers[r.study_id] != t:
                continue
            plan, ratio, lung_mass = plan_for_scout(arm, r, prior)
            lesions = ti.lesion_names(r.masses_kg)
            planned = ti.predicted_doses_gy(r.shares, r.masses_kg, plan.activity_gbq, plan.cf_j_per_gbq)
            predicted = (
                ti.predicted_doses_gy(r.shares, r.masses_kg, post.administered_activity_mbq / 1000.0, plan.cf_j_per_gbq)
                if post is not None and post.administered_activity_mbq
                else None
            )
            target = _tumour_target_gy(arm)
            # each lesion at the plan's tumour dose x its own ratio over the plan's (the partition
            # model's own split, so that a single lesion is exactly at the plan's tumour dose)
            lesion_gy = {
                n: plan.tumour_dose_gy * ti.tumour_to_normal_ratio(r.activity, r.masses_kg, [n]) / ratio
                for n in lesions
            }
            low = [
                f"{n} {lesion_gy[n]:.1f} Gy planned, below the {target:.0f} Gy target"
                for n in lesions
                if lesion_gy[n] < target * (1 - 1e-9)
            ]
            row = {
                "treatment": t,
                "study_id": r.study_id,
                "arm_id": arm.id,
                "device": arm.device,
                "radionuclide": arm.radionuclide,
                "scout_agent": arm.scout_agent,
                "lung_shunt_fraction": r.lung_shunt_fraction,
                "tumour_to_normal_ratio": ratio,
                "tumour_mass_kg": _tumour_mass_kg(r),
                "normal_liver_mass_kg": r.masses_kg[ti.NORMAL],
                "lung_mass_kg": lung_mass,
                "planned_tumour_dose_gy": _planned_tumour_dose_gy(arm),
                "planned_activity_gbq": plan.activity_gbq,
                "administered_activity_gbq": post.administered_activity_mbq / 1000.0 if predicted else None,
                "post_study_id": post.study_id if post is not None else None,
                "predicted_tumour_dose_gy": plan.tumour_dose_gy,
                "predicted_normal_liver_dose_gy": plan.normal_liver_dose_gy,
                "predicted_lung_dose_gy": plan.lung_dose_gy,
                "prior_lung_dose_gy": prior,
                "cf_j_per_gbq": plan.cf_j_per_gbq,
                "cf_convention": plan.cf_convention,
                "broken_limits": "; ".join(plan.broken_limits),
                "notes": "; ".join(_plan_notes(plan, arm) + low + r.notes),
            }
            plans.append(row)
            cols = {"subject_id": subject_id, "study_id": r.study_id, "cycle": t}
            checks += _plan_checks(arm, plan, row, r, lesion_gy, cols)
            if post is None or predicted is None or r is not scout:
                continue
            for voi in sorted(set(predicted) & set(post.mean_dose_gy)):
                delivered = post.mean_dose_gy[voi]
                comparisons.append(
                    {
                        "treatment": t,
                        "voi": voi,
                        "scout_study_id": r.study_id,
                        "post_study_id": post.study_id,
                        "planned_dose_gy": planned.get(voi),
                        "predicted_dose_gy": predicted[voi],
                        "delivered_dose_gy": delivered,
                        "delivered_to_predicted_ratio": delivered / predicted[voi] if predicted[voi] > 0 else None,
                    }
                )
    return {
        "tare_plans": plans,
        "tare_doses": doses,
        "tare_predicted_delivered": comparisons,
        "qa_checks": checks,
        "treatments": numbers,
    }
