"""One phantom study (its NM reconstruction and the fill-log row) to a calibration result.

This is the glue between a site's QC phantom scan and the pure analysis in
:mod:`harmonization.phantom`: it takes the parsed NM header, the image and the
physicist's fill-log row, decides the true activity, runs the analysis and turns every
problem into a :class:`~harmonization.recon_check.CheckResult` (``pass`` / ``warn`` /
``fail``). Nothing here reads files, talks to a network or knows about Prefect; bad input
gives ``fail`` checks and ``calibration=None``, never an exception.

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
apart). A vendor Bq/mL image with DecayCorrection ``ADMIN`` is compared with the activity
at the reference time, every other image with the activity at acquisition start.

Checks (``CheckResult.check``)
------------------------------
``phantom_type``           fill row describes the phantom this function analyses
``phantom_header``         header has units, acquisition start/duration, half-life, camera, nuclide
``phantom_scatter_correction``  warn when the reconstruction is not scatter corrected
``phantom_reference_time`` header reference time present, before the acquisition, consistent with the fill log
``phantom_activity``       fill activity present; header RadionuclideTotalDose agrees with it
``phantom_fill``           (NEMA) background volume and sphere-to-background ratio present
``phantom_calibration``    (NEMA) a uniform-cylinder calibration of this camera, nuclide and unit kind
``phantom_fov``            phantom / spheres inside the field of view
``phantom_volume``         (cylinder) thresholded volume agrees with the fill log
``phantom_sensitivity``    (cylinder) sensitivity or vendor scale factor derived
``nema_spheres``           (NEMA) spheres located and RCs measured
``nema_rc_band``           (NEMA) unfiltered RCs against the trial's reference band
``harmonising_filter``     (NEMA) Gaussian post-filter that brings the RCs into the band
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage

from rntflow.harmonization.calibration import Calibration
from rntflow.harmonization.headers import NmHeader, normalise_radionuclide
from rntflow.harmonization.phantom import NEMA_SPHERE_RING_RADIUS_MM, HarmonisingFilter, NemaResult, UniformCylinderResult, analyse_nema_phantom, analyse_uniform_cylinder, harmonising_filter, measure_sphere_rcs, nema_true_concentrations, parse_rc_band, to_bq_per_ml
from rntflow.physics.recovery import FWHM_PER_SIGMA
from rntflow.physics.decay import activity_at
from rntflow.harmonization.recon_check import CheckResult
from rntflow.core.errors import CalibrationError, RntflowError
from rntflow.core.fills import PHANTOM_TYPES, PhantomFill, PhantomType


#: Header RadionuclideTotalDose vs fill-log activity: both transcribe the same dose-calibrator
#: reading, so a difference beyond rounding (far below 2 %) means one of them is mistyped.
ACTIVITY_AGREEMENT_PCT = 2.0
#: Thresholded (50 % of plateau) cylinder volume vs the fill log: the threshold reproduces
#: the physical volume within ~5 % at 10-16 mm FWHM (tests/harmonization/test_phantom.py);
#: beyond 10 % the phantom was not full or the wrong phantom was scanned.
VOLUME_AGREEMENT_PCT = 10.0
#: A calibration whose own relative standard uncertainty exceeds this is only a warning:
#: 2 % is the trial's accuracy target for sensitivity.
MAX_REL_UNCERTAINTY = 0.02
#: Tolerance (s) for the fill-log and header reference times to be a whole number of days apart.
WHOLE_DAY_TOLERANCE_S = 60.0


# --------------------------------------------------------------------------- data




@dataclass(frozen=True)
class SphereRow:
    """One NEMA sphere: exactly the warehouse ``phantom_results`` columns it fills.

    ``recovery_coefficient`` = sphere VOI mean / true sphere concentration (unfiltered);
    ``recovery_coefficient_harmonised`` = the same after the harmonising filter (equal to
    the unfiltered RC when no filter is needed, ``None`` when harmonisation failed);
    ``in_reference_band`` refers to the unfiltered RC (``None`` for a sphere the band
    does not cover). Background-relative RCs, VOI means and centres are in
    ``PhantomCalibrationResult.nema.spheres``, the band in ``harmonising_filter.band``.
    """

    sphere_diameter_mm: float
    sphere_volume_ml: float
    recovery_coefficient: float
    recovery_coefficient_harmonised: float | None
    in_reference_band: bool | None


@dataclass(frozen=True)
class PhantomCalibrationResult:
    """What one phantom study produced.

    Attributes
    ----------
    subject_id, site_id, phantom_type : str
    calibration : Calibration or None
        Uniform cylinder: the new calibration (``version`` 0; assigned by
        :func:`harmonization.calibration.register_calibration`). NEMA: the calibration it
        was given with ``rc_fwhm_mm``, ``rc_amplitude``, ``rc_sbr`` and ``filter_fwhm_mm``
        filled (``filter_fwhm_mm`` is ``None`` when harmonisation failed). ``None`` when
        the study could not be analysed (see ``checks``).
    checks : tuple of CheckResult
        In the order they were made (see module docstring for the names).
    activity_at_acquisition_start_mbq : float or None
        Fill activity decayed from the header reference time to acquisition start.
    spheres : tuple of SphereRow
        NEMA only, in increasing diameter.
    harmonising_filter : HarmonisingFilter or None
        NEMA only; ``status`` ``pass`` / ``filter`` / ``fail``, ``fwhm_mm``, ``message``.
    uniform_cylinder : UniformCylinderResult or None
    nema : NemaResult or None
        The raw analysis results, for reporting (:mod:`harmonization.report`).
    """

    subject_id: str
    site_id: str
    phantom_type: str
    calibration: Calibration | None
    checks: tuple[CheckResult, ...]
    activity_at_acquisition_start_mbq: float | None = None
    spheres: tuple[SphereRow, ...] = ()
    harmonising_filter: HarmonisingFilter | None = None
    uniform_cylinder: UniformCylinderResult | None = None
    nema: NemaResult | None = None

    @property
    def status(self) -> str:
        """Worst check status: ``fail`` > ``warn`` > ``pass``."""
        return _worst(self.checks)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.status == "fail")

    def check(self, name: str) -> CheckResult | None:
        """The (first) check called ``name``, or ``None``."""
        return next((c for c in self.checks if c.check == name), None)


# --------------------------------------------------------------------------- helpers


def _worst(checks: Sequence[CheckResult]) -> str:
    states = {c.status for c in checks}
    return "fail" if "fail" in states else "warn" if "warn" in states else "pass"


def _nuclide_key(name: str) -> str:
    return (normalise_radionuclide(name) or name).upper()


def _fmt_dt(value: datetime | None) -> str:
    return value.isoformat(sep=" ") if value is not None else "missing"


def _half_life_s(header: NmHeader) -> float | None:
    """RadionuclideHalfLife, else the ICRP-107 half-life of the header's radionuclide."""
    if header.radionuclide_half_life_s is not None and header.radionuclide_half_life_s > 0:
        return header.radionuclide_half_life_s
    if header.radionuclide:
        from rntflow.physics.nuclides import nuclide

        try:
            return nuclide(header.radionuclide).half_life_h * 3600.0
        except RntflowError:
            return None
    return None


