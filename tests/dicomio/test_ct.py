"""CT series reading (SimpleITK series reader behind header checks) on synthetic series.

Every series is written with pydicom from known stored values, so the expected HU
(stored x RescaleSlope + RescaleIntercept, per slice) and geometry are exact: the volume
must match them to float32 precision and the geometry to 1e-6 mm.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from rntflow.core.errors import DicomInputError
from rntflow.dicomio.study import load_study
from rntflow.dicomio.values import FOR_METADATA_KEY

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_series(
    folder: Path,
    n: int = 8,
    rows: int = 12,
    cols: int = 10,
    iop=AXIAL,
    first_mm=(-30.0, -20.0, -50.0),
    pixel_spacing_mm=(1.5, 2.0),
    step_mm: float = 2.5,
    slopes=None,
    intercepts=None,
    signed: bool = True,
    bits_stored: int = 16,
    transfer_syntax=None,
    seed: int = 0,
    series_uid: str | None = None,
) -> np.ndarray:
    """Write ``n`` CT slices (files in scrambled order); returns the expected HU (z, y, x) float32.

    Slice ``k`` lies at ``first_mm + k * step_mm * normal`` (normal = row x column cosines).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    iop_a = np.asarray(iop, float)
    normal = np.cross(iop_a[:3], iop_a[3:])
    study, series, frame = generate_uid(), series_uid or generate_uid(), generate_uid()
    hu = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.InstanceNumber = "CT", k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(first_mm) + k * step_mm * normal]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop_a]
        ds.PixelSpacing = list(pixel_spacing_mm)
        ds.SliceThickness = step_mm
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(signed)
        slope = slopes[k] if slopes else 1.0
        intercept = intercepts[k] if intercepts else -1024.0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        lo = -(1 << (bits_stored - 1)) if signed else 0
        hi = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
        stored = rng.integers(max(lo, -2000), min(hi, 4000), size=(rows, cols))
        ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
        if transfer_syntax is not None:
            ds.compress(transfer_syntax, encoding_plugin="pyjpegls" if transfer_syntax == JPEGLSLossless else "")
        hu.append(stored * slope + intercept)
        ds.save_as(folder / f"ct_{(k * 5 + 3) % n:03d}_{k}.dcm", enforce_file_format=True)
    return np.asarray(hu, np.float32)


def _expected_direction(iop) -> list[float]:
    iop_a = np.asarray(iop, float)
    return np.column_stack([iop_a[:3], iop_a[3:], np.cross(iop_a[:3], iop_a[3:])]).flatten().tolist()


def _slice_files(folder: Path) -> list[Path]:
    """The series' files in slice order (the writer appends the slice index to each name)."""
    return sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


OBLIQUE = (math.cos(0.3), math.sin(0.3), 0.0, 0.0, 0.0, -1.0)
CASES = {
    "axial": {},
    "feet-first": {"iop": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)},
    "coronal": {"iop": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)},
    "oblique": {"iop": OBLIQUE},
    "rescale per slice": {"slopes": [1.0] * 4 + [0.5, 0.75, 1.25, 2.0], "intercepts": [-1024.0] * 4 + [-1000.5] * 4},
    "unsigned 12 bit": {"signed": False, "bits_stored": 12},
    "signed 12 bit": {"signed": True, "bits_stored": 12},
    "RLE": {"transfer_syntax": RLELossless},
    "JPEG-LS": {"transfer_syntax": JPEGLSLossless},
}


@pytest.mark.parametrize("case", CASES)
def test_volume_and_geometry_are_exact(tmp_path, case):
    kw = CASES[case]
    if kw.get("transfer_syntax") == JPEGLSLossless:
        pytest.importorskip("jpeg_ls")
    hu = write_series(tmp_path, **kw)
    study = load_study(tmp_path)
    assert study.unused == []
    ct = study.ct
    assert ct.GetPixelID() == sitk.sitkFloat32 and ct.GetSize() == (10, 12, 8)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ct), hu)
    assert ct.GetOrigin() == pytest.approx((-30.0, -20.0, -50.0), abs=1e-6)
    assert ct.GetSpacing() == pytest.approx((2.0, 1.5, 2.5), rel=1e-6)
    assert ct.GetDirection() == pytest.approx(_expected_direction(kw.get("iop", AXIAL)), abs=1e-6)
    assert ct.GetMetaData(FOR_METADATA_KEY) == study.ct_frame_of_reference_uid is not None


