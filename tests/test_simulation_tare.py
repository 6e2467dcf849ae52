"""The simulator's TARE arm (issue 18): files and headers per the TARE contract, a ground truth
that follows the partition model, planted Table 1 breaches, and a 177Lu part left unchanged."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from rntflow.core.config import load_config
from rntflow.core.constants import PRODUCTS, SOFT_TISSUE_DENSITY_G_PER_ML
from rntflow.core.enrolment import load_enrolment
from rntflow.core.fills import FILL_COLUMNS
from rntflow.dosimetry.density import hu_to_density_g_per_ml
from rntflow.dosimetry.tare import plan_partition, tare_conversion_factor_j_per_gbq
from rntflow.physics.decay import decay_integral_s
from rntflow.simulation.geometry import Ellipsoid, Grid, Pose, any_inside
from rntflow.simulation.tare_anatomy import LUNG_HU, SOFT_TISSUE_HU
from rntflow.simulation.tare_plan import TRUTH_TARE_COLUMNS
from rntflow.simulation.tare_sites import tare_site_ids
from rntflow.simulation.trial import TrialSpec, simulate_trial
from tests.conftest import have

SPEC = TrialSpec(n_sites=1, subjects_per_site=1, cycles=1, seed=7, tare_subjects_per_site=2)
PET_SOP = "1.2.840.10008.5.1.4.1.1.128"
NM_SOP = "1.2.840.10008.5.1.4.1.1.20"


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tare")
    simulate_trial(out, SPEC)
    return out


@pytest.fixture(scope="module")
def truth(trial) -> dict:
    return json.loads((trial / "truth.json").read_text())


@pytest.fixture(scope="module")
def rows(trial) -> list[dict]:
    with (trial / "truth_tare.csv").open() as fh:
        return list(csv.DictReader(fh))


def _digest(paths: list[Path], root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _lines(path: Path, keep) -> list[str]:
    return [line for line in path.read_text().splitlines() if keep(line)]


def test_site_ids_are_site04_and_site05_when_free_else_the_next_free():
    assert tare_site_ids(["SITE01", "SITE02", "SITE03"]) == ["SITE04", "SITE05"]
    assert tare_site_ids(["SITE01"]) == ["SITE04", "SITE05"]
    assert tare_site_ids([f"SITE0{i}" for i in range(1, 6)]) == ["SITE06", "SITE07"]


def test_ct_numbers_map_back_to_the_contract_densities():
    assert float(hu_to_density_g_per_ml(SOFT_TISSUE_HU)) == pytest.approx(SOFT_TISSUE_DENSITY_G_PER_ML, abs=1e-9)
    assert float(hu_to_density_g_per_ml(LUNG_HU)) == pytest.approx(0.30, abs=1e-9)


@pytest.mark.slow
def test_177lu_part_is_byte_identical_with_and_without_the_tare_arm(trial, tmp_path):
    lu = tmp_path / "lu"
    simulate_trial(lu, TrialSpec(n_sites=1, subjects_per_site=1, cycles=1, seed=7))
    a = _digest(sorted((trial / "dicom" / "SITE01").rglob("*.dcm")), trial)
    b = _digest(sorted((lu / "dicom" / "SITE01").rglob("*.dcm")), lu)
    assert a == b and len(a) > 100
    assert (trial / "truth_voi_doses.csv").read_bytes() == (lu / "truth_voi_doses.csv").read_bytes()
    for name in ("enrolment.csv", "phantom_fills.csv", "outcomes.csv"):
        lu_lines = (lu / name).read_text().splitlines()
        assert (trial / name).read_text().splitlines()[: len(lu_lines)] == lu_lines
    assert not (lu / "truth_tare.csv").exists() and "tare" not in json.loads((lu / "truth.json").read_text())
    assert "tare_arms" not in (lu / "trial.yaml").read_text()


@pytest.mark.slow
def test_truth_tare_csv_has_the_contract_columns_and_every_voi(rows, truth):
    assert list(rows[0]) == list(TRUTH_TARE_COLUMNS)
    assert {r["subject_id"] for r in rows} == set(truth["tare"]) == {"RNT-04001", "RNT-04002", "RNT-05001", "RNT-05002"}
    for sid, subj in truth["tare"].items():
        vois = {r["voi"] for r in rows if r["subject_id"] == sid}
        n = subj["n_lesions"]
        assert vois == {f"Lesion_{i + 1}" for i in range(n)} | {"Liver_Normal", "Liver_Perfused", "Liver", "Lungs"}
        tr = subj["treatments"][0]
        assert 1.4 <= tr["volumes_ml"]["Liver"] / 1000 <= 1.8
        assert all(35.0 <= d <= 70.0 for d in tr["tumour_diameters_mm"])


@pytest.mark.slow
def test_planned_activity_reproduces_plan_partition_on_the_truth(truth):
    for subj in truth["tare"].values():
        tr = subj["treatments"][0]
        m, s = tr["masses_kg"], tr["scout_share"]
        lesions = [v for v in s if v.startswith("Lesion_")]
        m_t = sum(m[v] for v in lesions)
        r = (sum(s[v] for v in lesions) / m_t) / (s["Liver_Normal"] / m["Liver_Normal"])
        plan = plan_partition(
            PRODUCTS[tr["device"]].tumour_target_gy[0],
            m["Liver_Normal"],
            m_t,
            r,
            tr["scout_lung_shunt_fraction"],
            product=tr["device"],
            lung_mass_kg=m["Lungs"],
            raise_on_limit=False,
        )
        assert plan.activity_gbq == pytest.approx(tr["planned_activity_gbq"], rel=1e-9)
        assert 0.95 <= tr["administered_activity_gbq"] / tr["planned_activity_gbq"] <= 0.98
        assert tr["administered_mbq"] == pytest.approx(1000 * tr["administered_activity_gbq"])


@pytest.mark.slow
def test_truth_doses_are_activity_times_share_times_cf_over_mass(rows, truth):
    for r in rows:
        tr = truth["tare"][r["subject_id"]]["treatments"][0]
        cf = tare_conversion_factor_j_per_gbq(tr["radionuclide"], "product")
        assert cf == {"Y-90": 49.67, "Ho-166": 15.85}[tr["radionuclide"]]
        m = float(r["mass_kg"])
        for dose, act, share in (
            ("planned_dose_gy", "planned_activity_gbq", "scout_share"),
            ("predicted_dose_gy", "administered_activity_gbq", "scout_share"),
            ("delivered_dose_gy", "administered_activity_gbq", "delivered_share"),
        ):
            assert float(r[dose]) == pytest.approx(float(r[act]) * float(r[share]) * cf / m, rel=2e-4), (r, dose)
        if r["voi"] == "Lungs":
            assert float(r["scout_share"]) == pytest.approx(float(r["scout_lung_shunt_fraction"]), abs=1e-6)
            assert float(r["delivered_share"]) == pytest.approx(float(r["delivered_lung_shunt_fraction"]), abs=1e-6)
    # 99mTc-MAA over-estimates the shunt (delivered ~0.7 x scout); the 166Ho scout predicts it
    for subj in truth["tare"].values():
        tr = subj["treatments"][0]
        ratio = tr["delivered_lung_shunt_fraction"] / tr["scout_lung_shunt_fraction"]
        assert (0.5 < ratio < 0.95) if tr["scout_agent"] == "Tc-99m-MAA" else (0.75 < ratio < 1.3)


def _flags(tr: dict, rows: list[dict], sid: str) -> list[str]:
    """The Table 1 limits the pipeline's planner (plan_partition) flags on this truth plan."""
    m_n = next(float(r["mass_kg"]) for r in rows if r["subject_id"] == sid and r["voi"] == "Liver_Normal")
    plan = plan_partition(
        tr["planned_tumour_dose_gy"],
        m_n,
        tr["tumour_mass_kg"],
        tr["tumour_to_normal_ratio_plan"],
        tr["scout_lung_shunt_fraction"],
        product=tr["device"],
        lung_mass_kg=tr["plan"]["lung_mass_kg"],
        cf_convention="product",
        raise_on_limit=False,
    )
    # the truth's own formula agrees (up to the rounding of the CSV's masses)
    assert plan.activity_gbq == pytest.approx(tr["planned_activity_gbq"], rel=1e-6)
    return list(plan.broken_limits)


