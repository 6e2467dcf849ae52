"""VOI rasterisation and resampling (laws), and reading simulated study folders.

Tolerances
----------
* Pixelisation. A pixel counts as inside a polygon when its centre is. For a random
  placement this is unbiased, and the area error of one planar section is a boundary
  effect with standard deviation ``ALPHA * sqrt(P * d**3)`` (P perimeter, d pixel size).
  ALPHA = 0.28 was measured by Monte Carlo over 400 random placements of ellipses of
  5-40 mm on 1 and 3.2 mm pixels (0.23-0.29); we use 0.3 and allow 5 sigma. The rigorous
  worst case (every pixel cut by the boundary wrong) is ``P * d * sqrt(2)``.
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
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rntflow.dosimetry.vois import mask_volume_ml, rasterise_contours, resample_mask_fraction
from rntflow.harmonization.headers import nm_to_image
from rntflow.core.config import load_config
from rntflow.core.errors import DicomInputError, StorageError, VoiError
from rntflow.tasks.study_io import (
    FOR_METADATA_KEY,
    image_meta_dict,
    load_study,
    read_image,
    rtstruct_masks,
    rtstruct_rois,
    seg_masks,
    write_image,
)

REPO = Path(__file__).resolve().parents[2]
ALPHA = 0.3  # pixelisation sigma = ALPHA * sqrt(P d^3), see the module docstring


# --------------------------------------------------------------------------- helpers


def _grid(size_xyz=(128, 128, 20), spacing_mm=(1.0, 1.0, 5.0), origin_mm=(-64.0, -64.0, -50.0),
          direction=None) -> sitk.Image:
    img = sitk.Image([int(v) for v in size_xyz], sitk.sitkUInt8)
    img.SetSpacing(spacing_mm)
    img.SetOrigin(origin_mm)
    if direction is not None:
        img.SetDirection(np.asarray(direction, float).flatten().tolist())
    return img


def _ellipse(cx: float, cy: float, a: float, b: float, z: float, n: int = 720) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t), np.full_like(t, z)], -1)


def _square(x0: float, y0: float, side: float, z: float) -> np.ndarray:
    return np.array([[x0, y0, z], [x0 + side, y0, z], [x0 + side, y0 + side, z], [x0, y0 + side, z]])


def _area_mm2(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _perimeter_mm(p: np.ndarray) -> float:
    return float(np.sum(np.linalg.norm(np.roll(p[:, :2], -1, axis=0) - p[:, :2], axis=1)))


# --------------------------------------------------------------------------- rasterise: laws


def test_circles_on_5mm_slices_give_pi_r2_per_slice():
    ref = _grid()
    r_mm, d_mm = 20.0, 1.0
    contours = [_ellipse(0.3, -0.7, r_mm, r_mm, z) for z in (-30.0, -25.0, -20.0, -15.0)]
    mask = rasterise_contours(contours, ref)
    assert mask.dtype == np.bool_ and mask.shape == (20, 128, 128)
    per_slice = mask.sum(axis=(1, 2)) * d_mm * d_mm
    assert np.count_nonzero(per_slice) == 4 and np.all(per_slice[4:8] > 0)  # z = -30 is slice 4
    p = 2 * math.pi * r_mm
    sigma = ALPHA * math.sqrt(p * d_mm**3)
    for a in per_slice[4:8]:
        assert abs(a - math.pi * r_mm**2) <= min(5 * sigma, p * d_mm * math.sqrt(2))
    assert mask_volume_ml(mask, ref) == pytest.approx(4 * math.pi * r_mm**2 * 5.0 / 1000, abs=4 * 5 * sigma / 1000)


def test_centre_sampling_is_unbiased_over_random_placements():
    rng = np.random.default_rng(3)
    ref = _grid(size_xyz=(64, 64, 3), spacing_mm=(3.2, 3.2, 5.0), origin_mm=(-102.4, -102.4, -5.0))
    r_mm, d_mm, n = 12.0, 3.2, 200
    errors = []
    for _ in range(n):
        cx, cy = rng.uniform(-d_mm, d_mm, 2)
        mask = rasterise_contours([_ellipse(cx, cy, r_mm, r_mm, 0.0)], ref)
        errors.append(mask.sum() * d_mm * d_mm - math.pi * r_mm**2)
    sigma = ALPHA * math.sqrt(2 * math.pi * r_mm * d_mm**3)
    assert np.max(np.abs(errors)) <= 5 * sigma
    assert abs(np.mean(errors)) <= 4 * sigma / math.sqrt(n)  # no bias: ~0.5 % of 452 mm2 here


def test_square_with_square_hole_is_xor():
    ref = _grid()
    # edges on pixel boundaries (voxel centres at integers - 64 + 0.5 ... ) make centre sampling exact
    outer = _square(-20.5, -20.5, 40.0, 0.0)
    hole = _square(-10.5, -10.5, 20.0, 0.0)
    island = _square(-3.5, -3.5, 6.0, 0.0)
    far = _square(30.5, 30.5, 10.0, 0.0)
    k = 10  # z = 0 is slice 10
    m = rasterise_contours([outer, hole], ref)
    assert m[k].sum() == 1600 - 400 and not m[k, 64, 64] and m.sum() == m[k].sum()
    assert np.array_equal(rasterise_contours([hole, outer], ref), m)  # order does not matter
    m2 = rasterise_contours([outer, hole, island, far], ref)
    assert m2[k].sum() == 1600 - 400 + 36 + 100 and m2[k, 64, 64]


def test_non_axial_contour_raises():
    ref = _grid()
    c = _ellipse(0.0, 0.0, 30.0, 20.0, 0.0)
    tilt = math.radians(10.0)
    rot = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    with pytest.raises(VoiError, match="not parallel to the image slices"):
        rasterise_contours([c, c @ rot.T], ref)
    with pytest.raises(VoiError, match=r"\(n, 3\)"):
        rasterise_contours([np.zeros((5, 2))], ref)


def test_contours_in_the_plane_of_an_oblique_image():
    a = math.radians(30.0)
    direction = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    ref = _grid(direction=direction)
    # a circle in the image's slice 10 plane, written in patient coordinates
    local = _ellipse(0.0, 0.0, 20.0, 20.0, 0.0)
    centre = np.asarray(ref.TransformIndexToPhysicalPoint((64, 64, 10)))
    pts = centre + local @ direction.T
    mask = rasterise_contours([pts], ref)
    assert np.count_nonzero(mask.sum(axis=(1, 2))) == 1 and mask[10].sum() > 0
    assert abs(mask.sum() - math.pi * 400) <= 5 * ALPHA * math.sqrt(2 * math.pi * 20)


def test_finer_contour_planes_do_not_cancel_and_far_ones_are_dropped():
    ref = _grid()
    # contours every 2.5 mm on a 5 mm grid: two planes per slice; XOR of both would be empty
    contours = [_ellipse(0, 0, 15, 15, z) for z in np.arange(-10.0, 10.1, 2.5)]
    m = rasterise_contours(contours, ref)
    assert np.all(m.sum(axis=(1, 2))[8:13] > 600)
    outside = [_ellipse(0, 0, 15, 15, 500.0), _ellipse(0, 0, 15, 15, 0.0)[:2]]  # off-grid, degenerate
    assert not rasterise_contours(outside, ref).any()
    assert not rasterise_contours([], ref).any()


# --------------------------------------------------------------------------- resampling: laws


def test_fraction_is_exact_box_overlap_on_aligned_grids():
    ct = _grid(size_xyz=(128, 128, 100), spacing_mm=(3.2, 3.2, 5.0), origin_mm=(-203.2, -203.2, -97.5))
    spect = _grid(size_xyz=(80, 80, 104), spacing_mm=(4.8, 4.8, 4.8), origin_mm=(-189.6, -189.6, -97.2))
    z, y, x = np.meshgrid(np.arange(100) * 5 - 97.5, np.arange(128) * 3.2 - 203.2, np.arange(128) * 3.2 - 203.2,
                          indexing="ij")
    kidney = ((x - 70) / 28) ** 2 + ((y - 40) / 24) ** 2 + (z / 52) ** 2 <= 1
    frac = resample_mask_fraction(kidney, ct, spect)
    assert frac.dtype == np.float32 and frac.shape == (104, 80, 80)
    assert frac.min() >= 0 and frac.max() <= 1 and np.any((frac > 0) & (frac < 1))
    assert mask_volume_ml(frac, spect) == pytest.approx(mask_volume_ml(kidney, ct), rel=1e-5)
    # one source voxel exactly on one target voxel: fraction = volume ratio
    one = np.zeros_like(kidney)
    one[50, 64, 64] = True
    f1 = resample_mask_fraction(one, ct, ct)
    assert f1[50, 64, 64] == pytest.approx(1.0) and f1.sum() == pytest.approx(1.0)
    # a rotated target uses supersampling: still conserves volume within 1 %
    rot = sitk.Euler3DTransform()
    rot.SetRotation(0.1, 0.05, 0.3)
    tilted = _grid(size_xyz=(80, 80, 104), spacing_mm=(4.8, 4.8, 4.8), origin_mm=(-189.6, -189.6, -97.2),
                   direction=np.asarray(rot.GetMatrix()).reshape(3, 3))
    f2 = resample_mask_fraction(kidney, ct, tilted)
    assert mask_volume_ml(f2, tilted) == pytest.approx(mask_volume_ml(kidney, ct), rel=0.01)


def test_fraction_is_exact_for_flipped_and_permuted_axes():
    ct = _grid(size_xyz=(128, 120, 100), spacing_mm=(3.2, 3.0, 5.0), origin_mm=(-203.2, -190.0, -97.5))
    z, y, x = np.meshgrid(np.arange(100) * 5 - 97.5, np.arange(120) * 3.0 - 190, np.arange(128) * 3.2 - 203.2,
                          indexing="ij")
    mask = ((x - 70) / 28) ** 2 + ((y - 40) / 24) ** 2 + (z / 52) ** 2 <= 1
    spect = _grid(size_xyz=(80, 80, 104), spacing_mm=(4.8, 4.8, 4.8), origin_mm=(-189.6, -189.6, -97.2))
    expected = resample_mask_fraction(mask, ct, spect)
    # the same SPECT voxels with slices stacked feet-first
    feet_first = _grid(size_xyz=(80, 80, 104), spacing_mm=(4.8, 4.8, 4.8),
                       origin_mm=(-189.6, -189.6, -97.2 + 4.8 * 103), direction=np.diag([1.0, 1.0, -1.0]))
    np.testing.assert_allclose(resample_mask_fraction(mask, ct, feet_first)[::-1], expected, atol=1e-6)
    # the same mask on a source grid with x and y swapped, or y and z flipped
    src = sitk.GetImageFromArray(mask.astype(np.uint8))
    src.CopyInformation(ct)
    for moved in (sitk.PermuteAxes(src, [1, 0, 2]), sitk.Flip(src, [False, True, True])):
        got = resample_mask_fraction(sitk.GetArrayFromImage(moved).astype(bool), moved, spect)
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_fraction_shape_mismatch_raises():
    with pytest.raises(VoiError, match="does not match"):
        resample_mask_fraction(np.zeros((3, 4, 5), bool), _grid(), _grid())


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
            sigma_ml = dz_mm * ALPHA * math.sqrt(sum(_perimeter_mm(p) for p in pts) * d_mm**3) / 1000
            got_ml = mask_volume_ml(roi_masks[sid][0][name], ct)
            assert abs(got_ml - slab_ml) <= 5 * sigma_ml, (sid, name, got_ml, slab_ml, sigma_ml)
            worst[name] = max(worst.get(name, 0.0), abs(got_ml / slab_ml - 1))
    print("\nrasterised vs contour-area volume, worst |rel. error|:",
          {k: f"{100 * v:.1f}%" for k, v in sorted(worst.items())})


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
            errors.setdefault("marrow" if voi == "Bone_Marrow" else "lesion" if voi.startswith("Lesion")
                              else "organ>50mL" if truth_ml > 50 else "organ<=50mL", []).append(rel)
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
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", sop
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
    cts = sorted((pydicom.dcmread(p) for p in (study_dir / "CT").glob("*.dcm")),
                 key=lambda ds: float(ds.ImagePositionPatient[2]))
    descriptions = [
        hd.seg.SegmentDescription(segment_number=i + 1, segment_label=name,
                                  segmented_property_category=codes.SCT.Organ,
                                  segmented_property_type=codes.SCT.Organ,
                                  algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for i, name in enumerate(names)
    ]
    seg = hd.seg.Segmentation(
        source_images=cts, pixel_array=np.stack([masks[n] for n in names], -1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=30, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="rntflow tests", manufacturer_model_name="test", software_versions="0", device_serial_number="0")
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


def test_image_store_round_trip(first_studies, tmp_path):
    _subj, _d, study, _t = next(iter(first_studies.values()))
    meta = image_meta_dict(study.ct)
    assert meta["shape_zyx"] == [100, 128, 128] and meta["spacing_mm"] == pytest.approx([3.2, 3.2, 5.0])
    assert meta["frame_of_reference_uid"] == study.ct_frame_of_reference_uid
    json.dumps(meta)
    for name in ("ct.nii.gz", "ct.mha"):
        path = write_image(study.ct, tmp_path / "sub" / name)
        back = read_image(path)
        assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(study.ct))
        assert back.GetOrigin() == pytest.approx(study.ct.GetOrigin(), abs=1e-4)
        assert back.GetSpacing() == pytest.approx(study.ct.GetSpacing(), abs=1e-5)
        assert back.GetDirection() == pytest.approx(study.ct.GetDirection(), abs=1e-6)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["ct.mha", "ct.nii.gz"]  # no temp files left
    with pytest.raises(StorageError):
        write_image(study.ct, tmp_path / "ct.png")
    with pytest.raises(StorageError):
        read_image(tmp_path / "nope.mha")
