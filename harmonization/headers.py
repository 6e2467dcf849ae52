"""Read what the harmonisation and quantification code needs from an NM (SPECT) header.

The conventions followed are those of the trial's reconstructed SPECT (NM Image Storage,
multi-frame, one frame per transverse slice; see ``/tmp/briefs/nm_conventions.md`` and
DICOM PS3.3 C.8.4 "NM Image" modules). Every attribute is optional here: a missing or
malformed attribute becomes ``None`` so that :mod:`harmonization.recon_check` can report
it as a failed check instead of the parser crashing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rntflow.core.errors import DicomInputError


@dataclass(frozen=True)
class EnergyWindowKev:
    """One acquisition energy window (keV)."""

    name: str | None
    lower_kev: float
    upper_kev: float

    @property
    def center_kev(self) -> float:
        return 0.5 * (self.lower_kev + self.upper_kev)


@dataclass(frozen=True)
class NmHeader:
    """The parts of an NM reconstruction header the platform uses (``None`` = absent).

    Attributes
    ----------
    units : str or None
        ``CNTS`` (counts reconstruction) or ``BQML`` (vendor-quantified Bq/mL).
    rwv_slope, rwv_intercept : float or None
        Real-world value mapping: real = stored * slope + intercept.
    rwv_unit : str or None
        UCUM code of the real-world unit (``{counts}`` or ``Bq/mL``).
    acquisition_start : datetime or None
        AcquisitionDate + AcquisitionTime.
    acquisition_duration_s : float or None
        Projections per head x ms per projection / 1000.
    administration_datetime : datetime or None
        RadiopharmaceuticalStartDateTime (administration, or the phantom reference time).
    administered_activity_mbq : float or None
        RadionuclideTotalDose (MBq by the NM convention).
    radionuclide : str or None
        Normalised as ``Lu-177``.
    radionuclide_half_life_s : float or None
        RadionuclideHalfLife.
    energy_windows : tuple of EnergyWindowKev
        In header order; item 0 is the photopeak by convention. Empty when absent.
    collimator : str or None
        CollimatorGridName of the first detector.
    attenuation_corrected, scatter_corrected : bool or None
        From CorrectedImage (ATTN, SCAT); ``None`` when CorrectedImage is absent.
    algorithm : str or None
        Algorithm name from ReconstructionMethod (``OSEM``).
    iterations, subsets : int or None
        From ReconstructionMethod (``OSEM 6i16s``) or, failing that, SeriesDescription.
    post_filter_fwhm_mm : float or None
        From ConvolutionKernel; 0.0 for ``NONE``.
    matrix_rows, matrix_cols, matrix_slices : int or None
    voxel_size_mm : tuple (row_mm, col_mm, slice_mm) or None
        PixelSpacing row/column and SpacingBetweenSlices (or SliceThickness).
    projections : int or None
        NumberOfFramesInRotation x NumberOfDetectors.
    time_per_projection_s : float or None
    manufacturer, model, serial : str or None
    frame_of_reference_uid : str or None
    decay_correction : str or None
        ``NONE``, ``START`` or ``ADMIN``.
    """

    units: str | None = None
    rwv_slope: float | None = None
    rwv_intercept: float | None = None
    rwv_unit: str | None = None
    acquisition_start: datetime | None = None
    acquisition_duration_s: float | None = None
    administration_datetime: datetime | None = None
    administered_activity_mbq: float | None = None
    radionuclide: str | None = None
    radionuclide_half_life_s: float | None = None
    energy_windows: tuple[EnergyWindowKev, ...] = ()
    collimator: str | None = None
    attenuation_corrected: bool | None = None
    scatter_corrected: bool | None = None
    algorithm: str | None = None
    iterations: int | None = None
    subsets: int | None = None
    post_filter_fwhm_mm: float | None = None
    matrix_rows: int | None = None
    matrix_cols: int | None = None
    matrix_slices: int | None = None
    voxel_size_mm: tuple[float, float, float] | None = None
    projections: int | None = None
    time_per_projection_s: float | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    frame_of_reference_uid: str | None = None
    decay_correction: str | None = None
    study_description: str | None = None

    @property
    def camera_id(self) -> str | None:
        """``Manufacturer|Model|Serial``, or ``None`` when any part is missing."""
        if not (self.manufacturer and self.model and self.serial):
            return None
        return f"{self.manufacturer}|{self.model}|{self.serial}"

    @property
    def photopeak(self) -> EnergyWindowKev | None:
        return self.energy_windows[0] if self.energy_windows else None

    @property
    def hours_after_administration(self) -> float | None:
        """Acquisition start minus administration (h)."""
        if self.acquisition_start is None or self.administration_datetime is None:
            return None
        return (self.acquisition_start - self.administration_datetime).total_seconds() / 3600.0


# --------------------------------------------------------------------------- helpers


def _get(ds: Any, keyword: str) -> Any:
    try:
        value = getattr(ds, keyword, None)
    except Exception:  # malformed element: treat as absent
        return None
    if value is None or value == "":
        return None
    return value


def _item0(ds: Any, keyword: str) -> Dataset | None:
    seq = _get(ds, keyword)
    try:
        return seq[0] if seq else None
    except Exception:
        return None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    f = _float(value)
    return int(round(f)) if f is not None else None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def parse_da_tm(date: Any, time: Any) -> datetime | None:
    """DICOM DA (YYYYMMDD) + TM (HHMMSS.FFFFFF, parts optional) to a naive datetime."""
    d, t = _str(date), _str(time)
    if d is None or t is None:
        return None
    return parse_dt(d + t.replace(":", ""))


def parse_dt(value: Any) -> datetime | None:
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX, trailing parts optional) to a naive datetime.

    A UTC offset, if present, is dropped: all times of one study share the site's clock.
    """
    s = _str(value)
    if s is None:
        return None
    s = re.split(r"[+-]", s, maxsplit=1)[0]
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?", s)
    if not m:
        return None
    y, mo, d, h, mi, sec, frac = m.groups()
    try:
        return datetime(
            int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0),
            int(round(float(frac) * 1e6)) if frac else 0,
        )
    except ValueError:
        return None


