"""PET Image Storage (1.2.840.10008.5.1.4.1.1.128) as a TOF PET/CT sends a static reconstruction.

One file per transverse slice (the PET Image IOD is single-frame), each with its own
ImagePositionPatient, ImageIndex and RescaleSlope over signed 16-bit pixel data (values in
Bq/mL = stored x RescaleSlope, RescaleIntercept 0). PET Series: Units ``BQML``, SeriesType
``STATIC\\IMAGE``, CountsSource ``EMISSION``, DecayCorrection ``START`` (values are activity
concentrations at the acquisition start), CorrectedImage ``NORM\\DTIM\\ATTN\\SCAT\\DECY\\RAN``.
PET Isotope: RadiopharmaceuticalInformationSequence with RadionuclideTotalDose in Bq (as the
PET module has it), RadionuclideHalfLife (s), RadionuclidePositronFraction and the
radionuclide code. The FrameOfReferenceUID is the session's, shared with its CT. The
shared Patient/Study/Series/Equipment attributes come from
:mod:`rntflow.simulation.dicom_writers` (same identity, session and UID helpers).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rntflow.simulation import dicom_writers as dw
from rntflow.simulation.geometry import Grid

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


@dataclass(frozen=True)
class PetRecon:
    """Scanner and reconstruction as the PET header records them."""

    manufacturer: str
    model: str
    serial: str
    software_versions: str
    frame_duration_s: float
    recon_method: str = "PSF+TOF 4i5s"
    convolution_kernel: str = "GAUSSIAN 5.0MM"
    corrections: tuple[str, ...] = ("NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN")


@dataclass(frozen=True)
class PetRadiopharmaceutical:
    """What was administered: name, radionuclide, activity (MBq; written in Bq), time, half-life, code."""

    name: str
    radionuclide: str
    total_dose_mbq: float
    start: dt.datetime
    half_life_s: float
    positron_fraction: float
    code: tuple[str, str, str]
    route: str = "Intra-arterial"


def _isotope(pharm: PetRadiopharmaceutical) -> Sequence:
    rp = Dataset()
    rp.Radiopharmaceutical = pharm.name
    rp.RadiopharmaceuticalRoute = pharm.route
    rp.RadiopharmaceuticalStartTime = dw._tm(pharm.start)
    rp.RadiopharmaceuticalStartDateTime = dw._dt(pharm.start)
    rp.RadionuclideTotalDose = dw._ds_str(pharm.total_dose_mbq * 1e6)  # Bq (PET Isotope module)
    rp.RadionuclideHalfLife = dw._ds_str(pharm.half_life_s)
    rp.RadionuclidePositronFraction = dw._ds_str(pharm.positron_fraction)
    rp.RadionuclideCodeSequence = Sequence([dw._code(*pharm.code)])
    return Sequence([rp])


def decay_factor_and_reference_ms(half_life_s: float, duration_s: float) -> tuple[float, float]:
    """DecayFactor of a static frame decay-corrected to its start, and FrameReferenceTime (ms):
    the time after the start at which the activity equals the frame's mean activity."""
    lam = math.log(2.0) / half_life_s
    x = lam * duration_s
    mean_fraction = (1.0 - math.exp(-x)) / x if x > 0 else 1.0
    return 1.0 / mean_fraction, -math.log(mean_fraction) / lam * 1000.0


def write_pet(
    folder: Path,
    values_bqml: np.ndarray,
    grid: Grid,
    ident: dw.Identity,
    sess: dw.Session,
    recon: PetRecon,
    pharm: PetRadiopharmaceutical,
    series_uid: str,
    series_description: str = "PET Y90 TOF AC",
) -> list[tuple[str, float]]:
    """Write a static PET reconstruction, one file per slice (``PT_0001.dcm`` ...).

    Parameters
    ----------
    folder : Path
        Output folder.
    values_bqml : ndarray
        (nz, ny, nx) activity concentration (Bq/mL) at the acquisition start; may be
        negative (noise).
    grid : Grid
        Scanner geometry (z of slice k = origin z + k dz).
    ident, sess : Identity, Session
        Patient and imaging session (the CT of the session shares its frame of reference).
    recon : PetRecon
    pharm : PetRadiopharmaceutical
    series_uid : str

    Returns
    -------
    list of (SOPInstanceUID, z_mm)
    """
    nz, ny, nx = values_bqml.shape
    dz, dy, dx = grid.spacing_mm
    ox, oy, oz = grid.origin_mm
    created = sess.acquisition + dt.timedelta(minutes=40)
    decay_factor, ref_ms = decay_factor_and_reference_ms(pharm.half_life_s, recon.frame_duration_s)
    isotope = _isotope(pharm)
    refs = []
    for k in range(nz):
        sop = dw.uid(f"{series_uid}/{k}")
        ds = dw._base(PET_IMAGE_STORAGE, sop, ident, sess, "PT", series_uid, 4, series_description, created)
        ds.Manufacturer, ds.ManufacturerModelName = recon.manufacturer, recon.model
        ds.DeviceSerialNumber, ds.SoftwareVersions = recon.serial, recon.software_versions
        ds.Laterality = ""  # type 2C in General Series, as the NM and CT writers do
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.AcquisitionDate, ds.AcquisitionTime = dw._da(sess.acquisition), dw._tm(sess.acquisition)
        ds.ContentDate, ds.ContentTime = dw._da(created), dw._tm(created)
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = sess.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        dw._set_nm_patient_orientation(ds)
        # PET Series
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.NumberOfSlices = nz
        ds.CorrectedImage = list(recon.corrections)
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "measured,CT-based"
        ds.ScatterCorrectionMethod = "Model-based"
        ds.DecayCorrection = "START"
        ds.ReconstructionMethod = recon.recon_method
        ds.ConvolutionKernel = recon.convolution_kernel
        ds.ReconstructionDiameter = dw._ds_str(nx * dx)
        ds.CollimatorType = "NONE"
        ds.AxialAcceptance = "0"
        ds.RadiopharmaceuticalInformationSequence = isotope
        # Image Plane
        z = oz + k * dz
        ds.ImagePositionPatient = [dw._ds_str(ox), dw._ds_str(oy), dw._ds_str(z)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = dw._ds_str(z)
        ds.SliceThickness = dw._ds_str(dz)
        ds.PixelSpacing = [dw._ds_str(dy), dw._ds_str(dx)]
        # Image Pixel + PET Image: signed 16 bit with a per-slice slope
        sl = values_bqml[k]
        vmax = float(np.abs(sl).max()) if sl.size else 0.0
        slope_text = dw._ds_str(vmax / 32000.0 if vmax > 0 else 1.0)
        slope = float(slope_text)  # quantise with the slope as written
        stored = np.clip(np.rint(sl / slope), -32768, 32767).astype(np.int16)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = slope_text
        ds.FrameReferenceTime = dw._ds_str(ref_ms)
        ds.ActualFrameDuration = int(round(recon.frame_duration_s * 1000))
        ds.DecayFactor = dw._ds_str(decay_factor)
        ds.ImageIndex = k + 1
        ds.PixelData = stored.tobytes()
        dw._save(ds, folder / f"PT_{k + 1:04d}.dcm")
        refs.append((sop, z))
    return refs
