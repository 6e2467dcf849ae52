"""PET series (PET Image Storage, one file per slice): loading, header, one time reference.

The fixtures are built with pydicom as the PET Image IOD (PS3.3 A.21) asks and as Siemens
Biograph, GE Discovery MI and Philips Vereos write it: one file per slice, signed 16-bit
stored values with a RescaleSlope of their own per slice, Units BQML, DecayCorrection,
RadiopharmaceuticalInformationSequence with RadionuclideTotalDose in Bq.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

from rntflow.core.errors import CalibrationError, DicomInputError
from rntflow.dicomio.study import load_study
from rntflow.dicomio.values import FOR_METADATA_KEY
from rntflow.harmonization.calibration import Calibration
from rntflow.harmonization.pet_headers import (
    parse_pet_header,
    pet_activity_concentration_bq_per_ml,
    pet_at_acquisition_start,
)

Y90_HALF_LIFE_S = 64.1 * 3600.0
ACQ = datetime(2026, 5, 12, 9, 30, 0)
ADMIN = datetime(2026, 5, 11, 11, 0, 0)
CAMERA = ("SIEMENS", "Biograph Vision 600", "60123")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def write_pet_series(
    folder: Path,
    values: np.ndarray,
    *,
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 3.0),  # row, column, slice
    origin_mm: tuple[float, float, float] = (-100.0, -90.0, -40.0),
    decay_correction: str = "START",
    units: str = "BQML",
    per_slice_slope: bool = True,
    reverse: bool = False,
    dose: float | None = 2.1e9,  # Bq (PET standard)
    code: bool = True,
    radiopharmaceutical: str = "Y-90 SIR-Spheres",
    acq_start: datetime = ACQ,
    admin: datetime = ADMIN,
    half_life_s: float | None = Y90_HALF_LIFE_S,
    series_uid: str | None = None,
    frame_ms: float = 900_000.0,
    camera: tuple[str, str, str] = CAMERA,
    corrected: tuple[str, ...] = ("NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"),
    patient_id: str = "RNT-05001",
) -> list[Path]:
    """Write ``values`` (z, y, x; Bq/mL at acquisition start) as a PET series; returns the files.

    DecayCorrection ADMIN stores the values decay-corrected to ``admin`` (larger); NONE
    stores them as at acquisition start. ``reverse`` writes the slices head to feet (the
    first file, InstanceNumber 1, is the highest z), as scanners often do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    stored_values = np.asarray(values, dtype=float)
    if decay_correction == "ADMIN":
        dt_s = (acq_start - admin).total_seconds()
        stored_values = stored_values * math.exp(math.log(2) * dt_s / Y90_HALF_LIFE_S)
    n = stored_values.shape[0]
    order = list(range(n))[::-1] if reverse else list(range(n))
    files = []
    for number, k in enumerate(order, start=1):
        sl = stored_values[k]
        top = float(np.abs(sl).max())
        slope = (top / 32000.0 if top > 0 else 1.0) if per_slice_slope else float(np.abs(stored_values).max()) / 32000.0
        stored = np.round(sl / slope).astype(np.int16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = (
            PositronEmissionTomographyImageStorage,
            ds.file_meta.MediaStorageSOPInstanceUID,
        )
        ds.Modality = "PT"
        ds.PatientID = patient_id
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesDescription = "PET Y90 TOF AC"
        ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber = camera
        ds.SeriesDate, ds.SeriesTime = acq_start.strftime("%Y%m%d"), acq_start.strftime("%H%M%S")
        ds.AcquisitionDate, ds.AcquisitionTime = acq_start.strftime("%Y%m%d"), acq_start.strftime("%H%M%S.%f")
        ds.ActualFrameDuration = frame_ms
        ds.SeriesType = ["WHOLE BODY", "IMAGE"]
        ds.Units = units
        ds.DecayCorrection = decay_correction
        ds.CorrectedImage = list(corrected)
        ds.InstanceNumber = number
        ds.ImageIndex = number
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin_mm[0], origin_mm[1], origin_mm[2] + k * spacing_mm[2]]
        ds.PixelSpacing = [spacing_mm[0], spacing_mm[1]]
        ds.SliceThickness = spacing_mm[2]
        ds.Rows, ds.Columns = sl.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", 0
        ds.PixelData = stored.tobytes()
        rp = Dataset()
        rp.Radiopharmaceutical = radiopharmaceutical
        if code:
            rp.RadionuclideCodeSequence = Sequence([_code("14691008", "SCT", "^90^Yttrium")])
        rp.RadiopharmaceuticalStartDateTime = admin.strftime("%Y%m%d%H%M%S")
        if dose is not None:
            rp.RadionuclideTotalDose = dose
        if half_life_s is not None:
            rp.RadionuclideHalfLife = half_life_s
        rp.RadionuclidePositronFraction = 3.2e-5
        ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
        path = folder / f"pet_{number:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def stored_real_values(files: list[Path]) -> np.ndarray:
    """What the files hold (stored x their own slope + intercept), in z order."""
    import pydicom

    slices = []
    for f in files:
        ds = pydicom.dcmread(f)
        slices.append(
            (float(ds.ImagePositionPatient[2]), ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
        )
    return np.stack([a for _, a in sorted(slices, key=lambda t: t[0])])


def _values(n: int = 6, rows: int = 12, cols: int = 10, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (n, rows, cols))
    scale = np.geomspace(200.0, 60000.0, n)[:, None, None]  # slices of very different maxima
    return base * scale


# --------------------------------------------------------------------------- loading


def test_per_slice_slope_geometry_and_header(tmp_path):
    vals = _values()
    files = write_pet_series(tmp_path, vals)
    study = load_study(tmp_path)
    assert study.unused == [] and study.nm is None and study.ct is None
    pet = study.pet
    assert pet.n_slices == 6 and len(set(pet.rescale_slopes)) == 6
    img = pet.image
    assert img.GetPixelID() == sitk.sitkFloat64
    assert img.GetSize() == (10, 12, 6) and img.GetSpacing() == pytest.approx((4.0, 4.0, 3.0))
    assert img.GetOrigin() == pytest.approx((-100.0, -90.0, -40.0))
    assert img.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert img.GetMetaData(FOR_METADATA_KEY) == pet.frame_of_reference_uid
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(img), stored_real_values(files), rtol=1e-12)
    # each slice within half a quantisation step of its own slope (one slope would be 300x coarser below)
    for k in range(6):
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(img)[k], vals[k], atol=vals[k].max() / 32000)

    h = parse_pet_header(pet)
    assert h.camera_id == "SIEMENS|Biograph Vision 600|60123"
    assert (h.units, h.decay_correction) == ("BQML", "START")
    assert h.acquisition_start == ACQ and h.reference_datetime == ACQ
    assert h.acquisition_start_source == "SeriesDate/SeriesTime"
    assert h.administration_datetime == ADMIN
    assert h.administered_activity_mbq == pytest.approx(2100.0) and h.notes == ()
    assert (h.radionuclide, h.radionuclide_half_life_s, h.positron_fraction) == ("Y-90", Y90_HALF_LIFE_S, 3.2e-5)
    assert h.frame_duration_s == 900.0 and h.attenuation_corrected and h.scatter_corrected
    assert "DECY" in h.corrected_image
    assert h.series_uid == pet.series_uid and h.frame_of_reference_uid == pet.frame_of_reference_uid

    vol = pet_at_acquisition_start(pet)
    assert vol.decay_factor == 1.0
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(vol.image), sitk.GetArrayViewFromImage(img))


