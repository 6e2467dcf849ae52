"""The checks a phantom study gets before and around its analysis (pure, never raising).

Every function returns :class:`~rntflow.core.qa.CheckResult` rows (``pass`` / ``warn`` /
``fail``) for :mod:`rntflow.harmonization.phantom_study`, which lists the check names.

Times
-----
The listener de-identifies with a trial-wide whole-day date shift, so the fill log's
``reference_datetime`` (real calendar date) cannot be compared with the DICOM's shifted
acquisition time. The activity reference time is therefore the header's
``administration_datetime`` (RadiopharmaceuticalStartDateTime: set to the fill reference
time by the site and shifted together with the acquisition time, so the decay interval
is exact). A header without it gives a ``fail`` (no fallback to the fill log). The fill
log supplies only the activity, the volume and the sphere-to-background ratio; its
reference time is used for a consistency check (same time of day, a whole number of days
apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rntflow.core.errors import CalibrationError, RntflowError
from rntflow.core.fills import PhantomFill
from rntflow.core.qa import CheckResult
from rntflow.harmonization.calibration import Calibration
from rntflow.harmonization.headers import NmHeader, normalise_radionuclide
from rntflow.harmonization.nema import NemaResult
from rntflow.physics.decay import activity_at
from rntflow.physics.nuclides import nuclide

#: Header RadionuclideTotalDose vs fill-log activity: both transcribe the same dose-calibrator
#: reading, so a difference beyond rounding (far below 2 %) means one of them is mistyped.
ACTIVITY_AGREEMENT_PCT = 2.0
#: Tolerance (s) for the fill-log and header reference times to be a whole number of days apart.
WHOLE_DAY_TOLERANCE_S = 60.0


def _nuclide_key(name: str) -> str:
    return (normalise_radionuclide(name) or name).upper()


def _fmt_dt(value: datetime | None) -> str:
    return value.isoformat(sep=" ") if value is not None else "missing"


def header_half_life_s(header: NmHeader) -> float | None:
    """RadionuclideHalfLife, else the ICRP-107 half-life of the header's radionuclide."""
    if header.radionuclide_half_life_s is not None and header.radionuclide_half_life_s > 0:
        return header.radionuclide_half_life_s
    if header.radionuclide:
        try:
            return nuclide(header.radionuclide).half_life_h * 3600.0
        except RntflowError:
            return None
    return None


def decay_corrected_to_reference(header: NmHeader) -> bool:
    """A vendor Bq/mL image decay-corrected to administration (DecayCorrection ADMIN).

    Its values are concentrations at the activity reference time, not at acquisition
    start (``START``, what :mod:`rntflow.harmonization.cylinder` assumes); counts are never
    decay corrected.
    """
    return (header.units or "").upper() == "BQML" and (header.decay_correction or "").upper() == "ADMIN"


def _check_type(fill: PhantomFill, expected: str) -> CheckResult:
    if fill.phantom_type == expected:
        return CheckResult("phantom_type", "pass", fill.phantom_type, expected, "fill log row matches the analysis")
    return CheckResult(
        "phantom_type",
        "fail",
        str(fill.phantom_type),
        expected,
        f"fill log row {fill.subject_id} describes a {fill.phantom_type!r} phantom, not a {expected}",
    )


def _check_header(header: NmHeader, half_life_s: float | None) -> CheckResult:
    missing = []
    unit = (header.units or "").upper()
    if unit not in ("CNTS", "BQML"):
        missing.append(f"Units CNTS or BQML (found {header.units!r})")
    if header.acquisition_start is None:
        missing.append("AcquisitionDate/Time")
    if unit == "CNTS" and not header.acquisition_duration_s:
        missing.append("acquisition duration (RotationInformationSequence)")
    if half_life_s is None:
        missing.append("RadionuclideHalfLife (and no known radionuclide)")
    if header.camera_id is None:
        missing.append("Manufacturer/ManufacturerModelName/DeviceSerialNumber (camera id)")
    if header.radionuclide is None:
        missing.append("radionuclide (RadiopharmaceuticalInformationSequence)")
    expected = "units, acquisition start/duration, half-life, camera id, radionuclide"
    if missing:
        return CheckResult(
            "phantom_header", "fail", "missing: " + "; ".join(missing), expected, "header lacks " + "; ".join(missing)
        )
    return CheckResult(
        "phantom_header",
        "pass",
        f"{unit}, camera {header.camera_id}, {header.radionuclide}",
        expected,
        "header complete",
    )


