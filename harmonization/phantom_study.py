"""One phantom study (its NM reconstruction and the fill-log row) to a calibration result.

This is the glue between a site's QC phantom scan and the pure analysis in
:mod:`rntflow.harmonization.cylinder` and :mod:`rntflow.harmonization.nema`: it takes the
parsed NM header, the image and the physicist's fill-log row, decides the true activity,
runs the analysis and turns every problem into a :class:`~rntflow.core.qa.CheckResult`
(``pass`` / ``warn`` / ``fail``). Nothing here reads files, talks to a network or knows about Prefect; bad input
gives ``fail`` checks and ``calibration=None``, never an exception.

Times
-----
The activity reference time is the header's RadiopharmaceuticalStartDateTime, never the
fill log's (see :mod:`rntflow.harmonization.phantom_checks`). A vendor Bq/mL image with
DecayCorrection ``ADMIN`` is compared with the activity at the reference time, every other
image with the activity at acquisition start.

Checks (``CheckResult.check``; made in :mod:`rntflow.harmonization.phantom_checks` and here)
----------------------------------------------------------------------------------------
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
``cylinder_edge_resolution`` (cylinder) system FWHM from the cylinder's edge (recovery FWHM
                           until a NEMA phantom gives one; a configured FWHM takes precedence)
``nema_spheres``           (NEMA) spheres located and RCs measured
``nema_rc_band``           (NEMA) unfiltered RCs against the trial's reference band
``harmonising_filter``     (NEMA) Gaussian post-filter that brings the RCs into the band
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rntflow.core.errors import CalibrationError
from rntflow.core.fills import PhantomFill
from rntflow.core.qa import CheckResult, worst_status
from rntflow.harmonization.calibration import Calibration
from rntflow.harmonization.cylinder import (
    EdgeResolution,
    UniformCylinderResult,
    analyse_uniform_cylinder,
    cylinder_edge_fwhm,
    to_bq_per_ml,
)
from rntflow.harmonization.filter import HarmonisingFilter, harmonised_rcs, harmonising_filter
from rntflow.harmonization.headers import NmHeader
from rntflow.harmonization.nema import (
    NEMA_SPHERE_RING_RADIUS_MM,
    NemaResult,
    NemaTruth,
    analyse_nema_phantom,
    nema_true_concentrations,
)
from rntflow.harmonization.phantom_checks import (
    band_check,
    check_calibration,
    check_nema_fill,
    common_checks,
    decay_corrected_to_reference,
    fail_from_exception,
)
from rntflow.harmonization.rc_curve import parse_rc_band

__all__ = ["PhantomCalibrationResult", "PhantomFill", "SphereRow", "analyse_nema_study", "calibrate_uniform_cylinder"]

#: Thresholded (50 % of plateau) cylinder volume vs the fill log: the threshold reproduces
#: the physical volume within ~5 % at 10-16 mm FWHM (tests/harmonization/test_phantom.py);
#: beyond 10 % the phantom was not full or the wrong phantom was scanned.
VOLUME_AGREEMENT_PCT = 10.0
#: A calibration whose own relative standard uncertainty exceeds this is only a warning:
#: 2 % is the trial's accuracy target for sensitivity.
MAX_REL_UNCERTAINTY = 0.02
#: What the uniform-cylinder and NEMA analyses raise for an input they cannot analyse.
ANALYSIS_ERRORS = (CalibrationError, ValueError, TypeError, ArithmeticError)
#: A configured system FWHM further than this (relative) from the cylinder-edge estimate is
#: a warning: the relative standard uncertainty given to non-NEMA FWHMs in dosimetry
#: (:data:`rntflow.dosimetry.uncertainty.RC_FWHM_REL_SD`).
EDGE_CONFIGURED_AGREEMENT = 0.15


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
    edge_resolution : EdgeResolution or None
        Uniform cylinder only: the edge fit (``None`` when it failed).
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
    edge_resolution: EdgeResolution | None = None

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
    return worst_status(c.status for c in checks)


# --------------------------------------------------------------------------- uniform cylinder


def _cylinder_fov_check(res: UniformCylinderResult) -> CheckResult:
    exp = "phantom + spill-out margin inside FOV"
    if res.voi_clipped_by_fov:
        return CheckResult(
            "phantom_fov",
            "warn",
            "VOI clipped by the FOV",
            exp,
            f"the {res.voi_margin_mm:.0f} mm spill-out margin reaches the FOV edge: counts may be lost",
        )
    return CheckResult("phantom_fov", "pass", "inside", exp, "phantom and spill-out margin inside the field of view")


def _cylinder_volume_check(res: UniformCylinderResult, fill: PhantomFill) -> CheckResult:
    if fill.volume_ml is None or not fill.volume_ml > 0:
        return CheckResult(
            "phantom_volume",
            "warn",
            f"{res.phantom_volume_ml:.0f} mL measured",
            "fill log volume",
            "fill log has no volume: not compared",
        )
    dev = 100.0 * (res.phantom_volume_ml - fill.volume_ml) / fill.volume_ml
    ok = abs(dev) <= VOLUME_AGREEMENT_PCT
    return CheckResult(
        "phantom_volume",
        "pass" if ok else "warn",
        f"{res.phantom_volume_ml:.0f} mL ({dev:+.1f} %)",
        f"{fill.volume_ml:g} mL +- {VOLUME_AGREEMENT_PCT:g} %",
        "thresholded volume agrees with the fill log"
        if ok
        else "thresholded phantom volume disagrees with the fill log: phantom not full, or another phantom?",
    )


def _cylinder_calibration(
    res: UniformCylinderResult, header: NmHeader, site_id: str, protocol_name: str
) -> tuple[Calibration | None, CheckResult]:
    """The new calibration (``None`` when it is not valid) and its ``phantom_sensitivity`` check."""
    rel = res.standard_uncertainty / res.value if res.value else math.inf
    cnts = res.units == "CNTS"
    name = "sensitivity" if cnts else "vendor scale factor"
    found = (f"{res.value:.4g} cps/MBq" if cnts else f"{res.value:.4f}") + f" (u = {100 * rel:.2f} %)"
    try:
        cal = Calibration(
            site_id=site_id,
            camera_id=header.camera_id,
            radionuclide=header.radionuclide,
            protocol=protocol_name,
            valid_from=header.acquisition_start,
            sensitivity_cps_per_mbq=res.sensitivity_cps_per_mbq,
            vendor_scale_factor=res.vendor_scale_factor,
            sd=res.standard_uncertainty,
        )
    except CalibrationError as exc:
        return None, CheckResult("phantom_sensitivity", "fail", found, f"{name} > 0", str(exc))
    exp = f"u <= {100 * MAX_REL_UNCERTAINTY:g} %"
    if rel > MAX_REL_UNCERTAINTY:
        return cal, CheckResult(
            "phantom_sensitivity", "warn", found, exp, f"{name} uncertainty above {100 * MAX_REL_UNCERTAINTY:g} %"
        )
    return cal, CheckResult("phantom_sensitivity", "pass", found, exp, f"{name} derived")


def _edge_resolution(
    image_values: np.ndarray, spacing_mm: Sequence[float], configured_fwhm_mm: float | None
) -> tuple[EdgeResolution | None, CheckResult]:
    """The cylinder-edge FWHM fit and its ``cylinder_edge_resolution`` check (never raises)."""
    exp = "a Gaussian FWHM from the cylinder's radial edge"
    try:
        edge = cylinder_edge_fwhm(image_values, spacing_mm)
    except ANALYSIS_ERRORS as exc:
        msg = f"no system resolution from the cylinder edge ({exc})"
        if configured_fwhm_mm:
            return None, CheckResult(
                "cylinder_edge_resolution",
                "warn",
                "no fit",
                exp,
                f"{msg}; the configured {configured_fwhm_mm:g} mm is used",
            )
        return None, CheckResult(
            "cylinder_edge_resolution",
            "warn",
            "no fit",
            exp,
            f"{msg}: partial-volume correction needs a NEMA phantom or sites[].cameras[].system_fwhm_mm",
        )
    found = f"FWHM {edge.fwhm_mm:.2f} +- {edge.fwhm_sd_mm:.2f} mm (radius {edge.radius_mm:.1f} mm)"
    if configured_fwhm_mm:
        dev = edge.fwhm_mm / configured_fwhm_mm - 1.0
        ok = abs(dev) <= EDGE_CONFIGURED_AGREEMENT
        return edge, CheckResult(
            "cylinder_edge_resolution",
            "pass" if ok else "warn",
            found,
            f"within {100 * EDGE_CONFIGURED_AGREEMENT:g} % of the configured {configured_fwhm_mm:g} mm",
            f"configured system FWHM used ({100 * dev:+.0f} % edge vs configured)"
            + ("" if ok else ": confirm sites[].cameras[].system_fwhm_mm"),
        )
    return edge, CheckResult(
        "cylinder_edge_resolution",
        "pass",
        found,
        exp,
        "recovery FWHM from the cylinder edge until a NEMA phantom gives one",
    )


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
    configured_fwhm_mm: float | None = None,
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
    configured_fwhm_mm : float, optional
        The camera profile's ``system_fwhm_mm`` (mm): the recovery FWHM when given (source
        ``configured``); otherwise the cylinder-edge fit's (source ``cylinder_edge``).

    Returns
    -------
    PhantomCalibrationResult
        ``calibration`` has ``sensitivity_cps_per_mbq`` (CNTS, cps/MBq) or
        ``vendor_scale_factor`` (BQML, measured/true), ``sd`` its standard uncertainty,
        ``valid_from`` the header's acquisition start, ``camera_id`` and ``radionuclide``
        from the header, ``version`` 0, and ``rc_fwhm_mm`` / ``rc_fwhm_source`` (a NEMA
        study later replaces them). It is ``None`` when any check fails.
    """
    checks, half_life_s, a0 = common_checks(header, fill, "uniform_cylinder")

    def done(calibration=None, uniform=None, edge=None) -> PhantomCalibrationResult:
        return PhantomCalibrationResult(
            fill.subject_id,
            site_id,
            "uniform_cylinder",
            calibration,
            tuple(checks),
            a0,
            uniform_cylinder=uniform,
            edge_resolution=edge,
        )

    if _worst(checks) == "fail":
        return done()

    unit = (header.units or "").upper()
    # the true activity at the time the image values refer to
    a_image = fill.total_activity_mbq if decay_corrected_to_reference(header) else a0
    try:
        res = analyse_uniform_cylinder(
            image_values,
            spacing_mm,
            header.acquisition_duration_s,
            a_image,
            unit,
            half_life_s,
            system_fwhm_mm=system_fwhm_mm,
            activity_rel_uncertainty=activity_rel_uncertainty,
        )
    except ANALYSIS_ERRORS as exc:
        checks.append(fail_from_exception(exc, "phantom_sensitivity", "sensitivity or vendor scale factor"))
        return done()

    checks.append(_cylinder_fov_check(res))
    checks.append(_cylinder_volume_check(res, fill))
    cal, sensitivity_check = _cylinder_calibration(res, header, site_id, protocol_name)
    checks.append(sensitivity_check)
    edge, edge_check = _edge_resolution(image_values, spacing_mm, configured_fwhm_mm)
    checks.append(edge_check)
    if cal is not None and configured_fwhm_mm:
        cal = dataclasses.replace(cal, rc_fwhm_mm=float(configured_fwhm_mm), rc_fwhm_source="configured")
    elif cal is not None and edge is not None:
        cal = dataclasses.replace(cal, rc_fwhm_mm=edge.fwhm_mm, rc_fwhm_source="cylinder_edge")
    return done(cal, res, edge)


