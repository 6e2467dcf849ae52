"""Protocol compliance of a reconstruction, from its header, and simple image checks.

Every deviation becomes a :class:`rntflow.core.qa.CheckResult` (``pass`` / ``warn`` / ``fail``) so that QA
records it: nothing is silently accepted or silently rejected. A header lacking an optional
attribute yields a ``warn`` ("not stated"), never an exception and never a ``fail``.

The trial protocol keeps the trial-wide physics (radionuclide, photopeak, corrections
required, iterations x subsets range, voxel range, time-point windows); a site's
:class:`rntflow.core.config.CameraProfile` widens the accepted names (algorithm, collimator,
matrix, filter strings) and says where its reconstructions evidence scatter correction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rntflow.core.config import CameraProfile, EnergyWindow, ImagingProtocol
from rntflow.core.protocol import nominal_time_point
from rntflow.core.qa import CheckResult
from rntflow.harmonization.headers import EnergyWindowKev, NmHeader, normalise_radionuclide
from rntflow.harmonization.nm_conventions import normalise_name
from rntflow.physics.decay import decay_constant_per_s, decay_integral_s


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def _missing(check: str, expected: str, what: str) -> CheckResult:
    """A required attribute is absent: ``fail``."""
    return CheckResult(check, "fail", "missing", expected, f"header lacks {what}")


def _not_stated(check: str, expected: str, what: str) -> CheckResult:
    """An optional attribute is absent: ``warn`` ("not stated"), never a fail."""
    return CheckResult(check, "warn", "not stated", expected, f"not stated: header lacks {what}")


@dataclass(frozen=True)
class Vocabulary:
    """The names a reconstruction may use: the trial protocol's plus the camera profile's.

    Attributes
    ----------
    algorithms, collimators, post_filters : tuple of str
        Normalised (:func:`rntflow.harmonization.nm_conventions.normalise_name`).
    matrix_sizes : tuple of int
    scatter_evidence : tuple of str
        Accepted evidence of scatter correction (:data:`rntflow.core.config.SCATTER_EVIDENCE`).
    scatter_text_patterns : tuple of str
    """

    algorithms: tuple[str, ...]
    collimators: tuple[str, ...]
    matrix_sizes: tuple[int, ...]
    post_filters: tuple[str, ...] = ()
    scatter_evidence: tuple[str, ...] = ("corrected_image", "energy_windows")
    scatter_text_patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, protocol: ImagingProtocol, camera: CameraProfile | None = None) -> Vocabulary:
        """The trial-wide names, widened by ``camera`` when given."""
        cam = camera or CameraProfile()
        return cls(
            tuple(dict.fromkeys(normalise_name(a) for a in [protocol.algorithm, *cam.algorithms])),
            tuple(dict.fromkeys(normalise_name(c) for c in [protocol.collimator, *cam.collimators])),
            tuple(dict.fromkeys([protocol.matrix_size, *cam.matrix_sizes])),
            tuple(normalise_name(f) for f in cam.post_filters),
            tuple(cam.scatter_evidence),
            tuple(cam.scatter_text_patterns),
        )


def _match_window(want: EnergyWindow, found: Sequence[EnergyWindowKev], tol_pct: float) -> EnergyWindowKev | None:
    tol_kev = want.center_kev * tol_pct / 100.0
    for w in found:
        if abs(w.lower_kev - want.lower_kev) <= tol_kev and abs(w.upper_kev - want.upper_kev) <= tol_kev:
            return w
    return None


def _win_str(w: EnergyWindowKev | EnergyWindow) -> str:
    return f"{w.lower_kev:.1f}-{w.upper_kev:.1f} keV"


def scatter_evidence(h: NmHeader, protocol: ImagingProtocol, vocab: Vocabulary) -> list[str]:
    """The accepted evidence of scatter correction found in a header (empty: none found).

    ``corrected_image``: CorrectedImage (0028,0051) contains ``SCAT`` (PS3.3 C.8.4.9);
    ``energy_windows``: every protocol scatter window is listed and CorrectedImage is absent
    (a CorrectedImage without ``SCAT`` states that scatter was not corrected, whatever
    windows were acquired); ``text``: a camera-profile
    pattern matches SeriesDescription, ReconstructionMethod, ConvolutionKernel or a private
    text element; ``declared``: the site declares it.
    """
    found = []
    if "corrected_image" in vocab.scatter_evidence and h.scatter_corrected:
        found.append("CorrectedImage SCAT")
    others = list(h.energy_windows[1:])
    if (
        "energy_windows" in vocab.scatter_evidence
        and h.scatter_corrected is None
        and protocol.scatter_windows
        and others
        and all(_match_window(w, others, protocol.energy_tolerance_pct) for w in protocol.scatter_windows)
    ):
        found.append("scatter energy windows")
    if "text" in vocab.scatter_evidence:
        for pattern in vocab.scatter_text_patterns:
            hit = next((t for t in h.text_hints if re.search(pattern, t, re.IGNORECASE)), None)
            if hit is not None:
                found.append(f"text {hit!r}")
                break
    if "declared" in vocab.scatter_evidence:
        found.append("declared by the site's camera profile")
    return found


def _check_energy_windows(h: NmHeader, p: ImagingProtocol, scatter_found: list[str]) -> list[CheckResult]:
    out: list[CheckResult] = []
    expected_pk = ", ".join(_win_str(w) for w in p.photopeak_windows) + f" (+-{p.energy_tolerance_pct:g}% of centre)"
    wants_scatter_windows = p.scatter_correction and bool(p.scatter_windows)
    expected_sc = ", ".join(_win_str(w) for w in p.scatter_windows) + f" (+-{p.energy_tolerance_pct:g}% of centre)"
    if not h.energy_windows:
        out.append(_not_stated("energy_window_photopeak", expected_pk, "EnergyWindowInformationSequence"))
        if wants_scatter_windows:
            out.append(_not_stated("energy_window_scatter", expected_sc, "EnergyWindowInformationSequence"))
        return out
    found = ", ".join(_win_str(w) for w in h.energy_windows)
    unmatched = [w for w in p.photopeak_windows if _match_window(w, h.energy_windows, p.energy_tolerance_pct) is None]
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
        miss = [w for w in p.scatter_windows if _match_window(w, others, p.energy_tolerance_pct) is None]
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
            out.append(_not_stated("energy_window_scatter", expected_sc, "scatter energy windows"))
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


def _check_collimator(h: NmHeader, p: ImagingProtocol, vocab: Vocabulary) -> CheckResult:
    exp = " or ".join(vocab.collimators)
    if h.collimator is None:
        return _not_stated("collimator", exp, "CollimatorGridName")
    if normalise_name(h.collimator) in vocab.collimators:
        return CheckResult("collimator", "pass", h.collimator, exp, "collimator as protocol")
    if _energy_class(h.collimator) == _energy_class(p.collimator):
        return CheckResult(
            "collimator",
            "warn",
            h.collimator,
            exp,
            "same energy class, different collimator name: confirm the collimator "
            "(or list it in the site's camera profile)",
        )
    return CheckResult("collimator", "fail", h.collimator, exp, "wrong collimator energy class")


def _check_correction(name: str, found: bool | None, required: bool, evidence: list[str] | None = None) -> CheckResult:
    exp = "applied" if required else "not required"
    label = name.replace("_", " ")
    if evidence:
        if required:
            return CheckResult(name, "pass", "applied (" + ", ".join(evidence) + ")", exp, "as protocol")
        return CheckResult(name, "warn", "applied", exp, f"{label} applied though the protocol does not ask for it")
    if found is None:
        if not required:
            return CheckResult(name, "pass", "not stated", exp, "not required by the protocol")
        return _not_stated(name, exp, "CorrectedImage (and no other evidence)")
    got = "applied" if found else "not applied"
    if required and not found:
        return CheckResult(name, "fail", got, exp, f"{label} required by the protocol but not applied")
    if found and not required:
        return CheckResult(name, "warn", got, exp, f"{label} applied though the protocol does not ask for it")
    return CheckResult(name, "pass", got, exp, "as protocol")


def _algorithm_accepted(h: NmHeader, vocab: Vocabulary) -> bool:
    names = [normalise_name(h.algorithm)]
    names += [normalise_name(w) for w in re.split(r"\s+", h.reconstruction_method or "") if w]
    return any(n and n.startswith(a) for n in names for a in vocab.algorithms if a)


def _check_algorithm(h: NmHeader, p: ImagingProtocol, vocab: Vocabulary) -> list[CheckResult]:
    out = []
    exp_algo = " or ".join(vocab.algorithms)
    if h.algorithm is None:
        out.append(_not_stated("algorithm", exp_algo, "ReconstructionMethod"))
    elif not _algorithm_accepted(h, vocab):
        out.append(
            CheckResult(
                "algorithm",
                "fail",
                h.reconstruction_method or h.algorithm,
                exp_algo,
                "reconstruction algorithm not in the protocol's or the camera profile's vocabulary",
            )
        )
    else:
        out.append(CheckResult("algorithm", "pass", h.reconstruction_method or h.algorithm, exp_algo, "as protocol"))
    exp = f"{p.min_iterations_x_subsets}-{p.max_iterations_x_subsets}"
    if h.iterations is None or h.subsets is None:
        out.append(_not_stated("iterations_x_subsets", exp, "iterations/subsets in ReconstructionMethod"))
    else:
        n = h.iterations * h.subsets
        found = f"{n} ({h.iterations}i{h.subsets}s)"
        ok = p.min_iterations_x_subsets <= n <= p.max_iterations_x_subsets
        out.append(
            CheckResult(
                "iterations_x_subsets",
                "pass" if ok else "fail",
                found,
                exp,
                "in range" if ok else "iterations x subsets outside the protocol range",
            )
        )
    return out


def _check_matrix(h: NmHeader, vocab: Vocabulary) -> CheckResult:
    exp = " or ".join(f"{m}x{m}" for m in vocab.matrix_sizes)
    if h.matrix_rows is None or h.matrix_cols is None:
        return _not_stated("matrix", exp, "Rows/Columns")
    found = f"{h.matrix_rows}x{h.matrix_cols}"
    ok = h.matrix_rows == h.matrix_cols and h.matrix_rows in vocab.matrix_sizes
    return CheckResult(
        "matrix", "pass" if ok else "fail", found, exp, "as protocol" if ok else "matrix size differs from protocol"
    )


def _check_voxel(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    exp = f"{p.voxel_size_mm:g} +- {p.voxel_tolerance_mm:g} mm"
    if h.voxel_size_mm is None:
        return _missing("voxel_size", exp, "PixelSpacing/SpacingBetweenSlices")
    found = "x".join(f"{v:g}" for v in h.voxel_size_mm) + " mm"
    ok = all(abs(v - p.voxel_size_mm) <= p.voxel_tolerance_mm for v in h.voxel_size_mm)
    return CheckResult(
        "voxel_size", "pass" if ok else "fail", found, exp, "as protocol" if ok else "voxel size outside tolerance"
    )


def _check_filter(h: NmHeader, p: ImagingProtocol, vocab: Vocabulary) -> CheckResult:
    exp = f"<= {p.max_post_filter_fwhm_mm:g} mm FWHM" + (
        " or " + ", ".join(vocab.post_filters) if vocab.post_filters else ""
    )
    pf = h.post_filter
    if pf is None:
        return _not_stated("post_filter", exp, "ConvolutionKernel")
    found = f"{pf.text!r}: {pf.describe()}"
    if normalise_name(pf.text) in vocab.post_filters:
        return CheckResult("post_filter", "pass", found, exp, "filter listed in the site's camera profile")
    if not pf.parsed:
        return CheckResult(
            "post_filter",
            "warn",
            found,
            exp,
            "post-filter string not understood: confirm it (or list it in the camera profile)",
        )
    if pf.fwhm_mm is not None:
        ok = pf.fwhm_mm <= p.max_post_filter_fwhm_mm + 1e-9
        return CheckResult(
            "post_filter",
            "pass" if ok else "fail",
            found,
            exp,
            "as protocol" if ok else "post-filter stronger than the protocol allows (RC and harmonisation change)",
        )
    if p.max_post_filter_fwhm_mm <= 0:
        return CheckResult("post_filter", "fail", found, exp, f"{pf.name} post-filter where the protocol allows none")
    return CheckResult(
        "post_filter",
        "warn",
        found,
        exp,
        f"{pf.name} filter cannot be compared with a Gaussian FWHM limit: confirm it "
        "(or list it in the camera profile)",
    )


def _check_projections(h: NmHeader, p: ImagingProtocol) -> list[CheckResult]:
    out = []
    exp = f">= {p.min_projections}"
    if h.projections is None:
        out.append(_not_stated("projections", exp, "RotationInformationSequence.NumberOfFramesInRotation"))
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
        out.append(_not_stated("time_per_projection", exp_t, "RotationInformationSequence.ActualFrameDuration"))
    else:
        ok = h.time_per_projection_s >= p.min_time_per_projection_s - 1e-9
        slip = next((n for n in h.notes if n.startswith("ActualFrameDuration")), None)
        status = ("warn" if slip else "pass") if ok else "fail"
        msg = ("as protocol" if ok else "time per projection shorter than protocol") + (f"; {slip}" if slip else "")
        out.append(CheckResult("time_per_projection", status, f"{h.time_per_projection_s:g} s", exp_t, msg))
    return out


def _check_radionuclide(h: NmHeader, p: ImagingProtocol) -> CheckResult:
    want = normalise_radionuclide(p.radionuclide) or p.radionuclide
    if h.radionuclide is None:
        return _not_stated("radionuclide", want, "RadiopharmaceuticalInformationSequence radionuclide")
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
        return _not_stated("administered_activity", exp, "RadionuclideTotalDose")
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


def check_reconstruction(
    header: NmHeader, protocol: ImagingProtocol, camera: CameraProfile | None = None
) -> list[CheckResult]:
    """Check a reconstruction header against the trial's imaging protocol.

    Parameters
    ----------
    header : NmHeader
        From :func:`harmonization.headers.parse_nm_header`.
    protocol : ImagingProtocol
        ``TrialConfig.protocol``: the trial-wide physics and names.
    camera : CameraProfile or None
        The sending site's camera vocabulary (``SiteSettings.camera_profile(manufacturer,
        model)``): further accepted algorithm, collimator, matrix and filter names and where
        scatter correction is evidenced.

    Returns
    -------
    list of CheckResult
        In a fixed order: pixel_units, administered_activity, radionuclide,
        energy_window_photopeak, energy_window_scatter (when scatter correction with scatter
        windows is required), collimator, attenuation_correction, scatter_correction,
        algorithm, iterations_x_subsets, matrix, voxel_size, post_filter, projections,
        time_per_projection, time_point. An optional attribute that is absent is a
        ``warn`` ("not stated"), never a ``fail``; the voxel size and the scan time, without
        which nothing can be quantified, are ``fail`` when absent.
    """
    vocab = Vocabulary.of(protocol, camera)
    scatter_found = scatter_evidence(header, protocol, vocab)
    out = [check_pixel_units(header), check_administered_activity(header), _check_radionuclide(header, protocol)]
    out += _check_energy_windows(header, protocol, scatter_found)
    out.append(_check_collimator(header, protocol, vocab))
    out.append(
        _check_correction("attenuation_correction", header.attenuation_corrected, protocol.attenuation_correction)
    )
    out.append(
        _check_correction("scatter_correction", header.scatter_corrected, protocol.scatter_correction, scatter_found)
    )
    out += _check_algorithm(header, protocol, vocab)
    out.append(_check_matrix(header, vocab))
    out.append(_check_voxel(header, protocol))
    out.append(_check_filter(header, protocol, vocab))
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
    def of(cls, image: sitk.Image) -> ImageGeometry:
        return cls(
            tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection())
        )

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
        lo_mm = (idx.min(axis=0) + 0.5) * sp  # distance from the FOV's lower faces
        hi_mm = (size - 0.5 - idx.max(axis=0)) * sp  # distance from the upper faces
        clearance = float(min(lo_mm.min(), hi_mm.min()))
        found = f"clearance {clearance:.1f} mm"
        if clearance < 0:
            # fraction of the box outside, for the message
            inside_lo = np.clip(idx.min(axis=0), -0.5, size - 0.5)
            inside_hi = np.clip(idx.max(axis=0), -0.5, size - 0.5)
            frac = float(
                np.prod(np.clip(inside_hi - inside_lo, 0, None)) / np.prod(idx.max(axis=0) - idx.min(axis=0) + 1e-12)
            )
            out.append(
                CheckResult(
                    check,
                    "fail",
                    found,
                    "VOI inside FOV",
                    f"VOI {name} extends {-clearance:.1f} mm outside the FOV ({100 * (1 - frac):.0f}% of its bounding box)",
                )
            )
        elif clearance < margin_mm:
            out.append(
                CheckResult(check, "warn", found, f">= {margin_mm:g} mm", f"VOI {name} is close to the FOV edge")
            )
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
        return CheckResult(
            check,
            "fail",
            f"{total_counts:g} counts",
            f"{lo_s:g}-{hi_s:g} cps/MBq",
            "administered activity, time after administration or duration missing",
        )
    half_life_s = nuclide(radionuclide).half_life_h * 3600.0
    a_mbq = administered_activity_mbq * math.exp(-decay_constant_per_s(half_life_s) * t_h * 3600.0)
    tau_s = decay_integral_s(duration_s, half_life_s)
    apparent = total_counts / (a_mbq * tau_s)
    found = f"{total_counts:.4g} counts = {apparent:.3g} cps/MBq of the decayed activity"
    exp = f"<= {hi_s:g} cps/MBq (and >= {min_retained_fraction:g} x {lo_s:g})"
    if not total_counts > 0:
        return CheckResult(check, "fail", found, exp, "no counts in the image")
    if apparent > hi_s:
        return CheckResult(
            check,
            "fail",
            found,
            exp,
            "more counts than the administered activity can produce: check units, scaling or activity",
        )
    if apparent < min_retained_fraction * lo_s:
        return CheckResult(
            check, "warn", found, exp, "implausibly few counts: check the field of view, activity or acquisition time"
        )
    return CheckResult(
        check, "pass", found, exp, f"apparent retained fraction {apparent / hi_s:.2f}-{min(apparent / lo_s, 1):.2f}"
    )