_NUCLIDE_RE = (
    re.compile(r"\b([A-Z][a-z]?)[- ]?(\d{1,3})(m?)\b"),   # Lu-177, Lu177, Tc-99m
    re.compile(r"\b(\d{1,3})(m?)[- ]?([A-Z][a-z]?)\b"),   # 177Lu, 99mTc
    re.compile(r"\^(\d{1,3})(m?)\^([A-Z][a-z]+)"),        # SNOMED ^177^Lutetium
)


def normalise_radionuclide(text: str | None) -> str | None:
    """``Lu-177-PSMA-617``, ``177Lu``, ``Lu177`` -> ``Lu-177``; ``None`` if not found."""
    if not text:
        return None
    m = _NUCLIDE_RE[0].search(text)
    if m:
        return f"{m.group(1)}-{m.group(2)}{m.group(3)}"
    m = _NUCLIDE_RE[1].search(text)
    if m:
        return f"{m.group(3)}-{m.group(1)}{m.group(2)}"
    return None


_ELEMENT_SYMBOL = {"lutetium": "Lu", "technetium": "Tc", "iodine": "I", "yttrium": "Y",
                   "holmium": "Ho", "indium": "In", "radium": "Ra", "actinium": "Ac",
                   "terbium": "Tb", "copper": "Cu", "gallium": "Ga"}


def _nuclide_from_code(item: Dataset | None) -> str | None:
    code = _item0(item, "RadionuclideCodeSequence") if item is not None else None
    meaning = _str(_get(code, "CodeMeaning")) if code is not None else None
    if not meaning:
        return None
    m = _NUCLIDE_RE[2].search(meaning)
    if m:
        sym = _ELEMENT_SYMBOL.get(m.group(3).lower())
        if sym:
            return f"{sym}-{m.group(1)}{m.group(2)}"
    return normalise_radionuclide(meaning)


_RECON_RE = re.compile(r"([A-Za-z][A-Za-z0-9\-]*)\s+(\d+)\s*i\s*(\d+)\s*s\b", re.IGNORECASE)
_FILTER_RE = re.compile(r"(\d+(?:\.\d+)?)\s*MM", re.IGNORECASE)


