"""The simulator's contract: deterministic, valid DICOM, a self-consistent ground truth, PHI present."""

from __future__ import annotations

import csv
import hashlib
import math
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import integrate, ndimage

from rntflow.core.config import CameraProfile, TareArm, load_config
from rntflow.core.enrolment import load_enrolment
from rntflow.physics.nuclides import nuclide
from rntflow.simulation.kinetics import CompartmentKinetics
from rntflow.simulation.tare import tare_config
from rntflow.simulation.trial import TrialSpec, simulate_trial
from rntflow.simulation.truth import protraction_factor, self_dose_gy, sphere_rc
from tests.conftest import have

ROOT = Path(__file__).resolve().parents[1]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    spec = TrialSpec(n_sites=1, subjects_per_site=1, cycles=1, seed=11)
    a, b = simulate_trial(tmp_path / "a", spec), simulate_trial(tmp_path / "b", spec)
    da, db = _digest(a.out_dir), _digest(b.out_dir)
    assert da == db and len(da) > 100
    c = simulate_trial(tmp_path / "c", TrialSpec(n_sites=1, subjects_per_site=1, cycles=1, seed=12))
    assert _digest(c.out_dir)["truth.json"] != da["truth.json"]


def _one_of_each(trial: Path) -> list[Path]:
    nm = sorted(trial.glob("dicom/*/*/*/NM/*.dcm"))
    picks = [next(p for p in nm if "QC-NEMA" in str(p))]
    # one patient NM per site: each vendor profile (counts without Units, vendor Bq/mL in
    # RWVM with RadionuclideTotalDose in Bq, counts with Units)
    picks += [
        next(p for p in nm if f"/{site}/" in str(p) and "QC-" not in str(p))
        for site in sorted({p.relative_to(trial / "dicom").parts[0] for p in nm})
    ]
    picks += sorted(trial.glob("dicom/*/*/*/CT/CT_0050.dcm"))[:1]
    picks += sorted(trial.glob("dicom/*/*/*/RTSTRUCT/*.dcm"))[:2]
    return picks


@pytest.mark.skipif(not have("dciodvfy"), reason="dicom3tools not installed")
def test_every_kind_of_object_passes_dciodvfy_without_errors(small_trial):
    for path in _one_of_each(small_trial):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path}: {errors}"


def test_nm_headers_carry_what_quantification_needs_as_each_vendor_writes_it(small_trial, small_truth):
    from rntflow.harmonization.headers import parse_nm_header

    for site_id, site in small_truth["sites"].items():
        path = next(p for p in sorted(small_trial.glob(f"dicom/{site_id}/*/*/NM/*.dcm")) if "QC-" not in str(p))
        ds = pydicom.dcmread(path)
        vendor = site["vendor"]
        assert ds.NumberOfFrames == ds.NumberOfSlices > 50
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        scale = 1e6 if vendor["total_dose_unit"] == "Bq" else 1.0
        assert 6500 < float(rp.RadionuclideTotalDose) / scale < 8300 and rp.RadiopharmaceuticalStartDateTime
        assert float(
            ds.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence[0].EnergyWindowLowerLimit
        ) == pytest.approx(187.2)
        assert ("Units" in ds) == vendor["units_attribute"]
        assert ds.get("Units", site["units"]) == site["units"]
        assert ("SCAT" in ds.CorrectedImage) == site["scatter_correction"]
        assert len(ds.EnergyWindowInformationSequence) == (3 if site["scatter_correction"] else 1)
        assert ds.DetectorInformationSequence[0].CollimatorGridName == vendor["collimator"]
        assert (
            " ".join(ds.ConvolutionKernel if ds["ConvolutionKernel"].VM > 1 else [ds.ConvolutionKernel])
            == vendor["post_filter"]
        )
        # the platform's header reading recovers what the vendor meant
        h = parse_nm_header(ds)
        assert h.units == site["units"]
        assert (h.algorithm, h.iterations, h.subsets) == (
            vendor["algorithm"].upper(),
            site["iterations"],
            site["subsets"],
        )
        assert 6500 < h.administered_activity_mbq < 8300


def test_sites_write_vendor_diverse_headers(small_truth):
    vendors = [s["vendor"] for s in small_truth["sites"].values()]
    assert len({v["algorithm"] for v in vendors}) == len({v["collimator"] for v in vendors}) == 3
    assert len({v["post_filter"] for v in vendors}) == 3
    assert any(
        not v["units_attribute"] and s["units"] == "CNTS" for v, s in zip(vendors, small_truth["sites"].values())
    )  # Siemens-like counts without Units
    assert any(
        not v["units_attribute"] and s["units"] == "BQML" and v["rwvm"] == "always"
        for v, s in zip(vendors, small_truth["sites"].values())
    )  # Bq/mL only in RealWorldValueMappingSequence
    assert any(v["units_attribute"] for v in vendors)
    assert [v["total_dose_unit"] for v in vendors].count("Bq") == 1