def _decay_corrected_to_reference(header: NmHeader) -> bool:
    """A vendor Bq/mL image decay-corrected to administration (DecayCorrection ADMIN).

    Its values are concentrations at the activity reference time, not at acquisition
    start (``START``, what :mod:`harmonization.phantom` assumes); counts are never
    decay corrected.
    """
    return (header.units or "").upper() == "BQML" and (header.decay_correction or "").upper() == "ADMIN"


def _check_type(fill: PhantomFill, expected: str) -> CheckResult:
    if fill.phantom_type == expected:
        return CheckResult("phantom_type", "pass", fill.phantom_type, expected, "fill log row matches the analysis")
    return CheckResult("phantom_type", "fail", str(fill.phantom_type), expected,
                       f"fill log row {fill.subject_id} describes a {fill.phantom_type!r} phantom, "
                       f"not a {expected}")


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
        return CheckResult("phantom_header", "fail", "missing: " + "; ".join(missing), expected,
                           "header lacks " + "; ".join(missing))
    return CheckResult("phantom_header", "pass", f"{unit}, camera {header.camera_id}, {header.radionuclide}",
                       expected, "header complete")


def _check_scatter(header: NmHeader) -> CheckResult:
    exp = "scatter corrected"
    if header.scatter_corrected is None:
        return CheckResult("phantom_scatter_correction", "warn", "unknown", exp,
                           "CorrectedImage missing: cannot tell whether scatter was corrected")
    if not header.scatter_corrected:
        return CheckResult("phantom_scatter_correction", "warn", "not applied", exp,
                           "no scatter correction: the result includes scatter and applies only to "
                           "reconstructions made the same way")
    return CheckResult("phantom_scatter_correction", "pass", "applied", exp, "scatter corrected")


