"""Header checks against the trial-wide physics of the imaging protocol (pure).

Each check compares one attribute of a reconstruction's NM header with what the trial
protocol asks of every site, which no camera profile widens: pixel units, administered
activity, radionuclide, energy windows (photopeak, scatter), attenuation and scatter
correction, voxel size, projections and time point. Each returns a
:class:`rntflow.core.qa.CheckResult`; a header lacking an optional attribute yields a
``warn`` ("not stated", :func:`not_stated`), never an exception and never a ``fail``.
:func:`rntflow.harmonization.recon_check.check_reconstruction` runs them in a fixed order.
"""

from __future__ import annotations

from collections.abc import Sequence

from rntflow.core.config import EnergyWindow, ImagingProtocol
from rntflow.core.protocol import nominal_time_point
from rntflow.core.qa import CheckResult
from rntflow.harmonization.headers import EnergyWindowKev, NmHeader, normalise_radionuclide


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def _missing(check: str, expected: str, what: str) -> CheckResult:
    """A required attribute is absent: ``fail``."""
    return CheckResult(check, "fail", "missing", expected, f"header lacks {what}")


def not_stated(check: str, expected: str, what: str) -> CheckResult:
    """An optional attribute is absent: ``warn`` ("not stated"), never a fail."""
    return CheckResult(check, "warn", "not stated", expected, f"not stated: header lacks {what}")


def match_window(want: EnergyWindow, found: Sequence[EnergyWindowKev], tol_pct: float) -> EnergyWindowKev | None:
    tol_kev = want.center_kev * tol_pct / 100.0
    for w in found:
        if abs(w.lower_kev - want.lower_kev) <= tol_kev and abs(w.upper_kev - want.upper_kev) <= tol_kev:
            return w
    return None


def _win_str(w: EnergyWindowKev | EnergyWindow) -> str:
    return f"{w.lower_kev:.1f}-{w.upper_kev:.1f} keV"


def check_energy_windows(h: NmHeader, p: ImagingProtocol, scatter_found: list[str]) -> list[CheckResult]:
    out: list[CheckResult] = []
    expected_pk = ", ".join(_win_str(w) for w in p.photopeak_windows) + f" (+-{p.energy_tolerance_pct:g}% of centre)"
    wants_scatter_windows = p.scatter_correction and bool(p.scatter_windows)
    expected_sc = ", ".join(_win_str(w) for w in p.scatter_windows) + f" (+-{p.energy_tolerance_pct:g}% of centre)"
    if not h.energy_windows:
        out.append(not_stated("energy_window_photopeak", expected_pk, "EnergyWindowInformationSequence"))
        if wants_scatter_windows:
            out.append(not_stated("energy_window_scatter", expected_sc, "EnergyWindowInformationSequence"))
        return out
    found = ", ".join(_win_str(w) for w in h.energy_windows)
    unmatched = [w for w in p.photopeak_windows if match_window(w, h.energy_windows, p.energy_tolerance_pct) is None]
    if unmatched:
        out.append(
            CheckResult(
                "energy_window_photopeak",
                "fail",
                found,
                expected_pk,
                "photopeak window(s) " + ", ".join(w.name for w in unmatched) + " not acquired within tolerance",
            )
        )
    else:
        out.append(
            CheckResult("energy_window_photopeak", "pass", found, expected_pk, "photopeak window(s) as protocol")
        )
    if wants_scatter_windows:
        others = list(h.energy_windows[1:])
        miss = [w for w in p.scatter_windows if match_window(w, others, p.energy_tolerance_pct) is None]
        if not miss:
            out.append(CheckResult("energy_window_scatter", "pass", found, expected_sc, "scatter windows present"))
        elif others:
            out.append(
                CheckResult(
                    "energy_window_scatter",
                    "fail",
                    found,
                    expected_sc,
                    "scatter window(s) " + ", ".join(w.name for w in miss) + " off-tolerance",
                )
            )
        elif scatter_found:
            out.append(
                CheckResult(
                    "energy_window_scatter",
                    "warn",
                    found,
                    expected_sc,
                    "scatter windows not stated in the reconstruction (they are listed in the "
                    "projections); scatter correction evidenced by " + ", ".join(scatter_found),
                )
            )
        elif h.scatter_corrected is False:
            out.append(
                CheckResult(
                    "energy_window_scatter",
                    "fail",
                    found,
                    expected_sc,
                    "scatter window(s) "
                    + ", ".join(w.name for w in miss)
                    + " missing while scatter correction is required",
                )
            )
        else:
            out.append(not_stated("energy_window_scatter", expected_sc, "scatter energy windows"))
    return out


