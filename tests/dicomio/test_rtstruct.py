"""RT Structure Set reading on a hand-made structure set, and the SOP class table."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, RTStructureSetStorage

from rntflow.core.errors import VoiError
from rntflow.dicomio import sop
from rntflow.dicomio.rtstruct import contour_points_mm, rtstruct_contours

FRAME = "1.2.826.0.1.3680043.8.498.1"
OTHER_FRAME = "1.2.826.0.1.3680043.8.498.2"
SQUARE = [0.0, 0.0, 5.0, 10.0, 0.0, 5.0, 10.0, 10.0, 5.0, 0.0, 10.0, 5.0]


def _contour(points, kind="CLOSED_PLANAR") -> Dataset:
    c = Dataset()
    c.ContourGeometricType = kind
    c.NumberOfContourPoints = len(points) // 3
    c.ContourData = [f"{v:g}" for v in points]
    return c


def _structure_set(rois: list[tuple[int, str | None, str | None, list[Dataset] | None]]) -> Dataset:
    """rois: (ROINumber, ROIName, ReferencedFrameOfReferenceUID, contours or None for no ROIContour item)."""
    ds = Dataset()
    ds.SOPClassUID = RTStructureSetStorage
    ds.StructureSetLabel = "test"
    ref = Dataset()
    ref.FrameOfReferenceUID = FRAME
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for number, name, frame, contours in rois:
        item = Dataset()
        item.ROINumber = number
        if name is not None:
            item.ROIName = name
        if frame is not None:
            item.ReferencedFrameOfReferenceUID = frame
        ds.StructureSetROISequence.append(item)
        if contours is not None:
            rc = Dataset()
            rc.ReferencedROINumber = number
            rc.ContourSequence = Sequence(contours)
            ds.ROIContourSequence.append(rc)
    return ds


def test_rois_and_reasons():
    rs = _structure_set(
        [
            (1, "Liver", FRAME, [_contour(SQUARE), _contour([v + 1 for v in SQUARE])]),
            (2, "Liver", FRAME, [_contour(SQUARE)]),  # duplicate name
            (3, "Spleen", OTHER_FRAME, [_contour(SQUARE)]),  # another frame
            (4, "Marker", FRAME, [_contour(SQUARE[:3], "POINT")]),  # no closed planar contour
            (5, "Broken", FRAME, [_contour(SQUARE[:-1])]),  # 11 numbers
            (6, None, FRAME, [_contour(SQUARE)]),  # unnamed
            (7, "Empty", FRAME, None),  # no ROIContourSequence item
        ]
    )
    got = rtstruct_contours(rs, FRAME)
    assert [(r.name, r.number, len(r.contours_mm)) for r in got.rois] == [("Liver", 1, 2), ("#6", 6, 1)]
    np.testing.assert_array_equal(got.rois[0].contours_mm[0], np.reshape(SQUARE, (-1, 3)))
    assert got.skipped == {
        "Liver (ROINumber 2)": "duplicate ROIName (ROINumber 1 kept)",
        "Spleen": f"on frame of reference {OTHER_FRAME}, not the reference image's",
        "Marker": "no CLOSED_PLANAR contours (1 POINT)",
        "Broken": "malformed ContourData: ContourData holds 11 numbers, not a multiple of 3",
        "Empty": "no ContourSequence",
    }
    # without a frame to check against, the ROI on another frame is kept
    assert "Spleen" in [r.name for r in rtstruct_contours(rs).rois]


def test_structure_set_on_another_frame_raises():
    rs = _structure_set([(1, "Liver", None, [_contour(SQUARE)])])
    with pytest.raises(VoiError, match="register the images"):
        rtstruct_contours(rs, OTHER_FRAME)


def test_contour_points_from_raw_bytes_and_values():
    expected = np.reshape([v + 0.25 for v in SQUARE], (-1, 3))
    rs = _structure_set([(1, "Liver", FRAME, [_contour(expected.ravel())])])
    rs.file_meta = FileMetaDataset()
    rs.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buf = io.BytesIO()
    rs.save_as(buf, implicit_vr=True, little_endian=True)
    read = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
    item = read.ROIContourSequence[0].ContourSequence[0]
    assert isinstance(item.get_item("ContourData").value, bytes)  # the fast path is taken
    np.testing.assert_array_equal(contour_points_mm(item), expected)
    _ = item.ContourData  # pydicom converts the raw value on first access
    assert not isinstance(item.get_item("ContourData").value, bytes)
    np.testing.assert_array_equal(contour_points_mm(item), expected)
    assert contour_points_mm(Dataset()).shape == (0, 3)


def test_seg_sop_classes_agree_with_highdicom():
    hd = pytest.importorskip("highdicom")
    assert sop.SEG_SOP_CLASSES == set(hd.seg.SOP_CLASS_UIDS)
    assert sop.NuclearMedicineImageStorageRetired.name == "Nuclear Medicine Image Storage"
    assert sop.NuclearMedicineImageStorageRetired.is_retired