@pytest.mark.slow
def test_planted_table1_breaches_are_planned_and_flagged(rows, truth):
    planted = {(r["subject_id"], r["voi"]): r for r in rows if r["planted"]}
    assert len(planted) == 3
    kinds = {}
    for (sid, voi), r in planted.items():
        tr = truth["tare"][sid]["treatments"][0]
        lim = PRODUCTS[tr["device"]]
        d = float(r["planned_dose_gy"])
        if voi == "Lungs":
            kinds["lung"] = sid
            assert d > lim.lung_limit_gy and any(b.startswith("lung") for b in _flags(tr, rows, sid))
        elif voi == "Liver_Normal":
            kinds["normal_liver"] = sid
            assert d > lim.parenchyma_limit_gy
            assert any(b.startswith("normal liver") for b in _flags(tr, rows, sid))
        else:
            kinds["tumour"] = sid
            assert voi.startswith("Lesion_") and d < 0.75 * lim.tumour_target_gy[0]
    assert kinds == {"tumour": "RNT-04001", "lung": "RNT-05001", "normal_liver": "RNT-05002"}
    # nothing else breaks a limit or misses the target at the planned activity
    for r in rows:
        if (r["subject_id"], r["voi"]) in planted:
            continue
        tr = truth["tare"][r["subject_id"]]["treatments"][0]
        lim, d = PRODUCTS[tr["device"]], float(r["planned_dose_gy"])
        if r["voi"] == "Lungs":
            assert d < lim.lung_limit_gy
        elif r["voi"] == "Liver_Normal":
            assert d < lim.parenchyma_limit_gy
        elif r["voi"].startswith("Lesion_") and r["subject_id"] == "RNT-04001":
            assert d > lim.tumour_target_gy[0]  # the planted subject's other tumour takes the rest
        elif r["voi"].startswith("Lesion_"):
            assert d == pytest.approx(lim.tumour_target_gy[0], abs=1e-3)  # one ratio for all tumours
    assert not _flags(truth["tare"]["RNT-04002"]["treatments"][0], rows, "RNT-04002")