# --------------------------------------------------------------------------- NEMA IEC body


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


def _nema_analysis(
    header: NmHeader,
    image_values: np.ndarray,
    spacing_mm: Sequence[float],
    fill: PhantomFill,
    calibration: Calibration,
    half_life_s: float | None,
    ring_radius_mm: float,
) -> tuple[np.ndarray, NemaTruth, NemaResult]:
    """The image in Bq/mL, the true concentrations and the sphere analysis (raises
    :data:`ANALYSIS_ERRORS`)."""
    arr = np.asarray(image_values, dtype=np.float64)
    voxel_ml = float(np.prod(np.asarray(spacing_mm, dtype=float))) / 1000.0
    img = to_bq_per_ml(
        arr,
        (header.units or "").upper(),
        voxel_ml,
        header.acquisition_duration_s,
        half_life_s,
        sensitivity_cps_per_mbq=calibration.sensitivity_cps_per_mbq,
        vendor_scale_factor=calibration.vendor_scale_factor,
    )
    image_time = header.administration_datetime if decay_corrected_to_reference(header) else header.acquisition_start
    truth = nema_true_concentrations(
        fill.total_activity_mbq,
        header.administration_datetime,
        image_time,
        fill.volume_ml,
        fill.sphere_to_background_ratio,
        half_life_s,
    )
    return img, truth, analyse_nema_phantom(img, spacing_mm, truth, ring_radius_mm=ring_radius_mm)