def _check_reference_time(header: NmHeader, fill: PhantomFill) -> CheckResult:
    exp = "RadiopharmaceuticalStartDateTime before acquisition start"
    ref, acq = header.administration_datetime, header.acquisition_start
    if ref is None:
        return CheckResult("phantom_reference_time", "fail", "missing", exp,
                           "no activity reference time in the header (RadiopharmaceuticalStartDateTime): "
                           "the activity at acquisition start cannot be computed")
    if acq is None:
        return CheckResult("phantom_reference_time", "fail", f"reference {_fmt_dt(ref)}, acquisition missing", exp,
                           "header lacks AcquisitionDate/Time")
    dt_h = (acq - ref).total_seconds() / 3600.0
    found = f"acquisition {dt_h:.3f} h after the reference time"
    if dt_h < 0:
        return CheckResult("phantom_reference_time", "fail", found, exp,
                           f"acquisition starts {-dt_h:.2f} h before the activity reference time")
    if fill.reference_datetime is not None:
        offset_s = (ref - fill.reference_datetime).total_seconds()
        off_day_s = abs(offset_s - 86400.0 * round(offset_s / 86400.0))
        if off_day_s > WHOLE_DAY_TOLERANCE_S:
            return CheckResult("phantom_reference_time", "warn", found, exp,
                               f"header reference time {ref:%H:%M:%S} and fill log {fill.reference_datetime:%H:%M:%S} "
                               f"differ by {off_day_s / 60:.0f} min beyond whole days (the de-identification "
                               "shifts whole days only): check the fill log; the header time is used")
    return CheckResult("phantom_reference_time", "pass", found, exp, "header reference time used")


def _check_activity(header: NmHeader, fill: PhantomFill, half_life_s: float | None
                    ) -> tuple[CheckResult, float | None]:
    exp = "fill log total activity > 0 MBq"
    a = fill.total_activity_mbq
    if a is None or not a > 0:
        return CheckResult("phantom_activity", "fail", f"{a!r} MBq", exp,
                           f"fill log row {fill.subject_id} has no total activity: no activity information"), None
    ref, acq = header.administration_datetime, header.acquisition_start
    if ref is None or acq is None or half_life_s is None:
        return CheckResult("phantom_activity", "fail", f"{a:g} MBq at an unknown time", exp,
                           "activity cannot be decayed to acquisition start (reference time, acquisition "
                           "start or half-life missing)"), None
    try:
        a0 = activity_at(a, ref, acq, half_life_s)
    except (CalibrationError, OverflowError) as exc:
        return CheckResult("phantom_activity", "fail", f"{a:g} MBq", exp, str(exc)), None
    found = f"{a:g} MBq at reference, {a0:.4g} MBq at acquisition start"
    hdr_a = header.administered_activity_mbq
    if hdr_a is not None and abs(hdr_a - a) > ACTIVITY_AGREEMENT_PCT / 100.0 * a:
        return CheckResult("phantom_activity", "warn", found, exp + f", header within {ACTIVITY_AGREEMENT_PCT:g} %",
                           f"header RadionuclideTotalDose {hdr_a:g} MBq differs from the fill log {a:g} MBq "
                           f"by {100 * (hdr_a - a) / a:+.1f} %: the fill log is used"), a0
    return CheckResult("phantom_activity", "pass", found, exp, "fill log activity decayed to acquisition start"), a0