@pytest.mark.slow
def test_enrolment_fill_log_and_outcomes_have_the_tare_rows(trial, truth):
    enrol = {e.subject_id: e for e in load_enrolment(trial / "enrolment.csv")}
    for sid in truth["tare"]:
        assert enrol[sid].kind == "patient" and enrol[sid].site_id == f"SITE{sid[4:6]}"
    for site in ("SITE04", "SITE05"):
        assert enrol[f"{site}-PH-CYL"].kind == "phantom" and enrol[f"{site}-PH-CYL"].patient_id == f"QC-CYL-{site}"
    with (trial / "phantom_fills.csv").open() as fh:
        fills = {r["subject_id"]: r for r in csv.DictReader(fh)}
    assert list(next(iter(fills.values()))) == list(FILL_COLUMNS)
    for site in ("SITE04", "SITE05"):
        f = fills[f"{site}-PH-CYL"]
        assert f["phantom_type"] == "uniform_cylinder" and float(f["total_activity_mbq"]) > 300
        assert float(f["volume_ml"]) == pytest.approx(6815.7, abs=0.1) and f["reference_datetime"]
    with (trial / "outcomes.csv").open() as fh:
        out = [r for r in csv.DictReader(fh) if r["subject_id"] in truth["tare"]]
    for sid, subj in truth["tare"].items():
        mine = [r for r in out if r["subject_id"] == sid]
        lesions = sorted(r["lesion_voi"] for r in mine if r["endpoint"] == "lesion_response")
        assert lesions == [f"Lesion_{i + 1}" for i in range(subj["n_lesions"])]
        assert all(r["response"] in ("CR", "PR", "SD", "PD") for r in mine if r["endpoint"] == "lesion_response")
        tox = [r for r in mine if r["endpoint"] == "liver_toxicity"]
        assert len(tox) == 1 and int(tox[0]["grade"]) in range(0, 6)
    assert "liver_toxicity" in truth["tare_outcome_models"] and "Strigari" in json.dumps(truth["tare_outcome_models"])


def _study(trial: Path, truth: dict, sid: str, role: str) -> Path:
    return trial / truth["tare"][sid]["treatments"][0][f"{role}_study"]["study_dir"]