def parse_reconstruction_method(text: str | None) -> tuple[str | None, int | None, int | None]:
    """``"OSEM 6i16s"`` -> ``("OSEM", 6, 16)``; parts not found are ``None``."""
    if not text:
        return None, None, None
    m = _RECON_RE.search(text)
    if m:
        return m.group(1).upper(), int(m.group(2)), int(m.group(3))
    word = re.match(r"\s*([A-Za-z][A-Za-z0-9\-]*)", text)
    return (word.group(1).upper() if word else None), None, None


def parse_post_filter_fwhm_mm(text: str | None) -> float | None:
    """``"NONE"`` -> 0.0, ``"GAUSSIAN 5.0MM"`` -> 5.0, unreadable -> ``None``."""
    if text is None:
        return None
    s = str(text).strip().upper()
    if s in ("", "NONE", "NO FILTER", "OFF"):
        return 0.0 if s else None
    m = _FILTER_RE.search(s)
    return float(m.group(1)) if m else None


# --------------------------------------------------------------------------- parser


def parse_nm_header(ds: Dataset) -> NmHeader:
    """Parse an NM reconstruction header into an :class:`NmHeader`.

    Parameters
    ----------
    ds : pydicom.Dataset
        An NM Image Storage dataset (pixel data not needed).

    Returns
    -------
    NmHeader
        Missing or malformed attributes are ``None`` (never an exception).
    """
    rwv = _item0(ds, "RealWorldValueMappingSequence")
    rwv_unit = None
    if rwv is not None:
        unit_item = _item0(rwv, "MeasurementUnitsCodeSequence")
        rwv_unit = _str(_get(unit_item, "CodeValue")) if unit_item is not None else None

    rot = _item0(ds, "RotationInformationSequence")
    n_rot = _int(_get(rot, "NumberOfFramesInRotation")) if rot is not None else None
    ms_per_proj = _float(_get(rot, "ActualFrameDuration")) if rot is not None else None
    n_det = _int(_get(ds, "NumberOfDetectors"))
    duration_s = n_rot * ms_per_proj / 1000.0 if n_rot and ms_per_proj else None
    projections = n_rot * (n_det or 1) if n_rot else None

    windows: list[EnergyWindowKev] = []
    for item in _get(ds, "EnergyWindowInformationSequence") or []:
        rng = _item0(item, "EnergyWindowRangeSequence")
        lo = _float(_get(rng, "EnergyWindowLowerLimit")) if rng is not None else None
        hi = _float(_get(rng, "EnergyWindowUpperLimit")) if rng is not None else None
        if lo is not None and hi is not None and hi > lo:
            windows.append(EnergyWindowKev(_str(_get(item, "EnergyWindowName")), lo, hi))

    rp = _item0(ds, "RadiopharmaceuticalInformationSequence")
    nuclide = None
    if rp is not None:
        nuclide = _nuclide_from_code(rp) or normalise_radionuclide(_str(_get(rp, "Radiopharmaceutical")))

    det = _item0(ds, "DetectorInformationSequence")

    corrected = _get(ds, "CorrectedImage")
    if corrected is None:
        attn = scat = None
    else:
        flags = {str(c).strip().upper() for c in (corrected if not isinstance(corrected, str) else [corrected])}
        attn, scat = "ATTN" in flags, "SCAT" in flags

    algo, iters, subsets = parse_reconstruction_method(_str(_get(ds, "ReconstructionMethod")))
    if iters is None:
        a2, i2, s2 = parse_reconstruction_method(_str(_get(ds, "SeriesDescription")))
        if i2 is not None:
            algo, iters, subsets = algo or a2, i2, s2

    ps = _get(ds, "PixelSpacing")
    step = _float(_get(ds, "SpacingBetweenSlices")) or _float(_get(ds, "SliceThickness"))
    voxel = None
    try:
        if ps is not None and step is not None:
            voxel = (float(ps[0]), float(ps[1]), abs(step))
    except (TypeError, ValueError, IndexError):
        voxel = None

    return NmHeader(
        units=_str(_get(ds, "Units")),
        rwv_slope=_float(_get(rwv, "RealWorldValueSlope")) if rwv is not None else None,
        rwv_intercept=_float(_get(rwv, "RealWorldValueIntercept")) if rwv is not None else None,
        rwv_unit=rwv_unit,
        acquisition_start=parse_da_tm(_get(ds, "AcquisitionDate"), _get(ds, "AcquisitionTime")),
        acquisition_duration_s=duration_s,
        administration_datetime=parse_dt(_get(rp, "RadiopharmaceuticalStartDateTime")) if rp is not None else None,
        administered_activity_mbq=_float(_get(rp, "RadionuclideTotalDose")) if rp is not None else None,
        radionuclide=nuclide,
        radionuclide_half_life_s=_float(_get(rp, "RadionuclideHalfLife")) if rp is not None else None,
        energy_windows=tuple(windows),
        collimator=_str(_get(det, "CollimatorGridName")) if det is not None else None,
        attenuation_corrected=attn,
        scatter_corrected=scat,
        algorithm=algo,
        iterations=iters,
        subsets=subsets,
        post_filter_fwhm_mm=parse_post_filter_fwhm_mm(_str(_get(ds, "ConvolutionKernel"))),
        matrix_rows=_int(_get(ds, "Rows")),
        matrix_cols=_int(_get(ds, "Columns")),
        matrix_slices=_int(_get(ds, "NumberOfSlices")) or _int(_get(ds, "NumberOfFrames")),
        voxel_size_mm=voxel,
        projections=projections,
        time_per_projection_s=ms_per_proj / 1000.0 if ms_per_proj else None,
        manufacturer=_str(_get(ds, "Manufacturer")),
        model=_str(_get(ds, "ManufacturerModelName")),
        serial=_str(_get(ds, "DeviceSerialNumber")),
        frame_of_reference_uid=_str(_get(ds, "FrameOfReferenceUID")),
        decay_correction=_str(_get(ds, "DecayCorrection")),
        study_description=_str(_get(ds, "StudyDescription")),
    )