def test_reverse_slice_order_is_sorted_along_the_normal(tmp_path):
    vals = _values()
    write_pet_series(tmp_path / "fwd", vals)
    write_pet_series(tmp_path / "rev", vals, reverse=True)
    fwd, rev = load_study(tmp_path / "fwd").pet, load_study(tmp_path / "rev").pet
    assert rev.files[0].endswith("pet_006.dcm")  # InstanceNumber 6 is the lowest z
    assert rev.image.GetOrigin() == pytest.approx(fwd.image.GetOrigin())
    assert rev.image.GetDirection() == pytest.approx(fwd.image.GetDirection())
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(rev.image), sitk.GetArrayViewFromImage(fwd.image))


def test_decay_correction_admin_is_taken_to_acquisition_start(tmp_path):
    vals = _values()
    write_pet_series(tmp_path / "start", vals, decay_correction="START")
    write_pet_series(tmp_path / "admin", vals, decay_correction="ADMIN")
    start = pet_at_acquisition_start(load_study(tmp_path / "start").pet)
    admin_pet = load_study(tmp_path / "admin").pet
    h = parse_pet_header(admin_pet)
    assert h.decay_correction == "ADMIN" and h.reference_datetime == ADMIN
    # the stored values are larger by the decay from administration (22.5 h of 64.1 h)
    raw_ratio = sitk.GetArrayViewFromImage(admin_pet.image).sum() / sitk.GetArrayViewFromImage(start.image).sum()
    assert raw_ratio == pytest.approx(2 ** (22.5 / 64.1), rel=1e-4)
    admin = pet_at_acquisition_start(admin_pet)
    assert admin.decay_factor == pytest.approx(2 ** (-22.5 / 64.1))
    assert any("ADMIN" in n for n in admin.notes)
    np.testing.assert_allclose(
        sitk.GetArrayViewFromImage(admin.image), sitk.GetArrayViewFromImage(start.image), rtol=2e-4, atol=1e-3
    )
    assert admin.image.GetMetaData(FOR_METADATA_KEY) == admin_pet.frame_of_reference_uid


def test_decay_correction_admin_without_half_life_uses_the_nuclide_table(tmp_path):
    write_pet_series(tmp_path, _values(), decay_correction="ADMIN", half_life_s=None)
    vol = pet_at_acquisition_start(load_study(tmp_path).pet)
    assert vol.header.radionuclide_half_life_s is None
    assert vol.decay_factor == pytest.approx(2 ** (-22.5 / 64.1), rel=1e-3)  # ICRP-107 90Y: 64.1 h