@pytest.mark.slow
def test_nm_and_pet_headers_follow_the_contract(trial, truth):
    from rntflow.harmonization.headers import parse_nm_header

    cfg = load_config(trial / "trial.yaml")
    for sid, subj in truth["tare"].items():
        tr = subj["treatments"][0]
        arm = cfg.tare_arm(subj["site_id"])
        scout = pydicom.dcmread(next(_study(trial, truth, sid, "scout").glob("NM/*.dcm")))
        assert scout.SOPClassUID == NM_SOP and "Units" not in scout
        assert {"ATTN", "SCAT"} <= set(scout.CorrectedImage)
        hdr = parse_nm_header(scout)
        assert hdr.radionuclide == tr["scout_radionuclide"]
        assert arm.study_role(hdr.radionuclide, hdr.administered_activity_mbq) == "scout"
        win = scout.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence[0]
        centre = (float(win.EnergyWindowLowerLimit) + float(win.EnergyWindowUpperLimit)) / 2
        post_dir = _study(trial, truth, sid, "post")
        if subj["site_id"] == "SITE04":
            assert scout.Manufacturer == "SIEMENS NM" and centre == pytest.approx(81.0)
            assert scout.DetectorInformationSequence[0].CollimatorGridName == "MELP"
            assert len(scout.EnergyWindowInformationSequence) == 2  # photopeak + scatter window
            rp = scout.RadiopharmaceuticalInformationSequence[0]
            assert rp.RadionuclideCodeSequence[0].CodeMeaning == "^166^Holmium"
            assert 200 < float(rp.RadionuclideTotalDose) < 300
            post = pydicom.dcmread(next(post_dir.glob("NM/*.dcm")))
            ph = parse_nm_header(post)
            assert (
                ph.radionuclide == "Ho-166"
                and arm.study_role("Ho-166", ph.administered_activity_mbq) == "post_treatment"
            )
            assert ph.administered_activity_mbq == pytest.approx(tr["administered_mbq"], abs=0.01)
        else:
            assert scout.Manufacturer.startswith("GE") and centre == pytest.approx(140.0)
            assert scout.DetectorInformationSequence[0].CollimatorGridName == "LEHR"
            assert scout.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence[0].CodeMeaning == (
                "^99m^Technetium"
            )
            pets = sorted(post_dir.glob("PET/*.dcm"))
            ct = pydicom.dcmread(next(post_dir.glob("CT/*.dcm")))
            slices = [pydicom.dcmread(p) for p in pets]
            zs = [float(s.ImagePositionPatient[2]) for s in slices]
            assert len(slices) > 50 and np.allclose(np.diff(zs), 4.0)
            assert len({s.RescaleSlope for s in slices}) > 10 and {s.PixelRepresentation for s in slices} == {1}
            for s in slices[::20]:
                assert s.SOPClassUID == PET_SOP and s.Units == "BQML" and s.DecayCorrection == "START"
                assert list(s.SeriesType) == ["STATIC", "IMAGE"] and {"ATTN", "SCAT", "DECY"} <= set(s.CorrectedImage)
                assert s.FrameOfReferenceUID == ct.FrameOfReferenceUID and s.StudyInstanceUID == ct.StudyInstanceUID
                rp = s.RadiopharmaceuticalInformationSequence[0]
                assert float(rp.RadionuclideTotalDose) == pytest.approx(tr["administered_mbq"] * 1e6, rel=1e-5)
                assert float(rp.RadionuclidePositronFraction) == pytest.approx(3.2e-5)
                assert float(rp.RadionuclideHalfLife) == pytest.approx(64.1 * 3600)
                assert rp.RadionuclideCodeSequence[0].CodeMeaning == "^90^Yttrium"
            assert arm.study_role("Y-90", tr["administered_mbq"]) == "post_treatment"
        rs = pydicom.dcmread(next(post_dir.glob("RTSTRUCT/*.dcm")))
        names = {r.ROIName for r in rs.StructureSetROISequence}
        assert names == {"Liver", "Liver_Perfused", "Lungs"} | {f"Lesion_{i + 1}" for i in range(subj["n_lesions"])}
        assert all(cfg.map_voi_name(n, subj["site_id"]) == n for n in names)


def _pet_volume(folder: Path) -> tuple[np.ndarray, Grid]:
    slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    vol = np.stack([s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])
    dy, dx = (float(v) for v in slices[0].PixelSpacing)
    dz = float(slices[1].ImagePositionPatient[2]) - float(slices[0].ImagePositionPatient[2])
    return vol, Grid(vol.shape, (dz, dy, dx), tuple(float(v) for v in slices[0].ImagePositionPatient))