def _fail_from_exception(exc: Exception, default_check: str, expected: str, fov_aware: bool = True) -> CheckResult:
    """A CheckResult for an exception from the pure analysis.

    The pure code raises :class:`CalibrationError` for every input problem; the ones about
    the field of view (its messages say "field of view") are filed as ``phantom_fov``.
    """
    msg = str(exc) if isinstance(exc, RntflowError) else f"{type(exc).__name__}: {exc}"
    check = "phantom_fov" if fov_aware and "field of view" in msg else default_check
    return CheckResult(check, "fail", "analysis failed", expected if check == default_check else "phantom inside FOV",
                       msg)


def _sphere_clearance_mm(shape: Sequence[int], spacing_mm: Sequence[float], nema: NemaResult) -> float:
    """Smallest distance (mm) between a sphere's surface and the FOV faces."""
    sp = np.asarray(spacing_mm, dtype=float)
    lo = -0.5 * sp
    hi = (np.asarray(shape) - 0.5) * sp
    out = math.inf
    for s in nema.spheres:
        c = np.asarray(s.centre_zyx_mm)
        out = min(out, float(np.min(c - lo)) - s.diameter_mm / 2, float(np.min(hi - c)) - s.diameter_mm / 2)
    return out


# --------------------------------------------------------------------------- uniform cylinder


def _common_checks(header: NmHeader, fill: PhantomFill, phantom_type: str
                   ) -> tuple[list[CheckResult], float | None, float | None]:
    """Checks every phantom scan gets (type, header, scatter, reference time, activity),
    the half-life (s) and the activity at acquisition start (MBq, None when unknown)."""
    checks = [_check_type(fill, phantom_type)]
    half_life_s = _half_life_s(header)
    checks.append(_check_header(header, half_life_s))
    checks.append(_check_scatter(header))
    checks.append(_check_reference_time(header, fill))
    activity_check, a0 = _check_activity(header, fill, half_life_s)
    checks.append(activity_check)
    return checks, half_life_s, a0


