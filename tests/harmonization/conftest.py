"""Fixtures: synthetic NM datasets (trial conventions) and synthetic phantom arrays."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, NuclearMedicineImageStorage, generate_uid
from scipy import ndimage

from rntflow.harmonization.nema import NEMA_SPHERE_DIAMETERS_MM, NEMA_SPHERE_RING_RADIUS_MM
from rntflow.physics.recovery import FWHM_PER_SIGMA

NM_STORAGE = NuclearMedicineImageStorage
LU177_HALF_LIFE_S = 6.647 * 86400  # radioactivedecay ICRP-107: 6.647 d (tests check it)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _window(name: str, lo: float, hi: float) -> Dataset:
    rng = Dataset()
    rng.EnergyWindowLowerLimit, rng.EnergyWindowUpperLimit = lo, hi
    item = Dataset()
    item.EnergyWindowName = name
    item.EnergyWindowRangeSequence = Sequence([rng])
    return item


def make_nm_dataset(
    values: np.ndarray | None = None,
    *,
    units: str = "CNTS",
    slope: float = 1.0,
    spacing_mm: tuple[float, float, float] = (4.8, 4.8, 4.8),  # row, col, slice
    ipp: tuple[float, float, float] = (-189.6, -189.6, -100.0),
    acq_start: datetime = datetime(2026, 3, 2, 10, 0, 0),
    admin: datetime = datetime(2026, 3, 1, 10, 0, 0),
    activity_mbq: float | None = 7400.0,
    windows: list[tuple[str, float, float]] | None = None,
    collimator: str = "MEGP",
    corrected: tuple[str, ...] = ("ATTN", "SCAT", "DECY"),
    recon: str = "OSEM 6i16s",
    kernel: str = "NONE",
    n_rot: int = 60,
    ms_per_proj: float = 20000.0,
    n_det: int = 2,
    matrix: int = 80,
) -> Dataset:
    """An NM Image Storage dataset following the trial's conventions (protocol-compliant
    by default for deployments/trial.example.yaml)."""
    if values is None:
        values = np.zeros((4, matrix, matrix), dtype=np.uint16)
    stored = np.asarray(values, dtype=np.uint16)
    n = stored.shape[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = NM_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = NM_STORAGE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "NM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.StudyDescription = "Lu177 post-therapy"
    ds.SeriesDescription = f"Lu177 SPECT {recon} AC SC RR"
    ds.FrameOfReferenceUID = generate_uid()
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber = "SIEMENS", "Symbia Intevo Bold", "1234"
    ds.StationName = "NM1"
    ds.AcquisitionDate = acq_start.strftime("%Y%m%d")
    ds.AcquisitionTime = acq_start.strftime("%H%M%S")
    ds.NumberOfFrames = n
    ds.NumberOfSlices = n
    ds.FrameIncrementPointer = (0x0054, 0x0080)
    ds.SliceVector = list(range(1, n + 1))
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
    ds.PixelSpacing = [spacing_mm[0], spacing_mm[1]]
    ds.SliceThickness = ds.SpacingBetweenSlices = spacing_mm[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = stored.tobytes()
    ds.Units = units
    ds.DecayCorrection = "START" if units == "BQML" else "NONE"
    rwv = Dataset()
    rwv.RealWorldValueSlope, rwv.RealWorldValueIntercept = slope, 0.0
    rwv.RealWorldValueFirstValueMapped, rwv.RealWorldValueLastValueMapped = 0, 65535
    rwv.LUTLabel = units
    rwv.MeasurementUnitsCodeSequence = Sequence([_code("{counts}" if units == "CNTS" else "Bq/mL", "UCUM", units)])
    ds.RealWorldValueMappingSequence = Sequence([rwv])
    rot = Dataset()
    rot.NumberOfFramesInRotation, rot.ActualFrameDuration = n_rot, ms_per_proj
    rot.AngularStep, rot.ScanArc = 3.0, 180.0
    ds.RotationInformationSequence = Sequence([rot])
    ds.NumberOfDetectors = n_det
    if windows is None:
        windows = [("Lu177_208", 187.2, 228.8), ("scatter_low", 161.5, 178.5), ("scatter_high", 237.5, 262.5)]
    ds.EnergyWindowInformationSequence = Sequence([_window(*w) for w in windows])
    ds.NumberOfEnergyWindows = len(windows)
    rp = Dataset()
    rp.Radiopharmaceutical = "Lu-177-PSMA-617"
    rp.RadionuclideCodeSequence = Sequence([_code("C-145A4", "SRT", "^177^Lutetium")])
    rp.RadiopharmaceuticalStartDateTime = admin.strftime("%Y%m%d%H%M%S")
    if activity_mbq is not None:
        rp.RadionuclideTotalDose = activity_mbq
    rp.RadionuclideHalfLife = LU177_HALF_LIFE_S
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    dets = []
    for _ in range(n_det):
        det = Dataset()
        det.CollimatorGridName, det.CollimatorType = collimator, "PARA"
        det.ImagePositionPatient = list(ipp)
        det.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dets.append(det)
    ds.DetectorInformationSequence = Sequence(dets)
    ds.CorrectedImage = list(corrected)
    ds.ReconstructionMethod = recon
    ds.ConvolutionKernel = kernel
    return ds


@pytest.fixture
def nm_factory():
    return make_nm_dataset


# --------------------------------------------------------------------------- phantoms


def _blur(img: np.ndarray, fwhm_mm: float, spacing_mm: float) -> np.ndarray:
    return ndimage.gaussian_filter(img, sigma=fwhm_mm / FWHM_PER_SIGMA / spacing_mm, mode="constant")


def sphere_fraction(shape, spacing_mm: float, centre_zyx_mm, radius_mm: float, sub: int = 5) -> np.ndarray:
    """Fraction of each voxel inside a sphere (supersampled)."""
    out = np.zeros(shape)
    c = np.asarray(centre_zyx_mm) / spacing_mm
    r = radius_mm / spacing_mm
    lo = np.maximum(np.floor(c - r - 1).astype(int), 0)
    hi = np.minimum(np.ceil(c + r + 2).astype(int), shape)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    ax = [((np.arange(lo[i], hi[i])[:, None] + offs) - c[i]) ** 2 for i in range(3)]
    d2 = ax[0][:, None, None, :, None, None] + ax[1][None, :, None, None, :, None] + ax[2][None, None, :, None, None, :]
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = (d2 <= r * r).mean(axis=(3, 4, 5))
    return out


def uniform_cylinder_counts(
    total_counts: float,
    fwhm_mm: float,
    rng: np.random.Generator,
    shape=(64, 80, 80),
    spacing_mm: float = 4.8,
    diameter_mm: float = 216.0,
    length_mm: float = 186.0,
) -> np.ndarray:
    """Counts image of a uniform cylinder (axis along z, centred), blurred and Poisson."""
    z, y, x = (np.arange(n) * spacing_mm for n in shape)
    c = [(n - 1) * spacing_mm / 2 for n in shape]
    zz, yy, xx = np.meshgrid(z - c[0], y - c[1], x - c[2], indexing="ij")
    cyl = ((yy**2 + xx**2) <= (diameter_mm / 2) ** 2) & (np.abs(zz) <= length_mm / 2)
    img = _blur(cyl.astype(float), fwhm_mm, spacing_mm)
    img *= total_counts / img.sum()
    return rng.poisson(img).astype(float)


def nema_phantom(
    fwhm_mm: float,
    sbr: float,
    background: float,
    rng: np.random.Generator | None,
    shape=(48, 80, 80),
    spacing_mm: float = 4.8,
    axis_offset_yx_mm=(25.0, -6.0),
    plane_z_mm: float | None = None,
    theta0: float = 0.3,
    handed: int = 1,
    counts_per_unit: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """NEMA IEC-like phantom image (units of ``background``) and the true sphere centres.

    Body: elliptic cylinder 294 x 220 mm, 180 mm long; lung insert 50 mm cold on the
    sphere-ring axis, which is offset from the body centre; spheres on a 57.2 mm ring.
    With ``counts_per_unit`` > 0 Poisson noise is applied at that many counts per unit.
    """
    z, y, x = (np.arange(n) * spacing_mm for n in shape)
    c = np.array([(n - 1) * spacing_mm / 2 for n in shape])
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    body = (((yy - c[1]) / 110.0) ** 2 + ((xx - c[2]) / 147.0) ** 2 <= 1) & (np.abs(zz - c[0]) <= 90.0)
    ay, ax = c[1] + axis_offset_yx_mm[0], c[2] + axis_offset_yx_mm[1]
    lung = ((yy - ay) ** 2 + (xx - ax) ** 2) <= 25.0**2
    act = background * (body & ~lung).astype(float)
    pz = c[0] if plane_z_mm is None else plane_z_mm
    centres = []
    for k, d in enumerate(NEMA_SPHERE_DIAMETERS_MM):
        ang = theta0 + handed * k * math.pi / 3
        cen = np.array(
            [pz, ay + NEMA_SPHERE_RING_RADIUS_MM * math.sin(ang), ax + NEMA_SPHERE_RING_RADIUS_MM * math.cos(ang)]
        )
        f = sphere_fraction(shape, spacing_mm, cen, d / 2)
        act = act * (1 - f) + background * sbr * f
        centres.append(cen)
    img = _blur(act, fwhm_mm, spacing_mm)
    if counts_per_unit > 0 and rng is not None:
        img = rng.poisson(img * counts_per_unit) / counts_per_unit
    return img, np.array(centres)
