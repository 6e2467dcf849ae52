"""The typed results of the patient tasks, through ``.fn()`` on a hand-made product store (no Prefect run).

* ``attach_segmentation``: a segmentation-only study's VOIs join the time point whose CT has
  its frame of reference (:class:`SegmentationResult` names the cycle and the time point); a
  structure set drawn on a CT no time point has waits, with a ``voi_reference`` qa row;
* ``cycle_dosimetry``: a cycle with VOIs gives its warehouse rows (:class:`CycleDosimetryResult`,
  ``done``), a cycle without VOIs waits.

Every result is frozen and survives Prefect's default result serialiser (``pickle``). The
phantom task's :class:`PhantomResult` is tested in ``tests/harmonization/test_tare_calibration.py``.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from prefect.serializers import PickleSerializer
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from rntflow.core.config import load_config
from rntflow.tasks.dosimetry import CycleDosimetryResult, cycle_dosimetry
from rntflow.tasks.products import ProductStore, TimePointMeta
from rntflow.tasks.timepoint import SegmentationResult, attach_segmentation
from tests.configs import demo_config_dict, write_config

SITE, SUBJECT = "SITE01", "S1"
FRAME = "1.2.826.0.1.3680043.8.498.77"
SPACING_MM = 4.0
SHAPE_ZYX = (12, 24, 24)
#: Kidney_L: a 24 mm x 24 mm square on slices 4-7 (mm in the patient frame, CT origin at 0).
KIDNEY_MM = (36.0, 60.0)
KIDNEY_SLICES = range(4, 8)
T_EFF_H = 50.0


@pytest.fixture
def config(tmp_path):
    """The demo config with its paths in tmp."""
    cfg = demo_config_dict(tmp_path)
    cfg.pop("tare_arms", None)
    return load_config(write_config(tmp_path, cfg))


def _image(values: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(values)
    img.SetSpacing((SPACING_MM,) * 3)
    return img


def _kidney_mask() -> np.ndarray:
    mask = np.zeros(SHAPE_ZYX, dtype=bool)
    lo, hi = (int(v / SPACING_MM) for v in KIDNEY_MM)
    mask[KIDNEY_SLICES.start : KIDNEY_SLICES.stop, lo : hi + 1, lo : hi + 1] = True
    return mask


def _meta(study_id: str, t_h: float, with_ct: bool, voi_names: list[str]) -> TimePointMeta:
    admin = datetime(2026, 3, 2, 10, 0)
    return TimePointMeta(
        site_id=SITE,
        subject_id=SUBJECT,
        study_id=study_id,
        camera_id="SIEMENS NM|Symbia Intevo|1001",
        acquisition_start=admin + timedelta(hours=t_h),
        administration_datetime=admin,
        administered_activity_mbq=7400.0,
        radionuclide="Lu-177",
        t_h=t_h,
        cycle=1,
        calibration_id="SITE01-cal",
        calibration_status="valid",
        calibration_rel=0.03,
        rc_fwhm_mm=None,
        protocol_compliant=True,
        voi_names=voi_names,
        ct_frame_of_reference_uid=FRAME if with_ct else None,
        calibration_value=11.0,
        rc_fwhm_source=None,
    )


def _store_cycle(config, vois: bool) -> ProductStore:
    """Three time points of cycle 1: the first with its CT (and the kidney VOI when ``vois``)."""
    store = ProductStore(config.products_dir)
    ct = _image(np.where(_kidney_mask(), 40.0, 0.0).astype(np.float32))
    kidney = _kidney_mask()
    for i, t_h in enumerate((4.0, 24.0, 96.0)):
        bq_per_ml = 2e5 * math.exp(-math.log(2) * t_h / T_EFF_H)
        spect = _image(np.where(kidney, bq_per_ml, 100.0).astype(np.float32))
        first = i == 0
        meta = _meta(f"ST{i + 1}", t_h, first, ["Kidney_L"] if first and vois else [])
        store.save_timepoint(meta, spect, ct if first else None, {"Kidney_L": kidney} if first and vois else None)
    return store


def _rtstruct_study(folder: Path, frame: str) -> None:
    """A segmentation-only study: one RTSTRUCT with Kidney_L contoured on the CT of ``frame``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = RTStructureSetStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.StructureSetLabel = "RTSTRUCT", SUBJECT, "VOIs"
    ref = Dataset()
    ref.FrameOfReferenceUID = frame
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, "Kidney_L", frame
    ds.StructureSetROISequence = Sequence([roi])
    lo, hi = KIDNEY_MM
    contours = []
    for k in KIDNEY_SLICES:
        z = k * SPACING_MM
        c = Dataset()
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = 4
        c.ContourData = [f"{v:g}" for v in (lo, lo, z, hi, lo, z, hi, hi, z, lo, hi, z)]
        contours.append(c)
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([rc])
    folder.mkdir(parents=True)
    ds.save_as(folder / "rtss.dcm", enforce_file_format=True)


