"""Read one de-identified study folder: NM reconstruction, CT volume (HU) and VOI masks.

Used by the Prefect tasks; nothing here imports Prefect. The listener writes a stable
study as ``<study_dir>/<series_key>/<sop_key>.dcm``; :func:`load_study` accepts any depth
(``rglob("*.dcm")``).

Conventions (SimpleITK's): images carry spacing/origin/direction as ``(x, y, z)`` in
patient LPS (mm); arrays from them are indexed ``(z, y, x)``. VOI masks are
``numpy.bool_`` arrays ``(z, y, x)`` on the grid of the reference image passed in.

Robustness: one unreadable or unexpected file never fails a study; it is listed in
:attr:`LoadedStudy.unused` with the reason.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rntflow.dosimetry.vois import rasterise_contours
from rntflow.core.errors import DicomInputError, StorageError, VoiError

log = logging.getLogger(__name__)

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
NM_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.5"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_SOP_CLASSES = (SEG_STORAGE, LABELMAP_SEG_STORAGE)

#: SimpleITK metadata key (GDCM convention ``gggg|eeee``) under which :func:`load_study`
#: records the CT's FrameOfReferenceUID on the returned image.
FOR_METADATA_KEY = "0020|0052"
#: Elements larger than this are read from disk only when accessed (large pixel data).
_DEFER_SIZE = "256 KB"
#: Largest allowed deviation of one CT slice step from the mean step (fraction).
_SLICE_SPACING_RTOL = 0.01


# --------------------------------------------------------------------------- the study


@dataclass
class LoadedStudy:
    """What one study folder holds, ready for the flows.

    Attributes
    ----------
    study_dir : Path
        The folder read.
    nm : pydicom.Dataset or None
        The NM reconstructed tomo (multi-frame, ImageType ``RECON TOMO``), pixel data
        loaded (read it with :func:`harmonization.headers.nm_to_image`).
    ct : SimpleITK.Image or None
        The CT volume, float32 HU; spacing/origin/direction from the slices (LPS, mm).
        Its FrameOfReferenceUID is also stored as image metadata ``0020|0052``.
    ct_frame_of_reference_uid : str or None
    rtstructs : list of pydicom.Dataset
        Every RT Structure Set in the study (contours not yet rasterised).
    segs : list of pydicom.Dataset
        Every DICOM Segmentation in the study.
    unused : list of str
        ``"<file relative to study_dir>: <reason>"`` for every file not used (unreadable,
        other SOP class, other NM object, other CT series, bad slice ...).
    n_files : int
        Number of ``*.dcm`` files found.
    ct_series_uid : str or None
        SeriesInstanceUID of the CT used.
    study_instance_uid : str or None
        StudyInstanceUID of the first object read (the listener writes one study per folder).
    """

    study_dir: Path
    nm: Dataset | None = None
    ct: sitk.Image | None = None
    ct_frame_of_reference_uid: str | None = None
    rtstructs: list[Dataset] = field(default_factory=list)
    segs: list[Dataset] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    n_files: int = 0
    ct_series_uid: str | None = None
    study_instance_uid: str | None = None


@dataclass
class _File:
    path: Path
    rel: str
    ds: Dataset


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:  # pragma: no cover - rglob yields paths under root
        return str(path)


def _s(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _image_type(ds: Dataset) -> list[str]:
    try:
        value = ds.get("ImageType")
    except Exception:
        return []
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip().upper() for v in value.split("\\")]
    return [str(v).strip().upper() for v in value]


def _n_frames(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def load_study(study_dir: str | Path) -> LoadedStudy:
    """Read a study folder into the objects the flows use.

    Parameters
    ----------
    study_dir : str or Path
        A study folder (``<series_key>/<sop_key>.dcm`` below it; any depth).

    Returns
    -------
    LoadedStudy
        The NM reconstruction, the CT (float32 HU), every RTSTRUCT and SEG, and the
        files not used with the reason.

    Raises
    ------
    DicomInputError
        When ``study_dir`` is not a folder, or holds no usable object (no NM
        reconstruction, no CT, no RTSTRUCT and no SEG).

    Notes
    -----
    * Headers are read with large elements deferred (pixel data of big slices is read
      only for the CT series used); the NM, RTSTRUCT and SEG datasets returned are read
      whole, so they do not depend on the files afterwards.
    * NM: of several NM objects the ``RECON TOMO`` one is used (``EMISSION`` preferred
      over other RECON TOMO objects, then the most frames); the others are unused.
    * CT: CT Image Storage slices grouped by SeriesInstanceUID; the series with most
      slices is used. Slices are sorted along the slice normal by ImagePositionPatient;
      duplicates at one position and slices of another matrix/orientation are dropped
      and reported. Irregular slice spacing (a missing slice, > 1 % deviation) or a
      gantry tilt makes the CT unusable (``ct`` is ``None``, the reason in ``unused``).
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise DicomInputError(f"{root}: study folder not found")
    paths = sorted(root.rglob("*.dcm"))
    study = LoadedStudy(study_dir=root, n_files=len(paths))

    files: list[_File] = []
    seen_sop: dict[str, str] = {}
    for path in paths:
        rel = _rel(path, root)
        if not path.is_file():
            study.unused.append(f"{rel}: not a regular file")
            continue
        try:
            ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
        except Exception as exc:  # any parse failure: this file is unusable, the study is not
            study.unused.append(f"{rel}: not readable DICOM ({type(exc).__name__}: {exc})")
            continue
        if _s(ds, "SOPClassUID") is None:
            study.unused.append(f"{rel}: DICOM without SOPClassUID")
            continue
        sop_uid = _s(ds, "SOPInstanceUID")
        if sop_uid is not None and sop_uid in seen_sop:
            study.unused.append(f"{rel}: duplicate of {seen_sop[sop_uid]} (same SOPInstanceUID)")
            continue
        if sop_uid is not None:
            seen_sop[sop_uid] = rel
        if study.study_instance_uid is None:
            study.study_instance_uid = _s(ds, "StudyInstanceUID")
        files.append(_File(path, rel, ds))

    nm_files, ct_files, other = [], [], []
    for f in files:
        sop_class = str(f.ds.SOPClassUID)
        if sop_class in (NM_IMAGE_STORAGE, NM_IMAGE_STORAGE_RETIRED):
            nm_files.append(f)
        elif sop_class == CT_IMAGE_STORAGE:
            ct_files.append(f)
        elif sop_class == RTSTRUCT_STORAGE:
            ds = _read_whole(f, study)
            if ds is not None:
                study.rtstructs.append(ds)
        elif sop_class in SEG_SOP_CLASSES:
            ds = _read_whole(f, study)
            if ds is not None:
                study.segs.append(ds)
        else:
            other.append(f)
    for f in other:
        sop_class = str(f.ds.SOPClassUID)
        name = pydicom.uid.UID(sop_class).name
        reason = "enhanced (multi-frame) CT is not supported" if sop_class == ENHANCED_CT_IMAGE_STORAGE \
            else f"SOP class not used ({name}, modality {_s(f.ds, 'Modality')})"
        study.unused.append(f"{f.rel}: {reason}")

    _choose_nm(nm_files, study)
    _build_ct(ct_files, study)

    if study.nm is None and study.ct is None and not study.rtstructs and not study.segs:
        shown = "; ".join(study.unused[:5]) + (" ..." if len(study.unused) > 5 else "")
        raise DicomInputError(
            f"{root}: no usable objects (no NM reconstruction, CT, RTSTRUCT or SEG among "
            f"{study.n_files} .dcm files)" + (f": {shown}" if shown else "")
        )
    return study


