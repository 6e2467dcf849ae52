"""PET headers, PET images in Bq/mL at acquisition start, and their cross-calibration.

The conventions are DICOM PS3.3 A.21 (PET Image IOD) and its modules: PET Series
(C.8.9.1: Units, DecayCorrection, CorrectedImage, SeriesType), PET Isotope (C.8.9.2:
RadiopharmaceuticalInformationSequence) and PET Image (C.8.9.4: RescaleSlope per slice,
ActualFrameDuration in ms, AcquisitionDate/Time). Siemens (Biograph mCT/Vision), GE
(Discovery MI) and Philips (Vereos) write all of these in their conformance statements.

Units and times
---------------
* Units (0054,1001): only ``BQML`` (Bq/mL) is quantified here; ``CNTS`` and the other
  defined terms give a clear :class:`~rntflow.core.errors.DicomInputError`.
* DecayCorrection (0054,1102): ``START`` = values decay-corrected to the series reference
  time, the acquisition start (SeriesDate/SeriesTime, PS3.3 C.8.9.1.1.x);
  ``ADMIN`` = decay-corrected to the administration (RadiopharmaceuticalStartDateTime);
  ``NONE`` = values as measured over each frame.
* Acquisition start: SeriesDate/SeriesTime when they are not after the earliest slice
  AcquisitionDate/Time, else the earliest AcquisitionDate/Time (a series re-created after
  the scan resets SeriesTime; the QIBA FDG-PET/CT profile's SUV rule).

:func:`pet_at_acquisition_start` brings every series to one reference, Bq/mL at acquisition
start: ``START`` as is, ``ADMIN`` decayed from the administration to acquisition start,
``NONE`` taken as acquisition start (an approximation the result's notes quantify).

Administered activity
---------------------
RadionuclideTotalDose (0018,1074) is Bq in the PET Isotope module (MBq in NM). The same
plausibility rule as the NM path (:func:`rntflow.harmonization.nm_conventions.read_total_dose_mbq`:
above 1e5 the value is Bq, at or below it MBq, since no administration or phantom fill is
under 0.1 MBq) reads a PET value written in MBq by mistake, with a note.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import SimpleITK as sitk
from pydicom.dataset import Dataset

from rntflow.core.errors import CalibrationError, DicomInputError, RntflowError
from rntflow.dicomio.pet import PetSeries
from rntflow.dicomio.values import FOR_METADATA_KEY
from rntflow.harmonization.calibration import Calibration
from rntflow.harmonization.headers import (
    NmHeader,
    camera_id,
    normalise_radionuclide,
    parse_da_tm,
    parse_dt,
    parse_post_filter_fwhm_mm,
    parse_reconstruction_method,
    radiopharmaceutical_nuclide,
)
from rntflow.harmonization.nm_conventions import (
    BQ_THRESHOLD,
    PixelUnits,
    as_float,
    as_str,
    first_item,
    get_value,
    parse_post_filter,
    read_total_dose_mbq,
)
from rntflow.physics.nuclides import nuclide

__all__ = [
    "PetHeader",
    "PetVolume",
    "parse_pet_header",
    "pet_activity_concentration_bq_per_ml",
    "pet_at_acquisition_start",
    "pet_nm_header",
]

#: DecayCorrection defined terms (PS3.3 C.8.9.1.1.x).
DECAY_CORRECTIONS: tuple[str, ...] = ("START", "ADMIN", "NONE")
#: Time of flight named in a PET ReconstructionMethod or SeriesDescription: Siemens ``PSF+TOF``
#: / ``TrueX+TOF``, GE ``VPFX`` / ``VPFXS`` (VUE Point FX), Philips ``BLOB-OS-TF``.
#: Where the algorithm ends in a ReconstructionMethod (the iterations: ``4i5s``, ``4 iterations``).
_ITERATIONS_RE = re.compile(r"\s\d+\s*i", re.IGNORECASE)
TOF_PATTERN = re.compile(r"TOF|VPFX|(?<![A-Z])TF(?![A-Z])|TIME.OF.FLIGHT", re.IGNORECASE)
#: SeriesTime may lead the first AcquisitionTime by rounding; beyond this it is "after".
_SERIES_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class PetHeader:
    """The parts of a PET series header the platform uses (``None`` = absent).

    Attributes
    ----------
    manufacturer, model, serial : str or None
        Manufacturer, ManufacturerModelName, DeviceSerialNumber.
    units : str or None
        Units (0054,1001), upper case (``BQML``, ``CNTS`` ...).
    decay_correction : str or None
        DecayCorrection, upper case: ``START``, ``ADMIN`` or ``NONE``.
    reference_datetime : datetime or None
        The time the stored values refer to: acquisition start (``START``), administration
        (``ADMIN``), acquisition start as an approximation (``NONE``).
    acquisition_start : datetime or None
        See the module docstring; ``acquisition_start_source`` says which attribute gave it.
    acquisition_start_source : str or None
    frame_duration_s : float or None
        ActualFrameDuration (ms) of the first slice, in s (one bed position).
    administration_datetime : datetime or None
        RadiopharmaceuticalStartDateTime (or SeriesDate + RadiopharmaceuticalStartTime).
    administered_activity_mbq : float or None
        RadionuclideTotalDose in MBq (Bq by the PET standard; see the module docstring).
    administered_activity_raw : float or None
        RadionuclideTotalDose as sent.
    radionuclide : str or None
        Normalised as the NM path does (``Y-90``, ``Ho-166``, ``Tc-99m``).
    radiopharmaceutical : str or None
    radionuclide_half_life_s : float or None
        RadionuclideHalfLife as sent.
    positron_fraction : float or None
        RadionuclidePositronFraction (90Y: 3.2e-5).
    corrected_image : tuple of str
        CorrectedImage values, upper case (``ATTN``, ``SCAT``, ``DECY`` ...).
    series_type : tuple of str
        SeriesType values (``WHOLE BODY``, ``IMAGE``).
    frame_of_reference_uid, series_uid, study_description, series_description : str or None
    image_type : tuple of str
    matrix_rows, matrix_cols, n_slices : int or None
    voxel_size_mm : (row_mm, col_mm, slice_mm) or None
    reconstruction_method, convolution_kernel : str or None
        ReconstructionMethod (``PSF+TOF 4i5s``) and ConvolutionKernel (``GAUSSIAN 5.0MM``).
    notes : tuple of str
        What was read with a correction or assumption (dose unit slip, acquisition start
        source, administration date), for QA.
    """

    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    units: str | None = None
    decay_correction: str | None = None
    reference_datetime: datetime | None = None
    acquisition_start: datetime | None = None
    acquisition_start_source: str | None = None
    frame_duration_s: float | None = None
    administration_datetime: datetime | None = None
    administered_activity_mbq: float | None = None
    administered_activity_raw: float | None = None
    radionuclide: str | None = None
    radiopharmaceutical: str | None = None
    radionuclide_half_life_s: float | None = None
    positron_fraction: float | None = None
    corrected_image: tuple[str, ...] = ()
    series_type: tuple[str, ...] = ()
    frame_of_reference_uid: str | None = None
    series_uid: str | None = None
    study_description: str | None = None
    series_description: str | None = None
    image_type: tuple[str, ...] = ()
    matrix_rows: int | None = None
    matrix_cols: int | None = None
    n_slices: int | None = None
    voxel_size_mm: tuple[float, float, float] | None = None
    reconstruction_method: str | None = None
    convolution_kernel: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def camera_id(self) -> str | None:
        """``Manufacturer|Model|Serial`` (:func:`rntflow.harmonization.headers.camera_id`, as for NM)."""
        return camera_id(self.manufacturer, self.model, self.serial)

    @property
    def attenuation_corrected(self) -> bool | None:
        return "ATTN" in self.corrected_image if self.corrected_image else None

    @property
    def scatter_corrected(self) -> bool | None:
        return "SCAT" in self.corrected_image if self.corrected_image else None

    @property
    def hours_after_administration(self) -> float | None:
        """Acquisition start minus administration (h)."""
        if self.acquisition_start is None or self.administration_datetime is None:
            return None
        return (self.acquisition_start - self.administration_datetime).total_seconds() / 3600.0

    @property
    def time_of_flight(self) -> bool | None:
        """``True`` when ReconstructionMethod or SeriesDescription names time of flight
        (:data:`TOF_PATTERN`: Siemens ``TOF``, GE ``VPFX``, Philips ``-TF``), else ``None``
        (DICOM has no attribute for it: absent text is "not stated", not "off")."""
        text = " ".join(t for t in (self.reconstruction_method, self.series_description) if t)
        return True if TOF_PATTERN.search(text) else None

    def half_life_s(self) -> float | None:
        """RadionuclideHalfLife, else the ICRP-107 half-life of the radionuclide (``None`` if neither)."""
        if self.radionuclide_half_life_s is not None and self.radionuclide_half_life_s > 0:
            return self.radionuclide_half_life_s
        if self.radionuclide:
            try:
                return nuclide(self.radionuclide).half_life_h * 3600.0
            except RntflowError:
                return None
        return None


@dataclass(frozen=True)
class PetVolume:
    """A PET series in Bq/mL at acquisition start (vendor scale, not yet cross-calibrated).

    Attributes
    ----------
    image : SimpleITK.Image
        float64 Bq/mL at :attr:`PetHeader.acquisition_start`; geometry and the
        FrameOfReferenceUID metadata of the series.
    header : PetHeader
    decay_factor : float
        What the series' values were multiplied by (1 for ``START`` and ``NONE``;
        exp(-lambda (acquisition start - administration)) for ``ADMIN``).
    notes : tuple of str
        The header's notes and the conversion's (the ``NONE`` approximation).
    """

    image: sitk.Image
    header: PetHeader
    decay_factor: float
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- parsing


def _upper_values(value) -> tuple[str, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else list(value)
    out = []
    for v in values:
        out += [p.strip().upper() for p in str(v).split("\\") if p.strip()]
    return tuple(out)


def _int(value) -> int | None:
    f = as_float(value)
    return int(round(f)) if f is not None else None


def _slice_acquisition(ds: Dataset) -> datetime | None:
    return parse_dt(get_value(ds, "AcquisitionDateTime")) or parse_da_tm(
        get_value(ds, "AcquisitionDate"), get_value(ds, "AcquisitionTime")
    )


def _acquisition_start(datasets: Sequence[Dataset]) -> tuple[datetime | None, str | None, list[str]]:
    """Acquisition start, the attribute it came from, and a note when SeriesTime was not used."""
    ds0 = datasets[0]
    series = parse_da_tm(get_value(ds0, "SeriesDate"), get_value(ds0, "SeriesTime"))
    acquired = [t for t in (_slice_acquisition(ds) for ds in datasets) if t is not None]
    earliest = min(acquired) if acquired else None
    if series is not None and (earliest is None or (series - earliest).total_seconds() <= _SERIES_TIME_TOLERANCE_S):
        return series, "SeriesDate/SeriesTime", []
    if earliest is not None:
        notes = []
        if series is not None:
            notes.append(
                f"SeriesTime {series:%Y-%m-%d %H:%M:%S} is after the earliest AcquisitionTime "
                f"{earliest:%Y-%m-%d %H:%M:%S} (series re-created after the scan?): the earliest "
                "AcquisitionDate/Time is taken as acquisition start"
            )
        return earliest, "earliest AcquisitionDate/Time", notes
    return None, None, []


def _administration(rp: Dataset | None, ds0: Dataset) -> tuple[datetime | None, list[str]]:
    if rp is None:
        return None, []
    when = parse_dt(get_value(rp, "RadiopharmaceuticalStartDateTime"))
    if when is not None:
        return when, []
    when = parse_da_tm(get_value(ds0, "SeriesDate"), get_value(rp, "RadiopharmaceuticalStartTime"))
    if when is None:
        return None, []
    return when, [
        "no RadiopharmaceuticalStartDateTime: administration = SeriesDate + RadiopharmaceuticalStartTime "
        "(wrong by whole days if the scan is not on the administration day)"
    ]


def read_pet_total_dose_mbq(raw: float | None) -> tuple[float | None, str | None]:
    """PET RadionuclideTotalDose (Bq by PS3.3 C.8.9.2) to MBq, and a note when it was MBq.

    The NM rule (:func:`rntflow.harmonization.nm_conventions.read_total_dose_mbq`) decides
    the unit: above :data:`~rntflow.harmonization.nm_conventions.BQ_THRESHOLD` Bq (the
    standard's unit here, no note), at or below it MBq (a slip: no administration or fill
    is under 0.1 MBq).
    """
    if raw is None or not raw > 0:
        return None, None
    mbq, read_as_bq = read_total_dose_mbq(raw)
    if read_as_bq:
        return mbq, None
    return mbq, (
        f"RadionuclideTotalDose {raw:.5g} is implausible in Bq (<= {BQ_THRESHOLD:g} Bq, the PET unit): "
        f"read as MBq, {mbq:.5g} MBq"
    )


def _voxel_mm(ds0: Dataset, step_mm: float | None) -> tuple[float, float, float] | None:
    ps = get_value(ds0, "PixelSpacing")
    step = step_mm or as_float(get_value(ds0, "SpacingBetweenSlices")) or as_float(get_value(ds0, "SliceThickness"))
    try:
        if ps is not None and step:
            return float(ps[0]), float(ps[1]), abs(float(step))
    except (TypeError, ValueError, IndexError):
        return None
    return None


def parse_pet_header(pet: PetSeries | Sequence[Dataset]) -> PetHeader:
    """Parse a PET series' slice headers into a :class:`PetHeader` (never raises).

    Parameters
    ----------
    pet : PetSeries or sequence of pydicom.Dataset
        The loaded series (``study.pet``) or its slice headers (the first is read for the
        series-level attributes; all for the earliest AcquisitionTime).

    Returns
    -------
    PetHeader
        Missing or malformed attributes are ``None`` (units and decay correction are
        checked by :func:`pet_at_acquisition_start`).
    """
    datasets = list(pet.datasets if isinstance(pet, PetSeries) else pet)
    if not datasets:
        return PetHeader()
    ds0 = datasets[0]
    notes: list[str] = []
    rp = first_item(ds0, "RadiopharmaceuticalInformationSequence")
    acq, acq_source, acq_notes = _acquisition_start(datasets)
    notes += acq_notes
    admin, admin_notes = _administration(rp, ds0)
    notes += admin_notes
    raw = as_float(get_value(rp, "RadionuclideTotalDose")) if rp is not None else None
    mbq, dose_note = read_pet_total_dose_mbq(raw)
    notes += [dose_note] if dose_note else []
    decay = (as_str(get_value(ds0, "DecayCorrection")) or "").upper() or None
    reference = {"START": acq, "NONE": acq, "ADMIN": admin}.get(decay or "")
    frame_ms = as_float(get_value(ds0, "ActualFrameDuration"))
    step = None
    if isinstance(pet, PetSeries):
        step = pet.image.GetSpacing()[2]
    return PetHeader(
        manufacturer=as_str(get_value(ds0, "Manufacturer")),
        model=as_str(get_value(ds0, "ManufacturerModelName")),
        serial=as_str(get_value(ds0, "DeviceSerialNumber")),
        units=(as_str(get_value(ds0, "Units")) or "").upper() or None,
        decay_correction=decay,
        reference_datetime=reference,
        acquisition_start=acq,
        acquisition_start_source=acq_source,
        frame_duration_s=frame_ms / 1000.0 if frame_ms and frame_ms > 0 else None,
        administration_datetime=admin,
        administered_activity_mbq=mbq,
        administered_activity_raw=raw,
        radionuclide=radiopharmaceutical_nuclide(rp),
        radiopharmaceutical=as_str(get_value(rp, "Radiopharmaceutical")) if rp is not None else None,
        radionuclide_half_life_s=as_float(get_value(rp, "RadionuclideHalfLife")) if rp is not None else None,
        positron_fraction=as_float(get_value(rp, "RadionuclidePositronFraction")) if rp is not None else None,
        corrected_image=_upper_values(get_value(ds0, "CorrectedImage")),
        series_type=_upper_values(get_value(ds0, "SeriesType")),
        frame_of_reference_uid=as_str(get_value(ds0, "FrameOfReferenceUID")),
        series_uid=as_str(get_value(ds0, "SeriesInstanceUID")),
        study_description=as_str(get_value(ds0, "StudyDescription")),
        series_description=as_str(get_value(ds0, "SeriesDescription")),
        image_type=_upper_values(get_value(ds0, "ImageType")),
        matrix_rows=_int(get_value(ds0, "Rows")),
        matrix_cols=_int(get_value(ds0, "Columns")),
        n_slices=len(datasets),
        voxel_size_mm=_voxel_mm(ds0, step),
        reconstruction_method=as_str(get_value(ds0, "ReconstructionMethod")),
        convolution_kernel=as_str(get_value(ds0, "ConvolutionKernel")),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- one reference


def _copy_frame_metadata(src: sitk.Image, dst: sitk.Image) -> sitk.Image:
    if src.HasMetaDataKey(FOR_METADATA_KEY):
        dst.SetMetaData(FOR_METADATA_KEY, src.GetMetaData(FOR_METADATA_KEY))
    return dst


def _decay_factor(header: PetHeader) -> tuple[float, list[str]]:
    """Factor taking the series' values to acquisition start, and the notes (raises when impossible)."""
    what = f"PET series {header.series_uid or ''}".rstrip()
    if header.decay_correction == "START":
        if header.acquisition_start is None:
            raise DicomInputError(f"{what}: DecayCorrection START but no SeriesDate/SeriesTime or AcquisitionDate/Time")
        return 1.0, []
    if header.decay_correction == "ADMIN":
        half_life_s = header.half_life_s()
        missing = [
            name
            for name, v in (
                ("RadiopharmaceuticalStartDateTime", header.administration_datetime),
                ("acquisition start (SeriesDate/SeriesTime)", header.acquisition_start),
                ("RadionuclideHalfLife (and no known radionuclide)", half_life_s),
            )
            if v is None
        ]
        if missing:
            raise DicomInputError(
                f"{what}: DecayCorrection ADMIN (values at administration) cannot be taken to acquisition "
                f"start without {', '.join(missing)}"
            )
        dt_s = (header.acquisition_start - header.administration_datetime).total_seconds()
        factor = math.exp(-math.log(2.0) * dt_s / half_life_s)
        return factor, [
            f"DecayCorrection ADMIN: values decayed from administration to acquisition start "
            f"({dt_s / 3600:.2f} h, factor {factor:.5f})"
        ]
    if header.decay_correction == "NONE":
        half_life_s = header.half_life_s()
        bias = ""
        if half_life_s and header.frame_duration_s:
            lt = math.log(2.0) * header.frame_duration_s / half_life_s
            mean = (1.0 - math.exp(-lt)) / lt if lt > 0 else 1.0
            bias = f" (the frame mean is {100 * (1 - mean):.2f} % below the frame-start value, later beds more)"
        if header.acquisition_start is None:
            raise DicomInputError(f"{what}: DecayCorrection NONE and no acquisition date/time")
        return 1.0, [
            "DecayCorrection NONE: values as measured over each frame, taken as the concentration at "
            "acquisition start, an approximation" + bias
        ]
    raise DicomInputError(
        f"{what}: DecayCorrection {header.decay_correction!r} is not one of START, ADMIN, NONE: "
        "the time the values refer to is unknown"
    )