def nm_to_image(ds: Dataset) -> sitk.Image:
    """The reconstructed volume as a float32 SimpleITK image in real-world units.

    Real value = stored x RealWorldValueSlope + RealWorldValueIntercept (falling back to
    RescaleSlope/Intercept, then 1/0). Origin is the ImagePositionPatient of
    DetectorInformationSequence[0] (centre of the first voxel of frame 1), spacing is
    (column step, row step, slice step) in mm, direction from ImageOrientationPatient with
    slices stacked along row x column (LPS).

    Raises
    ------
    DicomInputError
        When pixel data or the geometry (PixelSpacing, slice step) is missing.
    """
    try:
        arr = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as exc:
        raise DicomInputError(f"NM image has no readable pixel data: {exc}") from exc
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    hdr = parse_nm_header(ds)
    slope = hdr.rwv_slope
    intercept = hdr.rwv_intercept
    if slope is None:
        slope = _float(_get(ds, "RescaleSlope")) or 1.0
        intercept = _float(_get(ds, "RescaleIntercept")) or 0.0
    arr = arr * np.float32(slope) + np.float32(intercept or 0.0)

    ps = _get(ds, "PixelSpacing")
    step = _float(_get(ds, "SpacingBetweenSlices")) or _float(_get(ds, "SliceThickness"))
    if ps is None or step is None:
        raise DicomInputError("NM image lacks PixelSpacing or SpacingBetweenSlices/SliceThickness")
    det = _item0(ds, "DetectorInformationSequence")
    ipp = _get(det, "ImagePositionPatient") if det is not None else None
    iop = _get(det, "ImageOrientationPatient") if det is not None else None
    ipp = ipp if ipp is not None else _get(ds, "ImagePositionPatient")
    iop = iop if iop is not None else _get(ds, "ImageOrientationPatient")
    origin = [float(v) for v in ipp] if ipp is not None else [0.0, 0.0, 0.0]
    iop_f = [float(v) for v in iop] if iop is not None else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    row_dir = np.array(iop_f[:3])
    col_dir = np.array(iop_f[3:])
    normal = np.cross(row_dir, col_dir)
    if step < 0:  # slices stacked against the normal: flip the normal, keep spacing positive
        normal = -normal
    direction = np.column_stack([row_dir, col_dir, normal])

    img = sitk.GetImageFromArray(arr)  # array (z, y, x) -> image (x, y, z)
    img.SetSpacing((float(ps[1]), float(ps[0]), abs(step)))
    img.SetOrigin(origin)
    img.SetDirection(direction.flatten().tolist())
    return img
