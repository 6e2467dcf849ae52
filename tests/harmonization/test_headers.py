"""NM header parsing and NM -> SimpleITK image conversion."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rntflow.core.errors import DicomInputError
from rntflow.harmonization.headers import (
    nm_to_image,
    normalise_radionuclide,
    parse_dt,
    parse_nm_header,
    parse_post_filter_fwhm_mm,
    parse_reconstruction_method,
)

from .conftest import LU177_HALF_LIFE_S, make_nm_dataset


def test_lu177_half_life_constant_matches_data_package():
    # the fixture's RadionuclideHalfLife must agree with radioactivedecay (ICRP-107)
    from rntflow.physics.nuclides import nuclide

    assert nuclide("Lu-177").half_life_h * 3600 == pytest.approx(LU177_HALF_LIFE_S, rel=1e-6)


def test_parse_compliant_header_round_trip_through_file(tmp_path):
    ds = make_nm_dataset(units="BQML", slope=0.5, kernel="GAUSSIAN 5.0MM")
    path = tmp_path / "nm.dcm"
    ds.save_as(path, enforce_file_format=True)
    h = parse_nm_header(pydicom.dcmread(path))
    assert h.units == "BQML" and h.rwv_slope == 0.5 and h.rwv_intercept == 0.0 and h.rwv_unit == "Bq/mL"
    assert h.acquisition_start == datetime(2026, 3, 2, 10, 0, 0)
    assert h.administration_datetime == datetime(2026, 3, 1, 10, 0, 0)
    assert h.hours_after_administration == pytest.approx(24.0)
    assert h.acquisition_duration_s == pytest.approx(60 * 20.0)  # 60 frames/head x 20 s
    assert h.projections == 120 and h.time_per_projection_s == pytest.approx(20.0)
    assert h.administered_activity_mbq == 7400.0
    assert h.radionuclide == "Lu-177"
    assert h.photopeak.lower_kev == pytest.approx(187.2) and h.photopeak.upper_kev == pytest.approx(228.8)
    assert len(h.energy_windows) == 3
    assert h.collimator == "MEGP"
    assert h.attenuation_corrected is True and h.scatter_corrected is True
    assert (h.algorithm, h.iterations, h.subsets) == ("OSEM", 6, 16)
    assert h.post_filter_fwhm_mm == 5.0
    assert (h.matrix_rows, h.matrix_cols, h.matrix_slices) == (80, 80, 4)
    assert h.voxel_size_mm == (4.8, 4.8, 4.8)
    assert h.camera_id == "SIEMENS|Symbia Intevo Bold|1234"
    assert h.decay_correction == "START"
    assert h.frame_of_reference_uid


def test_missing_attributes_become_none_not_crash():
    ds = make_nm_dataset()
    for kw in (
        "EnergyWindowInformationSequence",
        "RotationInformationSequence",
        "CorrectedImage",
        "ReconstructionMethod",
        "SeriesDescription",
        "ConvolutionKernel",
        "DeviceSerialNumber",
        "AcquisitionTime",
        "RadiopharmaceuticalInformationSequence",
        "RealWorldValueMappingSequence",
        "DetectorInformationSequence",
        "PixelSpacing",
    ):
        delattr(ds, kw)
    h = parse_nm_header(ds)
    assert h.energy_windows == () and h.photopeak is None
    assert h.acquisition_duration_s is None and h.projections is None
    assert h.attenuation_corrected is None and h.scatter_corrected is None
    assert h.iterations is None and h.post_filter_fwhm_mm is None
    assert h.camera_id is None and h.acquisition_start is None
    assert h.administered_activity_mbq is None and h.radionuclide is None
    assert h.rwv_slope is None and h.collimator is None and h.voxel_size_mm is None


def test_empty_header_parses():
    h = parse_nm_header(pydicom.Dataset())
    assert h.units is None and h.energy_windows == ()


@pytest.mark.parametrize(
    "text, expected",
    [("Lu-177-PSMA-617", "Lu-177"), ("177Lu-DOTATATE", "Lu-177"), ("Tc99m MAA", "Tc-99m"), ("nothing", None)],
)
def test_normalise_radionuclide(text, expected):
    assert normalise_radionuclide(text) == expected


def test_small_parsers():
    assert parse_reconstruction_method("OSEM 6i16s") == ("OSEM", 6, 16)
    assert parse_reconstruction_method("Lu177 SPECT OSEM 4i10s AC SC RR") == ("OSEM", 4, 10)
    assert parse_post_filter_fwhm_mm("NONE") == 0.0
    assert parse_post_filter_fwhm_mm("GAUSSIAN 7MM") == 7.0
    assert parse_post_filter_fwhm_mm("BUTTERWORTH") is None
    assert parse_dt("20260301101500.5+0100") == datetime(2026, 3, 1, 10, 15, 0, 500000)
    assert parse_dt("garbage") is None


def test_nm_to_image_geometry_and_real_world_values():
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 1000, size=(5, 6, 7)).astype(np.uint16)
    ds = make_nm_dataset(stored, units="BQML", slope=0.25, spacing_mm=(4.0, 3.0, 5.0), ipp=(-10.0, -20.0, -30.0))
    img = nm_to_image(ds)
    assert img.GetSize() == (7, 6, 5)
    assert img.GetSpacing() == pytest.approx((3.0, 4.0, 5.0))  # (col step, row step, slice step)
    assert img.GetOrigin() == pytest.approx((-10.0, -20.0, -30.0))
    assert img.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    arr = sitk.GetArrayFromImage(img)
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr, stored * 0.25)
    # frame k (0-based) is at IPP + k * SpacingBetweenSlices along +z; column index along +x
    p = img.TransformIndexToPhysicalPoint((2, 1, 3))
    assert p == pytest.approx((-10.0 + 2 * 3.0, -20.0 + 1 * 4.0, -30.0 + 3 * 5.0))


def test_nm_to_image_without_pixels_is_clear_error():
    ds = make_nm_dataset()
    del ds.PixelData
    with pytest.raises(DicomInputError):
        nm_to_image(ds)


@pytest.mark.parametrize(
    "text, name, params, unit, fwhm",
    [
        ("NONE", "none", (), None, 0.0),
        ("GAUSSIAN 5.0MM", "gaussian", (5.0,), "mm", 5.0),
        ("XYZ Gauss 0.0", "gaussian", (0.0,), "mm", 0.0),
        ("XYZ Gauss5.00", "gaussian", (5.0,), "mm", 5.0),
        ("Gaussian 8 mm", "gaussian", (8.0,), "mm", 8.0),
        ("Gaussian FWHM 1.2 cm", "gaussian", (1.2,), "cm", 12.0),
        ("Butterworth 0.48 10", "butterworth", (0.48, 10.0), None, None),
        ("Butterworth 0.5 cy/cm 7", "butterworth", (0.5, 7.0), "cycles/cm", None),
        ("Hann 0.8", "hann", (0.8,), None, None),
        ("Hanning 0.85 Nyquist", "hann", (0.85,), "Nyquist", None),
    ],
)
def test_post_filter_strings(text, name, params, unit, fwhm):
    from rntflow.harmonization.nm_conventions import parse_post_filter

    pf = parse_post_filter(text)
    assert (pf.name, pf.parameters, pf.unit) == (name, params, unit)
    assert pf.fwhm_mm == (pytest.approx(fwhm) if fwhm is not None else None)


def test_unparsed_and_absent_post_filter():
    from rntflow.harmonization.nm_conventions import parse_post_filter

    pf = parse_post_filter("B30f smooth")
    assert not pf.parsed and pf.describe() == "unparsed 'B30f smooth'"
    assert parse_post_filter(None) is None and parse_post_filter("  ") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Flash3D 8i16s", ("FLASH3D", 8, 16)),
        ("OSEM 6 iterations 16 subsets", ("OSEM", 6, 16)),
        ("HybridRecon-Oncology 5i15s", ("HYBRIDRECON-ONCOLOGY", 5, 15)),
        ("OSEM3D i4s8", ("OSEM3D", 4, 8)),
        ("Evolution for Bone", ("EVOLUTION", None, None)),
    ],
)
def test_reconstruction_method_vendor_strings(text, expected):
    assert parse_reconstruction_method(text) == expected


def test_iterations_from_enhanced_attributes():
    ds = make_nm_dataset(recon="xSPECT")
    ds.SeriesDescription = "Lu177 xSPECT"
    ds.NumberOfIterations, ds.NumberOfSubsets = 24, 2
    h = parse_nm_header(ds)
    assert (h.algorithm, h.iterations, h.subsets) == ("XSPECT", 24, 2)


def test_total_dose_and_frame_duration_unit_slips():
    from rntflow.harmonization.nm_conventions import read_frame_duration_s, read_total_dose_mbq

    assert read_total_dose_mbq(7400.0) == (7400.0, None)
    mbq, note = read_total_dose_mbq(7.4e9)
    assert mbq == pytest.approx(7400.0) and "read as Bq" in note
    assert read_frame_duration_s(20000.0) == (20.0, None)
    s, note = read_frame_duration_s(25.0)
    assert s == 25.0 and "read as seconds" in note
    s, note = read_frame_duration_s(0.5)
    assert s == pytest.approx(0.0005) and "implausibly short" in note
    h = parse_nm_header(make_nm_dataset(activity_mbq=7.4e9, ms_per_proj=20.0))
    assert h.administered_activity_mbq == pytest.approx(7400.0) and h.administered_activity_raw == 7.4e9
    assert h.time_per_projection_s == 20.0 and h.acquisition_duration_s == pytest.approx(1200.0)
    assert len(h.notes) == 2


def test_units_precedence_site_override_after_header():
    # the fixture writes RWVM {counts}: a site override does not change what the header says
    h = parse_nm_header(make_nm_dataset(), site_units="bq_per_ml")
    assert h.units == "CNTS" and h.pixel_units.rule == "rwvm"
    ds = make_nm_dataset()
    del ds.RealWorldValueMappingSequence, ds.Units
    assert parse_nm_header(ds).pixel_units.rule == "default"
    assert parse_nm_header(ds, site_units="bq_per_ml").units == "BQML"