def pet_at_acquisition_start(pet: PetSeries) -> PetVolume:
    """The PET series in Bq/mL at acquisition start, with its parsed header.

    Parameters
    ----------
    pet : PetSeries
        ``LoadedStudy.pet`` (values after each slice's RescaleSlope/Intercept).

    Returns
    -------
    PetVolume
        float64 Bq/mL at :attr:`PetHeader.acquisition_start` (the vendor's scale: correct
        it by the camera's calibration with :func:`pet_activity_concentration_bq_per_ml`).

    Raises
    ------
    DicomInputError
        Units other than ``BQML`` (``CNTS`` ...), a DecayCorrection other than START, ADMIN
        or NONE, or the times/half-life its conversion needs missing.
    """
    header = parse_pet_header(pet)
    if header.units != "BQML":
        raise DicomInputError(
            f"PET series {header.series_uid or ''}: Units {header.units or 'absent'}, not BQML: "
            "the pipeline quantifies only PET reconstructed in Bq/mL (activity concentration); "
            "ask the site to send the Bq/mL (Units BQML) reconstruction"
        )
    factor, notes = _decay_factor(header)
    image = pet.image if factor == 1.0 else _copy_frame_metadata(pet.image, pet.image * factor)
    return PetVolume(image=image, header=header, decay_factor=factor, notes=header.notes + tuple(notes))


