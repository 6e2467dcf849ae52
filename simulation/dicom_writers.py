"""DICOM objects shaped like what SPECT/CT vendors and treatment-planning systems send.

* NM Image Storage, reconstructed tomo, multi-frame (one frame per slice), with the
  isotope, detector, rotation, energy-window and reconstruction attributes a
  quantitative workflow reads, written the way the site's vendor writes them
  (:class:`NmRecon` fields from :class:`rntflow.simulation.sites.VendorProfile`: Units
  or not, RealWorldValueMappingSequence always or only when scaled, UCUM code,
  RadionuclideTotalDose in MBq or Bq, vendor algorithm/collimator/filter strings);
* CT Image Storage, one file per slice, HU through rescale;
* RT Structure Set on the reference CT, one closed planar contour per slice and shape.

All objects are Explicit VR Little Endian and pass ``dciodvfy`` without errors.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    RTStructureSetStorage,
    generate_uid,
)

from rntflow.simulation.geometry import Grid

NM_IMAGE_STORAGE = NuclearMedicineImageStorage
CT_IMAGE_STORAGE = CTImageStorage
RTSTRUCT_STORAGE = RTStructureSetStorage
UID_ROOT = "1.2.826.0.1.3680043.10.1514."  # rntflow simulator UID root (under pydicom's org root)

#: SNOMED CT code of 177Lu (DICOM CID 18 "Isotopes in radiopharmaceuticals").
RADIONUCLIDE_CODES = {"Lu-177": ("447553000", "SCT", "^177^Lutetium")}


@dataclass(frozen=True)
class Identity:
    """The fake patient identity a hospital would send (PHI to be removed at ingest)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class Session:
    """One SPECT/CT imaging session (one DICOM study)."""

    study_uid: str
    frame_of_reference_uid: str
    accession: str
    study_description: str
    acquisition: dt.datetime
    station_name: str
    institution: str
    referring_physician: str = "DOE^JANE^^DR"


@dataclass(frozen=True)
class Radiopharmaceutical:
    """What was administered (or filled into a phantom) and when."""

    name: str
    radionuclide: str
    total_dose_mbq: float
    start: dt.datetime
    half_life_s: float