def calibrate_uniform_cylinder(
    header: NmHeader,
    image_values: np.ndarray,
    spacing_mm: Sequence[float],
    fill: PhantomFill,
    *,
    site_id: str,
    protocol_name: str,
    system_fwhm_mm: float | None = None,
    activity_rel_uncertainty: float = 0.0,
) -> PhantomCalibrationResult:
    """Camera calibration from one uniform-cylinder study.

    Parameters
    ----------
    header : NmHeader
        :func:`harmonization.headers.parse_nm_header` of the phantom's NM reconstruction.
    image_values : ndarray (z, y, x)
        The reconstruction in real-world units (counts for ``CNTS``, Bq/mL for ``BQML``),
        e.g. ``SimpleITK.GetArrayFromImage(nm_to_image(ds))``.
    spacing_mm : (dz, dy, dx)
        Voxel spacing (mm), in array order (a SimpleITK spacing reversed).
    fill : PhantomFill
        The fill-log row (activity and volume are used).
    site_id, protocol_name : str
        Copied into the :class:`Calibration`.
    system_fwhm_mm : float, optional
        System resolution (mm) for the spill-out margin of the VOI (3 FWHM); without it
        the pure code's 40 mm margin is used.
    activity_rel_uncertainty : float
        Relative standard uncertainty of the dose-calibrator activity, added in quadrature.

    Returns
    -------
    PhantomCalibrationResult
        ``calibration`` has ``sensitivity_cps_per_mbq`` (CNTS, cps/MBq) or
        ``vendor_scale_factor`` (BQML, measured/true), ``sd`` its standard uncertainty,
        ``valid_from`` the header's acquisition start, ``camera_id`` and ``radionuclide``
        from the header, ``version`` 0. It is ``None`` when any check fails.
    """
    checks, half_life_s, a0 = _common_checks(header, fill, "uniform_cylinder")

    def done(calibration=None, uniform=None) -> PhantomCalibrationResult:
        return PhantomCalibrationResult(fill.subject_id, site_id, "uniform_cylinder", calibration, tuple(checks),
                                        a0, uniform_cylinder=uniform)

    if _worst(checks) == "fail":
        return done()

    unit = (header.units or "").upper()
    # the true activity at the time the image values refer to
    a_image = fill.total_activity_mbq if _decay_corrected_to_reference(header) else a0
    try:
        res = analyse_uniform_cylinder(
            image_values, spacing_mm, header.acquisition_duration_s, a_image, unit, half_life_s,
            system_fwhm_mm=system_fwhm_mm, activity_rel_uncertainty=activity_rel_uncertainty,
        )
    except (CalibrationError, ValueError, TypeError, ArithmeticError) as exc:
        checks.append(_fail_from_exception(exc, "phantom_sensitivity", "sensitivity or vendor scale factor"))
        return done()

    if res.voi_clipped_by_fov:
        checks.append(CheckResult("phantom_fov", "warn", "VOI clipped by the FOV",
                                  "phantom + spill-out margin inside FOV",
                                  f"the {res.voi_margin_mm:.0f} mm spill-out margin reaches the FOV edge: "
                                  "counts may be lost"))
    else:
        checks.append(CheckResult("phantom_fov", "pass", "inside", "phantom + spill-out margin inside FOV",
                                  "phantom and spill-out margin inside the field of view"))

    if fill.volume_ml is None or not fill.volume_ml > 0:
        checks.append(CheckResult("phantom_volume", "warn", f"{res.phantom_volume_ml:.0f} mL measured",
                                  "fill log volume", "fill log has no volume: not compared"))
    else:
        dev = 100.0 * (res.phantom_volume_ml - fill.volume_ml) / fill.volume_ml
        ok = abs(dev) <= VOLUME_AGREEMENT_PCT
        checks.append(CheckResult(
            "phantom_volume", "pass" if ok else "warn", f"{res.phantom_volume_ml:.0f} mL ({dev:+.1f} %)",
            f"{fill.volume_ml:g} mL +- {VOLUME_AGREEMENT_PCT:g} %",
            "thresholded volume agrees with the fill log" if ok else
            "thresholded phantom volume disagrees with the fill log: phantom not full, or another phantom?"))

    rel = res.standard_uncertainty / res.value if res.value else math.inf
    name = "sensitivity" if unit == "CNTS" else "vendor scale factor"
    found = (f"{res.value:.4g} cps/MBq" if unit == "CNTS" else f"{res.value:.4f}") + f" (u = {100 * rel:.2f} %)"
    try:
        cal = Calibration(
            site_id=site_id, camera_id=header.camera_id, radionuclide=header.radionuclide, protocol=protocol_name,
            valid_from=header.acquisition_start,
            sensitivity_cps_per_mbq=res.sensitivity_cps_per_mbq, vendor_scale_factor=res.vendor_scale_factor,
            sd=res.standard_uncertainty,
        )
    except CalibrationError as exc:
        checks.append(CheckResult("phantom_sensitivity", "fail", found, f"{name} > 0", str(exc)))
        return done(None, res)
    if rel > MAX_REL_UNCERTAINTY:
        checks.append(CheckResult("phantom_sensitivity", "warn", found, f"u <= {100 * MAX_REL_UNCERTAINTY:g} %",
                                  f"{name} uncertainty above {100 * MAX_REL_UNCERTAINTY:g} %"))
    else:
        checks.append(CheckResult("phantom_sensitivity", "pass", found, f"u <= {100 * MAX_REL_UNCERTAINTY:g} %",
                                  f"{name} derived"))
    return done(cal, res)