def check_correction(name: str, found: bool | None, required: bool, evidence: list[str] | None = None) -> CheckResult:
    exp = "applied" if required else "not required"
    label = name.replace("_", " ")
    if evidence:
        if required:
            return CheckResult(name, "pass", "applied (" + ", ".join(evidence) + ")", exp, "as protocol")
        return CheckResult(name, "warn", "applied", exp, f"{label} applied though the protocol does not ask for it")
    if found is None:
        if not required:
            return CheckResult(name, "pass", "not stated", exp, "not required by the protocol")
        return not_stated(name, exp, "CorrectedImage (and no other evidence)")
    got = "applied" if found else "not applied"
    if required and not found:
        return CheckResult(name, "fail", got, exp, f"{label} required by the protocol but not applied")
    if found and not required:
        return CheckResult(name, "warn", got, exp, f"{label} applied though the protocol does not ask for it")
    return CheckResult(name, "pass", got, exp, "as protocol")


def check_voxel(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    exp = f"{p.voxel_size_mm:g} +- {p.voxel_tolerance_mm:g} mm"
    if h.voxel_size_mm is None:
        return _missing("voxel_size", exp, "PixelSpacing/SpacingBetweenSlices")
    found = "x".join(f"{v:g}" for v in h.voxel_size_mm) + " mm"
    ok = all(abs(v - p.voxel_size_mm) <= p.voxel_tolerance_mm for v in h.voxel_size_mm)
    return CheckResult(
        "voxel_size", "pass" if ok else "fail", found, exp, "as protocol" if ok else "voxel size outside tolerance"
    )


def check_projections(h: NmHeader, p: ImagingProtocol) -> list[CheckResult]:
    out = []
    exp = f">= {p.min_projections}"
    if h.projections is None:
        out.append(not_stated("projections", exp, "RotationInformationSequence.NumberOfFramesInRotation"))
    else:
        ok = h.projections >= p.min_projections
        out.append(
            CheckResult(
                "projections",
                "pass" if ok else "fail",
                str(h.projections),
                exp,
                "as protocol" if ok else "too few projections",
            )
        )
    exp_t = f">= {p.min_time_per_projection_s:g} s"
    if h.time_per_projection_s is None:
        out.append(not_stated("time_per_projection", exp_t, "RotationInformationSequence.ActualFrameDuration"))
    else:
        ok = h.time_per_projection_s >= p.min_time_per_projection_s - 1e-9
        slip = next((n for n in h.notes if n.startswith("ActualFrameDuration")), None)
        status = ("warn" if slip else "pass") if ok else "fail"
        msg = ("as protocol" if ok else "time per projection shorter than protocol") + (f"; {slip}" if slip else "")
        out.append(CheckResult("time_per_projection", status, f"{h.time_per_projection_s:g} s", exp_t, msg))
    return out


def check_radionuclide(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    want = normalise_radionuclide(p.radionuclide) or p.radionuclide
    if h.radionuclide is None:
        return not_stated("radionuclide", want, "RadiopharmaceuticalInformationSequence radionuclide")
    ok = h.radionuclide.upper() == want.upper()
    return CheckResult(
        "radionuclide",
        "pass" if ok else "fail",
        h.radionuclide,
        want,
        "as protocol" if ok else "radionuclide differs from the protocol",
    )


def check_pixel_units(h: NmHeader) -> CheckResult:
    """``pixel_units``: which rule decided what the pixels mean (``units from RWVM Bq/ml``).

    ``pass`` for RWVM, Units, the site override and the counts default of an
    ORIGINAL\\PRIMARY\\RECON TOMO; ``warn`` for a vendor hint, a default on a DERIVED image
    or disagreeing sources; ``fail`` when nothing decides (set ``sites[].nm_units``).
    """
    exp = "RWVM units code, Units, vendor convention, sites[].nm_units or RECON TOMO counts"
    pu = h.pixel_units
    if pu is None or pu.units is None:
        detail = pu.detail if pu is not None else "not resolved"
        return CheckResult(
            "pixel_units",
            "fail",
            "unknown",
            exp,
            f"pixel meaning unknown ({detail}): set sites[].nm_units in the trial config",
        )
    found = (
        pu.message
        + (f" (scale x{pu.scale:g})" if pu.scale != 1.0 else "")
        + ({"ml": ", per mL", "s": ", per second"}.get(pu.per, ""))
    )
    if pu.notes or not pu.confident:
        extra = "; ".join(pu.notes) or "confirm with sites[].nm_units"
        return CheckResult("pixel_units", "warn", found, exp, f"{pu.message}: {extra}")
    return CheckResult("pixel_units", "pass", found, exp, pu.message)


def check_administered_activity(
    h: NmHeader, record_mbq: float | None = None, tolerance_pct: float = 10.0
) -> CheckResult:
    """``administered_activity``: RadionuclideTotalDose present, in MBq, and as recorded.

    Parameters
    ----------
    h : NmHeader
    record_mbq : float or None
        The administration record's activity (MBq), when one exists.
    tolerance_pct : float
        Allowed difference between header and record (% of the record).

    Returns
    -------
    CheckResult
        ``warn`` when absent (not stated), when read as Bq and converted, or when it differs
        from the record by more than ``tolerance_pct``; else ``pass``.
    """
    exp = "RadionuclideTotalDose in MBq" + (
        f", within {tolerance_pct:g} % of the record {record_mbq:g} MBq" if record_mbq else ""
    )
    if h.administered_activity_mbq is None:
        return not_stated("administered_activity", exp, "RadionuclideTotalDose")
    found = f"{h.administered_activity_mbq:.5g} MBq"
    slip = next((n for n in h.notes if n.startswith("RadionuclideTotalDose")), None)
    if record_mbq and abs(h.administered_activity_mbq - record_mbq) > tolerance_pct / 100.0 * record_mbq:
        return CheckResult(
            "administered_activity",
            "warn",
            found,
            exp,
            f"header activity differs from the administration record by "
            f"{100 * (h.administered_activity_mbq / record_mbq - 1):+.1f} %" + (f"; {slip}" if slip else ""),
        )
    if slip:
        return CheckResult(
            "administered_activity",
            "warn",
            found + f" (sent {h.administered_activity_raw:.4g})",
            exp,
            f"unit slip: {slip}",
        )
    return CheckResult("administered_activity", "pass", found, exp, "as stated")


def time_point_for(t_h: float, protocol: ImagingProtocol) -> float | None:
    """Nominal time point (h) whose window contains ``t_h``, or ``None`` (:func:`rntflow.core.protocol.nominal_time_point`)."""
    return nominal_time_point(t_h, protocol.time_points)


def check_time_point(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    exp = "; ".join(f"{tp.nominal_h:g} h [{tp.earliest_h:g}-{tp.latest_h:g}]" for tp in p.time_points)
    t_h = h.hours_after_administration
    if t_h is None:
        what = "AcquisitionDate/Time" if h.acquisition_start is None else "RadiopharmaceuticalStartDateTime"
        return _missing("time_point", exp, what)
    found = f"{t_h:.2f} h after administration"
    nominal = time_point_for(t_h, p)
    if nominal is None:
        return CheckResult("time_point", "fail", found, exp, "outside every window")
    return CheckResult("time_point", "pass", found, exp, f"time point {nominal:g} h")


def check_time_of_flight(found: bool | None, required: bool) -> CheckResult:
    """``time_of_flight`` of a PET reconstruction (a TOF PET/CT protocol, e.g. 90Y).

    Parameters
    ----------
    found : bool or None
        ``True`` when the header names TOF
        (:attr:`rntflow.harmonization.pet_headers.PetHeader.time_of_flight`); ``None`` when
        it says nothing (DICOM has no attribute for TOF).
    required : bool
        ``ImagingProtocol.time_of_flight``.

    Returns
    -------
    CheckResult
        ``pass`` when TOF is stated and required, or not required; ``warn`` ("not stated")
        when required and not named; ``fail`` when the header states it was off.
    """
    exp = "TOF reconstruction" if required else "not required"
    if not required:
        return CheckResult("time_of_flight", "pass", "stated" if found else "not stated", exp, "not required")
    if found is None:
        return not_stated("time_of_flight", exp, "TOF in ReconstructionMethod or SeriesDescription")
    if found:
        return CheckResult("time_of_flight", "pass", "TOF", exp, "as protocol")
    return CheckResult("time_of_flight", "fail", "non-TOF", exp, "TOF reconstruction required by the protocol")
