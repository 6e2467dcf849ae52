"""Conformance corpus: NM reconstruction headers as vendors send them, and what they mean.

Each profile is built here in code from a vendor convention (not from this repository's
simulator) with the expected interpretation: pixel units and the rule that decided them,
the real-world value of a known stored voxel, the administered activity in MBq, and the
protocol verdict with and without the site's camera profile. A compliant study never
fails a check for a missing optional attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, NuclearMedicineImageStorage, generate_uid

from rntflow.core.config import CameraProfile, load_config
from rntflow.harmonization.headers import nm_to_image, parse_nm_header
from rntflow.harmonization.recon_check import check_reconstruction

CONFIG = Path(__file__).resolve().parents[2] / "deployments" / "trial.example.yaml"
ADMIN = datetime(2026, 3, 1, 10, 0, 0)
ACQ = datetime(2026, 3, 2, 10, 0, 0)  # 24 h later
STORED = 1000  # the stored value of the probe voxel
PHOTOPEAK = ("Lu177_208", 187.2, 228.8)
SCATTER = [("scatter_low", 161.5, 178.5), ("scatter_high", 237.5, 262.5)]


def _code(value: str, scheme: str = "UCUM", meaning: str = "") -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning or value
    return c


def _rwvm(unit: str | None, slope: float, label: str | None = None) -> Dataset:
    item = Dataset()
    item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 65535
    item.RealWorldValueSlope, item.RealWorldValueIntercept = slope, 0.0
    if label:
        item.LUTLabel = label
    if unit:
        item.MeasurementUnitsCodeSequence = Sequence([_code(unit)])
    return item


def _window(name: str, lo: float, hi: float) -> Dataset:
    rng = Dataset()
    rng.EnergyWindowLowerLimit, rng.EnergyWindowUpperLimit = lo, hi
    item = Dataset()
    item.EnergyWindowName, item.EnergyWindowRangeSequence = name, Sequence([rng])
    return item


def nm(
    manufacturer: str,
    model: str,
    *,
    matrix: int = 80,
    spacing_mm: float = 4.8,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"),
    series: str = "Lu177 SPECT",
    method: str | None = None,
    kernel: str | list[str] | None = "NONE",
    collimator: str = "MEGP",
    corrected: tuple[str, ...] | None = ("ATTN", "SCAT"),
    windows: list[tuple[str, float, float]] | None = None,
    frame_ms: float = 20000.0,
    total_dose: float | None = 7400.0,
    extra: Callable[[Dataset], None] | None = None,
) -> Dataset:
    """A minimal NM reconstruction: what every vendor sends; ``extra`` adds the vendor's own."""
    n = 4
    stored = np.zeros((n, matrix, matrix), dtype=np.uint16)
    stored[2, matrix // 2, matrix // 2] = STORED
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = NuclearMedicineImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = NuclearMedicineImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ImageType = "NM", list(image_type)
    ds.SeriesDescription = series
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber = manufacturer, model, "SN-1"
    ds.AcquisitionDate, ds.AcquisitionTime = ACQ.strftime("%Y%m%d"), ACQ.strftime("%H%M%S")
    ds.NumberOfFrames = ds.NumberOfSlices = n
    ds.Rows = ds.Columns = matrix
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.SliceThickness = ds.SpacingBetweenSlices = spacing_mm
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = stored.tobytes()
    rot = Dataset()
    rot.NumberOfFramesInRotation, rot.ActualFrameDuration = 60, frame_ms
    ds.RotationInformationSequence = Sequence([rot])
    ds.NumberOfDetectors = 2
    wins = [PHOTOPEAK, *SCATTER] if windows is None else windows
    ds.EnergyWindowInformationSequence = Sequence([_window(*w) for w in wins])
    rp = Dataset()
    rp.Radiopharmaceutical = "Lu-177-DOTATATE"
    rp.RadionuclideCodeSequence = Sequence([_code("C-145A4", "SRT", "^177^Lutetium")])
    rp.RadiopharmaceuticalStartDateTime = ADMIN.strftime("%Y%m%d%H%M%S")
    if total_dose is not None:
        rp.RadionuclideTotalDose = total_dose
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    det = Dataset()
    det.CollimatorGridName = collimator
    det.ImagePositionPatient, det.ImageOrientationPatient = [-190.0, -190.0, -100.0], [1, 0, 0, 0, 1, 0]
    ds.DetectorInformationSequence = Sequence([det, det])
    if corrected is not None:
        ds.CorrectedImage = list(corrected)
    if method is not None:
        ds.ReconstructionMethod = method
    if kernel is not None:
        ds.ConvolutionKernel = kernel
    if extra is not None:
        extra(ds)
    return ds


def _set(**attrs: Any) -> Callable[[Dataset], None]:
    def apply(ds: Dataset) -> None:
        for k, v in attrs.items():
            setattr(ds, k, v)

    return apply


def _hermes_private(ds: Dataset) -> None:
    block = ds.private_block(0x0011, "HERMES RECON", create=True)
    block.add_new(0x01, "LO", "HybridRecon Oncology: CT-AC, Monte Carlo scatter correction, RR")


@dataclass
class Case:
    """One header variant and its expected interpretation."""

    ds: Dataset
    units: str | None
    rule: str
    value: float | None  # real-world value of the probe voxel (counts or Bq/mL)
    activity_mbq: float | None
    camera: CameraProfile | None = None
    fails_with_profile: set[str] = field(default_factory=set)
    fails_without_profile: set[str] | None = None  # None: same as with the profile
    warns: set[str] = field(default_factory=set)  # must at least be warn (with the profile)
    site_units: str | None = None


SIEMENS = CameraProfile(manufacturer="SIEMENS", algorithms=["Flash3D"], collimators=["MELP"])
GE = CameraProfile(
    manufacturer="GE", algorithms=["Evolution", "OSEM3D"], matrix_sizes=[128], post_filters=["Butterworth 0.48 10"]
)
HERMES = CameraProfile(
    algorithms=["HybridRecon"],
    post_filters=["Gaussian 8 mm"],
    scatter_evidence=["corrected_image", "text"],
    scatter_text_patterns=[r"scatter correction"],
)


# Over 100 lines on purpose: a data table (one entry per vendor header variant), not logic.
def corpus() -> dict[str, Case]:
    voxel_ml = 4.8**3 / 1000.0
    return {
        # Siemens Flash3D counts reconstruction: no Units, no RWVM (NM IOD has no Units)
        "siemens_counts_no_units": Case(
            nm(
                "SIEMENS",
                "Symbia Intevo Bold",
                series="LU177 SPECT Flash3D 6i16s",
                kernel="XYZ Gauss 0.0",
                collimator="MELP",
            ),
            "CNTS",
            "default",
            STORED,
            7400.0,
            SIEMENS,
            set(),
            {"algorithm"},
        ),
        # GE Evolution, Bq/mL through RWVM (UCUM Bq/ml), Butterworth filter (ConvolutionKernel is
        # SH, 16 characters, VM 1-n: the parameters come as further values), 128 matrix
        "ge_rwvm_bq_per_ml": Case(
            nm(
                "GE MEDICAL SYSTEMS",
                "Discovery NM/CT 670 Pro",
                matrix=128,
                spacing_mm=4.42,
                series="Evolution for Oncology",
                method="Evolution 4i12s",
                kernel=["Butterworth", "0.48", "10"],
                extra=lambda d: setattr(d, "RealWorldValueMappingSequence", Sequence([_rwvm("Bq/ml", 0.25)])),
            ),
            "BQML",
            "rwvm",
            0.25 * STORED,
            7400.0,
            GE,
            set(),
            {"algorithm", "matrix", "post_filter"},
        ),
        # Hermes HybridRecon writing {counts} through RWVM on a DERIVED image; scatter in private text
        "hermes_counts_rwvm": Case(
            nm(
                "Hermes Medical Solutions",
                "HybridRecon",
                image_type=("DERIVED", "SECONDARY", "RECON TOMO"),
                method="HybridRecon-Oncology 5i15s",
                kernel="Gaussian 8 mm",
                corrected=None,
                windows=[PHOTOPEAK],
                extra=lambda d: (
                    setattr(d, "RealWorldValueMappingSequence", Sequence([_rwvm("{counts}", 2.0)])),
                    _hermes_private(d),
                ),
            ),
            "CNTS",
            "rwvm",
            2.0 * STORED,
            7400.0,
            HERMES,
            set(),
            {"algorithm", "post_filter"},
            {"attenuation_correction", "energy_window_scatter"},
        ),
        # Hermes Bq/ml with a second {counts} item: the quantitative mapping is used
        "hermes_two_rwvm_items": Case(
            nm(
                "Hermes Medical Solutions",
                "HybridRecon",
                method="HybridRecon-Oncology 5i15s",
                extra=lambda d: setattr(
                    d, "RealWorldValueMappingSequence", Sequence([_rwvm("{counts}", 1.0), _rwvm("Bq/ml", 3.0)])
                ),
            ),
            "BQML",
            "rwvm",
            3.0 * STORED,
            7400.0,
            HERMES,
        ),
        # RWVM in kBq/ml: scaled to Bq/mL
        "rwvm_kbq_per_ml": Case(
            nm(
                "MEDISO",
                "AnyScan SC",
                method="OSEM 6i16s",
                extra=lambda d: setattr(d, "RealWorldValueMappingSequence", Sequence([_rwvm("kBq/ml", 0.01)])),
            ),
            "BQML",
            "rwvm",
            0.01 * STORED * 1000.0,
            7400.0,
        ),
        # RWVM 1/ml (counts per mL): counts per voxel = value x voxel volume
        "rwvm_counts_per_ml": Case(
            nm(
                "MEDISO",
                "AnyScan SC",
                method="OSEM 6i16s",
                extra=lambda d: setattr(d, "RealWorldValueMappingSequence", Sequence([_rwvm("1/ml", 1.0)])),
            ),
            "CNTS",
            "rwvm",
            STORED * voxel_ml,
            7400.0,
        ),
        # RWVM unit only in LUTLabel
        "rwvm_lut_label_only": Case(
            nm(
                "PHILIPS",
                "BrightView XCT",
                method="Astonish 4i16s",
                extra=lambda d: setattr(d, "RealWorldValueMappingSequence", Sequence([_rwvm(None, 0.5, "BQML")])),
            ),
            "BQML",
            "rwvm",
            0.5 * STORED,
            7400.0,
            CameraProfile(algorithms=["Astonish"]),
        ),
        # PET-style Units BQML on an NM object, Rescale Slope carries the scale
        "units_bqml_rescale": Case(
            nm(
                "SIEMENS",
                "Symbia Intevo Bold",
                method="OSEM 6i16s",
                extra=_set(Units="BQML", RescaleSlope=0.1, RescaleIntercept=0.0),
            ),
            "BQML",
            "units",
            0.1 * STORED,
            7400.0,
        ),
        # Units CNTS beside RWVM Bq/ml: RWVM wins, QA warns of the disagreement
        "units_disagree_with_rwvm": Case(
            nm(
                "GE MEDICAL SYSTEMS",
                "Discovery NM/CT 670 Pro",
                method="OSEM 6i16s",
                extra=lambda d: (
                    setattr(d, "Units", "CNTS"),
                    setattr(d, "RealWorldValueMappingSequence", Sequence([_rwvm("Bq/ml", 1.0)])),
                ),
            ),
            "BQML",
            "rwvm",
            STORED,
            7400.0,
            warns={"pixel_units"},
        ),
        # RadionuclideTotalDose in Bq (vendor deviation): converted to MBq with a warning
        "total_dose_in_bq": Case(
            nm("SIEMENS", "Symbia Intevo Bold", method="OSEM 6i16s", total_dose=7.27e9),
            "CNTS",
            "default",
            STORED,
            7270.0,
            warns={"administered_activity"},
        ),
        # ActualFrameDuration written in seconds instead of ms
        "frame_duration_in_s": Case(
            nm("MEDISO", "AnyScan SC", method="OSEM 6i16s", frame_ms=20.0),
            "CNTS",
            "default",
            STORED,
            7400.0,
            warns={"time_per_projection"},
        ),
        # no ConvolutionKernel, no CorrectedImage, no energy windows, no ReconstructionMethod iterations
        "missing_optional_attributes": Case(
            nm("SIEMENS", "Symbia Intevo Bold", method="OSEM", kernel=None, corrected=None, windows=[]),
            "CNTS",
            "default",
            STORED,
            7400.0,
            warns={
                "post_filter",
                "attenuation_correction",
                "scatter_correction",
                "energy_window_photopeak",
                "iterations_x_subsets",
            },
        ),
        # site override when no header says: a DERIVED reformat with no units
        "site_override_bq_per_ml": Case(
            nm("MEDISO", "AnyScan SC", image_type=("DERIVED", "SECONDARY"), method="OSEM 6i16s"),
            "BQML",
            "site",
            STORED,
            7400.0,
            site_units="bq_per_ml",
        ),
        # Siemens xSPECT Quant named in the series: Bq/mL by vendor convention (warn: confirm)
        "siemens_xspect_quant_hint": Case(
            nm(
                "SIEMENS",
                "Symbia Intevo Bold",
                series="xSPECT Quant Lu177",
                method="xSPECT 24i2s",
                kernel="Gaussian 0 mm",
            ),
            "BQML",
            "vendor",
            STORED,
            7400.0,
            CameraProfile(algorithms=["xSPECT"]),
            warns={"pixel_units"},
        ),
        # nothing says what the pixels are: fail, with the fix in the message
        "no_units_at_all": Case(
            nm("MEDISO", "AnyScan SC", image_type=("DERIVED", "SECONDARY"), method="OSEM 6i16s"),
            None,
            "none",
            STORED,
            7400.0,
            fails_with_profile={"pixel_units"},
        ),
    }


CASES = corpus()


@pytest.fixture(scope="module")
def protocol():
    return load_config(CONFIG).protocol


def _roundtrip(ds: Dataset, tmp_path: Path) -> Dataset:
    path = tmp_path / "nm.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


@pytest.mark.parametrize("name", list(CASES))
def test_units_scale_and_activity(name, tmp_path):
    case = CASES[name]
    ds = _roundtrip(case.ds, tmp_path)
    h = parse_nm_header(ds, case.site_units)
    assert h.units == case.units, h.pixel_units
    assert h.pixel_units.rule == case.rule, h.pixel_units
    assert h.administered_activity_mbq == pytest.approx(case.activity_mbq)
    arr = sitk.GetArrayFromImage(nm_to_image(ds))
    m = ds.Rows // 2
    assert float(arr[2, m, m]) == pytest.approx(case.value, rel=1e-5)
    assert float(arr[0, 0, 0]) == 0.0


@pytest.mark.parametrize("name", list(CASES))
def test_protocol_verdict(name, protocol):
    case = CASES[name]
    h = parse_nm_header(case.ds, case.site_units)
    with_profile = {r.check: r for r in check_reconstruction(h, protocol, case.camera)}
    fails = {k for k, r in with_profile.items() if r.status == "fail"}
    assert fails == case.fails_with_profile, [with_profile[k] for k in fails]
    for check in case.warns:
        assert with_profile[check].status == "warn", with_profile[check]
    if case.camera is not None and case.fails_without_profile is not None:
        without = {r.check for r in check_reconstruction(h, protocol) if r.status == "fail"}
        assert without == case.fails_without_profile


def test_qa_says_which_rule_decided(protocol):
    msgs = {}
    for name in (
        "siemens_counts_no_units",
        "ge_rwvm_bq_per_ml",
        "hermes_counts_rwvm",
        "units_bqml_rescale",
        "site_override_bq_per_ml",
    ):
        case = CASES[name]
        r = {c.check: c for c in check_reconstruction(parse_nm_header(case.ds, case.site_units), protocol)}
        msgs[name] = r["pixel_units"].message
    assert msgs["ge_rwvm_bq_per_ml"] == "units Bq/mL from RWVM Bq/ml"
    assert msgs["hermes_counts_rwvm"] == "units counts from RWVM {counts}"
    assert msgs["units_bqml_rescale"] == "units Bq/mL from Units BQML"
    assert "ORIGINAL\\PRIMARY\\RECON TOMO" in msgs["siemens_counts_no_units"]
    assert "sites[].nm_units" in msgs["site_override_bq_per_ml"]


def test_total_dose_unit_slip_message(protocol):
    h = parse_nm_header(CASES["total_dose_in_bq"].ds)
    r = {c.check: c for c in check_reconstruction(h, protocol)}["administered_activity"]
    assert "read as Bq" in r.message and "7270 MBq" in r.message
    assert h.administered_activity_raw == 7.27e9


def test_per_frame_real_world_value_mapping():
    def per_frame(ds: Dataset) -> None:
        ds.RealWorldValueMappingSequence = Sequence([_rwvm("Bq/ml", 1.0)])
        frames = []
        for k in range(4):
            fg = Dataset()
            fg.RealWorldValueMappingSequence = Sequence([_rwvm("Bq/ml", 1.0 + k)])
            frames.append(fg)
        ds.PerFrameFunctionalGroupsSequence = Sequence(frames)

    ds = nm("GE MEDICAL SYSTEMS", "Discovery NM/CT 670 Pro", method="OSEM 6i16s", extra=per_frame)
    arr = sitk.GetArrayFromImage(nm_to_image(ds))
    assert float(arr[2, 40, 40]) == pytest.approx(3.0 * STORED)  # frame 3 has slope 3


def test_counts_per_second_needs_duration():
    ds = nm(
        "MEDISO",
        "AnyScan SC",
        method="OSEM 6i16s",
        extra=lambda d: setattr(d, "RealWorldValueMappingSequence", Sequence([_rwvm("{counts}/s", 1.0)])),
    )
    arr = sitk.GetArrayFromImage(nm_to_image(ds))
    assert float(arr[2, 40, 40]) == pytest.approx(STORED * 60 * 20.0)  # x 60 projections x 20 s