# --------------------------------------------------------------------------- NEMA IEC body


def _check_calibration(header: NmHeader, calibration: Calibration | None, protocol_name: str) -> CheckResult:
    unit = (header.units or "").upper()
    need = "sensitivity" if unit == "CNTS" else "vendor_scale_factor"
    exp = f"{need} calibration of camera {header.camera_id}, {header.radionuclide}"
    if calibration is None:
        return CheckResult("phantom_calibration", "fail", "none", exp,
                           f"no uniform-cylinder calibration for camera {header.camera_id}: "
                           "RCs need the image in Bq/mL")
    problems = []
    if calibration.camera_id != header.camera_id:
        problems.append(f"calibration is of camera {calibration.camera_id}")
    if header.radionuclide and _nuclide_key(calibration.radionuclide) != _nuclide_key(header.radionuclide):
        problems.append(f"calibration is for {calibration.radionuclide}")
    if unit in ("CNTS", "BQML") and calibration.kind != need:
        problems.append(f"a {unit} image needs a {need} calibration, got {calibration.kind}")
    # identified by its scan time, not its registry version: a re-analysed phantom bumps the
    # version, and the check's result must not change when nothing about the camera did
    found = (f"{calibration.kind} {calibration.value:.4g} "
             f"(camera {calibration.camera_id}, {calibration.valid_from:%Y-%m-%d %H:%M})")
    if problems:
        return CheckResult("phantom_calibration", "fail", found, exp, "; ".join(problems))
    if calibration.protocol != protocol_name:
        return CheckResult("phantom_calibration", "warn", found, exp,
                           f"calibration made for protocol {calibration.protocol!r}, "
                           f"phantom analysed for {protocol_name!r}")
    return CheckResult("phantom_calibration", "pass", found, exp, "calibration of this camera used")


def _check_nema_fill(fill: PhantomFill) -> CheckResult:
    exp = "background volume > 0 mL and sphere-to-background ratio > 1"
    probs = []
    if fill.volume_ml is None or not fill.volume_ml > 0:
        probs.append(f"background volume {fill.volume_ml!r} mL")
    if fill.sphere_to_background_ratio is None or not fill.sphere_to_background_ratio > 1:
        probs.append(f"sphere-to-background ratio {fill.sphere_to_background_ratio!r}")
    if probs:
        return CheckResult("phantom_fill", "fail", "; ".join(probs), exp,
                           f"fill log row {fill.subject_id}: " + " and ".join(probs) + " missing or invalid")
    return CheckResult("phantom_fill", "pass", f"{fill.volume_ml:g} mL, SBR {fill.sphere_to_background_ratio:g}",
                       exp, "fill complete")


