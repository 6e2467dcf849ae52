"""Read what the harmonisation and quantification code needs from an NM (SPECT) header.

The conventions followed are DICOM PS3.3 A.5 (NM Image IOD, multi-frame, one frame per
transverse slice) and C.8.4 ("NM Image" modules), and what vendors actually send in their
place (:mod:`rntflow.harmonization.nm_conventions`: pixel meaning by an order of
precedence, unit slips in RadionuclideTotalDose and ActualFrameDuration, vendor post-filter
strings). Every attribute is optional here: a missing or malformed attribute becomes
``None`` so that :mod:`harmonization.recon_check` can report it instead of the parser
crashing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from rntflow.core.errors import DicomInputError
from rntflow.harmonization.nm_conventions import (
    PixelUnits,
    PostFilter,
    as_float,
    as_str,
    choose_mapping,
    first_item,
    get_value,
    parse_post_filter,
    per_frame_mappings,
    read_frame_duration_s,
    read_total_dose_mbq,
    read_value_mappings,
    resolve_pixel_units,
)


@dataclass(frozen=True)
class EnergyWindowKev:
    """One acquisition energy window (keV)."""

    name: str | None
    lower_kev: float
    upper_kev: float

    @property
    def center_kev(self) -> float:
        return 0.5 * (self.lower_kev + self.upper_kev)


def camera_id(manufacturer: str | None, model: str | None, serial: str | None) -> str | None:
    """A camera's id in every table: ``Manufacturer|Model|Serial``, or ``None`` when any part is missing."""
    if not (manufacturer and model and serial):
        return None
    return f"{manufacturer}|{model}|{serial}"


@dataclass(frozen=True)
class NmHeader:
    """The parts of an NM reconstruction header the platform uses (``None`` = absent).

    Attributes
    ----------
    units : str or None
        What the pixels mean after :func:`nm_to_image`: ``CNTS`` (counts per voxel) or
        ``BQML`` (vendor-quantified Bq/mL), resolved by the order of precedence of
        :func:`rntflow.harmonization.nm_conventions.resolve_pixel_units`; ``None`` when
        nothing decides.
    pixel_units : PixelUnits or None
        How ``units`` was decided (rule, detail, scale, notes) for QA.
    units_attribute : str or None
        Units (0054,1001) as sent (a PET attribute some vendors write on NM anyway).
    rwv_slope, rwv_intercept : float or None
        Real-world value mapping of the chosen RWVM item: real = stored * slope + intercept.
    rwv_unit : str or None
        UCUM code of the real-world unit (``{counts}``, ``Bq/ml`` ...).
    administered_activity_raw : float or None
        RadionuclideTotalDose as sent (``administered_activity_mbq`` is it in MBq).
    notes : tuple of str
        Unit slips corrected while reading (Bq read as MBq, s read as ms): QA warns.
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
        Gaussian FWHM from ConvolutionKernel; 0.0 for ``NONE``; ``None`` for other filters.
    post_filter : PostFilter or None
        ConvolutionKernel read into (filter, parameters, unit); ``None`` when absent.
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
    image_type : tuple of str
        ImageType values (upper case).
    series_description, reconstruction_method : str or None
    text_hints : tuple of str
        SeriesDescription, ReconstructionMethod, ConvolutionKernel, DerivationDescription
        and the text values of private elements (where vendors note scatter correction).
    """

    units: str | None = None
    pixel_units: PixelUnits | None = None
    units_attribute: str | None = None
    rwv_slope: float | None = None
    rwv_intercept: float | None = None
    rwv_unit: str | None = None
    acquisition_start: datetime | None = None
    acquisition_duration_s: float | None = None
    administration_datetime: datetime | None = None
    administered_activity_mbq: float | None = None
    administered_activity_raw: float | None = None
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
    post_filter: PostFilter | None = None
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
    image_type: tuple[str, ...] = ()
    series_description: str | None = None
    reconstruction_method: str | None = None
    text_hints: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def camera_id(self) -> str | None:
        """``Manufacturer|Model|Serial`` (:func:`camera_id`)."""
        return camera_id(self.manufacturer, self.model, self.serial)

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


_get = get_value
_item0 = first_item
_float = as_float
_str = as_str


def _int(value: Any) -> int | None:
    f = _float(value)
    return int(round(f)) if f is not None else None


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
            int(y),
            int(mo),
            int(d),
            int(h or 0),
            int(mi or 0),
            int(sec or 0),
            int(round(float(frac) * 1e6)) if frac else 0,
        )
    except ValueError:
        return None