def _check_scatter(header: NmHeader) -> CheckResult:
    exp = "scatter corrected"
    if header.scatter_corrected is None:
        return CheckResult(
            "phantom_scatter_correction",
            "warn",
            "unknown",
            exp,
            "CorrectedImage missing: cannot tell whether scatter was corrected",
        )
    if not header.scatter_corrected:
        return CheckResult(
            "phantom_scatter_correction",
            "warn",
            "not applied",
            exp,
            "no scatter correction: the result includes scatter and applies only to reconstructions made the same way",
        )
    return CheckResult("phantom_scatter_correction", "pass", "applied", exp, "scatter corrected")


def _check_reference_time(header: NmHeader, fill: PhantomFill) -> CheckResult:
    exp = "RadiopharmaceuticalStartDateTime before acquisition start"
    ref, acq = header.administration_datetime, header.acquisition_start
    if ref is None:
        return CheckResult(
            "phantom_reference_time",
            "fail",
            "missing",
            exp,
            "no activity reference time in the header (RadiopharmaceuticalStartDateTime): "
            "the activity at acquisition start cannot be computed",
        )
    if acq is None:
        return CheckResult(
            "phantom_reference_time",
            "fail",
            f"reference {_fmt_dt(ref)}, acquisition missing",
            exp,
            "header lacks AcquisitionDate/Time",
        )
    dt_h = (acq - ref).total_seconds() / 3600.0
    found = f"acquisition {dt_h:.3f} h after the reference time"
    if dt_h < 0:
        return CheckResult(
            "phantom_reference_time",
            "fail",
            found,
            exp,
            f"acquisition starts {-dt_h:.2f} h before the activity reference time",
        )
    if fill.reference_datetime is not None:
        offset_s = (ref - fill.reference_datetime).total_seconds()
        off_day_s = abs(offset_s - 86400.0 * round(offset_s / 86400.0))
        if off_day_s > WHOLE_DAY_TOLERANCE_S:
            return CheckResult(
                "phantom_reference_time",
                "warn",
                found,
                exp,
                f"header reference time {ref:%H:%M:%S} and fill log {fill.reference_datetime:%H:%M:%S} "
                f"differ by {off_day_s / 60:.0f} min beyond whole days (the de-identification "
                "shifts whole days only): check the fill log; the header time is used",
            )
    return CheckResult("phantom_reference_time", "pass", found, exp, "header reference time used")


def _check_activity(header: NmHeader, fill: PhantomFill, half_life_s: float | None) -> tuple[CheckResult, float | None]:
    exp = "fill log total activity > 0 MBq"
    a = fill.total_activity_mbq
    if a is None or not a > 0:
        return CheckResult(
            "phantom_activity",
            "fail",
            f"{a!r} MBq",
            exp,
            f"fill log row {fill.subject_id} has no total activity: no activity information",
        ), None
    ref, acq = header.administration_datetime, header.acquisition_start
    if ref is None or acq is None or half_life_s is None:
        return CheckResult(
            "phantom_activity",
            "fail",
            f"{a:g} MBq at an unknown time",
            exp,
            "activity cannot be decayed to acquisition start (reference time, acquisition start or half-life missing)",
        ), None
    try:
        a0 = activity_at(a, ref, acq, half_life_s)
    except (CalibrationError, OverflowError) as exc:
        return CheckResult("phantom_activity", "fail", f"{a:g} MBq", exp, str(exc)), None
    found = f"{a:g} MBq at reference, {a0:.4g} MBq at acquisition start"
    hdr_a = header.administered_activity_mbq
    if hdr_a is not None and abs(hdr_a - a) > ACTIVITY_AGREEMENT_PCT / 100.0 * a:
        return CheckResult(
            "phantom_activity",
            "warn",
            found,
            exp + f", header within {ACTIVITY_AGREEMENT_PCT:g} %",
            f"header RadionuclideTotalDose {hdr_a:g} MBq differs from the fill log {a:g} MBq "
            f"by {100 * (hdr_a - a) / a:+.1f} %: the fill log is used",
        ), a0
    return CheckResult("phantom_activity", "pass", found, exp, "fill log activity decayed to acquisition start"), a0


def fail_from_exception(exc: Exception, default_check: str, expected: str, fov_aware: bool = True) -> CheckResult:
    """A CheckResult for an exception from the pure analysis.

    The pure code raises :class:`CalibrationError` for every input problem; the ones about
    the field of view (its messages say "field of view") are filed as ``phantom_fov``.
    """
    msg = str(exc) if isinstance(exc, RntflowError) else f"{type(exc).__name__}: {exc}"
    check = "phantom_fov" if fov_aware and "field of view" in msg else default_check
    return CheckResult(
        check, "fail", "analysis failed", expected if check == default_check else "phantom inside FOV", msg
    )