def uid(seed_text: str) -> str:
    """A deterministic UID under the simulator's root for ``seed_text``."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[seed_text])


def _da(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")[:13]


def _dt(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S.%f")[:21]


def _ds_str(x: float) -> str:
    """A DICOM DS of at most 16 characters."""
    s = f"{x:.6g}"
    if len(s) > 16:  # pragma: no cover - only for absurd magnitudes
        s = f"{x:.8e}"
    return s


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _base(
    sop_class: str,
    sop_uid: str,
    ident: Identity,
    sess: Session,
    modality: str,
    series_uid: str,
    series_number: int,
    series_description: str,
    created: dt.datetime,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RNTFLOW_SIM_01"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Polish and German names
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = _da(created), _tm(created)
    ds.StudyDate, ds.StudyTime = _da(sess.acquisition), _tm(sess.acquisition)
    ds.SeriesDate, ds.SeriesTime = _da(created), _tm(created)
    ds.AccessionNumber = sess.accession
    ds.Modality = modality
    ds.Manufacturer = ""
    ds.InstitutionName = sess.institution
    ds.ReferringPhysicianName = sess.referring_physician
    ds.StationName = sess.station_name
    ds.StudyDescription = sess.study_description
    ds.SeriesDescription = series_description
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.sex
    ds.StudyInstanceUID = sess.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = sess.accession[-8:]
    ds.SeriesNumber = series_number
    if modality in ("NM", "CT"):
        ds.Laterality = ""  # type 2C in General Series; the trunk FOV holds paired and unpaired organs
    return ds


def _save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@dataclass(frozen=True)
class NmRecon:
    """How the site acquired and reconstructed, as recorded in the NM header.

    Attributes
    ----------
    units : {"CNTS", "BQML"}
        What the pixel values are (counts per voxel or Bq/mL), whatever the header says.
    post_filter_fwhm_mm : float
        Gaussian post-filter written as ``GAUSSIAN <x>MM`` (``NONE`` for 0) when
        ``post_filter`` is empty.
    recon_method : str
        ReconstructionMethod template (``{algorithm}``, ``{iterations}``, ``{subsets}``).
    post_filter : tuple of str
        ConvolutionKernel values as the vendor writes them (overrides ``post_filter_fwhm_mm``).
    units_attribute : bool
        Write Units (0054,1001) (a PET attribute some vendors put on NM objects).
    rwvm : {"always", "when_scaled"}
        RealWorldValueMappingSequence always, or only when stored values need a slope.
    bqml_ucum : str
        UCUM code of a Bq/mL mapping.
    total_dose_unit : {"MBq", "Bq"}
        Unit RadionuclideTotalDose is written in.
    """

    manufacturer: str
    model: str
    serial: str
    units: str  # CNTS or BQML
    energy_windows: tuple[tuple[str, float, float], ...]  # (name, lower keV, upper keV)
    collimator: str
    corrections: tuple[str, ...]  # e.g. ("ATTN", "SCAT")
    algorithm: str
    iterations: int
    subsets: int
    post_filter_fwhm_mm: float
    projections_per_head: int
    time_per_projection_s: float
    software_versions: str = "VA10"
    recon_method: str = "{algorithm} {iterations}i{subsets}s"
    post_filter: tuple[str, ...] = ()
    units_attribute: bool = True
    rwvm: str = "always"
    bqml_ucum: str = "Bq/mL"
    total_dose_unit: str = "MBq"


def _nm_series_description(recon: NmRecon, pharm: Radiopharmaceutical) -> str:
    """E.g. ``Lu177 SPECT OSEM 6i16s AC SC RR``: nuclide, algorithm, iterations x subsets, corrections."""
    return (
        f"{pharm.radionuclide.replace('-', '')} SPECT {recon.algorithm} {recon.iterations}i{recon.subsets}s "
        + " ".join({"ATTN": "AC", "SCAT": "SC"}[c] for c in recon.corrections if c in ("ATTN", "SCAT"))
        + " RR"
    )


def _set_nm_patient_orientation(ds: Dataset) -> None:
    """NM/PET Patient Orientation module: recumbent, supine, head first (SNOMED CT codes)."""
    ds.PatientOrientationCodeSequence = Sequence([_code("102538003", "SCT", "recumbent")])
    ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = Sequence(
        [_code("40199007", "SCT", "supine")]
    )
    ds.PatientGantryRelationshipCodeSequence = Sequence([_code("102540008", "SCT", "headfirst")])


def _set_nm_pixel_data(ds: Dataset, values: np.ndarray, grid: Grid, recon: NmRecon) -> float:
    """Image Pixel, Multi-frame and NM Image attributes: one 16-bit frame per slice.

    Parameters
    ----------
    ds : Dataset
        Receives the attributes.
    values : numpy.ndarray (nz, ny, nx)
        Real values in ``recon.units`` (counts per voxel or Bq/mL).
    grid : Grid
        Voxel size (mm) of ``values``.
    recon : NmRecon

    Returns
    -------
    float
        Real-world value per stored value (``recon.units`` per pixel value): 1 for counts
        that fit in 16 bits, else the maximum over 60000.
    """
    nz, ny, nx = values.shape
    vmax = float(values.max()) if values.size else 0.0
    slope = 1.0 if (recon.units == "CNTS" and vmax <= 65535) else max(vmax / 60000.0, 1e-6)
    stored = np.clip(np.rint(values / slope), 0, 65535).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    dz, dy, dx = grid.spacing_mm
    ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]
    ds.SliceThickness = _ds_str(dz)
    ds.SpacingBetweenSlices = _ds_str(dz)
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = [0x00540080]
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.NumberOfDetectors = 2
    ds.NumberOfRotations = 1
    ds.PixelData = stored.tobytes()
    ds.LargestImagePixelValue = int(stored.max()) if stored.size else 0
    ds.SmallestImagePixelValue = int(stored.min()) if stored.size else 0
    return slope


def _real_world_value_mapping(slope: float, units: str, bqml_ucum: str = "Bq/mL") -> Sequence:
    """RealWorldValueMappingSequence: stored value x ``slope`` in Bq/mL (``BQML``, UCUM
    ``bqml_ucum``) or counts (UCUM ``{counts}``)."""
    rwv = Dataset()
    rwv.RealWorldValueFirstValueMapped = 0
    rwv.RealWorldValueLastValueMapped = 65535
    rwv.RealWorldValueIntercept = 0.0
    rwv.RealWorldValueSlope = float(slope)
    rwv.LUTExplanation = "Bq/mL" if units == "BQML" else "counts"
    rwv.LUTLabel = "BQML" if units == "BQML" else "CNTS"
    rwv.MeasurementUnitsCodeSequence = Sequence(
        [_code(bqml_ucum, "UCUM", "becquerels/milliliter") if units == "BQML" else _code("{counts}", "UCUM", "Counts")]
    )
    return Sequence([rwv])


def _set_nm_reconstruction(ds: Dataset, recon: NmRecon, diameter_mm: float) -> None:
    """Units (where the vendor writes it), decay correction, corrections applied, algorithm,
    post-filter, diameter (mm)."""
    if recon.units_attribute:
        ds.Units = recon.units
    ds.DecayCorrection = "START" if recon.units == "BQML" else "NONE"
    ds.CorrectedImage = list(recon.corrections) + (["DECY"] if recon.units == "BQML" else [])
    ds.ReconstructionMethod = recon.recon_method.format(
        algorithm=recon.algorithm, iterations=recon.iterations, subsets=recon.subsets
    )
    if recon.post_filter:  # SH, VM 1-n: "Butterworth\\0.48\\10" fits 16 characters per value
        ds.ConvolutionKernel = list(recon.post_filter) if len(recon.post_filter) > 1 else recon.post_filter[0]
    else:
        ds.ConvolutionKernel = (
            "NONE" if recon.post_filter_fwhm_mm <= 0 else f"GAUSSIAN {recon.post_filter_fwhm_mm:.1f}MM"
        )
    ds.ReconstructionDiameter = _ds_str(diameter_mm)


def _energy_windows(recon: NmRecon) -> Sequence:
    """EnergyWindowInformationSequence: one item per (name, lower keV, upper keV)."""
    ewins = []
    for name, lo, hi in recon.energy_windows:
        item = Dataset()
        rng_item = Dataset()
        rng_item.EnergyWindowLowerLimit = _ds_str(lo)
        rng_item.EnergyWindowUpperLimit = _ds_str(hi)
        item.EnergyWindowRangeSequence = Sequence([rng_item])
        item.EnergyWindowName = name
        ewins.append(item)
    return Sequence(ewins)


def _radiopharmaceutical_information(pharm: Radiopharmaceutical, total_dose_unit: str = "MBq") -> Sequence:
    """RadiopharmaceuticalInformationSequence: nuclide code, start, total dose (MBq by the NM
    module, or Bq where the vendor writes Bq), half-life (s)."""
    rp = Dataset()
    code = RADIONUCLIDE_CODES.get(pharm.radionuclide)
    rp.RadionuclideCodeSequence = Sequence([_code(*code)] if code else [])
    rp.Radiopharmaceutical = pharm.name
    rp.RadiopharmaceuticalStartDateTime = _dt(pharm.start)
    rp.RadiopharmaceuticalStartTime = _tm(pharm.start)
    rp.RadionuclideTotalDose = _ds_str(pharm.total_dose_mbq * (1e6 if total_dose_unit == "Bq" else 1.0))
    rp.RadionuclideHalfLife = _ds_str(pharm.half_life_s)
    rp.RadiopharmaceuticalRoute = "Intravenous" if "PSMA" in pharm.name else ""
    return Sequence([rp])


def _detector_information(recon: NmRecon, grid: Grid) -> Sequence:
    """DetectorInformationSequence: one item (a reconstructed tomo), collimator and image plane."""
    det_items = []
    for head in range(1):
        d = Dataset()
        d.CollimatorGridName = recon.collimator
        d.CollimatorType = "PARA"
        d.ImagePositionPatient = [_ds_str(v) for v in grid.origin_mm]
        d.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        d.StartAngle = _ds_str(180.0 * head)
        det_items.append(d)
    return Sequence(det_items[:1])


def _rotation_information(recon: NmRecon) -> Sequence:
    """RotationInformationSequence of a step-and-shoot tomo: two heads, 180 degrees each."""
    rot = Dataset()
    rot.StartAngle = "0"
    rot.AngularStep = _ds_str(360.0 / (2 * recon.projections_per_head))
    rot.RotationDirection = "CW"
    rot.ScanArc = "180"
    rot.ActualFrameDuration = int(round(recon.time_per_projection_s * 1000))  # ms
    rot.NumberOfFramesInRotation = recon.projections_per_head
    return Sequence([rot])


def write_nm(
    path: Path,
    values: np.ndarray,
    grid: Grid,
    ident: Identity,
    sess: Session,
    recon: NmRecon,
    pharm: Radiopharmaceutical,
    series_uid: str,
    sop_uid: str,
) -> Dataset:
    """Write a reconstructed NM tomo as one multi-frame object.

    Parameters
    ----------
    path : Path
        Output file.
    values : ndarray
        (nz, ny, nx) real values in ``recon.units`` (counts per voxel or Bq/mL).
    grid : Grid
        Scanner geometry of ``values``.
    ident, sess : Identity, Session
        Patient and imaging session (study).
    recon : NmRecon
        Camera, acquisition and reconstruction as recorded in the header.
    pharm : Radiopharmaceutical
    series_uid, sop_uid : str

    Returns
    -------
    Dataset
        The object written.
    """
    created = sess.acquisition + dt.timedelta(minutes=45)
    ds = _base(
        NM_IMAGE_STORAGE, sop_uid, ident, sess, "NM", series_uid, 3, _nm_series_description(recon, pharm), created
    )
    ds.Manufacturer = recon.manufacturer
    ds.ManufacturerModelName = recon.model
    ds.DeviceSerialNumber = recon.serial
    ds.SoftwareVersions = recon.software_versions
    ds.AcquisitionDate, ds.AcquisitionTime = _da(sess.acquisition), _tm(sess.acquisition)
    ds.ContentDate, ds.ContentTime = _da(created), _tm(created)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.FrameOfReferenceUID = sess.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    _set_nm_patient_orientation(ds)
    slope = _set_nm_pixel_data(ds, values, grid, recon)
    if recon.rwvm == "always" or slope != 1.0:
        ds.RealWorldValueMappingSequence = _real_world_value_mapping(slope, recon.units, recon.bqml_ucum)
    _set_nm_reconstruction(ds, recon, values.shape[2] * grid.spacing_mm[2])
    ds.EnergyWindowInformationSequence = _energy_windows(recon)
    ds.NumberOfEnergyWindows = len(ds.EnergyWindowInformationSequence)
    ds.CountsAccumulated = int(round(float(values.sum()))) if recon.units == "CNTS" else None
    ds.RadiopharmaceuticalInformationSequence = _radiopharmaceutical_information(pharm, recon.total_dose_unit)
    ds.DetectorInformationSequence = _detector_information(recon, grid)
    ds.RotationInformationSequence = _rotation_information(recon)
    ds.TypeOfDetectorMotion = "STEP AND SHOOT"
    _save(ds, path)
    return ds


def write_ct(
    folder: Path,
    hu: np.ndarray,
    grid: Grid,
    ident: Identity,
    sess: Session,
    series_uid: str,
    manufacturer: str,
    model: str,
    serial: str,
) -> list[tuple[str, float]]:
    """Write a CT series, one file per slice; returns [(SOPInstanceUID, z_mm)] in slice order."""
    nz, ny, nx = hu.shape
    dz, dy, dx = grid.spacing_mm
    ox, oy, oz = grid.origin_mm
    stored_all = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
    refs = []
    created = sess.acquisition + dt.timedelta(minutes=2)
    # one dataset for the series: the attributes shared by every slice are set once, the
    # slice's own (SOP instance, number, position, pixels) before each file is written
    ds = _base(
        CT_IMAGE_STORAGE, uid(f"{series_uid}/0"), ident, sess, "CT", series_uid, 2, "CT LowDose 5.0 B31s", created
    )
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber = manufacturer, model, serial
    ds.SoftwareVersions = "VA10"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionDate, ds.AcquisitionTime = _da(sess.acquisition), _tm(sess.acquisition)
    ds.ContentDate, ds.ContentTime = _da(created), _tm(created)
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = sess.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = _ds_str(dz)
    ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.KVP = "120"
    ds.XRayTubeCurrent = 30
    ds.ConvolutionKernel = "B31s"
    for k in range(nz):
        sop = uid(f"{series_uid}/{k}")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = sop
        ds.InstanceNumber = k + 1
        z = oz + k * dz
        ds.ImagePositionPatient = [_ds_str(ox), _ds_str(oy), _ds_str(z)]
        ds.SliceLocation = _ds_str(z)
        ds.PixelData = stored_all[k].tobytes()
        _save(ds, folder / f"CT_{k + 1:04d}.dcm")
        refs.append((sop, z))
    return refs


@dataclass(frozen=True)
class RoiContours:
    """One ROI's contours: name, interpreted type and a list of (slice index, points (n,3) mm)."""

    name: str
    interpreted_type: str
    contours: list[tuple[int, np.ndarray]]
    color: tuple[int, int, int]