def _read_whole(f: _File, study: LoadedStudy) -> Dataset | None:
    """Re-read a file without deferred elements (so the dataset is self-contained)."""
    try:
        ds = pydicom.dcmread(f.path)
        if "PixelData" in ds:
            _ = ds.PixelData
        return ds
    except Exception as exc:
        study.unused.append(f"{f.rel}: not readable DICOM ({type(exc).__name__}: {exc})")
        return None


def _choose_nm(nm_files: list[_File], study: LoadedStudy) -> None:
    recon = [f for f in nm_files if "RECON TOMO" in _image_type(f.ds)]
    for f in nm_files:
        if f not in recon:
            types = "\\".join(_image_type(f.ds)) or "none"
            study.unused.append(f"{f.rel}: NM object is not a reconstruction (ImageType {types})")
    # EMISSION first, then most frames, then file order
    recon.sort(key=lambda f: ("EMISSION" not in _image_type(f.ds), -_n_frames(f.ds)))
    while recon:
        chosen = recon.pop(0)
        ds = _read_whole(chosen, study)
        if ds is not None:
            study.nm = ds
            break
    for f in recon:
        study.unused.append(f"{f.rel}: another NM RECON TOMO object ({_n_frames(f.ds)} frames) "
                            f"than the one used")


# --------------------------------------------------------------------------- CT


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _build_ct(ct_files: list[_File], study: LoadedStudy) -> None:
    if not ct_files:
        return
    series: dict[str, list[_File]] = {}
    for f in ct_files:
        series.setdefault(_s(f.ds, "SeriesInstanceUID") or "?", []).append(f)
    ordered = sorted(series.items(), key=lambda kv: -len(kv[1]))
    uid, chosen = ordered[0]
    for _other_uid, fs in ordered[1:]:
        for f in fs:
            study.unused.append(f"{f.rel}: CT of another series ({len(fs)} slices) than the one used "
                                f"({len(chosen)} slices)")
    try:
        study.ct = _ct_volume(chosen, study)
    except DicomInputError as exc:
        for f in chosen:
            study.unused.append(f"{f.rel}: CT series not usable: {exc}")
        study.ct = None
        return
    study.ct_series_uid = uid
    study.ct_frame_of_reference_uid = _s(chosen[0].ds, "FrameOfReferenceUID")
    if study.ct_frame_of_reference_uid:
        study.ct.SetMetaData(FOR_METADATA_KEY, study.ct_frame_of_reference_uid)