@pytest.mark.slow
def test_pet_bqml_matches_the_truth_in_the_uniform_cylinder(trial, truth):
    ph = next(p for p in truth["tare_phantoms"] if p["modality"] == "PT")
    vol, grid = _pet_volume(trial / ph["study_dir"] / "PET")
    pts = Pose(ph["pose"]["angle_deg"], tuple(ph["pose"]["translation_mm"])).to_anatomy(grid.points_mm())
    inner = (np.hypot(pts[..., 0], pts[..., 1]) < 70.0) & (np.abs(pts[..., 2]) < 60.0)
    values = vol[inner]
    expected = ph["concentration_at_acquisition_start_bqml"] * ph["vendor_scale_error"]
    sem = values.std() / np.sqrt(values.size)
    assert abs(values.mean() - expected) < 4 * sem + 0.005 * expected
    assert 0.15 < values.std() / values.mean() < 0.6  # count-poor 90Y PET
    assert ph["vendor_scale_error"] == pytest.approx(1.06)


@pytest.mark.slow
def test_ho166_phantom_gives_the_true_sensitivity_and_scouts_the_true_shunt(trial, truth):
    ph = next(p for p in truth["tare_phantoms"] if p["modality"] == "NM")
    ds = pydicom.dcmread(next((trial / ph["study_dir"]).glob("NM/*.dcm")))
    tau = decay_integral_s(ph["duration_s"], 26.8 * 3600.0)
    sens = ds.pixel_array.astype(float).sum() / (ph["activity_at_acquisition_start_mbq"] * tau)
    assert sens == pytest.approx(ph["sensitivity_cps_per_mbq"] * 1.04, rel=0.02)  # + 4 % residual scatter
    for sid, subj in truth["tare"].items():
        tr = subj["treatments"][0]
        st = tr["scout_study"]
        ds = pydicom.dcmread(next((trial / st["study_dir"]).glob("NM/*.dcm")))
        det = ds.DetectorInformationSequence[0]
        dy, dx = (float(v) for v in ds.PixelSpacing)
        grid = Grid(
            ds.pixel_array.shape,
            (float(ds.SpacingBetweenSlices), dy, dx),
            tuple(float(v) for v in det.ImagePositionPatient),
        )
        pts = Pose(st["pose"]["angle_deg"], tuple(st["pose"]["translation_mm"])).to_anatomy(grid.points_mm())
        geo = tr["geometry_mm"]
        lungs = any_inside(tuple(Ellipsoid(tuple(c), tuple(s)) for c, s in geo["lungs"]), pts)
        liver = any_inside(tuple(Ellipsoid(tuple(c), tuple(s)) for c, s in (geo["right_lobe"], geo["left_lobe"])), pts)
        img = ds.pixel_array.astype(float)
        lsf = img[lungs].sum() / (img[lungs].sum() + img[liver].sum())
        assert lsf == pytest.approx(tr["scout_lung_shunt_fraction"], abs=0.01), sid


@pytest.mark.slow
def test_trial_yaml_has_the_tare_sites_and_arms(trial):
    cfg = load_config(trial / "trial.yaml")
    assert [s.id for s in cfg.sites] == ["SITE01", "SITE04", "SITE05"]
    arms = {a.id: a for a in cfg.tare_arms}
    assert arms["TARE-HO166"].device == "QuiremSpheres" and arms["TARE-HO166"].scout_agent == "Ho-166-scout"
    assert arms["TARE-HO166"].sites == ["SITE04"] and arms["TARE-HO166"].scout_max_activity_mbq == 1000
    assert arms["TARE-Y90"].device == "SIR-Spheres" and arms["TARE-Y90"].post_imaging == "pet"
    assert cfg.tare_arm("SITE05").scout_agent == "Tc-99m-MAA" and cfg.tare_arm("SITE01") is None
    ho = cfg.site("SITE04").camera_profile("SIEMENS NM", "Symbia Intevo Bold")
    assert ho is not None and ho.system_fwhm_mm == 13.0 and "MELP" in ho.collimators
    assert cfg.site("SITE05").camera_profile("GE MEDICAL SYSTEMS", "Discovery NM/CT 670").system_fwhm_mm == 9.0
    assert cfg.site("SITE05").camera_profile("SIEMENS", "Biograph Vision 600").system_fwhm_mm == 6.0


@pytest.mark.slow
@pytest.mark.skipif(not have("dciodvfy"), reason="dicom3tools not installed")
def test_tare_objects_pass_dciodvfy_without_errors(trial, truth):
    post = _study(trial, truth, "RNT-05001", "post")
    picks = [
        sorted(post.glob("PET/*.dcm"))[50],
        next(_study(trial, truth, "RNT-04001", "post").glob("NM/*.dcm")),
        next(_study(trial, truth, "RNT-05001", "scout").glob("NM/*.dcm")),
        next(post.glob("RTSTRUCT/*.dcm")),
    ]
    for path in picks:
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path}: {errors}"