def analyse_nema_study(
    header: NmHeader,
    image_values: np.ndarray,
    spacing_mm: Sequence[float],
    fill: PhantomFill,
    *,
    site_id: str,
    calibration: Calibration | None,
    reference_rc_band: Mapping,
    protocol_name: str,
    ring_radius_mm: float = NEMA_SPHERE_RING_RADIUS_MM,
) -> PhantomCalibrationResult:
    """Recovery coefficients and harmonising filter from one NEMA IEC body study.

    Parameters
    ----------
    header : NmHeader
    image_values : ndarray (z, y, x)
        The reconstruction in real-world units (counts or vendor Bq/mL).
    spacing_mm : (dz, dy, dx)
    fill : PhantomFill
        Activity (everything in the phantom, MBq), background volume (mL) and
        sphere-to-background ratio are used.
    site_id : str
    calibration : Calibration or None
        This camera's uniform-cylinder calibration: its sensitivity (CNTS) or vendor
        scale factor (BQML) puts the image in Bq/mL with
        :func:`harmonization.phantom.to_bq_per_ml`. Without one the study is **not**
        analysed (``phantom_calibration`` fails), for BQML images too: an uncalibrated
        vendor scale would bias every RC and the harmonising filter by the scale error.
        It is not required to predate the NEMA scan (both phantoms are scanned the same
        day in either order).
    reference_rc_band : mapping
        ``TrialConfig.calibration.reference_rc_band`` (diameter mm -> (min, max) RC).
        Empty: RCs are still measured, ``nema_rc_band`` and ``harmonising_filter`` fail.
    protocol_name : str
        The trial protocol; a calibration made for another one is a ``warn``.
    ring_radius_mm : float
        Sphere-ring radius of the phantom (NEMA NU 2: 57.2 mm).

    Returns
    -------
    PhantomCalibrationResult
        ``calibration`` = the given one with ``rc_fwhm_mm``, ``rc_amplitude``, ``rc_sbr``
        (fitted RC curve) and ``filter_fwhm_mm`` (``None`` when harmonisation failed);
        ``None`` when the RCs could not be measured.
    """
    checks, half_life_s, a0 = _common_checks(header, fill, "nema_iec_body")
    checks.append(_check_nema_fill(fill))
    checks.append(_check_calibration(header, calibration, protocol_name))

    def done(**kw) -> PhantomCalibrationResult:
        return PhantomCalibrationResult(fill.subject_id, site_id, "nema_iec_body", kw.pop("calibration", None),
                                        tuple(checks), a0, **kw)

    if _worst(checks) == "fail":
        return done()
    assert calibration is not None  # checked by phantom_calibration

    unit = (header.units or "").upper()
    try:
        arr = np.asarray(image_values, dtype=np.float64)
        voxel_ml = float(np.prod(np.asarray(spacing_mm, dtype=float))) / 1000.0
        img = to_bq_per_ml(arr, unit, voxel_ml, header.acquisition_duration_s, half_life_s,
                           sensitivity_cps_per_mbq=calibration.sensitivity_cps_per_mbq,
                           vendor_scale_factor=calibration.vendor_scale_factor)
        image_time = header.administration_datetime if _decay_corrected_to_reference(header) \
            else header.acquisition_start
        truth = nema_true_concentrations(fill.total_activity_mbq, header.administration_datetime,
                                         image_time, fill.volume_ml,
                                         fill.sphere_to_background_ratio, half_life_s)
        nema = analyse_nema_phantom(img, spacing_mm, truth, ring_radius_mm=ring_radius_mm)
    except (CalibrationError, ValueError, TypeError, ArithmeticError) as exc:
        checks.append(_fail_from_exception(exc, "nema_spheres", "six spheres on the NEMA ring"))
        return done()

    clearance = _sphere_clearance_mm(img.shape, spacing_mm, nema)
    checks.append(CheckResult("phantom_fov", "pass", f"clearance {clearance:.1f} mm", "spheres inside FOV",
                              "every sphere inside the field of view"))
    checks.append(CheckResult("nema_spheres", "pass",
                              f"ring fit rms {nema.position_residual_mm:.2f} mm, background "
                              f"{nema.background_mean_bq_per_ml:.4g} Bq/mL (true {truth.background_bq_per_ml:.4g})",
                              "six spheres on the NEMA ring", "spheres located, RCs measured"))

    band: dict[float, tuple[float, float]] = {}
    hf: HarmonisingFilter | None = None
    try:
        band = parse_rc_band(reference_rc_band or {})
    except CalibrationError as exc:
        checks.append(CheckResult("nema_rc_band", "fail", "no band", "trial reference_rc_band", str(exc)))
        checks.append(CheckResult("harmonising_filter", "fail", "not run", "trial reference_rc_band", str(exc)))
    if band:
        checks.append(_band_check(nema, band))
        try:
            hf = harmonising_filter(img, spacing_mm, nema, band)
        except (CalibrationError, ValueError, TypeError, ArithmeticError) as exc:
            checks.append(_fail_from_exception(exc, "harmonising_filter", "RCs within the band", fov_aware=False))
        else:
            status = "fail" if hf.status == "fail" else "pass"
            if hf.status == "filter":
                found = f"Gaussian {hf.fwhm_mm:.2f} mm FWHM"
            else:
                found = "no filter needed" if hf.status == "pass" else "no filter fits"
            checks.append(CheckResult("harmonising_filter", status, found, "RCs within the reference band",
                                      hf.message))

    harmonised = _harmonised_rcs(img, spacing_mm, nema, hf)
    spheres = []
    for s in nema.spheres:
        key = next((d for d in band if abs(d - s.diameter_mm) < 0.5), None)
        spheres.append(SphereRow(
            sphere_diameter_mm=s.diameter_mm, sphere_volume_ml=s.volume_ml, recovery_coefficient=s.rc,
            recovery_coefficient_harmonised=harmonised.get(s.diameter_mm),
            in_reference_band=(band[key][0] <= s.rc <= band[key][1]) if key is not None else None,
        ))
    curve = nema.rc_curve
    out_cal = dataclasses.replace(
        calibration, rc_fwhm_mm=curve.fwhm_mm, rc_amplitude=curve.amplitude, rc_sbr=curve.sbr,
        filter_fwhm_mm=hf.fwhm_mm if hf is not None and hf.status in ("pass", "filter") else None,
    )
    return done(calibration=out_cal, spheres=tuple(spheres), harmonising_filter=hf, nema=nema)