# --------------------------------------------------------------------------- calibration


def _nuc(name: str | None) -> str:
    return (normalise_radionuclide(name) or name or "").upper()


def pet_activity_concentration_bq_per_ml(pet: PetVolume, calibration: Calibration) -> sitk.Image:
    """Bq/mL at acquisition start corrected by the PET camera's cross-calibration.

    Parameters
    ----------
    pet : PetVolume
        From :func:`pet_at_acquisition_start`.
    calibration : Calibration
        The camera's current calibration for the radionuclide (a PET uniform cylinder:
        ``vendor_scale_factor`` = measured / true, the ``bqml_scale_factor`` column).

    Returns
    -------
    SimpleITK.Image
        float64, ``value / vendor_scale_factor`` (as :func:`rntflow.harmonization.cylinder.to_bq_per_ml`
        does for vendor Bq/mL SPECT); the series geometry and FrameOfReferenceUID metadata.

    Raises
    ------
    CalibrationError
        A sensitivity (counts) calibration, or one of another camera or radionuclide.
    """
    h = pet.header
    if calibration.kind != "vendor_scale_factor":
        raise CalibrationError(
            f"a Bq/mL PET needs a Bq/mL scale factor calibration, got a {calibration.kind} calibration"
        )
    if h.camera_id and calibration.camera_id != h.camera_id:
        raise CalibrationError(f"calibration is of camera {calibration.camera_id}, the PET of {h.camera_id}")
    if h.radionuclide and _nuc(calibration.radionuclide) != _nuc(h.radionuclide):
        raise CalibrationError(f"calibration is for {calibration.radionuclide}, the PET images {h.radionuclide}")
    factor = float(calibration.vendor_scale_factor)
    return _copy_frame_metadata(pet.image, pet.image / factor)