def test_phi_is_present_in_the_simulated_dicom(small_trial, small_truth):
    """Later stages must prove they remove it, so it has to be there to begin with."""
    sid, subj = next(iter(small_truth["subjects"].items()))
    files = sorted(small_trial.glob(f"dicom/{subj['site_id']}/{subj['patient_id']}/*/*/*.dcm"))
    assert files
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    last = subj["patient_name"].split(" ", 1)[1].upper()
    assert str(ds.PatientName).startswith(last) and ds.PatientID == subj["patient_id"]
    assert ds.PatientBirthDate == subj["birth_date"].replace("-", "")
    enrol = {e.subject_id: e for e in load_enrolment(small_trial / "enrolment.csv")}
    assert enrol[sid].patient_id == ds.PatientID


def test_tia_equals_the_integral_of_the_true_curve(small_truth):
    for subj in small_truth["subjects"].values():
        cyc = subj["cycles"][0]
        for voi, k in cyc["kinetics"].items():
            kin = CompartmentKinetics(**k)
            num, _ = integrate.quad(
                lambda t, kin=kin, a0=cyc["administered_mbq"]: float(kin.activity_mbq(a0, t)), 0, np.inf, limit=400
            )
            assert cyc["tia_mbq_h"][voi] == pytest.approx(num, rel=1e-6)
            for tp in cyc["timepoints"]:
                assert tp["activity_mbq"][voi] == pytest.approx(
                    float(kin.activity_mbq(cyc["administered_mbq"], tp["t_h"])), rel=1e-9
                )


def test_dose_is_tia_times_electron_energy_over_mass(small_truth):
    """MIRD self-dose by hand: 1 MBq h = 3.6e9 decays, 0.1479 MeV per 177Lu decay (ICRP-107)."""
    e_mev = small_truth["electron_energy_mev"]
    assert e_mev == pytest.approx(0.1479, abs=0.0005)
    for subj in small_truth["subjects"].values():
        cyc = subj["cycles"][0]
        m = subj["vois"]["Kidney_L"]["mass_g"]
        by_hand = cyc["tia_mbq_h"]["Kidney_L"] * 3.6e9 * e_mev * 1.602176634e-13 / (m / 1000)
        assert cyc["dose_gy"]["Kidney_L"] == pytest.approx(by_hand, rel=1e-9)
        m_both = m + subj["vois"]["Kidney_R"]["mass_g"]
        assert cyc["dose_gy"]["Kidneys"] == pytest.approx(
            self_dose_gy(cyc["tia_mbq_h"]["Kidneys"], m_both, e_mev), rel=1e-12
        )


def test_kidney_doses_per_gbq_are_in_the_published_range():
    """Over many drawn subjects the kidney dose per GBq centres on VISION's 0.43 Gy/GBq."""
    from rntflow.simulation.anatomy import sample_anatomy
    from rntflow.simulation.kinetics import sample_kinetics

    rng = np.random.default_rng(3)
    nuc = nuclide("Lu-177")
    per_gbq = []
    for _ in range(60):
        anat = sample_anatomy(rng, 1)
        tissues = {c.voi: c.tissue for c in anat.compartments}
        masses = {c.voi: c.mass_g for c in anat.compartments}
        kin = sample_kinetics(rng, tissues, masses, nuc.electron_energy_mev, nuc.half_life_h)
        k = kin.compartments["Kidney_L"]
        per_gbq.append(
            self_dose_gy(
                1000 * k.fraction * (1 / k.l_eff_per_h - 1 / k.l_up_per_h), masses["Kidney_L"], nuc.electron_energy_mev
            )
        )
    assert 0.33 < float(np.median(per_gbq)) < 0.53
    # VISION SD 0.16 Gy/GBq -> 90th percentile ~0.63 Gy/GBq
    assert 0.5 < float(np.percentile(per_gbq, 90)) < 0.8


def test_phantom_counts_over_sensitivity_give_the_known_activity(small_trial, small_truth):
    for ph in small_truth["phantoms"]:
        site = small_truth["sites"][ph["site_id"]]
        if site["units"] != "CNTS" or not site["scatter_correction"]:
            continue
        ds = pydicom.dcmread(small_trial / ph["study_dir"] / "NM" / "NM_0001.dcm")
        slope = (
            float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope)
            if "RealWorldValueMappingSequence" in ds
            else 1.0
        )  # Siemens-like: counts as stored
        counts = ds.pixel_array.astype(float).sum() * slope
        activity = counts / (site["sensitivity_cps_per_mbq"] * ph["duration_s"])
        # scaled-Poisson noise: variance = 3 x counts; allow 4 SD, plus the 1% of counts a
        # 12 mm FWHM blur spills past the reconstruction grid's edge for an off-centre phantom
        sd = math.sqrt(3.0 * counts) / counts
        assert activity == pytest.approx(ph["mean_activity_during_acquisition_mbq"], rel=4 * sd + 0.01)