def _band_and_filter(
    img: np.ndarray, spacing_mm: Sequence[float], nema: NemaResult, reference_rc_band: Mapping
) -> tuple[dict[float, tuple[float, float]], HarmonisingFilter | None, list[CheckResult]]:
    """The parsed band, the harmonising filter (``None`` when not run) and the
    ``nema_rc_band`` and ``harmonising_filter`` checks."""
    try:
        band = parse_rc_band(reference_rc_band or {})
    except CalibrationError as exc:
        return (
            {},
            None,
            [
                CheckResult("nema_rc_band", "fail", "no band", "trial reference_rc_band", str(exc)),
                CheckResult("harmonising_filter", "fail", "not run", "trial reference_rc_band", str(exc)),
            ],
        )
    checks = [band_check(nema, band)]
    try:
        hf = harmonising_filter(img, spacing_mm, nema, band)
    except ANALYSIS_ERRORS as exc:
        checks.append(fail_from_exception(exc, "harmonising_filter", "RCs within the band", fov_aware=False))
        return band, None, checks
    status = "fail" if hf.status == "fail" else "pass"
    if hf.status == "filter":
        found = f"Gaussian {hf.fwhm_mm:.2f} mm FWHM"
    else:
        found = "no filter needed" if hf.status == "pass" else "no filter fits"
    checks.append(CheckResult("harmonising_filter", status, found, "RCs within the reference band", hf.message))
    return band, hf, checks


