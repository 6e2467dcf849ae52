"""Protocol compliance of a reconstruction, from its header, and simple image checks.

The QA the pipeline runs on one reconstruction: :func:`check_reconstruction` checks its
header against the trial's imaging protocol, every check in a fixed order (the trial-wide
physics: :mod:`rntflow.harmonization.protocol_checks`; the names a site's camera may use
and the evidence of scatter correction: :mod:`rntflow.harmonization.camera_vocabulary`);
:func:`check_fov_covers_vois` and :func:`check_counts_plausible` check the image itself.

Every deviation becomes a :class:`rntflow.core.qa.CheckResult` (``pass`` / ``warn`` / ``fail``) so that QA
records it: nothing is silently accepted or silently rejected. A header lacking an optional
attribute yields a ``warn`` ("not stated"), never an exception and never a ``fail``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rntflow.core.config import CameraProfile, ImagingProtocol
from rntflow.core.qa import CheckResult
from rntflow.harmonization.camera_vocabulary import (
    Vocabulary,
    check_algorithm,
    check_collimator,
    check_filter,
    check_matrix,
    scatter_evidence,
)
from rntflow.harmonization.headers import NmHeader
from rntflow.harmonization.protocol_checks import (
    check_administered_activity,
    check_correction,
    check_energy_windows,
    check_pixel_units,
    check_projections,
    check_radionuclide,
    check_time_point,
    check_voxel,
)
from rntflow.physics.decay import decay_constant_per_s, decay_integral_s


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
    out = [check_pixel_units(header), check_administered_activity(header), check_radionuclide(header, protocol)]
    out += check_energy_windows(header, protocol, scatter_found)
    out.append(check_collimator(header, protocol, vocab))
    out.append(
        check_correction("attenuation_correction", header.attenuation_corrected, protocol.attenuation_correction)
    )
    out.append(
        check_correction("scatter_correction", header.scatter_corrected, protocol.scatter_correction, scatter_found)
    )
    out += check_algorithm(header, protocol, vocab)
    out.append(check_matrix(header, vocab))
    out.append(check_voxel(header, protocol))
    out.append(check_filter(header, protocol, vocab))
    out += check_projections(header, protocol)
    out.append(check_time_point(header, protocol))
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
