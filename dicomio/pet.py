"""PET series (PET Image Storage, one file per slice): choose one, check its geometry, decode it.

A PET/CT sends its reconstruction as PET Image Storage (``1.2.840.10008.5.1.4.1.1.128``,
DICOM PS3.3 A.21), one single-frame object per transverse slice. The slice geometry is
checked exactly as for a CT series (:mod:`rntflow.dicomio.ct`'s slice helpers: complete
geometry, one matrix/orientation/pixel spacing, ordered along the slice normal whatever the
file or InstanceNumber order, regular spacing, no tilt). The pixel values are decoded with
pydicom and mapped with **each slice's own** RescaleSlope and RescaleIntercept (PS3.3
C.8.9.4.1.x: Type 1 in the PET Image module, and scanners choose the slope per slice to use
the 16-bit range of each slice; Siemens, GE and Philips all do), in float64.

What the values mean (Units, DecayCorrection, the reference time) is header
interpretation and lives above this layer: :func:`rntflow.harmonization.pet_headers.pet_at_acquisition_start`
reads :attr:`PetSeries.datasets` into a typed header and converts the image to Bq/mL at
acquisition start.

Only static PET series are stacked; dynamic or gated series (several images per slice
position) and Enhanced (multi-frame) PET are reported as not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import (
    EnhancedPETImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    PositronEmissionTomographyImageStorage,
)

from rntflow.core.errors import DicomInputError
from rntflow.dicomio.ct import _complete_slices, _grid_slices, _Slice, _stack
from rntflow.dicomio.dicomfile import DicomFile, read_whole
from rntflow.dicomio.values import FOR_METADATA_KEY, text

#: Single-frame PET slices (the only PET the reader stacks).
PET_SOP_CLASSES = frozenset({PositronEmissionTomographyImageStorage})
#: Multi-frame PET: recognised, reported as not supported.
ENHANCED_PET_SOP_CLASSES = frozenset({EnhancedPETImageStorage, LegacyConvertedEnhancedPETImageStorage})
#: SeriesType (0054,1000) value 1 of the series stacked as one volume (PS3.3 C.8.9.1.1.x).
STATIC_SERIES_TYPES = frozenset({"STATIC", "WHOLE BODY"})


@dataclass
class PetSeries:
    """The PET series used for a study.

    Attributes
    ----------
    image : SimpleITK.Image
        float64, stored value x RescaleSlope + RescaleIntercept of each slice: the values in
        the series' Units (Bq/mL for ``BQML``), referred to the time its DecayCorrection
        names. Spacing/origin/direction in LPS (mm) from ImagePositionPatient,
        ImageOrientationPatient and PixelSpacing; slices ordered along the slice normal.
        The FrameOfReferenceUID, when present, is stored as image metadata
        :data:`~rntflow.dicomio.values.FOR_METADATA_KEY`.
    datasets : tuple of pydicom.Dataset
        The slice headers in stack order (pixel data dropped), for header parsing.
    series_uid, frame_of_reference_uid : str or None
    rescale_slopes, rescale_intercepts : tuple of float
        Per slice, in stack order (as applied).
    files : tuple of str
        The slice files in stack order (relative to the study folder).
    """

    image: sitk.Image
    datasets: tuple[Dataset, ...]
    series_uid: str | None
    frame_of_reference_uid: str | None
    rescale_slopes: tuple[float, ...]
    rescale_intercepts: tuple[float, ...]
    files: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return len(self.datasets)


def build_pet(pet_files: list[DicomFile]) -> tuple[PetSeries | None, list[str]]:
    """The study's PET series with the most slices, and the PET files not used.

    Parameters
    ----------
    pet_files : list of DicomFile
        The study's PET Image Storage files (headers; pixel data deferred).

    Returns
    -------
    pet : PetSeries or None
        ``None`` when there is no usable PET series. When the largest series is unusable
        the next largest is tried.
    unused : list of str
        ``"<file>: <reason>"``: slices of other series, slices dropped (incomplete geometry,
        another matrix, duplicates, unreadable pixel data) and, for an unusable series,
        every slice of it with the reason.
    """
    if not pet_files:
        return None, []
    series: dict[str | None, list[DicomFile]] = {}
    for f in pet_files:
        series.setdefault(text(f.ds, "SeriesInstanceUID"), []).append(f)
    ordered = sorted(series.items(), key=lambda kv: -len(kv[1]))
    unused: list[str] = []
    chosen: PetSeries | None = None
    for uid, files in ordered:
        if chosen is not None:
            unused += [
                f"{f.rel}: PET of another series ({len(files)} slices) than the one used ({chosen.n_slices} slices)"
                for f in files
            ]
            continue
        dropped: list[str] = []
        try:
            chosen = load_pet_series(files, dropped, series_uid=uid)
        except DicomInputError as exc:
            unused += [f"{f.rel}: PET series not usable: {exc}" for f in files]
            continue
        unused += dropped
    return chosen, unused


def _pet_words(reasons: list[str]) -> list[str]:
    """The shared slice helpers name the modality ``CT``: say ``PET`` in their reasons."""
    return [re.sub(r"\bCT\b", "PET", r) for r in reasons]


def load_pet_series(files: list[DicomFile], unused: list[str], series_uid: str | None = None) -> PetSeries:
    """Check, decode and stack one PET series (appends the slices dropped to ``unused``).

    Raises
    ------
    DicomInputError
        A dynamic or gated series, no slice with complete geometry or readable pixel data,
        a non-orthonormal orientation, irregular slice spacing (a missing slice) or tilted
        slice positions.
    """
    series_type = _series_type(files[0].ds)
    if series_type and series_type not in STATIC_SERIES_TYPES:
        raise DicomInputError(
            f"SeriesType {series_type}: only static (one image per slice position) PET series are supported"
        )
    dropped: list[str] = []
    try:
        slices = _grid_slices(_complete_slices(files, dropped), dropped)
        while True:
            stack = _stack(slices)
            arrays, datasets, unreadable = _decode(stack.slices)
            if not unreadable:
                break
            dropped += [f"{s.file.rel}: PET pixel data not readable ({why})" for s, why in unreadable]
            bad = {id(s) for s, _ in unreadable}
            slices = [s for s in slices if id(s) not in bad]
            if not slices:
                raise DicomInputError("no PET slice with readable pixel data")
    except DicomInputError as exc:
        unused += _pet_words(dropped)
        raise DicomInputError(_pet_words([str(exc)])[0]) from exc
    unused += _pet_words(dropped + stack.dropped)

    values = np.stack([a for a, _s, _i in arrays])
    first = stack.slices[0]
    iop = np.asarray(first.orientation)
    ps = first.pixel_spacing_mm
    image = sitk.GetImageFromArray(values)  # (z, y, x) -> (x, y, z)
    image.SetSpacing((float(ps[1]), float(ps[0]), float(stack.step_mm)))
    image.SetOrigin(tuple(float(v) for v in first.position_mm))
    image.SetDirection(np.column_stack([iop[:3], iop[3:], stack.normal]).flatten().tolist())
    frame = text(datasets[0], "FrameOfReferenceUID")
    if frame:
        image.SetMetaData(FOR_METADATA_KEY, frame)
    return PetSeries(
        image=image,
        datasets=tuple(datasets),
        series_uid=series_uid if series_uid is not None else text(datasets[0], "SeriesInstanceUID"),
        frame_of_reference_uid=frame,
        rescale_slopes=tuple(s for _a, s, _i in arrays),
        rescale_intercepts=tuple(i for _a, _s, i in arrays),
        files=tuple(s.file.rel for s in stack.slices),
    )


def _series_type(ds: Dataset) -> str | None:
    value = ds.get("SeriesType")
    if value is None:
        return None
    first = value[0] if not isinstance(value, str) else value.split("\\")[0]
    return str(first).strip().upper() or None


def _rescale(ds: Dataset, keyword: str, default: float) -> float:
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return default
    return value if np.isfinite(value) else default


def _decode(
    slices: list[_Slice],
) -> tuple[list[tuple[np.ndarray, float, float]], list[Dataset], list[tuple[_Slice, str]]]:
    """Each slice's real values (float64, its own slope and intercept) and header, or the unreadable ones."""
    arrays, datasets, unreadable = [], [], []
    for s in slices:
        try:
            ds = read_whole(s.file)
            stored = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception as exc:  # DicomInputError, or a pixel decoder's own error
            unreadable.append((s, f"{type(exc).__name__}: {exc}"))
            continue
        if stored.shape != s.shape:
            unreadable.append((s, f"pixel data of shape {stored.shape}, header says {s.shape}"))
            continue
        slope, intercept = _rescale(ds, "RescaleSlope", 1.0), _rescale(ds, "RescaleIntercept", 0.0)
        arrays.append((stored * slope + intercept, slope, intercept))
        del ds.PixelData  # the header is kept for parsing; the values are in ``arrays``
        datasets.append(ds)
    return arrays, datasets, unreadable
