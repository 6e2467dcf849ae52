"""Reading simulated study folders: NM, CT, RTSTRUCT, SEG, and the VOI masks made from them.

Tolerances
----------
* Pixelisation: ``ALPHA * sqrt(P * d**3)`` per planar section, 5 sigma
  (tests/dosimetry/test_vois.py).
* Slice sampling. The simulator writes one exact 48-gon per 5 mm CT slice through
  ellipsoids (organs, lesions) and 24 mm elliptic cylinders (vertebrae, the marrow VOI).
  Summing section areas x 5 mm is a midpoint rule with a random phase: unbiased, with an
  error of order (h / c)**2 / 4 for an ellipsoid of semi-axis c along z (under 0.5 % for
  c >= 50 mm, ~5 % for a 5 mL gland with c ~ 11 mm). Hence 3 % for VOIs above 50 mL and
  8 % below (glands, lesions). The marrow is special: every 24 mm vertebra is cut by 4 or
  5 slices (vertebrae are 30 mm apart, a multiple of 5 mm, so all alike), i.e. the
  contoured volume is 20/24 or 25/24 of the truth. VOIs cut by the CT field of view
  (contours on its first or last slice) can only be smaller than the truth.
"""

from __future__ import annotations

import io
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from rntflow.core.config import load_config
from rntflow.core.errors import DicomInputError, VoiError
from rntflow.dicomio.seg import seg_masks
from rntflow.dicomio.study import load_study
from rntflow.dicomio.values import FOR_METADATA_KEY
from rntflow.dosimetry.vois import mask_volume_ml, resample_mask_fraction
from rntflow.harmonization.headers import nm_to_image
from rntflow.tasks.voi_masks import rtstruct_masks, rtstruct_rois
from tests.dosimetry.test_vois import ALPHA, _area_mm2, _perimeter_mm

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- simulated trial


@pytest.fixture(scope="module")
def first_studies(small_trial, small_truth) -> dict:
    """Subject -> (truth, study folder, LoadedStudy, seconds to load) of each subject's first study."""
    out = {}
    for sid, subj in small_truth["subjects"].items():
        study_dir = small_trial / subj["cycles"][0]["timepoints"][0]["study_dir"]
        t0 = time.perf_counter()
        study = load_study(study_dir)
        out[sid] = (subj, study_dir, study, time.perf_counter() - t0)
    return out


@pytest.fixture(scope="module")
def roi_masks(first_studies) -> dict:
    """Subject -> (ROIName -> CT mask, seconds to rasterise)."""
    out = {}
    for sid, (_subj, _d, study, _t) in first_studies.items():
        t0 = time.perf_counter()
        masks = rtstruct_masks(study.rtstructs[0], study.ct)
        out[sid] = (masks, time.perf_counter() - t0)
    return out


@pytest.fixture(scope="module")
def config():
    return load_config(REPO / "deployments" / "trial.example.yaml")


def test_load_study_finds_nm_ct_and_rtstruct(first_studies):
    for sid, (_subj, study_dir, study, seconds) in first_studies.items():
        assert study.unused == [], sid
        assert study.n_files == len(list(study_dir.rglob("*.dcm")))
        assert "RECON TOMO" in list(study.nm.ImageType)
        assert len(study.rtstructs) == 1 and study.segs == []
        ct = study.ct
        assert ct.GetPixelID() == sitk.sitkFloat32 and ct.GetSize() == (128, 128, 100)
        assert ct.GetSpacing() == pytest.approx((3.2, 3.2, 5.0))
        assert ct.GetMetaData(FOR_METADATA_KEY) == study.ct_frame_of_reference_uid == study.nm.FrameOfReferenceUID
        hu = sitk.GetArrayViewFromImage(ct)
        assert abs(float(np.median(hu[:, :6, :6])) + 1000) < 50  # air in the corners
        nm = nm_to_image(study.nm)
        assert nm.GetSize() == (80, 80, 104)
        assert seconds < 5.0, f"load_study took {seconds:.2f} s"
        print(f"\n{sid}: load_study {seconds * 1000:.0f} ms for {study.n_files} files")


def test_ct_soft_tissue_hu_inside_organs(first_studies, roi_masks, config):
    for sid, (subj, _d, study, _t) in first_studies.items():
        hu = sitk.GetArrayViewFromImage(study.ct)
        for name, mask in roi_masks[sid][0].items():
            voi = config.map_voi_name(name, subj["site_id"])
            if voi in ("Kidney_L", "Kidney_R", "Liver", "Spleen"):
                assert 0 <= float(np.median(hu[mask])) <= 60, (sid, voi)


