"""Prefect tasks for one patient time point: classify, check the reconstruction, quantify.

Load (de-identified study folder, calibration registry), call the pure code
(``harmonization.headers``, ``harmonization.recon_check``, ``harmonization.cylinder``,
``harmonization.calibration``), save (product store) and return warehouse records.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, timedelta

import numpy as np
import SimpleITK as sitk
from prefect import task

from rntflow.core.config import TrialConfig
from rntflow.core.errors import ConfigError, DicomInputError, VoiError
from rntflow.core.qa import FAIL, PASS, WARN, CheckResult, qa_row
from rntflow.dicomio.study import LoadedStudy, load_study
from rntflow.harmonization.calibration import Calibration, calibration_for
from rntflow.harmonization.cylinder import to_bq_per_ml
from rntflow.harmonization.headers import NmHeader, nm_to_image, normalise_radionuclide, parse_nm_header
from rntflow.harmonization.recon_check import check_counts_plausible, check_fov_covers_vois, check_reconstruction
from rntflow.physics.nuclides import nuclide
from rntflow.tasks.common import calibration_history, calibration_id, product_store
from rntflow.tasks.products import TimePointMeta
from rntflow.tasks.voi_masks import rtstruct_masks, seg_masks

#: A study is the same administration as another when their start times agree this well.
SAME_ADMINISTRATION = timedelta(hours=1)
#: Appended to the calibration id of a time point quantified with cross-calibration off.
FACE_VALUE_SUFFIX = ":vendor-face-value"
#: Plausible sensitivity range of a SPECT camera for 177Lu, MEGP, 20% window (cps/MBq);
#: the trial's cameras measure 10-13 (Dutch multicentre harmonisation in de Wit-van der Veen et al., NKI review; the simulator's sites).
SENSITIVITY_RANGE_CPS_PER_MBQ = (5.0, 25.0)


@task(name="classify-study", retries=2, retry_delay_seconds=2)
def classify_study(study_dir: str, kind: str) -> str:
    """``phantom`` (enrolment says so), ``patient`` (an NM reconstruction) or ``segmentation``
    (only RTSTRUCT/SEG objects)."""
    if kind == "phantom":
        return "phantom"
    study = load_study(study_dir)
    if study.nm is not None:
        return "patient"
    if study.rtstructs or study.segs:
        return "segmentation"
    raise DicomInputError(
        f"study has no NM reconstruction and no segmentation ({study.n_files} files; "
        f"unused: {', '.join(study.unused[:3]) or 'none'})"
    )


@dataclass(frozen=True)
class TimepointResult:
    """What quantifying one patient time point produced.

    Attributes
    ----------
    study : dict
        The ``studies`` row.
    checks : list of dict
        ``qa_checks`` rows.
    meta : TimePointMeta or None
        The quantified time point; ``None`` when nothing could be quantified, and then
        exactly one of ``waiting_for`` / ``failed`` says why and what to do.
    waiting_for : str or None
        What must arrive before the time point can be quantified (and the next action).
    failed : str or None
        Why the time point can never be quantified as sent (and the next action).
    """

    study: dict
    checks: list[dict]
    meta: TimePointMeta | None
    waiting_for: str | None = None
    failed: str | None = None


@dataclass(frozen=True)
class SegmentationResult:
    """What attaching a segmentation-only study (RTSTRUCT/SEG) produced.

    Attributes
    ----------
    checks : list of dict
        ``qa_checks`` rows (scope ``study``, keyed by the segmentation's study id): VOIs
        drawn on a CT no received time point has, unusable or unmapped VOI names.
    cycle : int or None
        1-based cycle of the time point that received the VOIs; ``None`` when no received
        time point's CT has the segmentation's frame of reference (it waits for that CT).
    target_study_id : str or None
        Study id of that time point (the last one, when the study holds several objects).
    """

    checks: list[dict]
    cycle: int | None = None
    target_study_id: str | None = None


def _cycle_of(admin, others: list[TimePointMeta]) -> int:
    """1-based rank of this administration among the subject's administrations."""
    clusters: list[list] = []
    for t in sorted({o.administered_at for o in others} | {admin}):
        if clusters and t - clusters[-1][-1] <= SAME_ADMINISTRATION:
            clusters[-1].append(t)
        else:
            clusters.append([t])
    return 1 + next(i for i, c in enumerate(clusters) if admin in c)


def _mapped_vois(
    config,
    site_id: str,
    objects: list,
    ct: sitk.Image,
    frame_of_reference_uid: str | None,
    checks: list[dict],
    study_id: str,
    cols: dict,
) -> dict[str, np.ndarray]:
    """TG-263 name -> mask on ``ct`` from RTSTRUCT/SEG objects; problems become QA rows in ``checks``."""
    vois: dict[str, np.ndarray] = {}
    for obj in objects:
        fn = seg_masks if getattr(obj, "Modality", "") == "SEG" else rtstruct_masks
        try:
            raw = fn(obj, ct, frame_of_reference_uid)
        except VoiError as exc:  # e.g. drawn on another CT: the VOIs are unusable, the scan is not
            checks.append(
                qa_row(
                    CheckResult("voi_reference", FAIL, "unusable", "VOIs on this CT", str(exc)),
                    "study",
                    study_id,
                    **cols,
                )
            )
            continue
        for name, mask in raw.items():
            try:
                tg = config.map_voi_name(name, site_id)
            except ConfigError as exc:
                checks.append(
                    qa_row(
                        CheckResult("voi_name", FAIL, "unmapped", "TG-263 or mapped", str(exc)),
                        "study",
                        study_id,
                        **cols,
                    )
                )
                continue
            vois[tg] = np.logical_or(vois[tg], mask) if tg in vois else mask
    return vois


def _referenced_frame_of_reference(obj) -> str | None:
    """The CT frame of reference a structure set or segmentation was drawn on."""
    if getattr(obj, "Modality", "") == "SEG":
        return str(getattr(obj, "FrameOfReferenceUID", "") or "") or None
    seq = getattr(obj, "ReferencedFrameOfReferenceSequence", None)
    return str(seq[0].FrameOfReferenceUID) if seq else None


@task(name="attach-segmentation", retries=2, retry_delay_seconds=2)
def attach_segmentation(
    config: TrialConfig, site_id: str, subject_id: str, study_id: str, study_dir: str
) -> SegmentationResult:
    """VOIs sent in a study of their own (RTSTRUCT/SEG only) join the time point whose CT they
    were drawn on (same frame of reference).

    Returns
    -------
    SegmentationResult
        The cycle and study id of the time point that received VOIs (``None`` when no
        received CT matches), and the qa rows.
    """
    store = product_store(config)
    study = load_study(study_dir)
    cols = {"subject_id": subject_id, "study_id": study_id}
    checks: list[dict] = []
    cycle: int | None = None
    target_study_id: str | None = None
    by_for = {
        m.ct_frame_of_reference_uid: m for m in store.timepoints(site_id, subject_id) if m.ct_frame_of_reference_uid
    }
    for obj in study.rtstructs + study.segs:
        uid = _referenced_frame_of_reference(obj)
        meta = by_for.get(uid)
        if meta is None:
            checks.append(
                qa_row(
                    CheckResult(
                        "voi_reference",
                        FAIL,
                        "no matching CT",
                        "a received time point's CT",
                        "segmentation drawn on a CT this subject's time points do not have "
                        "(not received yet, or another patient): VOIs not used",
                    ),
                    "study",
                    study_id,
                    **cols,
                )
            )
            continue
        ct = store.ct(meta)
        vois = {k: sitk.GetArrayFromImage(v).astype(bool) for k, v in store.vois(meta).items()}
        vois.update(_mapped_vois(config, site_id, [obj], ct, uid, checks, study_id, cols))
        meta = dataclasses.replace(meta, voi_names=sorted(vois))
        store.save_timepoint(meta, store.spect(meta), ct, vois or None)
        cycle, target_study_id = meta.cycle, meta.study_id
    return SegmentationResult(checks, cycle, target_study_id)


@dataclass(frozen=True)
class _CalibrationInUse:
    """The calibration a time point is quantified with, as recorded in its metadata."""

    cal: Calibration
    cal_id: str
    status: str
    rel: float
    registry_value: float


def _protocol_checks(
    config: TrialConfig, site_id: str, study: LoadedStudy, study_id: str, cols: dict
) -> tuple[NmHeader, list[dict]]:
    """The NM header and the qa rows of its reconstruction checked against the protocol."""
    site = next((s for s in config.sites if s.id == site_id), None)
    header = parse_nm_header(study.nm, site.nm_units if site else None)
    camera = site.camera_profile(header.manufacturer, header.model) if site else None
    checks = [qa_row(c, "study", study_id, **cols) for c in check_reconstruction(header, config.protocol, camera)]
    return header, checks


def _study_row(study_id: str, subject_id: str, header: NmHeader, n_instances: int, checks: list[dict]) -> dict:
    """The ``studies`` row of a patient scan (protocol-compliant when no check so far failed)."""
    return {
        "study_id": study_id,
        "subject_id": subject_id,
        "kind": "patient",
        "camera_id": header.camera_id,
        "acquired_at": header.acquisition_start.replace(tzinfo=UTC) if header.acquisition_start else None,
        "t_h": header.hours_after_administration,
        "n_instances": n_instances,
        "protocol_compliant": all(c["status"] != FAIL for c in checks),
    }


def _untimed(study_row: dict, checks: list[dict], study_id: str, cols: dict) -> TimepointResult:
    """The failed result of a scan without acquisition or administration date-time."""
    checks.append(
        qa_row(
            CheckResult(
                "timing",
                FAIL,
                "missing",
                "acquisition and administration date-times",
                "cannot place the scan in time: no acquisition or administration date-time",
            ),
            "study",
            study_id,
            **cols,
        )
    )
    return TimepointResult(
        study_row,
        checks,
        None,
        failed="the scan cannot be placed in time (no acquisition "
        "or administration date-time): correct the header at the site and re-send",
    )


def _counts_checks(
    header: NmHeader, values: np.ndarray, t_h: float, nuc_name: str, study_id: str, cols: dict
) -> list[dict]:
    """The counts-plausibility qa row of a reconstruction in counts (none for other units)."""
    if not (header.units == "CNTS" and header.acquisition_duration_s):
        return []
    check = check_counts_plausible(
        float(values.sum()),
        header.administered_activity_mbq,
        t_h,
        header.acquisition_duration_s,
        SENSITIVITY_RANGE_CPS_PER_MBQ,
        nuc_name,
    )
    return [qa_row(check, "study", study_id, **cols)]


def _calibration_check(cal: Calibration | None, status: str, camera_id: str, validity_days: int) -> CheckResult:
    """The ``calibration_validity`` check of the calibration found for a scan."""
    return CheckResult(
        "calibration_validity",
        {"valid": PASS, "expired": WARN, "missing": FAIL}[status],
        f"{status} ({calibration_id(cal)})" if cal else status,
        f"a calibration of camera {camera_id} within {validity_days} days before the scan",
        {
            "valid": "calibration valid",
            "expired": "calibration expired: doses computed with it are flagged",
            "missing": "camera never calibrated for this radionuclide before the scan: "
            "the time point is not quantified",
        }[status],
    )


def _calibration_in_use(
    config: TrialConfig, site_id: str, header: NmHeader, nuc_name: str
) -> tuple[_CalibrationInUse | None, CheckResult]:
    """The scan's calibration (vendor Bq/mL at face value when cross-calibration is off) and its check."""
    cal, status = calibration_for(
        calibration_history(config, header.camera_id, site_id),
        site_id,
        header.camera_id,
        nuc_name,
        header.acquisition_start,
        config.calibration.validity_days,
    )
    cal_check = _calibration_check(cal, status, header.camera_id, config.calibration.validity_days)
    if cal is None:
        return None, cal_check
    cal_id = calibration_id(cal)
    rel = (cal.sd / cal.value) if cal.sd and cal.value else 0.0  # of the phantom calibration, in both arms
    registry_value = cal.value
    if not config.calibration.cross_calibration and cal.kind == "vendor_scale_factor":
        cal = dataclasses.replace(cal, vendor_scale_factor=1.0)
        cal_id += FACE_VALUE_SUFFIX
        cal_check = dataclasses.replace(
            cal_check,
            status=WARN,
            value_found=f"{status} ({cal_id})",
            message="cross-calibration switched off: the vendor's Bq/mL taken at face value",
        )
    return _CalibrationInUse(cal, cal_id, status, rel, registry_value), cal_check


def _waiting_for_calibration(study_row: dict, checks: list[dict], camera_id: str, nuc_name: str) -> TimepointResult:
    """The result of a scan whose camera has no calibration yet."""
    return TimepointResult(
        study_row,
        checks,
        None,
        waiting_for=(
            f"calibration of camera {camera_id} for {nuc_name}: send the site's uniform-cylinder phantom "
            "scan (with its fill-log row); the time point is re-processed when it arrives"
        ),
    )


def _to_spect(
    image: sitk.Image, values: np.ndarray, header: NmHeader, half_life_s: float, cal: Calibration
) -> sitk.Image:
    """The reconstruction quantified to Bq/mL, as a float32 image on the reconstruction's grid."""
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    bqml = to_bq_per_ml(
        values,
        header.units or "",
        voxel_ml,
        header.acquisition_duration_s,
        half_life_s,
        cal.sensitivity_cps_per_mbq,
        cal.vendor_scale_factor,
    )
    spect = sitk.GetImageFromArray(bqml.astype(np.float32))
    spect.CopyInformation(image)
    return spect


def _study_vois(
    config: TrialConfig,
    site_id: str,
    study: LoadedStudy,
    image: sitk.Image,
    checks: list[dict],
    study_id: str,
    cols: dict,
) -> dict[str, np.ndarray]:
    """TG-263 name -> mask from the study's own RTSTRUCT/SEG; VOI and FOV problems become qa rows in ``checks``."""
    vois = (
        _mapped_vois(config, site_id, study.rtstructs + study.segs, study.ct, None, checks, study_id, cols)
        if study.ct is not None
        else {}
    )
    if vois:
        masks = {}
        for k, m in vois.items():
            img = sitk.GetImageFromArray(m.astype(np.uint8))
            img.CopyInformation(study.ct)
            masks[k] = img
        checks += [qa_row(c, "study", study_id, **cols) for c in check_fov_covers_vois(image, masks)]
    return vois


def _timepoint_meta(
    site_id: str,
    study_row: dict,
    header: NmHeader,
    nuc_name: str,
    used: _CalibrationInUse,
    vois: dict[str, np.ndarray],
    ct_frame_of_reference_uid: str | None,
    others: list[TimePointMeta],
) -> TimePointMeta:
    """The metadata of a quantified time point, its cycle ranked among the subject's ``others``."""
    admin = header.administration_datetime
    return TimePointMeta(
        site_id=site_id,
        subject_id=study_row["subject_id"],
        study_id=study_row["study_id"],
        camera_id=header.camera_id,
        acquisition_start=header.acquisition_start,
        administration_datetime=admin,
        administered_activity_mbq=header.administered_activity_mbq,
        radionuclide=nuc_name,
        t_h=float(study_row["t_h"]),
        cycle=_cycle_of(admin, others),
        calibration_id=used.cal_id,
        calibration_status=used.status,
        calibration_rel=float(used.rel) if math.isfinite(used.rel) else 0.0,
        rc_fwhm_mm=used.cal.rc_fwhm_mm,
        rc_fwhm_source=used.cal.rc_fwhm_source,
        protocol_compliant=study_row["protocol_compliant"],
        voi_names=sorted(vois),
        ct_frame_of_reference_uid=ct_frame_of_reference_uid,
        calibration_value=used.registry_value,
    )


@task(name="quantify-timepoint", retries=2, retry_delay_seconds=2)
def quantify_timepoint(
    config: TrialConfig, site_id: str, subject_id: str, study_id: str, study_dir: str
) -> TimepointResult:
    """Check the reconstruction against the protocol and quantify it to Bq/mL.

    Returns
    -------
    TimepointResult
        The studies and qa_checks rows and the quantified time point, or why there is none.
    """
    store = product_store(config)
    study = load_study(study_dir)
    if study.nm is None:
        raise DicomInputError("patient study without an NM reconstruction")
    cols = {"subject_id": subject_id, "study_id": study_id}
    header, checks = _protocol_checks(config, site_id, study, study_id, cols)
    image = nm_to_image(study.nm)
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    nuc_name = normalise_radionuclide(header.radionuclide) or config.protocol.radionuclide
    nuc = nuclide(nuc_name)
    half_life_s = header.radionuclide_half_life_s or nuc.half_life_h * 3600.0
    study_row = _study_row(study_id, subject_id, header, study.n_files, checks)
    t_h = study_row["t_h"]
    if header.acquisition_start is None or header.administration_datetime is None or t_h is None:
        return _untimed(study_row, checks, study_id, cols)
    checks += _counts_checks(header, values, t_h, nuc_name, study_id, cols)

    used, cal_check = _calibration_in_use(config, site_id, header, nuc_name)
    checks.append(qa_row(cal_check, "study", study_id, **cols))
    if used is None:
        return _waiting_for_calibration(study_row, checks, header.camera_id, nuc_name)
    spect = _to_spect(image, values, header, half_life_s, used.cal)

    vois = _study_vois(config, site_id, study, image, checks, study_id, cols)
    others = [m for m in store.timepoints(site_id, subject_id) if m.study_id != study_id]
    meta = _timepoint_meta(site_id, study_row, header, nuc_name, used, vois, study.ct_frame_of_reference_uid, others)
    store.save_timepoint(meta, spect, study.ct, vois or None)
    study_row["cycle"] = meta.cycle
    for c in checks:
        c["cycle"] = meta.cycle
    return TimepointResult(study_row, checks, meta)