_NATIVE_LITTLE_ENDIAN = {pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian,
                         pydicom.uid.DeflatedExplicitVRLittleEndian}


def _stored_pixels(ds: Dataset, shape: tuple[int, int]) -> np.ndarray:
    """Stored values of a single-frame greyscale slice.

    Native little-endian 16-bit data is read straight from the bytes (bits above
    BitsStored masked, signed values sign-extended), which is ~10 x faster than
    ``pixel_array``; everything else (compressed, 8/32-bit, colour) goes through pydicom.
    """
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    bits_allocated = int(ds.get("BitsAllocated") or 0)
    if (ts in _NATIVE_LITTLE_ENDIAN and bits_allocated == 16 and int(ds.get("SamplesPerPixel") or 1) == 1
            and _n_frames(ds) == 1):
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        bits_stored = int(ds.get("BitsStored") or 16)
        raw = ds.PixelData
        n = shape[0] * shape[1]
        if len(raw) < 2 * n:
            raise ValueError(f"PixelData holds {len(raw)} bytes, {2 * n} expected")
        arr = np.frombuffer(raw, dtype="<u2", count=n).reshape(shape)
        if bits_stored < 16:
            arr = arr & np.uint16((1 << bits_stored) - 1)
            if signed:
                shift = 16 - bits_stored
                return (arr.astype(np.int16) << shift) >> shift
        return arr.view(np.int16) if signed else arr
    return ds.pixel_array