def _sphere_rows(
    nema: NemaResult, band: Mapping[float, tuple[float, float]], harmonised: Mapping[float, float]
) -> tuple[SphereRow, ...]:
    rows = []
    for s in nema.spheres:
        key = next((d for d in band if abs(d - s.diameter_mm) < 0.5), None)
        rows.append(
            SphereRow(
                sphere_diameter_mm=s.diameter_mm,
                sphere_volume_ml=s.volume_ml,
                recovery_coefficient=s.rc,
                recovery_coefficient_harmonised=harmonised.get(s.diameter_mm),
                in_reference_band=(band[key][0] <= s.rc <= band[key][1]) if key is not None else None,
            )
        )
    return tuple(rows)


def _located_checks(
    shape: Sequence[int], spacing_mm: Sequence[float], nema: NemaResult, truth: NemaTruth
) -> list[CheckResult]:
    """The passed ``phantom_fov`` and ``nema_spheres`` checks of spheres that were located."""
    clearance = _sphere_clearance_mm(shape, spacing_mm, nema)
    return [
        CheckResult(
            "phantom_fov",
            "pass",
            f"clearance {clearance:.1f} mm",
            "spheres inside FOV",
            "every sphere inside the field of view",
        ),
        CheckResult(
            "nema_spheres",
            "pass",
            f"ring fit rms {nema.position_residual_mm:.2f} mm, background "
            f"{nema.background_mean_bq_per_ml:.4g} Bq/mL (true {truth.background_bq_per_ml:.4g})",
            "six spheres on the NEMA ring",
            "spheres located, RCs measured",
        ),
    ]


def _nema_calibration(calibration: Calibration, nema: NemaResult, hf: HarmonisingFilter | None) -> Calibration:
    """``calibration`` with the fitted RC curve and the harmonising filter (``None`` unless it passed)."""
    curve = nema.rc_curve
    return dataclasses.replace(
        calibration,
        rc_fwhm_mm=curve.fwhm_mm,
        rc_fwhm_source="nema",
        rc_amplitude=curve.amplitude,
        rc_sbr=curve.sbr,
        filter_fwhm_mm=hf.fwhm_mm if hf is not None and hf.status in ("pass", "filter") else None,
    )


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
        :func:`rntflow.harmonization.cylinder.to_bq_per_ml`. Without one the study is **not**
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
        ``calibration`` = the given one with ``rc_fwhm_mm`` (source ``nema``: it replaces a
        cylinder-edge or configured FWHM), ``rc_amplitude``, ``rc_sbr``
        (fitted RC curve) and ``filter_fwhm_mm`` (``None`` when harmonisation failed);
        ``None`` when the RCs could not be measured.
    """
    checks, half_life_s, a0 = common_checks(header, fill, "nema_iec_body")
    checks.append(check_nema_fill(fill))
    checks.append(check_calibration(header, calibration, protocol_name))

    def done(**kw) -> PhantomCalibrationResult:
        return PhantomCalibrationResult(
            fill.subject_id, site_id, "nema_iec_body", kw.pop("calibration", None), tuple(checks), a0, **kw
        )

    if _worst(checks) == "fail":
        return done()
    assert calibration is not None  # checked by phantom_calibration

    try:
        img, truth, nema = _nema_analysis(
            header, image_values, spacing_mm, fill, calibration, half_life_s, ring_radius_mm
        )
    except ANALYSIS_ERRORS as exc:
        checks.append(fail_from_exception(exc, "nema_spheres", "six spheres on the NEMA ring"))
        return done()

    checks.extend(_located_checks(img.shape, spacing_mm, nema, truth))
    band, hf, band_checks = _band_and_filter(img, spacing_mm, nema, reference_rc_band)
    checks.extend(band_checks)
    spheres = _sphere_rows(nema, band, harmonised_rcs(img, spacing_mm, nema, hf))
    out_cal = _nema_calibration(calibration, nema, hf)
    return done(calibration=out_cal, spheres=spheres, harmonising_filter=hf, nema=nema)