def test_duplicates_foreign_matrix_and_incomplete_slices_are_dropped(tmp_path):
    hu = write_series(tmp_path / "s")
    files = _slice_files(tmp_path / "s")
    dup = tmp_path / "s" / "dup.dcm"
    ds = _read(files[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(dup)
    small = _read(files[4])
    small.SOPInstanceUID = small.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    small.Rows, small.Columns, small.PixelData = 2, 2, b"\0" * 8
    small.save_as(tmp_path / "s" / "small.dcm")
    bare = _read(files[5])
    bare.SOPInstanceUID = bare.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    del bare.ImagePositionPatient
    bare.save_as(tmp_path / "s" / "bare.dcm")
    study = load_study(tmp_path / "s")
    reasons = "\n".join(study.unused)
    assert len(study.unused) == 3
    assert "(duplicate)" in reasons and "small.dcm: CT slice of another matrix" in reasons
    assert "bare.dcm: CT slice lacks ImagePositionPatient" in reasons
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(study.ct), hu)


def _read(path: Path) -> Dataset:
    import pydicom

    return pydicom.dcmread(path)


@pytest.mark.parametrize("which, usable", [("first", True), ("last", True), ("middle", False)])
def test_unreadable_pixel_data(tmp_path, which, usable):
    hu = write_series(tmp_path)
    files = _slice_files(tmp_path)
    k = {"first": 0, "last": len(files) - 1, "middle": 3}[which]
    files[k].write_bytes(files[k].read_bytes()[:-100])
    unreadable = f"{files[k].name}: CT pixel data not readable (SimpleITK/GDCM"
    if usable:  # an end slice lost: the rest is still a regular grid
        study = load_study(tmp_path)
        assert len(study.unused) == 1 and study.unused[0].startswith(unreadable)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(study.ct), np.delete(hu, k, axis=0))
        assert study.ct.GetOrigin()[2] == pytest.approx(-50.0 + (2.5 if k == 0 else 0.0))
    else:  # a gap in the middle: the CT is unusable, and with it this CT-only study
        with pytest.raises(DicomInputError, match="no usable objects") as err:
            load_study(tmp_path)
        assert unreadable in str(err.value) and "CT series not usable: irregular slice spacing" in str(err.value)


def test_missing_slice_and_gantry_tilt_make_the_ct_unusable(tmp_path):
    write_series(tmp_path / "gap")
    _slice_files(tmp_path / "gap")[4].unlink()
    with pytest.raises(DicomInputError, match="no usable objects"):
        load_study(tmp_path / "gap")
    # tilt: positions step along (0, 0.2, 1) while the slices stay axial
    write_series(tmp_path / "tilt")
    for k, path in enumerate(_slice_files(tmp_path / "tilt")):
        ds = _read(path)
        ds.ImagePositionPatient = [-30.0, -20.0 + 0.5 * k, -50.0 + 2.5 * k]
        ds.save_as(path)
    with pytest.raises(DicomInputError, match="gantry tilt"):
        load_study(tmp_path / "tilt")


def test_single_slice_takes_its_thickness(tmp_path):
    hu = write_series(tmp_path, n=1, step_mm=3.0)
    ct = load_study(tmp_path).ct
    assert ct.GetSize() == (10, 12, 1) and ct.GetSpacing() == pytest.approx((2.0, 1.5, 3.0))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ct), hu)


def test_largest_series_wins_and_enhanced_ct_is_reported(tmp_path):
    hu = write_series(tmp_path / "a", n=6)
    write_series(tmp_path / "b", n=3, seed=1)
    enhanced = _read(next((tmp_path / "b").glob("*.dcm")))
    enhanced.SOPClassUID = enhanced.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    enhanced.SOPInstanceUID = enhanced.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    enhanced.save_as(tmp_path / "enhanced.dcm")
    study = load_study(tmp_path)
    assert study.ct.GetSize()[2] == 6
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(study.ct), hu)
    assert sum("CT of another series (3 slices) than the one used (6 slices)" in u for u in study.unused) == 3
    assert "enhanced.dcm: enhanced (multi-frame) CT is not supported" in study.unused
