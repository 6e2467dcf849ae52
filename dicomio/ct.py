"""CT series: choose one, check its slice geometry, decode and stack it in HU.

The slice geometry is checked from the headers (pydicom, pixel data deferred): complete
geometry, one matrix/orientation/pixel spacing, one slice per position, regular spacing
along the slice normal, no gantry tilt. The pixel data is then decoded and stacked by
SimpleITK's :class:`~SimpleITK.ImageSeriesReader` with GDCM (every transfer syntax GDCM
decodes; the Modality LUT, RescaleSlope and RescaleIntercept, applied slice by slice), in
the order the headers gave. The volume's origin, spacing and direction come from the
reader and are checked against the headers.

Only single-frame CT Image Storage is stacked; Enhanced (multi-frame) CT is reported as
not supported by :mod:`rntflow.dicomio.study`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rntflow.core.errors import DicomInputError
from rntflow.dicomio.dicomfile import DicomFile
from rntflow.dicomio.values import FOR_METADATA_KEY, floats, text

#: Largest allowed deviation of one CT slice step from the mean step (fraction).
SLICE_SPACING_RTOL = 0.01
#: Two slices closer than this along the normal are at one position (mm).
_SAME_POSITION_MM = 1e-3
#: Largest in-plane drift of slice positions off the slice normal (fraction of a pixel).
_TILT_PIXELS = 0.1
#: Largest disagreement between the series reader's geometry and the headers': origin and
#: direction (absolute, mm and cosines), spacing (relative).
_GEOMETRY_ATOL = 1e-3
_SPACING_RTOL = 1e-4


@dataclass
class CtVolume:
    """The CT used for a study.

    Attributes
    ----------
    image : SimpleITK.Image
        float32 HU; spacing/origin/direction in LPS (mm). The FrameOfReferenceUID, when
        present, is also stored as image metadata :data:`~rntflow.dicomio.values.FOR_METADATA_KEY`.
    series_uid : str or None
        Its SeriesInstanceUID.
    frame_of_reference_uid : str or None
    """

    image: sitk.Image
    series_uid: str | None
    frame_of_reference_uid: str | None


@dataclass(frozen=True)
class _Slice:
    """Geometry of one CT slice from its header (LPS, mm)."""

    file: DicomFile
    orientation: tuple[float, ...]  # ImageOrientationPatient: row then column cosines
    position_mm: tuple[float, ...]  # ImagePositionPatient: centre of the first pixel
    pixel_spacing_mm: tuple[float, ...]  # PixelSpacing: (row spacing, column spacing)
    shape: tuple[int, int]  # (Rows, Columns)

    def grid_key(self) -> tuple:
        return (np.round(self.orientation, 4).tobytes(), np.round(self.pixel_spacing_mm, 4).tobytes(), self.shape)


@dataclass
class _Stack:
    """Slices in order along the slice normal, and the grid they make."""

    slices: list[_Slice]
    normal: np.ndarray
    step_mm: float
    dropped: list[str]  # duplicates left out, "<file>: <reason>"


def build_ct(ct_files: list[DicomFile]) -> tuple[CtVolume | None, list[str]]:
    """The CT volume of the study's largest CT series, and the CT files not used.

    Parameters
    ----------
    ct_files : list of DicomFile
        The study's CT Image Storage files (headers; pixel data deferred).

    Returns
    -------
    ct : CtVolume or None
        ``None`` when there is no CT or the largest series is not usable.
    unused : list of str
        ``"<file>: <reason>"``: slices of other series, slices dropped (incomplete
        geometry, another matrix, duplicates, unreadable pixel data) and, when the series
        is unusable (irregular spacing, gantry tilt ...), every slice of it with the reason.
    """
    if not ct_files:
        return None, []
    unused: list[str] = []
    series: dict[str | None, list[DicomFile]] = {}
    for f in ct_files:
        series.setdefault(text(f.ds, "SeriesInstanceUID"), []).append(f)
    ordered = sorted(series.items(), key=lambda kv: -len(kv[1]))
    uid, chosen = ordered[0]
    for _other, fs in ordered[1:]:
        unused += [
            f"{f.rel}: CT of another series ({len(fs)} slices) than the one used ({len(chosen)} slices)" for f in fs
        ]
    try:
        image = _ct_volume(chosen, unused)
    except DicomInputError as exc:
        unused += [f"{f.rel}: CT series not usable: {exc}" for f in chosen]
        return None, unused
    frame = text(chosen[0].ds, "FrameOfReferenceUID")
    if frame:
        image.SetMetaData(FOR_METADATA_KEY, frame)
    return CtVolume(image, uid, frame), unused


def _ct_volume(files: list[DicomFile], unused: list[str]) -> sitk.Image:
    """Check, decode and stack one series (appends the slices dropped to ``unused``)."""
    slices = _grid_slices(_complete_slices(files, unused), unused)
    while True:
        stack = _stack(slices)
        image, unreadable = _read_series(stack)
        if not unreadable:
            break
        unused += [f"{s.file.rel}: CT pixel data not readable ({why})" for s, why in unreadable]
        bad = {id(s) for s, _ in unreadable}
        slices = [s for s in slices if id(s) not in bad]
        if not slices:
            raise DicomInputError("no CT slice with readable pixel data")
    unused += stack.dropped
    _check_geometry(image, stack)
    return image


def _complete_slices(files: list[DicomFile], unused: list[str]) -> list[_Slice]:
    out = []
    for f in files:
        ds = f.ds
        iop = floats(ds.get("ImageOrientationPatient"), 6)
        ipp = floats(ds.get("ImagePositionPatient"), 3)
        ps = floats(ds.get("PixelSpacing"), 2)
        try:
            shape = (int(ds.Rows), int(ds.Columns))
        except Exception:  # absent or malformed Rows/Columns
            shape = None
        if iop is None or ipp is None or ps is None or shape is None:
            unused.append(
                f"{f.rel}: CT slice lacks ImagePositionPatient, ImageOrientationPatient, PixelSpacing or Rows/Columns"
            )
            continue
        out.append(_Slice(f, iop, ipp, ps, shape))
    if not out:
        raise DicomInputError("no CT slice with complete geometry")
    return out


def _grid_slices(slices: list[_Slice], unused: list[str]) -> list[_Slice]:
    """The slices of the most common matrix, orientation and pixel spacing."""
    key = Counter(s.grid_key() for s in slices).most_common(1)[0][0]
    for s in slices:
        if s.grid_key() != key:
            unused.append(
                f"{s.file.rel}: CT slice of another matrix, orientation or pixel spacing than the rest of its series"
            )
    return [s for s in slices if s.grid_key() == key]


def _stack(slices: list[_Slice]) -> _Stack:
    """Order slices along the normal, drop duplicates, check the spacing is regular and untilted.

    Raises
    ------
    DicomInputError
        For a non-orthonormal orientation, irregular spacing (a missing slice: one step
        more than :data:`SLICE_SPACING_RTOL` off the mean) or a gantry tilt.
    """
    iop = np.asarray(slices[0].orientation)
    normal = np.cross(iop[:3], iop[3:])
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DicomInputError(f"ImageOrientationPatient {iop.tolist()} is not orthonormal")
    d_all = np.array([np.dot(s.position_mm, normal) for s in slices])
    kept: list[int] = []
    dropped = []
    for i in np.argsort(d_all, kind="stable"):  # duplicates at one position: keep the first in file order
        if kept and abs(d_all[i] - d_all[kept[-1]]) < _SAME_POSITION_MM:
            dropped.append(f"{slices[i].file.rel}: second CT slice at position {d_all[i]:.2f} mm (duplicate)")
        else:
            kept.append(int(i))
    d = d_all[kept]
    n = len(kept)
    if n < 2:
        ds0 = slices[kept[0]].file.ds
        step = floats([ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0], 1)
        return _Stack([slices[kept[0]]], normal, abs(step[0]) if step else 1.0, dropped)
    steps = np.diff(d)
    step = float((d[-1] - d[0]) / (n - 1))
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > SLICE_SPACING_RTOL * step:
        raise DicomInputError(
            f"irregular slice spacing: step {steps[worst]:.3f} mm at {d[worst]:.2f} mm vs mean "
            f"{step:.3f} mm (missing slice?)"
        )
    pos = np.array([slices[i].position_mm for i in kept])
    inplane = (pos - pos[0]) - np.outer(d - d[0], normal)
    if float(np.max(np.abs(inplane))) > _TILT_PIXELS * min(slices[0].pixel_spacing_mm):
        raise DicomInputError(
            "slice positions do not lie along the slice normal (gantry tilt); "
            "resample the CT to an orthogonal grid first"
        )
    return _Stack([slices[i] for i in kept], normal, step, dropped)


def _short_reason(exc: Exception) -> str:
    """The informative line of a SimpleITK exception (its first line names C++ source files)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "SimpleITK/GDCM: " + (lines[-1] if lines else type(exc).__name__)