def _ct_volume(files: list[_File], study: LoadedStudy) -> sitk.Image:
    """Stack CT slices into a float32 HU image (drops and reports unusable slices)."""
    geo = []
    for f in files:
        ds = f.ds
        iop = _floats(ds.get("ImageOrientationPatient"), 6)
        ipp = _floats(ds.get("ImagePositionPatient"), 3)
        ps = _floats(ds.get("PixelSpacing"), 2)
        try:
            shape = (int(ds.Rows), int(ds.Columns))
        except Exception:
            shape = None
        if iop is None or ipp is None or ps is None or shape is None:
            study.unused.append(f"{f.rel}: CT slice lacks ImagePositionPatient, ImageOrientationPatient, "
                                "PixelSpacing or Rows/Columns")
            continue
        geo.append((f, iop, ipp, ps, shape))
    if not geo:
        raise DicomInputError("no CT slice with complete geometry")

    def geometry_key(g: tuple) -> tuple:
        return (np.round(g[1], 4).tobytes(), np.round(g[3], 4).tobytes(), g[4])

    # the most common matrix/orientation/pixel spacing defines the volume
    key = Counter(geometry_key(g) for g in geo).most_common(1)[0][0]
    slices = []
    for g in geo:
        if geometry_key(g) != key:
            study.unused.append(f"{g[0].rel}: CT slice of another matrix, orientation or pixel spacing than "
                                "the rest of its series")
            continue
        ds = g[0].ds
        try:
            stored = _stored_pixels(ds, g[4])
            if stored.shape != g[4]:
                raise ValueError(f"pixel data of shape {stored.shape}, expected {g[4]}")
            slope = float(ds.get("RescaleSlope") or 1.0)
            intercept = float(ds.get("RescaleIntercept") or 0.0)
        except Exception as exc:
            study.unused.append(f"{g[0].rel}: CT pixel data not readable ({type(exc).__name__}: {exc})")
            continue
        slices.append((g, stored, slope, intercept))
    if not slices:
        raise DicomInputError("no CT slice with readable pixel data")
    iop = np.asarray(slices[0][0][1])
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DicomInputError(f"ImageOrientationPatient {iop.tolist()} is not orthonormal")
    ps = slices[0][0][3]
    rows, cols = slices[0][0][4]
    d_all = np.array([np.dot(s_[0][2], normal) for s_ in slices])
    order = np.argsort(d_all, kind="stable")
    # duplicates at one position: keep the first in file order
    kept: list[int] = []
    for i in order:
        if kept and abs(d_all[i] - d_all[kept[-1]]) < 1e-3:
            study.unused.append(f"{slices[i][0][0].rel}: second CT slice at position {d_all[i]:.2f} mm (duplicate)")
        else:
            kept.append(int(i))
    slices = [slices[i] for i in kept]
    d = d_all[kept]
    pos = np.array([s_[0][2] for s_ in slices])
    n = len(slices)
    if n >= 2:
        steps = np.diff(d)
        step = float((d[-1] - d[0]) / (n - 1))
        worst = float(np.max(np.abs(steps - step)))
        if worst > _SLICE_SPACING_RTOL * step:
            i = int(np.argmax(np.abs(steps - step)))
            raise DicomInputError(f"irregular slice spacing: step {steps[i]:.3f} mm at {d[i]:.2f} mm vs mean "
                                  f"{step:.3f} mm (missing slice?)")
        inplane = (pos - pos[0]) - np.outer(d - d[0], normal)
        if float(np.max(np.abs(inplane))) > 0.1 * min(ps):
            raise DicomInputError("slice positions do not lie along the slice normal (gantry tilt); "
                                  "resample the CT to an orthogonal grid first")
    else:
        ds0 = slices[0][0][0].ds
        step = _floats([ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0], 1)
        step = step[0] if step else 1.0
    volume = np.empty((n, rows, cols), dtype=np.float32)
    for k, (_g, stored, slope, intercept) in enumerate(slices):
        np.multiply(stored, slope, out=volume[k], casting="unsafe")
        volume[k] += intercept
    img = sitk.GetImageFromArray(volume)
    img.SetSpacing((float(ps[1]), float(ps[0]), abs(step)))
    img.SetOrigin(tuple(float(v) for v in pos[0]))
    img.SetDirection(np.column_stack([row_dir, col_dir, normal]).flatten().tolist())
    return img