def _assert_a_prefect_result(result) -> None:
    """Frozen, and equal to itself after Prefect's default result serialiser."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.checks = []
    serializer = PickleSerializer()
    assert serializer.loads(serializer.dumps(result)) == result


def test_segmentation_joins_the_time_point_with_its_ct(config, tmp_path):
    store = _store_cycle(config, vois=False)
    _rtstruct_study(tmp_path / "seg", FRAME)

    seg = attach_segmentation.fn(config, SITE, SUBJECT, "SEG1", str(tmp_path / "seg"))

    assert isinstance(seg, SegmentationResult)
    assert (seg.cycle, seg.target_study_id, seg.checks) == (1, "ST1", [])
    [first] = [m for m in store.timepoints(SITE, SUBJECT) if m.study_id == "ST1"]
    assert first.voi_names == ["Kidney_L"]
    mask = sitk.GetArrayFromImage(store.vois(first)["Kidney_L"]).astype(bool)
    assert mask.sum() > 0.5 * _kidney_mask().sum() and not (mask & ~_kidney_mask()).any()
    _assert_a_prefect_result(seg)


def test_segmentation_on_an_unknown_ct_waits(config, tmp_path):
    store = _store_cycle(config, vois=False)
    _rtstruct_study(tmp_path / "seg", "1.2.826.0.1.3680043.8.498.99")

    seg = attach_segmentation.fn(config, SITE, SUBJECT, "SEG1", str(tmp_path / "seg"))

    assert seg.cycle is None and seg.target_study_id is None
    [check] = seg.checks
    assert (check["check_name"], check["status"], check["study_id"]) == ("voi_reference", "fail", "SEG1")
    assert all(m.voi_names == [] for m in store.timepoints(SITE, SUBJECT))


def test_cycle_without_vois_waits(config):
    _store_cycle(config, vois=False)

    res = cycle_dosimetry.fn(config, SITE, SUBJECT, 1)

    assert isinstance(res, CycleDosimetryResult) and not res.done
    assert res.status == "waiting" and "no VOIs" in res.reason
    assert res.study_ids == ["ST1", "ST2", "ST3"]
    assert (res.method, res.voi_doses, res.checks) == (None, [], [])


def test_cycle_with_vois_gives_its_rows(config):
    _store_cycle(config, vois=True)

    res = cycle_dosimetry.fn(config, SITE, SUBJECT, 1)

    assert res.done and res.reason is None and res.method == "multi_time_point"
    assert res.study_ids == ["ST1", "ST2", "ST3"]
    assert {(r["voi"], r["study_id"]) for r in res.voi_timepoints} >= {("Kidney_L", s) for s in res.study_ids}
    [fit] = [r for r in res.tac_fits if r["voi"] == "Kidney_L"]
    assert fit["effective_half_life_h"] == pytest.approx(T_EFF_H, rel=0.05)
    kidney = [r for r in res.voi_doses if r["voi"] == "Kidney_L"]
    assert kidney and all(r["dose_gy"] > 0 and "final" not in r for r in kidney)
    assert res.dvhs and {r["voi"] for r in res.dvhs} >= {"Kidney_L"}
    # the two time points without CT are taken in the reference's frame, and say so
    registration = [c for c in res.checks if c["check_name"] == "registration"]
    assert sorted(c["study_id"] for c in registration) == ["ST2", "ST3"]
    assert all(c["status"] == "warn" and c["value_found"] == "no CT" for c in registration)
    assert all(c["subject_id"] == SUBJECT and c["cycle"] == 1 for c in res.checks)
    _assert_a_prefect_result(res)
