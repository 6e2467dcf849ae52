"""Synthetic DICOM for listener tests and benchmarks (pydicom; realistic fake identities)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    RTStructureSetStorage,
    generate_uid,
)

CT = CTImageStorage
NM = NuclearMedicineImageStorage
RTSTRUCT = RTStructureSetStorage
ENCAPSULATED_PDF = EncapsulatedPDFStorage


@dataclass(frozen=True)
class FakePatient:
    name: str = "Jansen^Pieter^Willem"
    patient_id: str = "MRN48213975"
    birth_date: str = "19560314"
    sex: str = "M"


def _base(
    p: FakePatient, sop_class: str, study_uid: str, series_uid: str, modality: str, study_date: str = "20260310"
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAddress = "Keizersgracht 123, Amsterdam"
    ds.OtherPatientIDs = p.patient_id + "-B"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.SeriesDate = study_date
    ds.AcquisitionDateTime = study_date + "102000.000000"
    ds.AccessionNumber = "ACC" + p.patient_id[-6:]
    ds.ReferringPhysicianName = "Bakker^Anna"
    ds.InstitutionName = "Academisch Ziekenhuis Noord"
    ds.StationName = "NMCT01"
    ds.DeviceSerialNumber = "SN-1234"
    ds.Manufacturer = "SIEMENS"
    ds.StudyDescription = "Lu177 PSMA cycle 1 " + p.name
    ds.Modality = modality
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "for"])
    ds.add_new(0x00091010, "LO", "private " + p.patient_id)
    return ds


def ct_series(p: FakePatient, n: int, size: int = 64, study_uid: str | None = None, seed: int = 0) -> list[Dataset]:
    """``n`` CT slices of ``size`` x ``size`` int16 noise."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    out = []
    for i in range(n):
        ds = _base(p, CT, study_uid, series_uid, "CT")
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i) * 2.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.98, 0.98]
        ds.SliceThickness = 2.5
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.int16).tobytes()
        out.append(ds)
    return out


def nm_multiframe(p: FakePatient, frames: int = 32, size: int = 64, study_uid: str | None = None) -> Dataset:
    """One NM SPECT reconstruction (multi-frame) with radiopharmaceutical information."""
    study_uid = study_uid or generate_uid()
    ds = _base(p, NM, study_uid, generate_uid(), "NM")
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    rp = Dataset()
    rp.RadiopharmaceuticalStartDateTime = "20260309143000.000000"
    rp.RadionuclideTotalDose = 7.4e9
    rp.RadionuclideHalfLife = 574380.0
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-145A8", "SRT", "^177^Lutetium"
    rp.RadionuclideCodeSequence = Sequence([code])
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    ds.PixelData = (np.arange(frames * size * size, dtype=np.uint16) % 1000).tobytes()
    return ds


def rtstruct_for(p: FakePatient, cts: list[Dataset]) -> Dataset:
    """An RTSTRUCT referencing a CT series (references must survive de-identification)."""
    ds = _base(p, RTSTRUCT, str(cts[0].StudyInstanceUID), generate_uid(), "RTSTRUCT")
    ds.StructureSetLabel = "VOIs"
    ds.StructureSetDate = "20260311"
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = cts[0].SeriesInstanceUID
    ref_series.ContourImageSequence = Sequence()
    for ct in cts:
        img = Dataset()
        img.ReferencedSOPClassUID = ct.SOPClassUID
        img.ReferencedSOPInstanceUID = ct.SOPInstanceUID
        ref_series.ContourImageSequence.append(img)
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref_study.ReferencedSOPInstanceUID = cts[0].StudyInstanceUID
    ref_study.RTReferencedSeriesSequence = Sequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = cts[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, "Kidney_L"
    roi.ReferencedFrameOfReferenceUID = cts[0].FrameOfReferenceUID
    ds.StructureSetROISequence = Sequence([roi])
    return ds


def to_bytes(ds: Dataset, with_meta: bool = True) -> bytes:
    """Encode (explicit VR little endian); without meta: the bare dataset stream."""
    buf = io.BytesIO()
    if with_meta:
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    bare = Dataset(ds)  # shallow copy without file meta
    write_dataset(out, bare)
    return out.getvalue()


def write_files(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