def test_decay_correction_none_is_an_approximation_said_so(tmp_path):
    write_pet_series(tmp_path, _values(), decay_correction="NONE")
    vol = pet_at_acquisition_start(load_study(tmp_path).pet)
    assert vol.decay_factor == 1.0 and vol.header.reference_datetime == ACQ
    note = next(n for n in vol.notes if "NONE" in n)
    assert "approximation" in note and "0.14 %" in note  # mean over 15 min of a 64.1 h half-life


def test_missing_radionuclide_code_reads_the_text(tmp_path):
    write_pet_series(tmp_path / "a", _values(), code=False, radiopharmaceutical="90Y SIR-Spheres microspheres")
    write_pet_series(tmp_path / "b", _values(), code=False, radiopharmaceutical="Yttrium-90 glass microspheres")
    for sub in ("a", "b"):
        assert parse_pet_header(load_study(tmp_path / sub).pet).radionuclide == "Y-90"


def test_total_dose_in_mbq_by_mistake_is_read_as_mbq(tmp_path):
    write_pet_series(tmp_path, _values(), dose=2100.0)  # MBq where the standard says Bq
    h = parse_pet_header(load_study(tmp_path).pet)
    assert h.administered_activity_mbq == pytest.approx(2100.0) and h.administered_activity_raw == 2100.0
    assert any("implausible in Bq" in n and "read as MBq" in n for n in h.notes)


def test_units_cnts_is_a_clear_error(tmp_path):
    write_pet_series(tmp_path, _values(), units="CNTS")
    pet = load_study(tmp_path).pet
    assert parse_pet_header(pet).units == "CNTS"  # the header parser never raises
    with pytest.raises(DicomInputError, match=r"Units CNTS, not BQML.*Bq/mL"):
        pet_at_acquisition_start(pet)


def test_unknown_decay_correction_is_a_clear_error(tmp_path):
    write_pet_series(tmp_path, _values(), decay_correction="XYZ")
    with pytest.raises(DicomInputError, match="DecayCorrection 'XYZ' is not one of START, ADMIN, NONE"):
        pet_at_acquisition_start(load_study(tmp_path).pet)


def test_series_time_after_the_acquisition_falls_back_to_acquisition_time(tmp_path):
    files = write_pet_series(tmp_path, _values())
    import pydicom

    for f in files:  # a re-processed series: SeriesTime reset to the reconstruction time
        ds = pydicom.dcmread(f)
        ds.SeriesTime = (ACQ + timedelta(hours=1)).strftime("%H%M%S")
        ds.save_as(f)
    h = parse_pet_header(load_study(tmp_path).pet)
    assert h.acquisition_start == ACQ and h.acquisition_start_source == "earliest AcquisitionDate/Time"
    assert any("SeriesTime" in n for n in h.notes)


def test_several_series_take_the_largest_and_list_the_others(tmp_path):
    write_pet_series(tmp_path / "big", _values(n=6))
    small = write_pet_series(tmp_path / "small", _values(n=3))
    study = load_study(tmp_path)
    assert study.pet.n_slices == 6
    assert len(study.unused) == 3
    assert all("PET of another series (3 slices) than the one used (6 slices)" in u for u in study.unused)
    assert {u.split(":")[0] for u in study.unused} == {str(f.relative_to(tmp_path)) for f in small}


def test_a_missing_slice_makes_the_series_unusable_with_a_pet_reason(tmp_path):
    files = write_pet_series(tmp_path / "gap", _values(n=6))
    files[3].unlink()
    write_pet_series(tmp_path / "ok", _values(n=4))
    study = load_study(tmp_path)
    assert study.pet.n_slices == 4  # the next largest series is used
    reasons = [u for u in study.unused if "gap" in u]
    assert len(reasons) == 5 and all("PET series not usable: irregular slice spacing" in r for r in reasons)


def test_calibrated_concentration_divides_by_the_scale_factor(tmp_path):
    write_pet_series(tmp_path, _values())
    vol = pet_at_acquisition_start(load_study(tmp_path).pet)
    cal = Calibration("SITE05", vol.header.camera_id, "Y-90", "T:Y-90", ACQ, vendor_scale_factor=1.06)
    out = pet_activity_concentration_bq_per_ml(vol, cal)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(vol.image) / 1.06)
    assert out.GetOrigin() == vol.image.GetOrigin() and out.GetMetaData(FOR_METADATA_KEY)
    with pytest.raises(CalibrationError, match="camera"):
        pet_activity_concentration_bq_per_ml(
            vol, Calibration("SITE05", "GE|Discovery MI|1", "Y-90", "T:Y-90", ACQ, vendor_scale_factor=1.0)
        )
    with pytest.raises(CalibrationError, match="Ho-166"):
        pet_activity_concentration_bq_per_ml(
            vol, Calibration("SITE05", vol.header.camera_id, "Ho-166", "T", ACQ, vendor_scale_factor=1.0)
        )
    with pytest.raises(CalibrationError, match="sensitivity"):
        pet_activity_concentration_bq_per_ml(
            vol, Calibration("SITE05", vol.header.camera_id, "Y-90", "T", ACQ, sensitivity_cps_per_mbq=9.0)
        )