def common_checks(
    header: NmHeader, fill: PhantomFill, phantom_type: str
) -> tuple[list[CheckResult], float | None, float | None]:
    """Checks every phantom scan gets (type, header, scatter, reference time, activity),
    the half-life (s) and the activity at acquisition start (MBq, None when unknown)."""
    checks = [_check_type(fill, phantom_type)]
    half_life_s = header_half_life_s(header)
    checks.append(_check_header(header, half_life_s))
    checks.append(_check_scatter(header))
    checks.append(_check_reference_time(header, fill))
    activity_check, a0 = _check_activity(header, fill, half_life_s)
    checks.append(activity_check)
    return checks, half_life_s, a0


def check_calibration(header: NmHeader, calibration: Calibration | None, protocol_name: str) -> CheckResult:
    """``phantom_calibration``: a uniform-cylinder calibration of this camera, nuclide and unit kind."""
    unit = (header.units or "").upper()
    need = "sensitivity" if unit == "CNTS" else "vendor_scale_factor"
    exp = f"{need} calibration of camera {header.camera_id}, {header.radionuclide}"
    if calibration is None:
        return CheckResult(
            "phantom_calibration",
            "fail",
            "none",
            exp,
            f"no uniform-cylinder calibration for camera {header.camera_id}: RCs need the image in Bq/mL",
        )
    problems = []
    if calibration.camera_id != header.camera_id:
        problems.append(f"calibration is of camera {calibration.camera_id}")
    if header.radionuclide and _nuclide_key(calibration.radionuclide) != _nuclide_key(header.radionuclide):
        problems.append(f"calibration is for {calibration.radionuclide}")
    if unit in ("CNTS", "BQML") and calibration.kind != need:
        problems.append(f"a {unit} image needs a {need} calibration, got {calibration.kind}")
    # identified by its scan time, not its registry version: a re-analysed phantom bumps the
    # version, and the check's result must not change when nothing about the camera did
    found = (
        f"{calibration.kind} {calibration.value:.4g} "
        f"(camera {calibration.camera_id}, {calibration.valid_from:%Y-%m-%d %H:%M})"
    )
    if problems:
        return CheckResult("phantom_calibration", "fail", found, exp, "; ".join(problems))
    if calibration.protocol != protocol_name:
        return CheckResult(
            "phantom_calibration",
            "warn",
            found,
            exp,
            f"calibration made for protocol {calibration.protocol!r}, phantom analysed for {protocol_name!r}",
        )
    return CheckResult("phantom_calibration", "pass", found, exp, "calibration of this camera used")


def check_nema_fill(fill: PhantomFill) -> CheckResult:
    """``phantom_fill``: the NEMA fill has a background volume (mL) and a sphere-to-background ratio."""
    exp = "background volume > 0 mL and sphere-to-background ratio > 1"
    probs = []
    if fill.volume_ml is None or not fill.volume_ml > 0:
        probs.append(f"background volume {fill.volume_ml!r} mL")
    if fill.sphere_to_background_ratio is None or not fill.sphere_to_background_ratio > 1:
        probs.append(f"sphere-to-background ratio {fill.sphere_to_background_ratio!r}")
    if probs:
        return CheckResult(
            "phantom_fill",
            "fail",
            "; ".join(probs),
            exp,
            f"fill log row {fill.subject_id}: " + " and ".join(probs) + " missing or invalid",
        )
    return CheckResult(
        "phantom_fill", "pass", f"{fill.volume_ml:g} mL, SBR {fill.sphere_to_background_ratio:g}", exp, "fill complete"
    )


def band_check(nema: NemaResult, band: Mapping[float, tuple[float, float]]) -> CheckResult:
    """``nema_rc_band``: unfiltered RCs against the band {diameter (mm): (min RC, max RC)}."""
    rc = nema.rc_by_diameter()
    below, above, parts = [], [], []
    for d, (lo, hi) in sorted(band.items()):
        key = min(rc, key=lambda k: abs(k - d))
        if abs(key - d) >= 0.5:
            return CheckResult(
                "nema_rc_band",
                "fail",
                "sphere missing",
                "trial reference_rc_band",
                f"reference_rc_band names a {d:g} mm sphere the phantom does not have",
            )
        v = rc[key]
        parts.append(f"{d:g} mm {v:.3f}")
        if v < lo:
            below.append(f"{d:g}")
        elif v > hi:
            above.append(f"{d:g}")
    found = ", ".join(parts)
    exp = ", ".join(f"{d:g} mm [{lo:g}-{hi:g}]" for d, (lo, hi) in sorted(band.items()))
    if below:
        return CheckResult(
            "nema_rc_band",
            "fail",
            found,
            exp,
            f"RC below the reference band for {', '.join(below)} mm: the site is blurrier than the reference",
        )
    if above:
        return CheckResult(
            "nema_rc_band",
            "warn",
            found,
            exp,
            f"RC above the reference band for {', '.join(above)} mm: a harmonising filter is needed",
        )
    return CheckResult("nema_rc_band", "pass", found, exp, "RCs within the reference band")