_NUCLIDE_RE = (
    re.compile(r"\b([A-Z][a-z]?)[- ]?(\d{1,3})(m?)\b"),  # Lu-177, Lu177, Tc-99m
    re.compile(r"\b(\d{1,3})(m?)[- ]?([A-Z][a-z]?)\b"),  # 177Lu, 99mTc
    re.compile(r"\^(\d{1,3})(m?)\^([A-Z][a-z]+)"),  # SNOMED ^177^Lutetium
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


_ELEMENT_SYMBOL = {
    "lutetium": "Lu",
    "technetium": "Tc",
    "iodine": "I",
    "yttrium": "Y",
    "holmium": "Ho",
    "indium": "In",
    "radium": "Ra",
    "actinium": "Ac",
    "terbium": "Tb",
    "copper": "Cu",
    "gallium": "Ga",
}


_ELEMENT_WORD_RE = re.compile(r"\b([A-Za-z]{4,12})[- ]?(\d{1,3})(m?)\b")


def radiopharmaceutical_nuclide(item: Dataset | None) -> str | None:
    """The normalised radionuclide of a RadiopharmaceuticalInformationSequence item.

    RadionuclideCodeSequence's CodeMeaning first (SNOMED ``^90^Yttrium``, or ``Y-90``),
    then the Radiopharmaceutical text (``Lu-177-PSMA-617``, ``90Y SIR-Spheres``), then an
    element name in that text (``Holmium-166 microspheres``). ``None`` when none names one.
    Used for NM and PET headers alike.
    """
    if item is None:
        return None
    found = _nuclide_from_code(item)
    if found:
        return found
    label = _str(_get(item, "Radiopharmaceutical"))
    found = normalise_radionuclide(label)
    if found or not label:
        return found
    for m in _ELEMENT_WORD_RE.finditer(label):
        sym = _ELEMENT_SYMBOL.get(m.group(1).lower())
        if sym:
            return f"{sym}-{m.group(2)}{m.group(3)}"
    return None


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


_ITER_RES = (
    # 6i16s, 6 i 16 s, 6it16ss, 6 iterations 16 subsets, 6 iter x 16 sub
    re.compile(
        r"(?<![A-Za-z0-9])(\d+)\s*i(?:t(?:er(?:ations?)?)?)?[\s,x/]*(\d+)\s*s(?:s|ub(?:sets?)?)?(?![A-Za-z])",
        re.IGNORECASE,
    ),
    re.compile(r"(?<![A-Za-z])i(\d+)\s*s(\d+)(?!\d)", re.IGNORECASE),  # i6s16
)
_WORD_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9\-]*)")


def parse_reconstruction_method(text: str | None) -> tuple[str | None, int | None, int | None]:
    """``"OSEM 6i16s"`` -> ``("OSEM", 6, 16)``; parts not found are ``None``.

    Also reads ``Flash3D 8i16s``, ``OSEM 6 iterations 16 subsets``, ``i6s16``. The algorithm
    is the word just before the iterations (``Lu177 SPECT OSEM 4i10s`` -> ``OSEM``), else the
    first word, upper case (``HybridRecon-Oncology`` -> ``HYBRIDRECON-ONCOLOGY``).
    """
    if not text:
        return None, None, None
    word = _WORD_RE.match(text)
    algo = word.group(1).upper() if word else None
    for rx in _ITER_RES:
        m = rx.search(text)
        if m:
            before = re.search(r"([A-Za-z][A-Za-z0-9\-]*)\s*$", text[: m.start()])
            return (before.group(1).upper() if before else algo), int(m.group(1)), int(m.group(2))
    return algo, None, None


def parse_post_filter_fwhm_mm(text: str | None) -> float | None:
    """``"NONE"`` -> 0.0, ``"GAUSSIAN 5.0MM"`` -> 5.0; non-Gaussian or unreadable -> ``None``
    (:func:`rntflow.harmonization.nm_conventions.parse_post_filter` gives the whole reading)."""
    pf = parse_post_filter(text)
    return pf.fwhm_mm if pf is not None else None


def _private_text(ds: Dataset, limit: int = 64) -> tuple[str, ...]:
    """Text values (LO, SH, ST, LT, UT, CS) of private elements at the top level."""
    out: list[str] = []
    try:
        for elem in ds:
            if len(out) >= limit:
                break
            if elem.tag.is_private and elem.VR in ("LO", "SH", "ST", "LT", "UT", "CS") and elem.value:
                value = elem.value if isinstance(elem.value, str) else "\\".join(str(v) for v in elem.value)
                out.append(value.strip()[:200])
    except Exception:  # a malformed private element: ignore the rest
        pass
    return tuple(v for v in out if v)