def test_rasterised_volume_matches_contour_areas(first_studies, roi_masks):
    """Rasteriser alone: mask volume vs sum of polygon areas x slice step, within 5 sigma."""
    worst = {}
    for sid, (_subj, _d, study, _t) in first_studies.items():
        rs, ct = study.rtstructs[0], study.ct
        d_mm = math.sqrt(ct.GetSpacing()[0] * ct.GetSpacing()[1])
        dz_mm = ct.GetSpacing()[2]
        names = {int(i.ROINumber): str(i.ROIName) for i in rs.StructureSetROISequence}
        for rc in rs.ROIContourSequence:
            name = names[int(rc.ReferencedROINumber)]
            pts = [np.asarray(c.ContourData, float).reshape(-1, 3) for c in rc.ContourSequence]
            slab_ml = sum(_area_mm2(p) for p in pts) * dz_mm / 1000
            per_section = [ALPHA * math.sqrt(_perimeter_mm(p) * d_mm**3) for p in pts]
            if np.ptp([_area_mm2(p) for p in pts]) <= 1e-6 * _area_mm2(pts[0]):
                # identical sections (the marrow's vertebrae, all alike): one pixelisation error
                # repeated on every slice, so the errors add, they do not average out
                sigma_ml = dz_mm * sum(per_section) / 1000
            else:
                sigma_ml = dz_mm * math.sqrt(sum(s**2 for s in per_section)) / 1000
            got_ml = mask_volume_ml(roi_masks[sid][0][name], ct)
            assert abs(got_ml - slab_ml) <= 5 * sigma_ml, (sid, name, got_ml, slab_ml, sigma_ml)
            worst[name] = max(worst.get(name, 0.0), abs(got_ml / slab_ml - 1))
    print(
        "\nrasterised vs contour-area volume, worst |rel. error|:",
        {k: f"{100 * v:.1f}%" for k, v in sorted(worst.items())},
    )


def test_rasterised_volume_matches_truth(first_studies, roi_masks, config):
    errors = {}
    for sid, (subj, _d, study, _t) in first_studies.items():
        masks, seconds = roi_masks[sid]
        ct = study.ct
        mapped = {config.map_voi_name(name, subj["site_id"]): m for name, m in masks.items()}
        assert set(mapped) == set(subj["vois"]), sid  # every VOI, every name mapped
        for voi, mask in mapped.items():
            truth_ml = subj["vois"][voi]["volume_ml"]
            got_ml = mask_volume_ml(mask, ct)
            rel = got_ml / truth_ml - 1
            errors.setdefault(
                "marrow"
                if voi == "Bone_Marrow"
                else "lesion"
                if voi.startswith("Lesion")
                else "organ>50mL"
                if truth_ml > 50
                else "organ<=50mL",
                [],
            ).append(rel)
            z_profile = mask.sum(axis=(1, 2))
            if z_profile[0] or z_profile[-1]:  # cut by the CT field of view
                assert got_ml <= truth_ml * 1.03, (sid, voi)
            elif voi == "Bone_Marrow":
                assert min(abs(got_ml / truth_ml - 20 / 24), abs(got_ml / truth_ml - 25 / 24)) <= 0.03, (sid, rel)
            else:
                assert abs(rel) <= (0.03 if truth_ml > 50 else 0.08), (sid, voi, got_ml, truth_ml)
        print(f"\n{sid}: rasterised {len(masks)} ROIs in {seconds * 1000:.0f} ms")
    print("volume vs truth (%):", {k: [round(100 * v, 1) for v in vs] for k, vs in errors.items()})


def test_fraction_on_nm_grid_conserves_volume(first_studies, roi_masks):
    for sid, (_subj, _d, study, _t) in first_studies.items():
        nm = nm_to_image(study.nm)
        t0 = time.perf_counter()
        for name, mask in roi_masks[sid][0].items():
            frac = resample_mask_fraction(mask, study.ct, nm)
            assert frac.shape == sitk.GetArrayViewFromImage(nm).shape and frac.dtype == np.float32
            assert mask_volume_ml(frac, nm) == pytest.approx(mask_volume_ml(mask, study.ct), rel=0.02), (sid, name)
        print(f"\n{sid}: {len(roi_masks[sid][0])} VOIs onto the NM grid in {(time.perf_counter() - t0) * 1000:.0f} ms")