def test_vendor_bqml_site_reads_high_by_its_scale_error(small_trial, small_truth):
    ph = next(
        p
        for p in small_truth["phantoms"]
        if p["phantom_type"] == "uniform_cylinder" and small_truth["sites"][p["site_id"]]["units"] == "BQML"
    )
    site = small_truth["sites"][ph["site_id"]]
    ds = pydicom.dcmread(small_trial / ph["study_dir"] / "NM" / "NM_0001.dcm")
    bq_per_ml = ds.pixel_array.astype(float) * float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope)
    voxel_ml = float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1]) * float(ds.SpacingBetweenSlices) / 1000
    measured_mbq = bq_per_ml.sum() * voxel_ml / 1e6
    assert measured_mbq / ph["activity_at_acquisition_start_mbq"] == pytest.approx(site["vendor_scale_error"], rel=0.02)


def test_sphere_rc_matches_a_brute_force_convolution():
    """RC of a hot sphere: the analytic overlap integral against blurring a voxelised sphere."""
    step_mm, d_mm, fwhm_mm = 0.5, 22.0, 12.0
    n = 121
    ax = (np.arange(n) - n // 2) * step_mm
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    sphere = (x**2 + y**2 + z**2 <= (d_mm / 2) ** 2).astype(float)
    blurred = ndimage.gaussian_filter(sphere, fwhm_mm / 2.3548 / step_mm, mode="constant")
    brute = blurred[sphere > 0].mean()
    assert sphere_rc(d_mm, fwhm_mm) == pytest.approx(brute, abs=0.01)
    # large-sphere limit: a planar edge loses sigma/sqrt(2 pi) of activity per unit area,
    # so RC -> 1 - 3 sigma / (sqrt(2 pi) R)
    sigma = 10.0 / 2.3548
    assert sphere_rc(1000.0, 10.0) == pytest.approx(1 - 3 * sigma / (math.sqrt(2 * math.pi) * 500.0), abs=2e-4)
    assert sphere_rc(10.0, 16.0) < 0.1


def test_protraction_factor_reduces_to_the_mono_exponential_formula():
    k = CompartmentKinetics(fraction=0.02, t_eff_h=40.0, t_up_h=1e-6)
    assert protraction_factor([k], 2.8) == pytest.approx(2.8 / (2.8 + 40.0), rel=1e-4)


def test_designed_irregularities_and_off_protocol_sites_are_in_the_truth(small_truth, tmp_path):
    sites = small_truth["sites"]
    assert any(s["off_protocol"] for s in sites.values())
    assert any(s["units"] == "BQML" and abs(s["vendor_scale_error"] - 1) > 0.05 for s in sites.values())
    sens = [s["sensitivity_cps_per_mbq"] for s in sites.values()]
    assert 1.15 < max(sens) / min(sens) <= 1.26
    assert all(8.0 <= s["fwhm_mm"] <= 16.0 for s in sites.values())


def test_written_trial_config_is_valid_and_matches_the_example(small_trial):
    cfg = load_config(small_trial / "trial.yaml")
    example = load_config(ROOT / "deployments" / "trial.example.yaml")
    lu = [s for s in example.sites if example.tare_arm(s.id) is None]
    assert [(s.id, s.calling_ae_titles, dict(s.voi_name_map)) for s in cfg.sites] == [
        (s.id, s.calling_ae_titles, dict(s.voi_name_map)) for s in lu
    ]
    assert cfg.protocol == example.protocol
    # the camera profiles accept each simulated vendor's names
    assert [s.cameras for s in cfg.sites] == [s.cameras for s in lu]
    # the example's radioembolisation sites and arms are the ones the simulator writes
    tare_sites, tare_arms = tare_config([s.id for s in cfg.sites])
    assert [(t["id"], t["calling_ae_titles"]) for t in tare_sites] == [
        (s.id, s.calling_ae_titles) for s in example.sites if example.tare_arm(s.id) is not None
    ]
    assert [[CameraProfile.model_validate(c) for c in t["cameras"]] for t in tare_sites] == [
        example.site(t["id"]).cameras for t in tare_sites
    ]
    assert [TareArm.model_validate(a) for a in tare_arms] == example.tare_arms
    # every ROI name the simulator wrote maps to TG-263 through the config
    for rs in small_trial.glob("dicom/*/*/*/RTSTRUCT/*.dcm"):
        site_id = rs.relative_to(small_trial / "dicom").parts[0]
        ds = pydicom.dcmread(rs)
        for roi in ds.StructureSetROISequence:
            cfg.map_voi_name(roi.ROIName, site_id)
    with (small_trial / "outcomes.csv").open() as fh:
        assert {r["endpoint"] for r in csv.DictReader(fh)} == {"nephrotoxicity", "xerostomia", "lesion_response", "pfs"}