def _timing(ds: Dataset) -> tuple[float | None, float | None, int | None, list[str]]:
    """(duration_s, time_per_projection_s, projections, notes) from RotationInformationSequence."""
    rot = _item0(ds, "RotationInformationSequence")
    n_rot = _int(_get(rot, "NumberOfFramesInRotation")) if rot is not None else None
    raw = _float(_get(rot, "ActualFrameDuration")) if rot is not None else None
    if raw is None:
        raw = _float(_get(ds, "ActualFrameDuration"))
    per_proj_s, note = read_frame_duration_s(raw)
    n_det = _int(_get(ds, "NumberOfDetectors"))
    duration_s = n_rot * per_proj_s if n_rot and per_proj_s else None
    projections = n_rot * (n_det or 1) if n_rot else None
    return duration_s, per_proj_s, projections, [note] if note else []


# --------------------------------------------------------------------------- parser


def _energy_windows(ds: Dataset) -> tuple[EnergyWindowKev, ...]:
    windows: list[EnergyWindowKev] = []
    for item in _get(ds, "EnergyWindowInformationSequence") or []:
        rng = _item0(item, "EnergyWindowRangeSequence")
        lo = _float(_get(rng, "EnergyWindowLowerLimit")) if rng is not None else None
        hi = _float(_get(rng, "EnergyWindowUpperLimit")) if rng is not None else None
        if lo is not None and hi is not None and hi > lo:
            windows.append(EnergyWindowKev(_str(_get(item, "EnergyWindowName")), lo, hi))
    return tuple(windows)


def _corrections(ds: Dataset) -> tuple[bool | None, bool | None]:
    corrected = _get(ds, "CorrectedImage")
    if corrected is None:
        return None, None
    flags = {str(c).strip().upper() for c in (corrected if not isinstance(corrected, str) else [corrected])}
    return "ATTN" in flags, "SCAT" in flags


def _recon_parameters(ds: Dataset) -> tuple[str | None, int | None, int | None]:
    """Algorithm and iterations/subsets: ReconstructionMethod, SeriesDescription, then
    NumberOfIterations (0018,9739) / NumberOfSubsets (0018,9740)."""
    algo, iters, subsets = parse_reconstruction_method(_str(_get(ds, "ReconstructionMethod")))
    if iters is None:
        a2, i2, s2 = parse_reconstruction_method(_str(_get(ds, "SeriesDescription")))
        if i2 is not None:
            algo, iters, subsets = algo or a2, i2, s2
    if iters is None:
        i3, s3 = _int(_get(ds, "NumberOfIterations")), _int(_get(ds, "NumberOfSubsets"))
        if i3 is not None and s3 is not None:
            iters, subsets = i3, s3
    return algo, iters, subsets


def _voxel_mm(ds: Dataset) -> tuple[float, float, float] | None:
    ps = _get(ds, "PixelSpacing")
    step = _float(_get(ds, "SpacingBetweenSlices")) or _float(_get(ds, "SliceThickness"))
    try:
        if ps is not None and step is not None:
            return float(ps[0]), float(ps[1]), abs(step)
    except (TypeError, ValueError, IndexError):
        return None
    return None


def _image_type(ds: Dataset) -> tuple[str, ...]:
    it = _get(ds, "ImageType")
    if it is None:
        return ()
    return tuple(str(v).strip().upper() for v in ([it] if isinstance(it, str) else it))