def pet_nm_header(pet: PetVolume) -> NmHeader:
    """An :class:`NmHeader` describing the PET image of ``pet`` for the phantom analyses.

    Units ``BQML`` and DecayCorrection ``START`` (the image is at acquisition start),
    acquisition duration = one frame (ActualFrameDuration), the camera, radionuclide,
    half-life, administration and activity of the PET header, attenuation/scatter correction
    from CorrectedImage, the algorithm and iterations/subsets of ReconstructionMethod
    (the algorithm is the text before the iterations, ``PSF+TOF``) and the post-filter of
    ConvolutionKernel; no energy windows or collimator.
    """
    h = pet.header
    algo, iters, subsets = parse_reconstruction_method(h.reconstruction_method)
    if h.reconstruction_method and iters is not None:
        head = _ITERATIONS_RE.split(h.reconstruction_method, maxsplit=1)[0].strip()
        algo = head.upper() or algo
    return NmHeader(
        units="BQML",
        pixel_units=PixelUnits("BQML", "units", f"PET Units {h.units}"),
        units_attribute=h.units,
        acquisition_start=h.acquisition_start,
        acquisition_duration_s=h.frame_duration_s,
        administration_datetime=h.administration_datetime,
        administered_activity_mbq=h.administered_activity_mbq,
        administered_activity_raw=h.administered_activity_raw,
        radionuclide=h.radionuclide,
        radionuclide_half_life_s=h.radionuclide_half_life_s,
        attenuation_corrected=h.attenuation_corrected,
        scatter_corrected=h.scatter_corrected,
        algorithm=algo,
        iterations=iters,
        subsets=subsets,
        reconstruction_method=h.reconstruction_method,
        post_filter=parse_post_filter(h.convolution_kernel),
        post_filter_fwhm_mm=parse_post_filter_fwhm_mm(h.convolution_kernel),
        text_hints=tuple(t for t in (h.series_description, h.reconstruction_method, h.convolution_kernel) if t),
        matrix_rows=h.matrix_rows,
        matrix_cols=h.matrix_cols,
        matrix_slices=h.n_slices,
        voxel_size_mm=h.voxel_size_mm,
        manufacturer=h.manufacturer,
        model=h.model,
        serial=h.serial,
        frame_of_reference_uid=h.frame_of_reference_uid,
        decay_correction="START",
        study_description=h.study_description,
        image_type=h.image_type,
        series_description=h.series_description,
        notes=pet.notes,
    )