def _band_check(nema: NemaResult, band: Mapping[float, tuple[float, float]]) -> CheckResult:
    rc = nema.rc_by_diameter()
    below, above, parts = [], [], []
    for d, (lo, hi) in sorted(band.items()):
        key = min(rc, key=lambda k: abs(k - d))
        if abs(key - d) >= 0.5:
            return CheckResult("nema_rc_band", "fail", "sphere missing", "trial reference_rc_band",
                               f"reference_rc_band names a {d:g} mm sphere the phantom does not have")
        v = rc[key]
        parts.append(f"{d:g} mm {v:.3f}")
        if v < lo:
            below.append(f"{d:g}")
        elif v > hi:
            above.append(f"{d:g}")
    found = ", ".join(parts)
    exp = ", ".join(f"{d:g} mm [{lo:g}-{hi:g}]" for d, (lo, hi) in sorted(band.items()))
    if below:
        return CheckResult("nema_rc_band", "fail", found, exp,
                           f"RC below the reference band for {', '.join(below)} mm: "
                           "the site is blurrier than the reference")
    if above:
        return CheckResult("nema_rc_band", "warn", found, exp,
                           f"RC above the reference band for {', '.join(above)} mm: a harmonising filter is needed")
    return CheckResult("nema_rc_band", "pass", found, exp, "RCs within the reference band")


def _harmonised_rcs(img: np.ndarray, spacing_mm: Sequence[float], nema: NemaResult,
                    hf: HarmonisingFilter | None) -> dict[float, float]:
    """RC of every sphere after the harmonising filter (empty when there is none)."""
    if hf is None or hf.status == "fail" or hf.fwhm_mm is None:
        return {}
    if hf.fwhm_mm <= 0:
        return {s.diameter_mm: s.rc for s in nema.spheres}
    sp = np.asarray(spacing_mm, dtype=float)
    filtered = ndimage.gaussian_filter(img, sigma=hf.fwhm_mm / FWHM_PER_SIGMA / sp)
    centres = np.array([s.centre_zyx_mm for s in nema.spheres])
    diams = [s.diameter_mm for s in nema.spheres]
    res = measure_sphere_rcs(filtered, sp, centres, nema.truth, nema.background_mean_bq_per_ml, diams)
    return {r.diameter_mm: r.rc for r in res}