def parse_nm_header(ds: Dataset, site_units: str | None = None) -> NmHeader:
    """Parse an NM reconstruction header into an :class:`NmHeader`.

    Parameters
    ----------
    ds : pydicom.Dataset
        An NM Image Storage dataset (pixel data not needed).
    site_units : {"counts", "bq_per_ml"} or None
        The sending site's ``sites[].nm_units`` (used only when no header says what the
        pixels mean; :func:`rntflow.harmonization.nm_conventions.resolve_pixel_units`).

    Returns
    -------
    NmHeader
        Missing or malformed attributes are ``None`` (never an exception).
    """
    mapping = choose_mapping(read_value_mappings(ds))
    pixel_units = resolve_pixel_units(ds, site_units)
    duration_s, per_proj_s, projections, notes = _timing(ds)

    rp = _item0(ds, "RadiopharmaceuticalInformationSequence")
    nuclide = radiopharmaceutical_nuclide(rp)
    raw_dose = _float(_get(rp, "RadionuclideTotalDose")) if rp is not None else None
    activity_mbq, dose_note = read_total_dose_mbq(raw_dose)
    notes += [dose_note] if dose_note else []
    notes += list(pixel_units.notes)

    det = _item0(ds, "DetectorInformationSequence")
    attn, scat = _corrections(ds)
    algo, iters, subsets = _recon_parameters(ds)
    kernel = _get(ds, "ConvolutionKernel")  # SH, VM 1-n: "Butterworth\\0.48\\10" joined with spaces
    kernel = _str(" ".join(str(v) for v in kernel) if isinstance(kernel, (list, tuple, MultiValue)) else kernel)
    post_filter = parse_post_filter(kernel)
    texts = [
        _str(_get(ds, "SeriesDescription")),
        _str(_get(ds, "ReconstructionMethod")),
        kernel,
        _str(_get(ds, "DerivationDescription")),
    ]

    return NmHeader(
        units=pixel_units.units,
        pixel_units=pixel_units,
        units_attribute=_str(_get(ds, "Units")),
        rwv_slope=mapping.slope if mapping is not None else None,
        rwv_intercept=mapping.intercept if mapping is not None else None,
        rwv_unit=mapping.unit_code if mapping is not None else None,
        acquisition_start=parse_da_tm(_get(ds, "AcquisitionDate"), _get(ds, "AcquisitionTime")),
        acquisition_duration_s=duration_s,
        administration_datetime=parse_dt(_get(rp, "RadiopharmaceuticalStartDateTime")) if rp is not None else None,
        administered_activity_mbq=activity_mbq,
        administered_activity_raw=raw_dose,
        radionuclide=nuclide,
        radionuclide_half_life_s=_float(_get(rp, "RadionuclideHalfLife")) if rp is not None else None,
        energy_windows=_energy_windows(ds),
        collimator=_str(_get(det, "CollimatorGridName")) if det is not None else None,
        attenuation_corrected=attn,
        scatter_corrected=scat,
        algorithm=algo,
        iterations=iters,
        subsets=subsets,
        post_filter_fwhm_mm=post_filter.fwhm_mm if post_filter is not None else None,
        post_filter=post_filter,
        matrix_rows=_int(_get(ds, "Rows")),
        matrix_cols=_int(_get(ds, "Columns")),
        matrix_slices=_int(_get(ds, "NumberOfSlices")) or _int(_get(ds, "NumberOfFrames")),
        voxel_size_mm=_voxel_mm(ds),
        projections=projections,
        time_per_projection_s=per_proj_s,
        manufacturer=_str(_get(ds, "Manufacturer")),
        model=_str(_get(ds, "ManufacturerModelName")),
        serial=_str(_get(ds, "DeviceSerialNumber")),
        frame_of_reference_uid=_str(_get(ds, "FrameOfReferenceUID")),
        decay_correction=_str(_get(ds, "DecayCorrection")),
        study_description=_str(_get(ds, "StudyDescription")),
        image_type=_image_type(ds),
        series_description=texts[0],
        reconstruction_method=texts[1],
        text_hints=tuple(t for t in texts if t) + _private_text(ds),
        notes=tuple(notes),
    )


def _real_world_values(ds: Dataset, arr: np.ndarray, hdr: NmHeader) -> np.ndarray:
    """Stored values to counts per voxel or Bq/mL (RWVM, per frame where given; Rescale; unit scale)."""
    per_frame = per_frame_mappings(ds)
    if per_frame is not None and len(per_frame) == arr.shape[0]:
        slopes = np.array([m[0] for m in per_frame], dtype=np.float32)[:, None, None]
        intercepts = np.array([m[1] for m in per_frame], dtype=np.float32)[:, None, None]
        arr = arr * slopes + intercepts
    else:
        slope, intercept = hdr.rwv_slope, hdr.rwv_intercept
        if slope is None:
            slope = _float(_get(ds, "RescaleSlope")) or 1.0
            intercept = _float(_get(ds, "RescaleIntercept")) or 0.0
        arr = arr * np.float32(slope) + np.float32(intercept or 0.0)
    pu = hdr.pixel_units
    if pu is None:
        return arr
    factor = pu.scale
    if pu.per == "ml" and hdr.voxel_size_mm is not None:
        factor *= float(np.prod(hdr.voxel_size_mm)) / 1000.0
    elif pu.per == "s":
        if not hdr.acquisition_duration_s:
            raise DicomInputError(f"NM pixels are {pu.detail} but the acquisition duration is unknown")
        factor *= hdr.acquisition_duration_s
    return arr * np.float32(factor) if factor != 1.0 else arr


def nm_to_image(ds: Dataset) -> sitk.Image:
    """The reconstructed volume as a float32 SimpleITK image in real-world units.

    Real value = stored x RealWorldValueSlope + RealWorldValueIntercept (per frame where the
    dataset carries per-frame mappings; falling back to RescaleSlope/Intercept, then 1/0),
    then scaled to counts per voxel or Bq/mL by the unit (kBq/mL x 1000, counts/mL x voxel
    mL, counts/s x acquisition duration). Origin is the ImagePositionPatient of
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
    arr = _real_world_values(ds, arr, hdr)

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