def _read_series(stack: _Stack) -> tuple[sitk.Image | None, list[tuple[_Slice, str]]]:
    """Decode and stack the slices (float32 HU); on failure, the slices that cannot be read.

    Returns
    -------
    image : SimpleITK.Image or None
        ``None`` when some slices are unreadable.
    unreadable : list of (slice, reason)
        Found by reading each slice alone, only when the series read failed.

    Raises
    ------
    DicomInputError
        When the series read fails but every slice reads alone.
    """
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(s.file.path) for s in stack.slices])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        return reader.Execute(), []
    except RuntimeError as exc:
        series_error = exc
    unreadable = []
    for s in stack.slices:
        try:
            sitk.ReadImage(str(s.file.path), sitk.sitkFloat32, imageIO="GDCMImageIO")
        except RuntimeError as exc:
            unreadable.append((s, _short_reason(exc)))
    if not unreadable:
        raise DicomInputError(f"CT series not readable ({_short_reason(series_error)})")
    return None, unreadable


def _check_geometry(image: sitk.Image, stack: _Stack) -> None:
    """The reader's origin, spacing and direction agree with the headers (one slice: set z spacing)."""
    first = stack.slices[0]
    iop = np.asarray(first.orientation)
    expected_direction = np.column_stack([iop[:3], iop[3:], stack.normal]).flatten()
    ps = first.pixel_spacing_mm
    expected_spacing = np.array([ps[1], ps[0], stack.step_mm])
    if len(stack.slices) == 1:
        image.SetSpacing(expected_spacing.tolist())
    problems = []
    if image.GetSize() != (first.shape[1], first.shape[0], len(stack.slices)):
        problems.append(f"size {image.GetSize()}")
    if not np.allclose(image.GetOrigin(), first.position_mm, rtol=0, atol=_GEOMETRY_ATOL):
        problems.append(f"origin {image.GetOrigin()} vs {first.position_mm} mm")
    if not np.allclose(image.GetSpacing(), expected_spacing, rtol=_SPACING_RTOL, atol=0):
        problems.append(f"spacing {image.GetSpacing()} vs {tuple(expected_spacing)} mm")
    if not np.allclose(image.GetDirection(), expected_direction, rtol=0, atol=_GEOMETRY_ATOL):
        problems.append(f"direction {image.GetDirection()} vs {tuple(expected_direction)}")
    if problems:
        raise DicomInputError("SimpleITK's series geometry disagrees with the slice headers: " + "; ".join(problems))