def write_rtstruct(
    path: Path,
    ident: Identity,
    sess: Session,
    ct_series_uid: str,
    ct_refs: list[tuple[str, float]],
    rois: list[RoiContours],
    series_uid: str,
    sop_uid: str,
    created: dt.datetime,
    manufacturer: str = "RNTFLOW SIM",
    label: str = "DOSIMETRY VOIS",
) -> Dataset:
    """Write an RT Structure Set referencing the CT series ``ct_series_uid``."""
    ds = _base(RTSTRUCT_STORAGE, sop_uid, ident, sess, "RTSTRUCT", series_uid, 10, "Dosimetry VOIs", created)
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = "rntflow-simulator"
    ds.SoftwareVersions = "0.1"
    ds.OperatorsName = "PHYSICIST^SIM"
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = sess.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = label
    ds.StructureSetDate, ds.StructureSetTime = _da(created), _tm(created)
    contour_images = []
    for sop, _z in ct_refs:
        ci = Dataset()
        ci.ReferencedSOPClassUID, ci.ReferencedSOPInstanceUID = CT_IMAGE_STORAGE, sop
        contour_images.append(ci)
    rseries = Dataset()
    rseries.SeriesInstanceUID = ct_series_uid
    rseries.ContourImageSequence = Sequence(contour_images)
    rstudy = Dataset()
    rstudy.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, as TPSs use)
    rstudy.ReferencedSOPInstanceUID = sess.study_uid
    rstudy.RTReferencedSeriesSequence = Sequence([rseries])
    rfor = Dataset()
    rfor.FrameOfReferenceUID = sess.frame_of_reference_uid
    rfor.RTReferencedStudySequence = Sequence([rstudy])
    ds.ReferencedFrameOfReferenceSequence = Sequence([rfor])
    ss_rois, roi_contours, observations = [], [], []
    for number, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = sess.frame_of_reference_uid
        item.ROIName = roi.name
        item.ROIGenerationAlgorithm = "MANUAL"
        ss_rois.append(item)
        rc = Dataset()
        rc.ROIDisplayColor = list(roi.color)
        contours = []
        for k, pts in roi.contours:
            c = Dataset()
            ci = Dataset()
            ci.ReferencedSOPClassUID, ci.ReferencedSOPInstanceUID = CT_IMAGE_STORAGE, ct_refs[k][0]
            c.ContourImageSequence = Sequence([ci])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.2f}" for v in pts.reshape(-1)]
            contours.append(c)
        rc.ContourSequence = Sequence(contours)
        rc.ReferencedROINumber = number
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = roi.interpreted_type
        obs.ROIInterpreter = "PHYSICIST^SIM"
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(ss_rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"
    _save(ds, path)
    return ds
