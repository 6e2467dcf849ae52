"""Protocol compliance of a reconstruction, from its header, and simple image checks.

Every deviation becomes a :class:`rntflow.core.qa.CheckResult` (``pass`` / ``warn`` / ``fail``) so that QA
records it: nothing is silently accepted or silently rejected, and a header lacking an
attribute yields a ``fail`` record, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from rntflow.core.config import EnergyWindow, ImagingProtocol
from rntflow.core.protocol import nominal_time_point
from rntflow.core.qa import CheckResult
from rntflow.harmonization.headers import EnergyWindowKev, NmHeader, normalise_radionuclide
from rntflow.physics.decay import decay_constant_per_s, decay_integral_s


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def _missing(check: str, expected: str, what: str) -> CheckResult:
    return CheckResult(check, "fail", "missing", expected, f"header lacks {what}")


def _match_window(want: EnergyWindow, found: Sequence[EnergyWindowKev], tol_pct: float) -> EnergyWindowKev | None:
    tol_kev = want.center_kev * tol_pct / 100.0
    for w in found:
        if abs(w.lower_kev - want.lower_kev) <= tol_kev and abs(w.upper_kev - want.upper_kev) <= tol_kev:
            return w
    return None


def _win_str(w: EnergyWindowKev | EnergyWindow) -> str:
    return f"{w.lower_kev:.1f}-{w.upper_kev:.1f} keV"


def _check_energy_windows(h: NmHeader, p: ImagingProtocol) -> list[CheckResult]:
    out: list[CheckResult] = []
    expected_pk = ", ".join(_win_str(w) for w in p.photopeak_windows) + f" (+-{p.energy_tolerance_pct:g}% of centre)"
    if not h.energy_windows:
        out.append(_missing("energy_window_photopeak", expected_pk, "EnergyWindowInformationSequence"))
        if p.scatter_correction and p.scatter_windows:
            out.append(_missing("energy_window_scatter", ", ".join(_win_str(w) for w in p.scatter_windows),
                                "EnergyWindowInformationSequence"))
        return out
    found = ", ".join(_win_str(w) for w in h.energy_windows)
    unmatched = [w for w in p.photopeak_windows if _match_window(w, h.energy_windows, p.energy_tolerance_pct) is None]
    if unmatched:
        out.append(CheckResult("energy_window_photopeak", "fail", found, expected_pk,
                               "photopeak window(s) " + ", ".join(w.name for w in unmatched) + " not acquired within tolerance"))
    else:
        out.append(CheckResult("energy_window_photopeak", "pass", found, expected_pk, "photopeak window(s) as protocol"))
    if p.scatter_correction and p.scatter_windows:
        expected_sc = ", ".join(_win_str(w) for w in p.scatter_windows) + f" (+-{p.energy_tolerance_pct:g}% of centre)"
        others = list(h.energy_windows[1:])
        miss = [w for w in p.scatter_windows if _match_window(w, others, p.energy_tolerance_pct) is None]
        if miss:
            out.append(CheckResult("energy_window_scatter", "fail", found, expected_sc,
                                   "scatter window(s) " + ", ".join(w.name for w in miss)
                                   + " missing or off-tolerance while scatter correction is required"))
        else:
            out.append(CheckResult("energy_window_scatter", "pass", found, expected_sc, "scatter windows present"))
    return out


def _energy_class(name: str) -> str:
    s = name.upper().replace("-", "").replace(" ", "")
    for cls in ("LE", "ME", "HE", "UHE"):
        if s.startswith(cls):
            return cls
    if "MEDIUM" in s:
        return "ME"
    if "LOW" in s:
        return "LE"
    if "HIGH" in s:
        return "HE"
    return s


def _check_collimator(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    if h.collimator is None:
        return _missing("collimator", p.collimator, "CollimatorGridName")
    if h.collimator.strip().upper() == p.collimator.strip().upper():
        return CheckResult("collimator", "pass", h.collimator, p.collimator, "collimator as protocol")
    if _energy_class(h.collimator) == _energy_class(p.collimator):
        return CheckResult("collimator", "warn", h.collimator, p.collimator,
                           "same energy class, different collimator name: confirm the collimator")
    return CheckResult("collimator", "fail", h.collimator, p.collimator, "wrong collimator energy class")


def _check_correction(name: str, found: bool | None, required: bool) -> CheckResult:
    exp = "applied" if required else "not required"
    if found is None:
        return _missing(name, exp, "CorrectedImage")
    got = "applied" if found else "not applied"
    if required and not found:
        return CheckResult(name, "fail", got, exp, f"{name.replace('_', ' ')} required by the protocol but not applied")
    if found and not required:
        return CheckResult(name, "warn", got, exp, f"{name.replace('_', ' ')} applied though the protocol does not ask for it")
    return CheckResult(name, "pass", got, exp, "as protocol")


def _check_algorithm(h: NmHeader, p: ImagingProtocol) -> list[CheckResult]:
    out = []
    if h.algorithm is None:
        out.append(_missing("algorithm", p.algorithm, "ReconstructionMethod"))
    elif h.algorithm.upper() != p.algorithm.upper():
        out.append(CheckResult("algorithm", "fail", h.algorithm, p.algorithm, "reconstruction algorithm differs from protocol"))
    else:
        out.append(CheckResult("algorithm", "pass", h.algorithm, p.algorithm, "as protocol"))
    exp = f"{p.min_iterations_x_subsets}-{p.max_iterations_x_subsets}"
    if h.iterations is None or h.subsets is None:
        out.append(_missing("iterations_x_subsets", exp, "iterations/subsets in ReconstructionMethod"))
    else:
        n = h.iterations * h.subsets
        found = f"{n} ({h.iterations}i{h.subsets}s)"
        ok = p.min_iterations_x_subsets <= n <= p.max_iterations_x_subsets
        out.append(CheckResult("iterations_x_subsets", "pass" if ok else "fail", found, exp,
                               "in range" if ok else "iterations x subsets outside the protocol range"))
    return out


def _check_matrix(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    exp = f"{p.matrix_size}x{p.matrix_size}"
    if h.matrix_rows is None or h.matrix_cols is None:
        return _missing("matrix", exp, "Rows/Columns")
    found = f"{h.matrix_rows}x{h.matrix_cols}"
    ok = h.matrix_rows == p.matrix_size and h.matrix_cols == p.matrix_size
    return CheckResult("matrix", "pass" if ok else "fail", found, exp, "as protocol" if ok else "matrix size differs from protocol")


def _check_voxel(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    exp = f"{p.voxel_size_mm:g} +- {p.voxel_tolerance_mm:g} mm"
    if h.voxel_size_mm is None:
        return _missing("voxel_size", exp, "PixelSpacing/SpacingBetweenSlices")
    found = "x".join(f"{v:g}" for v in h.voxel_size_mm) + " mm"
    ok = all(abs(v - p.voxel_size_mm) <= p.voxel_tolerance_mm for v in h.voxel_size_mm)
    return CheckResult("voxel_size", "pass" if ok else "fail", found, exp, "as protocol" if ok else "voxel size outside tolerance")


def _check_filter(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    exp = f"<= {p.max_post_filter_fwhm_mm:g} mm FWHM"
    if h.post_filter_fwhm_mm is None:
        return _missing("post_filter", exp, "a readable ConvolutionKernel")
    ok = h.post_filter_fwhm_mm <= p.max_post_filter_fwhm_mm + 1e-9
    return CheckResult("post_filter", "pass" if ok else "fail", f"{h.post_filter_fwhm_mm:g} mm FWHM", exp,
                       "as protocol" if ok else "post-filter stronger than the protocol allows (RC and harmonisation change)")


def _check_projections(h: NmHeader, p: ImagingProtocol) -> list[CheckResult]:
    out = []
    exp = f">= {p.min_projections}"
    if h.projections is None:
        out.append(_missing("projections", exp, "RotationInformationSequence.NumberOfFramesInRotation"))
    else:
        ok = h.projections >= p.min_projections
        out.append(CheckResult("projections", "pass" if ok else "fail", str(h.projections), exp,
                               "as protocol" if ok else "too few projections"))
    exp_t = f">= {p.min_time_per_projection_s:g} s"
    if h.time_per_projection_s is None:
        out.append(_missing("time_per_projection", exp_t, "RotationInformationSequence.ActualFrameDuration"))
    else:
        ok = h.time_per_projection_s >= p.min_time_per_projection_s - 1e-9
        out.append(CheckResult("time_per_projection", "pass" if ok else "fail", f"{h.time_per_projection_s:g} s", exp_t,
                               "as protocol" if ok else "time per projection shorter than protocol"))
    return out


def _check_radionuclide(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    want = normalise_radionuclide(p.radionuclide) or p.radionuclide
    if h.radionuclide is None:
        return _missing("radionuclide", want, "RadiopharmaceuticalInformationSequence radionuclide")
    ok = h.radionuclide.upper() == want.upper()
    return CheckResult("radionuclide", "pass" if ok else "fail", h.radionuclide, want,
                       "as protocol" if ok else "radionuclide differs from the protocol")


def time_point_for(t_h: float, protocol: ImagingProtocol) -> float | None:
    """Nominal time point (h) whose window contains ``t_h``, or ``None`` (:func:`rntflow.core.protocol.nominal_time_point`)."""
    return nominal_time_point(t_h, protocol.time_points)


def _check_time_point(h: NmHeader, p: ImagingProtocol) -> CheckResult:
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


def check_reconstruction(header: NmHeader, protocol: ImagingProtocol) -> list[CheckResult]:
    """Check a reconstruction header against the trial's imaging protocol.

    Parameters
    ----------
    header : NmHeader
        From :func:`harmonization.headers.parse_nm_header`.
    protocol : ImagingProtocol
        ``TrialConfig.protocol``.

    Returns
    -------
    list of CheckResult
        In a fixed order: radionuclide, energy_window_photopeak, energy_window_scatter
        (when scatter correction with scatter windows is required), collimator,
        attenuation_correction, scatter_correction, algorithm, iterations_x_subsets,
        matrix, voxel_size, post_filter, projections, time_per_projection, time_point.
    """
    out = [_check_radionuclide(header, protocol)]
    out += _check_energy_windows(header, protocol)
    out.append(_check_collimator(header, protocol))
    out.append(_check_correction("attenuation_correction", header.attenuation_corrected, protocol.attenuation_correction))
    out.append(_check_correction("scatter_correction", header.scatter_corrected, protocol.scatter_correction))
    out += _check_algorithm(header, protocol)
    out.append(_check_matrix(header, protocol))
    out.append(_check_voxel(header, protocol))
    out.append(_check_filter(header, protocol))
    out += _check_projections(header, protocol)
    out.append(_check_time_point(header, protocol))
    return out


# --------------------------------------------------------------------------- image checks


@dataclass(frozen=True)
class ImageGeometry:
    """Voxel grid of an image: SimpleITK conventions (x, y, z order, mm, LPS)."""

    size: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)

    @classmethod
    def of(cls, image: sitk.Image) -> "ImageGeometry":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """Continuous voxel index (x, y, z) of physical points (N, 3)."""
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        rel = np.asarray(points_mm, dtype=float) - np.asarray(self.origin_mm)
        return (np.linalg.solve(d, rel.T).T) / np.asarray(self.spacing_mm)


def _mask_corners_mm(mask: sitk.Image) -> np.ndarray:
    arr = sitk.GetArrayViewFromImage(mask)
    nz = np.nonzero(arr)
    if len(nz[0]) == 0:
        return np.empty((0, 3))
    lo = [int(nz[2].min()), int(nz[1].min()), int(nz[0].min())]
    hi = [int(nz[2].max()), int(nz[1].max()), int(nz[0].max())]
    corners = []
    for ix in (lo[0] - 0.5, hi[0] + 0.5):
        for iy in (lo[1] - 0.5, hi[1] + 0.5):
            for iz in (lo[2] - 0.5, hi[2] + 0.5):
                corners.append(mask.TransformContinuousIndexToPhysicalPoint((ix, iy, iz)))
    return np.array(corners)


def _box_corners(lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], dtype=float)


def check_fov_covers_vois(
    image_geometry: ImageGeometry | sitk.Image,
    voi_masks_or_bounding_boxes: Mapping[str, sitk.Image | tuple[Sequence[float], Sequence[float]]],
    margin_mm: float = 0.0,
) -> list[CheckResult]:
    """Does the SPECT field of view contain every VOI?

    Parameters
    ----------
    image_geometry : ImageGeometry or SimpleITK.Image
        The SPECT grid.
    voi_masks_or_bounding_boxes : mapping name -> mask image or ((x0, y0, z0), (x1, y1, z1))
        A binary SimpleITK mask on any grid (e.g. the CT's), or a physical bounding box (mm, LPS).
    margin_mm : float
        A VOI closer than this to the FOV edge is a ``warn`` (spill-out is truncated).

    Returns
    -------
    list of CheckResult
        One per VOI: ``pass`` inside, ``warn`` inside but within ``margin_mm`` of the
        edge, ``fail`` partly or wholly outside, or empty.
    """
    geo = image_geometry if isinstance(image_geometry, ImageGeometry) else ImageGeometry.of(image_geometry)
    size = np.asarray(geo.size, dtype=float)
    sp = np.asarray(geo.spacing_mm, dtype=float)
    out = []
    for name, voi in voi_masks_or_bounding_boxes.items():
        check = f"fov_covers_{name}"
        corners = _mask_corners_mm(voi) if isinstance(voi, sitk.Image) else _box_corners(*voi)
        if len(corners) == 0:
            out.append(CheckResult(check, "fail", "empty VOI", "VOI inside FOV", f"VOI {name} is empty"))
            continue
        idx = geo.to_index(corners)
        lo_mm = (idx.min(axis=0) + 0.5) * sp            # distance from the FOV's lower faces
        hi_mm = (size - 0.5 - idx.max(axis=0)) * sp     # distance from the upper faces
        clearance = float(min(lo_mm.min(), hi_mm.min()))
        found = f"clearance {clearance:.1f} mm"
        if clearance < 0:
            # fraction of the box outside, for the message
            inside_lo = np.clip(idx.min(axis=0), -0.5, size - 0.5)
            inside_hi = np.clip(idx.max(axis=0), -0.5, size - 0.5)
            frac = float(np.prod(np.clip(inside_hi - inside_lo, 0, None)) / np.prod(idx.max(axis=0) - idx.min(axis=0) + 1e-12))
            out.append(CheckResult(check, "fail", found, "VOI inside FOV",
                                   f"VOI {name} extends {-clearance:.1f} mm outside the FOV ({100 * (1 - frac):.0f}% of its bounding box)"))
        elif clearance < margin_mm:
            out.append(CheckResult(check, "warn", found, f">= {margin_mm:g} mm", f"VOI {name} is close to the FOV edge"))
        else:
            out.append(CheckResult(check, "pass", found, f">= {margin_mm:g} mm", f"VOI {name} inside the FOV"))
    return out


def check_counts_plausible(
    total_counts: float,
    administered_activity_mbq: float | None,
    t_h: float | None,
    duration_s: float | None,
    expected_sensitivity_range_cps_per_mbq: tuple[float, float],
    radionuclide: str,
    min_retained_fraction: float = 0.02,
) -> CheckResult:
    """Are the image's total counts possible for the activity in the patient?

    The expected counts for activity A at scan start are ``S * A * (1 - exp(-l T)) / l``
    (decay during the acquisition integrated exactly). The retained fraction in the FOV
    cannot exceed 1, so counts above ``S_max * A_decayed * tau`` are a ``fail`` (wrong
    units, activity or scaling); an apparent retained fraction below
    ``min_retained_fraction`` of ``S_min`` is a ``warn`` (FOV, activity or time suspect).

    Parameters
    ----------
    total_counts : float
        Counts in the reconstruction (or the projections).
    administered_activity_mbq : float
    t_h : float
        Acquisition start after administration (h).
    duration_s : float
    expected_sensitivity_range_cps_per_mbq : (min, max)
    radionuclide : str
        Any common spelling; half-life from the ``radioactivedecay`` data package.
    """
    from rntflow.physics.nuclides import nuclide

    check = "counts_plausible"
    lo_s, hi_s = expected_sensitivity_range_cps_per_mbq
    if administered_activity_mbq is None or not administered_activity_mbq > 0 or t_h is None or not duration_s:
        return CheckResult(check, "fail", f"{total_counts:g} counts", f"{lo_s:g}-{hi_s:g} cps/MBq",
                           "administered activity, time after administration or duration missing")
    half_life_s = nuclide(radionuclide).half_life_h * 3600.0
    a_mbq = administered_activity_mbq * math.exp(-decay_constant_per_s(half_life_s) * t_h * 3600.0)
    tau_s = decay_integral_s(duration_s, half_life_s)
    apparent = total_counts / (a_mbq * tau_s)
    found = f"{total_counts:.4g} counts = {apparent:.3g} cps/MBq of the decayed activity"
    exp = f"<= {hi_s:g} cps/MBq (and >= {min_retained_fraction:g} x {lo_s:g})"
    if not total_counts > 0:
        return CheckResult(check, "fail", found, exp, "no counts in the image")
    if apparent > hi_s:
        return CheckResult(check, "fail", found, exp,
                           "more counts than the administered activity can produce: check units, scaling or activity")
    if apparent < min_retained_fraction * lo_s:
        return CheckResult(check, "warn", found, exp,
                           "implausibly few counts: check the field of view, activity or acquisition time")
    return CheckResult(check, "pass", found, exp, f"apparent retained fraction {apparent / hi_s:.2f}-{min(apparent / lo_s, 1):.2f}")