# --------------------------------------------------------------------------- RTSTRUCT


@dataclass
class RoiMasks:
    """VOI masks of one structure set and the ROIs that gave none.

    Attributes
    ----------
    masks : dict of str to numpy.ndarray (bool, (z, y, x))
        ROIName as written -> mask on the reference grid.
    skipped : dict of str to str
        ROIName (or ``#<ROINumber>`` when unnamed) -> reason.
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _contour_points_mm(item: Dataset) -> np.ndarray:
    """ContourData as an (n, 3) float array, parsed from the raw bytes when possible (fast)."""
    try:
        raw = item.get_item("ContourData")
    except KeyError:
        return np.zeros((0, 3))
    value = getattr(raw, "value", None)
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).replace(b"\\", b" ").decode("ascii", "replace")
        flat = np.array(text.split(), dtype=float)
    else:
        flat = np.asarray(item.ContourData, dtype=float).ravel()
    if flat.size % 3:
        raise VoiError(f"ContourData holds {flat.size} numbers, not a multiple of 3")
    return flat.reshape(-1, 3)


def _referenced_frames(rtstruct: Dataset) -> set[str]:
    out = set()
    for item in rtstruct.get("ReferencedFrameOfReferenceSequence") or []:
        uid = _s(item, "FrameOfReferenceUID")
        if uid:
            out.add(uid)
    return out


def rtstruct_rois(rtstruct: Dataset, reference: sitk.Image, frame_of_reference_uid: str | None = None) -> RoiMasks:
    """Masks of every ROI of a structure set on ``reference``, with the ROIs skipped and why.

    Parameters
    ----------
    rtstruct : pydicom.Dataset
        An RT Structure Set.
    reference : SimpleITK.Image
        The image the masks are made on (the CT the structures were drawn on).
    frame_of_reference_uid : str, optional
        The reference image's FrameOfReferenceUID; defaults to the image metadata
        ``0020|0052`` that :func:`load_study` sets on its CT. When known, the ROIs must
        refer to it.

    Returns
    -------
    RoiMasks
        ``masks``: ROIName as written (not yet mapped to TG-263) -> bool (z, y, x).
        ``skipped``: ROIs without closed planar contours, with malformed or non-axial
        contours (the :class:`~rntflow.core.errors.VoiError` message of
        :func:`~dosimetry.vois.rasterise_contours`), outside the image, with a duplicated
        name or on another frame of reference, with the reason.

    Raises
    ------
    VoiError
        When the structure set refers to another frame of reference than the image's
        (structures drawn on another CT: register first).
    """
    if frame_of_reference_uid is None and reference.HasMetaDataKey(FOR_METADATA_KEY):
        frame_of_reference_uid = reference.GetMetaData(FOR_METADATA_KEY).strip() or None
    set_frames = _referenced_frames(rtstruct)
    if frame_of_reference_uid and set_frames and frame_of_reference_uid not in set_frames:
        raise VoiError(
            f"RT Structure Set {_s(rtstruct, 'StructureSetLabel') or ''} refers to frame(s) of reference "
            f"{sorted(set_frames)}, not the reference image's {frame_of_reference_uid}: "
            "register the images and map the structures first"
        )
    out = RoiMasks()
    names: dict[int, str] = {}
    roi_frames: dict[int, str | None] = {}
    for item in rtstruct.get("StructureSetROISequence") or []:
        try:
            number = int(item.ROINumber)
        except Exception:
            continue
        names[number] = _s(item, "ROIName") or f"#{number}"
        roi_frames[number] = _s(item, "ReferencedFrameOfReferenceUID")
    kept_number: dict[str, int] = {}
    contoured: set[int] = set()
    for rc in rtstruct.get("ROIContourSequence") or []:
        try:
            number = int(rc.ReferencedROINumber)
        except Exception:
            out.skipped[f"ROIContourSequence item {len(contoured) + 1}"] = "no ReferencedROINumber"
            continue
        contoured.add(number)
        name = names.get(number, f"#{number}")
        if number not in names:
            out.skipped[name] = "ROIContourSequence item refers to no StructureSetROISequence item"
            continue
        if name in kept_number:
            out.skipped[f"{name} (ROINumber {number})"] = f"duplicate ROIName (ROINumber {kept_number[name]} kept)"
            continue
        frame = roi_frames.get(number)
        if frame_of_reference_uid and frame and frame != frame_of_reference_uid:
            out.skipped[name] = f"on frame of reference {frame}, not the reference image's"
            continue
        contours = []
        other_types: Counter[str] = Counter()
        for c in rc.get("ContourSequence") or []:
            kind = (_s(c, "ContourGeometricType") or "CLOSED_PLANAR").upper()
            if kind != "CLOSED_PLANAR":
                other_types[kind] += 1
                continue
            try:
                contours.append(_contour_points_mm(c))
            except (ValueError, VoiError) as exc:
                out.skipped[name] = f"malformed ContourData: {exc}"
                break
        if name in out.skipped:
            continue
        if not contours:
            why = "no ContourSequence" if not other_types else \
                f"no CLOSED_PLANAR contours ({', '.join(f'{n} {k}' for k, n in other_types.items())})"
            out.skipped[name] = why
            continue
        try:
            mask = rasterise_contours(contours, reference)
        except VoiError as exc:  # e.g. a non-axial contour: this ROI cannot be used, the others can
            out.skipped[name] = str(exc)
            continue
        if not mask.any():
            out.skipped[name] = "contours lie outside the reference image (empty mask)"
            continue
        out.masks[name] = mask
        kept_number[name] = number
    for number, name in names.items():
        if number not in contoured and name not in out.skipped:
            out.skipped[name] = "no ContourSequence"
    return out


def rtstruct_masks(rtstruct: Dataset, reference: sitk.Image,
                   frame_of_reference_uid: str | None = None) -> dict[str, np.ndarray]:
    """ROIName (as written, not yet mapped) -> boolean mask (z, y, x) on ``reference``.

    ROIs that give no mask (no contours, outside the image, duplicate names ...) are
    left out and logged at WARNING; :func:`rtstruct_rois` returns them with reasons.
    See :func:`rtstruct_rois` for parameters and errors.
    """
    result = rtstruct_rois(rtstruct, reference, frame_of_reference_uid)
    for name, why in result.skipped.items():
        log.warning("RTSTRUCT ROI %s skipped: %s", name, why)
    return result.masks


# --------------------------------------------------------------------------- SEG


def seg_masks(seg: Dataset, reference: sitk.Image, frame_of_reference_uid: str | None = None) -> dict[str, np.ndarray]:
    """SegmentLabel -> boolean mask (z, y, x) on ``reference`` from a DICOM Segmentation.

    Parameters
    ----------
    seg : pydicom.Dataset
        A Segmentation (BINARY, FRACTIONAL or LABELMAP).
    reference : SimpleITK.Image
        The image the masks are made on (usually the CT the SEG was derived from).
    frame_of_reference_uid : str, optional
        The reference's FrameOfReferenceUID (default: image metadata ``0020|0052``).

    Returns
    -------
    dict of str to numpy.ndarray (bool, (z, y, x))
        One entry per segment (label as written, not yet mapped); FRACTIONAL segments
        are thresholded at 0.5. Empty segments are left out (logged).

    Raises
    ------
    VoiError
        When the SEG is on another frame of reference, or is not a regularly spaced
        3-D volume that highdicom can read.

    Notes
    -----
    highdicom (``Segmentation.from_dataset`` then ``get_volume`` per segment) builds each
    segment's volume on the SEG's own grid; it is then resampled onto ``reference`` by
    nearest neighbour (exact when the SEG was made on the reference grid).
    """
    import highdicom as hd  # slow import; only SEG studies need it

    if frame_of_reference_uid is None and reference.HasMetaDataKey(FOR_METADATA_KEY):
        frame_of_reference_uid = reference.GetMetaData(FOR_METADATA_KEY).strip() or None
    seg_frame = _s(seg, "FrameOfReferenceUID")
    if frame_of_reference_uid and seg_frame and seg_frame != frame_of_reference_uid:
        raise VoiError(f"SEG is on frame of reference {seg_frame}, not the reference image's "
                       f"{frame_of_reference_uid}: register the images first")
    try:
        parsed = hd.seg.Segmentation.from_dataset(seg, copy=True)
        numbers = parsed.get_segment_numbers()
    except Exception as exc:
        raise VoiError(f"SEG not readable by highdicom: {type(exc).__name__}: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    for number in numbers:
        label = str(parsed.get_segment_description(number).segment_label or f"Segment_{number}")
        try:
            vol = parsed.get_volume(segment_numbers=[number], combine_segments=True, relabel=True,
                                    skip_overlap_checks=True)
        except Exception as exc:
            raise VoiError(f"SEG segment {number} ({label}): not a regularly spaced volume: "
                           f"{type(exc).__name__}: {exc}") from exc
        arr = np.asarray(vol.array)
        if arr.dtype.kind == "f":
            arr = arr >= 0.5
        vol = vol.with_array((arr > 0).astype(np.uint8))
        img = vol.to_simpleitk()
        res = sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        mask = sitk.GetArrayFromImage(res).astype(bool)
        if not mask.any():
            log.warning("SEG segment %s (%s) skipped: empty on the reference image", number, label)
            continue
        if label in out:
            log.warning("SEG segment %s (%s) skipped: duplicate SegmentLabel", number, label)
            continue
        out[label] = mask
    return out


# --------------------------------------------------------------------------- image store


def image_meta_dict(img: sitk.Image) -> dict:
    """JSON-ready geometry of an image.

    Returns
    -------
    dict
        ``size_xyz``, ``shape_zyx``, ``spacing_mm`` (x, y, z), ``origin_mm`` (x, y, z; centre
        of voxel 0), ``direction`` (9 numbers, row-major, columns = axes in LPS),
        ``voxel_ml``, ``pixel_type``, and ``frame_of_reference_uid`` when recorded.
    """
    size = [int(v) for v in img.GetSize()]
    spacing = [float(v) for v in img.GetSpacing()]
    out = {
        "size_xyz": size,
        "shape_zyx": size[::-1],
        "spacing_mm": spacing,
        "origin_mm": [float(v) for v in img.GetOrigin()],
        "direction": [float(v) for v in img.GetDirection()],
        "voxel_ml": float(np.prod(spacing)) / 1000.0,
        "pixel_type": img.GetPixelIDTypeAsString(),
    }
    if img.HasMetaDataKey(FOR_METADATA_KEY):
        out["frame_of_reference_uid"] = img.GetMetaData(FOR_METADATA_KEY).strip()
    return out


def write_image(img: sitk.Image, path: str | Path) -> Path:
    """Write an image atomically (temporary file, then rename) as ``.nii.gz``, ``.nii`` or ``.mha``.

    ``.mha`` keeps geometry in double precision; NIfTI stores it in single precision
    (sub-micrometre differences) and drops metadata such as the frame of reference.

    Raises
    ------
    StorageError
        For another extension or when writing fails.
    """
    path = Path(path)
    name = path.name
    ext = next((e for e in (".nii.gz", ".nii", ".mha") if name.endswith(e)), None)
    if ext is None:
        raise StorageError(f"{path}: image files must end in .nii.gz, .nii or .mha")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name[:-len(ext)]}.", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, useCompression=ext != ".nii")
        os.replace(tmp, path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"{path}: could not write image: {exc}") from exc
    return path


def read_image(path: str | Path) -> sitk.Image:
    """Read an image written by :func:`write_image` (any format SimpleITK reads).

    Raises
    ------
    StorageError
        When the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: image file not found")
    try:
        return sitk.ReadImage(str(path))
    except Exception as exc:
        raise StorageError(f"{path}: could not read image: {exc}") from exc