def test_rtstruct_reports_rois_without_contours_and_checks_frame(first_studies):
    _subj, _d, study, _t = next(iter(first_studies.values()))
    rs = pydicom.dcmread(io.BytesIO(_to_bytes(study.rtstructs[0])))
    first, second, third = rs.ROIContourSequence[0], rs.ROIContourSequence[1], rs.ROIContourSequence[2]
    names = {int(i.ROINumber): str(i.ROIName) for i in rs.StructureSetROISequence}
    del first.ContourSequence
    for c in second.ContourSequence:
        c.ContourGeometricType = "POINT"
    tilted = np.asarray(third.ContourSequence[0].ContourData, float).reshape(-1, 3)
    tilted[:, 2] += np.linspace(0.0, 8.0, len(tilted))
    third.ContourSequence[0].ContourData = [f"{v:.2f}" for v in tilted.ravel()]
    result = rtstruct_rois(rs, study.ct)
    assert result.skipped[names[int(first.ReferencedROINumber)]] == "no ContourSequence"
    assert "no CLOSED_PLANAR" in result.skipped[names[int(second.ReferencedROINumber)]]
    assert "not parallel" in result.skipped[names[int(third.ReferencedROINumber)]]
    assert len(result.masks) == len(names) - 3
    with pytest.raises(VoiError, match="frame"):
        rtstruct_masks(rs, study.ct, frame_of_reference_uid="1.2.3.4")


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- robustness


def _secondary_capture(study_uid: str) -> Dataset:
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid, generate_uid(), "OT"
    return ds


def test_bad_and_foreign_files_are_listed_not_fatal(first_studies, tmp_path):
    _subj, study_dir, original, _t = next(iter(first_studies.values()))
    study_dir = shutil.copytree(study_dir, tmp_path / "study")
    (study_dir / "NM" / "junk.dcm").write_bytes(b"not a DICOM file at all" * 10)
    top = sorted((study_dir / "CT").glob("*.dcm"))[-1]  # highest z: dropping it keeps the spacing regular
    top.write_bytes(top.read_bytes()[:-5000])
    _secondary_capture(original.study_instance_uid).save_as(study_dir / "sc.dcm", enforce_file_format=True)
    study = load_study(study_dir)
    reasons = "\n".join(study.unused)
    assert "NM/junk.dcm: not readable DICOM" in reasons
    assert f"CT/{top.name}: " in reasons
    assert "sc.dcm: SOP class not used (Secondary Capture Image Storage" in reasons
    assert len(study.unused) == 3 and study.n_files == original.n_files + 2
    assert study.nm is not None and len(study.rtstructs) == 1
    assert study.ct.GetSize() == (128, 128, 99) and study.ct.GetOrigin() == original.ct.GetOrigin()


def test_empty_or_useless_folder_raises(tmp_path):
    with pytest.raises(DicomInputError, match="no usable objects"):
        load_study(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DicomInputError, match="no usable objects"):
        load_study(tmp_path)
    with pytest.raises(DicomInputError, match="not found"):
        load_study(tmp_path / "missing")


def test_seg_round_trip(first_studies, roi_masks, tmp_path):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    sid, (_subj, study_dir, study, _t) = next(iter(first_studies.items()))
    masks = roi_masks[sid][0]
    names = [n for n in masks if n.startswith("Lesion")][:1] + [n for n in masks if "idney" in n.lower()][:1]
    cts = sorted(
        (pydicom.dcmread(p) for p in (study_dir / "CT").glob("*.dcm")), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, name in enumerate(names)
    ]
    seg = hd.seg.Segmentation(
        source_images=cts,
        pixel_array=np.stack([masks[n] for n in names], -1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=30,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="rntflow tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    copy = shutil.copytree(study_dir, tmp_path / "study")
    seg.save_as(copy / "seg.dcm")
    loaded = load_study(copy)
    assert len(loaded.segs) == 1 and loaded.unused == []
    got = seg_masks(loaded.segs[0], loaded.ct)
    assert set(got) == set(names)
    for name in names:
        assert got[name].dtype == np.bool_ and np.array_equal(got[name], masks[name]), name
    with pytest.raises(VoiError, match="frame of reference"):
        seg_masks(loaded.segs[0], loaded.ct, frame_of_reference_uid="1.2.3.4")
