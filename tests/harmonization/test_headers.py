"""NM header parsing and NM -> SimpleITK image conversion."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rntflow.harmonization.headers import (
    normalise_radionuclide,
    nm_to_image,
    parse_dt,
    parse_nm_header,
    parse_post_filter_fwhm_mm,
    parse_reconstruction_method,
)
from rntflow.core.errors import DicomInputError

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
    assert h.acquisition_duration_s == pytest.approx(60 * 20.0)   # 60 frames/head x 20 s
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
    for kw in ("EnergyWindowInformationSequence", "RotationInformationSequence", "CorrectedImage",
               "ReconstructionMethod", "SeriesDescription", "ConvolutionKernel", "DeviceSerialNumber",
               "AcquisitionTime", "RadiopharmaceuticalInformationSequence", "RealWorldValueMappingSequence",
               "DetectorInformationSequence", "PixelSpacing"):
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


@pytest.mark.parametrize("text, expected", [
    ("Lu-177-PSMA-617", "Lu-177"), ("177Lu-DOTATATE", "Lu-177"), ("Tc99m MAA", "Tc-99m"), ("nothing", None)])
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
    assert img.GetSpacing() == pytest.approx((3.0, 4.0, 5.0))   # (col step, row step, slice step)
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
