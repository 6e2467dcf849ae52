"""Acceptance of the phantom calibration on the simulated trial (3 sites, seed 7).

The small trial's SITE02 scans only the uniform cylinder (``TrialSpec.cylinder_only_sites``):
its calibration and the cylinder-edge recovery are tested on it. The NEMA analyses run on a
phantoms-only trial with a NEMA phantom at every site (``nema_sites``), so that every
camera kind (counts, vendor Bq/mL, no scatter correction) still meets the NEMA analysis.

Each site's QC phantoms are read from DICOM exactly as the calibration task will read
them (enrolment table -> fill-log row, NM -> parse_nm_header / nm_to_image) and run
through :mod:`harmonization.phantom_study`; the results are compared with the
simulator's ground truth (``truth.json``). Patient reconstructions are checked against
the trial protocol. Tolerances are defended next to each assertion.

What the truth means for the analysis (see simulation/imaging.py):

* Sensitivity: reconstructed counts per second per MBq. A site without scatter
  correction (SITE03) records primary *and* scatter counts: its calibration is the
  effective sensitivity ``S (1 + scatter_fraction)``, which is what converts its (equally
  uncorrected) patient images to activity.
* RC: ``truth.sites[..].rc_hot_sphere`` is the hot-sphere-in-cold recovery for the
  camera's FWHM. The phantom analysis measures mean / true concentration in a warm
  background, on the simulator's voxel grids (see :func:`expected_rc`).
"""

# Over 600 lines on purpose: one module per user-facing product (its fixtures are shared by
# every test here); splitting it would repeat or scatter them.

from __future__ import annotations

import csv
import dataclasses
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rntflow.core.config import load_config
from rntflow.core.errors import CalibrationError
from rntflow.core.fills import load_phantom_fills
from rntflow.harmonization.calibration import calibration_for, register_calibration
from rntflow.harmonization.headers import nm_to_image, parse_nm_header
from rntflow.harmonization.phantom_study import (
    PhantomCalibrationResult,
    PhantomFill,
    analyse_nema_study,
    calibrate_uniform_cylinder,
)
from rntflow.harmonization.recon_check import check_reconstruction
from rntflow.physics.recovery import FWHM_PER_SIGMA
from rntflow.simulation.anatomy import anatomy_grid
from rntflow.simulation.sessions import SPECT_SPACING_MM
from rntflow.simulation.trial import TrialSpec, simulate_trial
from rntflow.simulation.truth import sphere_rc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = load_config(ROOT / "deployments" / "trial.example.yaml")
BAND = EXAMPLE.calibration.reference_rc_band
PROTOCOL_NAME = EXAMPLE.trial_id


# --------------------------------------------------------------------------- loading


def _enrolment(trial: Path) -> dict[tuple[str, str], dict]:
    with (trial / "enrolment.csv").open(newline="") as fh:
        return {(r["site_id"], r["patient_id"]): r for r in csv.DictReader(fh)}


def _nm_files(trial: Path, site_id: str, patient_id: str) -> list[Path]:
    return sorted((trial / "dicom" / site_id / patient_id).glob("*/NM/*.dcm"))


def _load_nm(path: Path):
    """(header, image (z, y, x), spacing (dz, dy, dx) mm, dataset) as the calibration task does."""
    ds = pydicom.dcmread(path)
    img = nm_to_image(ds)
    sx, sy, sz = img.GetSpacing()
    return parse_nm_header(ds), sitk.GetArrayFromImage(img).astype(np.float64), (sz, sy, sx), ds


@dataclasses.dataclass
class SiteRun:
    cylinder: PhantomCalibrationResult
    nema: PhantomCalibrationResult | None  # None: a cylinder-only site
    nema_input: tuple | None  # (header, image, spacing, fill) for re-analysis with other inputs
    cylinder_input: tuple


def _site_runs(trial: Path, truth: dict) -> dict[str, SiteRun]:
    """Every site's cylinder calibration, then its NEMA analysis (if it scanned one) with that calibration."""
    enrol = _enrolment(trial)
    fills = load_phantom_fills(trial / "phantom_fills.csv")
    out = {}
    for site_id in truth["sites"]:
        studies = {}
        for (sid, patient_id), row in enrol.items():
            if sid != site_id or row["kind"] != "phantom":
                continue
            (nm,) = _nm_files(trial, site_id, patient_id)
            header, image, spacing, _ = _load_nm(nm)
            fill = fills[row["subject_id"]]
            studies[fill.phantom_type] = (header, image, spacing, fill)
        cyl_in, nema_in = studies["uniform_cylinder"], studies.get("nema_iec_body")
        cyl = calibrate_uniform_cylinder(*cyl_in, site_id=site_id, protocol_name=PROTOCOL_NAME)
        nema = None
        if nema_in is not None:
            nema = analyse_nema_study(
                *nema_in,
                site_id=site_id,
                calibration=cyl.calibration,
                reference_rc_band=BAND,
                protocol_name=PROTOCOL_NAME,
            )
        out[site_id] = SiteRun(cyl, nema, nema_in, cyl_in)
    return out


@pytest.fixture(scope="module")
def fills(small_trial) -> dict[str, PhantomFill]:
    return load_phantom_fills(small_trial / "phantom_fills.csv")


@pytest.fixture(scope="module")
def sites(small_trial, small_truth) -> dict[str, SiteRun]:
    """The small trial's sites (SITE02 without a NEMA phantom)."""
    return _site_runs(small_trial, small_truth)


@pytest.fixture(scope="module")
def phantom_trial(tmp_path_factory) -> Path:
    """A phantoms-only trial (same seed and sites) with a NEMA IEC phantom at every site."""
    out = tmp_path_factory.mktemp("phantoms")
    simulate_trial(out, TrialSpec(n_sites=3, subjects_per_site=0, cycles=1, seed=7, cylinder_only_sites=()))
    return out


@pytest.fixture(scope="module")
def phantom_truth(phantom_trial) -> dict:
    return json.loads((phantom_trial / "truth.json").read_text())


@pytest.fixture(scope="module")
def nema_sites(phantom_trial, phantom_truth) -> dict[str, SiteRun]:
    """Every site's cylinder calibration and NEMA analysis (NEMA phantom at every site)."""
    runs = _site_runs(phantom_trial, phantom_truth)
    assert all(r.nema is not None for r in runs.values())
    return runs


def _phantom_truth(truth: dict, site_id: str, kind: str) -> dict:
    (p,) = [p for p in truth["phantoms"] if p["site_id"] == site_id and p["phantom_type"] == kind]
    return p


# --------------------------------------------------------------------------- truth models


#: Extra blur (variance per axis, mm^2) that the simulator's grids add to the camera's
#: Gaussian, as seen by the partial-voxel sphere VOI: the object voxelised on the 2.4 mm
#: anatomy grid (box, d^2/12), linear resampling of that grid at the SPECT voxel centres
#: (triangle, d^2/6, averaged over sub-voxel positions) and the 4.8 mm SPECT voxels read
#: as piecewise constant by the VOI (box, D^2/12). Same reasoning as effective_fwhm_mm in
#: test_phantom.py. It is ~1 mm of FWHM: ignoring it shifts RC(17 mm) by ~0.02-0.03.
_FINE_MM = anatomy_grid().spacing_mm[0]
GRID_VARIANCE_MM2 = _FINE_MM**2 / 12 + _FINE_MM**2 / 6 + SPECT_SPACING_MM[0] ** 2 / 12


def effective_fwhm_mm(fwhm_mm: float) -> float:
    return math.sqrt((fwhm_mm / FWHM_PER_SIGMA) ** 2 + GRID_VARIANCE_MM2) * FWHM_PER_SIGMA


def expected_rc(site: dict, diameter_mm: float, sbr: float) -> float:
    """Truth of the measured RC (mean / true sphere concentration).

    Warm background: RC = 1/SBR + (1 - 1/SBR) RC_hot(d, FWHM_eff), RC_hot from
    simulation/truth.py (the same overlap integral that wrote ``rc_hot_sphere``).
    Uncorrected scatter (fraction f of the primary, spread by a 60 mm FWHM kernel): at a
    sphere the broad kernel averages sphere and surroundings to about the background
    concentration, so the sphere gains ~f x C_bg, while the cylinder calibration carries
    the full (1 + f): RC = (RC_warm + f / SBR) / (1 + f). The local 60 mm average lies
    within ~0.8-1.2 C_bg (cold lung insert, hot spheres, wall), i.e. +-0.006 in RC here.
    """
    f = site["scatter_fraction"] if not site["scatter_correction"] else 0.0
    warm = 1.0 / sbr + (1.0 - 1.0 / sbr) * sphere_rc(diameter_mm, effective_fwhm_mm(site["fwhm_mm"]))
    return (warm + f / sbr) / (1.0 + f)


def expected_filter_status(site: dict, sbr: float, band, margin: float = 0.03) -> str | None:
    """What the harmonising filter must say, from the truth; ``None`` if within ``margin``
    of a band edge (then noise may decide). The margin is the largest RC error this test
    accepts on purpose to be below its 0.05 tolerance (measured: <= 0.03)."""
    below = above = edge = False
    for d, (lo, hi) in band.items():
        rc = expected_rc(site, float(d), sbr)
        below |= rc < lo - margin
        above |= rc > hi + margin
        edge |= abs(rc - lo) <= margin or abs(rc - hi) <= margin
    if below:
        return "fail"
    if edge:
        return None
    return "filter" if above else "pass"


# --------------------------------------------------------------------------- sensitivity


def test_truth_rc_model_matches_truth_json(small_truth):
    # the RC model used below is the simulator's own: at the nominal FWHM it reproduces
    # truth.json's rc_hot_sphere exactly
    for site in small_truth["sites"].values():
        for d, rc in site["rc_hot_sphere"].items():
            assert sphere_rc(float(d), site["fwhm_mm"]) == pytest.approx(rc, rel=1e-9)


def test_sensitivity_or_vendor_scale_within_2_percent(sites, small_truth):
    # 2 % is the acceptance criterion. Expected error: Poisson on ~1e8 counts (0.01 %),
    # spill-out beyond the 40 mm VOI margin (< 0.1 % at FWHM <= 14 mm), decay from the
    # header reference time (exact interval). Measured: <= 0.2 % at every site.
    measured = {}
    for site_id, run in sites.items():
        t = small_truth["sites"][site_id]
        cal = run.cylinder.calibration
        assert cal is not None, run.cylinder.checks
        assert [c for c in run.cylinder.checks if c.status == "fail"] == []
        if t["units"] == "CNTS":
            # without scatter correction the photopeak holds primary + scatter counts
            f = 0.0 if t["scatter_correction"] else t["scatter_fraction"]
            true = t["sensitivity_cps_per_mbq"] * (1.0 + f)
            assert cal.kind == "sensitivity"
            assert cal.sensitivity_cps_per_mbq == pytest.approx(true, rel=0.02)
            if f > 0:
                # the scatter is really there: the primary-only sensitivity is > 20 % off,
                # and the QA record says why
                assert cal.sensitivity_cps_per_mbq > 1.2 * t["sensitivity_cps_per_mbq"]
                assert run.cylinder.check("phantom_scatter_correction").status == "warn"
            value = cal.sensitivity_cps_per_mbq
        else:
            true = t["vendor_scale_error"]
            assert cal.kind == "vendor_scale_factor"
            assert cal.vendor_scale_factor == pytest.approx(true, rel=0.02)
            value = cal.vendor_scale_factor
        measured[site_id] = (true, value, 100 * (value / true - 1))
        # calibration record: camera and time from the header, version left to the registry
        p = _phantom_truth(small_truth, site_id, "uniform_cylinder")
        cam = t["camera"]
        assert cal.camera_id == f"{cam['manufacturer']}|{cam['model']}|{cam['serial']}"
        assert cal.radionuclide == "Lu-177" and cal.version == 0 and cal.site_id == site_id
        assert abs((cal.valid_from - datetime.fromisoformat(p["acquisition_datetime"])).total_seconds()) < 1
        # decay from the header reference time reproduces the truth's activity (float rounding of the log only)
        assert run.cylinder.activity_at_acquisition_start_mbq == pytest.approx(
            p["activity_at_acquisition_start_mbq"], rel=1e-4
        )
    print("\nsensitivity / scale (true, recovered, error %):", measured)


def test_cylinder_only_site_gets_recovery_from_the_cylinder_edge(sites, small_trial, small_truth, fills):
    # the default trial has a site without a NEMA phantom (issue 13): no NEMA study, no NEMA
    # fill, and its cylinder calibration carries the edge-fitted FWHM as the recovery FWHM.
    # Truth: the camera's FWHM plus the simulator's grid blur (effective_fwhm_mm); the edge
    # fit is within 10 % of it (test_cylinder_edge.py: 2 % on noise-free cylinders; here
    # noise, the pose's tilt and 4.8 mm voxels)
    only = [s for s, t in small_truth["sites"].items() if not t["nema_phantom"]]
    assert only == list(TrialSpec().cylinder_only_sites) == ["SITE02"]
    for site_id in only:
        run, t = sites[site_id], small_truth["sites"][site_id]
        assert run.nema is None and not list((small_trial / "dicom" / site_id).glob("QC-NEMA*"))
        assert {f.phantom_type for f in fills.values() if f.subject_id.startswith(site_id)} == {"uniform_cylinder"}
        cal = run.cylinder.calibration
        assert cal.rc_fwhm_source == "cylinder_edge"
        assert run.cylinder.check("cylinder_edge_resolution").status == "pass"
        assert cal.rc_fwhm_mm == pytest.approx(effective_fwhm_mm(t["fwhm_mm"]), rel=0.10)
        print(
            f"\n{site_id} cylinder-edge FWHM {cal.rc_fwhm_mm:.2f} mm, effective truth {effective_fwhm_mm(t['fwhm_mm']):.2f} mm"
        )
    # the other sites scanned both phantoms
    assert all(sites[s].nema is not None for s in small_truth["sites"] if s not in only)


# --------------------------------------------------------------------------- recovery coefficients


def test_rc_within_0_05_of_truth_for_spheres_17mm_and_larger(nema_sites, phantom_truth):
    # 0.05 absolute is the acceptance criterion for d >= 17 mm. Budget: calibration
    # error (<= 0.2 % -> < 0.002), sphere localisation (< 0.5 mm rms ring fit -> < 0.01 at
    # 17 mm), noise in a 2.6 mL VOI (~25 voxels, ~3 % each -> < 0.01), voxelised sphere
    # volumes in the simulator (<= 2 % for d >= 17 mm -> < 0.01), the grid blur model
    # above (~0.01). Measured worst case ~0.03.
    worst = {}
    for site_id, run in nema_sites.items():
        t = phantom_truth["sites"][site_id]
        sbr = _phantom_truth(phantom_truth, site_id, "nema_iec_body")["sphere_to_background_ratio"]
        assert run.nema.nema is not None, run.nema.checks
        assert len(run.nema.spheres) == 6
        errs = {}
        for s in run.nema.spheres:
            if s.sphere_diameter_mm >= 17:
                errs[s.sphere_diameter_mm] = s.recovery_coefficient - expected_rc(t, s.sphere_diameter_mm, sbr)
        worst[site_id] = max(errs.values(), key=abs)
        assert all(abs(e) <= 0.05 for e in errs.values()), (site_id, errs)
        # RCs rise with sphere size (a localisation error would break this)
        rcs = [s.recovery_coefficient for s in run.nema.spheres]
        assert all(a < b for a, b in zip(rcs[2:], rcs[3:]))
        # background measured within 3 % of the fill (calibration + scatter halo)
        truth_bg = run.nema.nema.truth.background_bq_per_ml
        assert run.nema.nema.background_mean_bq_per_ml == pytest.approx(truth_bg, rel=0.03)
        # the fitted RC curve is stored with the calibration
        cal = run.nema.calibration
        assert cal is not None and cal.rc_fwhm_mm == pytest.approx(run.nema.nema.rc_curve.fwhm_mm)
        assert cal.rc_sbr == sbr and cal.sensitivity_cps_per_mbq == run.cylinder.calibration.sensitivity_cps_per_mbq
        if t["scatter_correction"]:
            # scatter-free sites: fitted FWHM close to the camera's effective resolution
            # (the fit trades FWHM against amplitude: +-2 mm)
            assert cal.rc_fwhm_mm == pytest.approx(effective_fwhm_mm(t["fwhm_mm"]), abs=2.0)
    print("\nworst RC error (>= 17 mm) per site:", {k: round(v, 4) for k, v in worst.items()})


def test_uncorrected_scatter_lowers_rc_beyond_tolerance(nema_sites, phantom_truth):
    # the scatter term in expected_rc is not cosmetic: against the resolution-only truth the
    # off-protocol site's 37 mm RC is ~0.1 low, which the analysis must show (and the band fails)
    for site_id, run in nema_sites.items():
        t = phantom_truth["sites"][site_id]
        if t["scatter_correction"]:
            continue
        sbr = _phantom_truth(phantom_truth, site_id, "nema_iec_body")["sphere_to_background_ratio"]
        warm = 1 / sbr + (1 - 1 / sbr) * sphere_rc(37.0, effective_fwhm_mm(t["fwhm_mm"]))
        assert run.nema.spheres[-1].recovery_coefficient < warm - 0.05
        assert run.nema.check("phantom_scatter_correction").status == "warn"


# --------------------------------------------------------------------------- harmonising filter


def test_simulated_trial_config_carries_the_trial_band(small_trial):
    # the simulated trial's own config (what the flows read) uses the same band as the example
    assert load_config(small_trial / "trial.yaml").calibration.reference_rc_band == BAND


def test_harmonising_filter_against_trial_band(nema_sites, phantom_truth):
    # with the trial's band (deployments/trial.example.yaml) the truth says: SITE01/02
    # inside the band (pass, no filter), SITE03 (14 mm, uncorrected scatter) below it (fail)
    outcome = {}
    for site_id, run in nema_sites.items():
        t = phantom_truth["sites"][site_id]
        sbr = _phantom_truth(phantom_truth, site_id, "nema_iec_body")["sphere_to_background_ratio"]
        hf = run.nema.harmonising_filter
        assert hf is not None
        expected = expected_filter_status(t, sbr, BAND)
        if expected is None:  # the truth within 0.03 of a band edge: noise may decide either way
            assert t["off_protocol"] and hf.status in ("pass", "filter", "fail"), (site_id, hf)
            outcome[site_id] = (hf.status, hf.fwhm_mm)
            continue
        assert hf.status == expected, (site_id, hf)
        check = run.nema.check("harmonising_filter")
        assert check.status == ("fail" if expected == "fail" else "pass")
        if expected == "fail":
            assert hf.fwhm_mm is None and run.nema.calibration.filter_fwhm_mm is None
            assert run.nema.check("nema_rc_band").status == "fail"
            assert all(s.recovery_coefficient_harmonised is None for s in run.nema.spheres)
        else:
            assert run.nema.calibration.filter_fwhm_mm == hf.fwhm_mm
            assert all(s.in_reference_band for s in run.nema.spheres if s.in_reference_band is not None)
        outcome[site_id] = (hf.status, hf.fwhm_mm)
    # every site that fails lacks scatter correction; every scatter-corrected site passes
    assert {s for s, (st, _) in outcome.items() if st == "fail"} <= {
        s for s, t in phantom_truth["sites"].items() if not t["scatter_correction"]
    }
    assert all(outcome[s][0] != "fail" for s, t in phantom_truth["sites"].items() if t["scatter_correction"])
    print("\nharmonising filter (trial band):", outcome)


def test_sharper_sites_get_a_filter_for_a_blurrier_reference(nema_sites, phantom_truth):
    # No site of this trial is sharper than the trial band, so the "filter" branch is
    # exercised with a band centred on a 16 mm reference system (+-0.05, per site's SBR).
    # Gaussians add in quadrature: a site of effective FWHM f needs sqrt(16^2 - f^2); the
    # band admits a range of filters (as in test_phantom.py): +-3 mm.
    ref_fwhm_mm = 16.0
    done = 0
    for site_id, (run, t) in ((s, (nema_sites[s], phantom_truth["sites"][s])) for s in nema_sites):
        if not t["scatter_correction"]:
            continue
        sbr = _phantom_truth(phantom_truth, site_id, "nema_iec_body")["sphere_to_background_ratio"]
        band = {}
        for d in (17, 22, 28, 37):
            rc = 1 / sbr + (1 - 1 / sbr) * sphere_rc(d, ref_fwhm_mm)
            band[str(d)] = (rc - 0.05, rc + 0.05)
        res = analyse_nema_study(
            *run.nema_input,
            site_id=site_id,
            calibration=run.cylinder.calibration,
            reference_rc_band=band,
            protocol_name=PROTOCOL_NAME,
        )
        hf = res.harmonising_filter
        assert hf.status == "filter", (site_id, hf)
        f_eff = effective_fwhm_mm(t["fwhm_mm"])
        assert hf.fwhm_mm == pytest.approx(math.sqrt(ref_fwhm_mm**2 - f_eff**2), abs=3.0)
        assert res.check("nema_rc_band").status == "warn"  # above the band before filtering
        assert res.check("harmonising_filter").status == "pass"
        assert res.calibration.filter_fwhm_mm == hf.fwhm_mm
        for s in res.spheres:
            assert s.recovery_coefficient_harmonised < s.recovery_coefficient
            lo_hi = band.get(f"{s.sphere_diameter_mm:g}")
            assert s.in_reference_band is (None if lo_hi is None else lo_hi[0] <= s.recovery_coefficient <= lo_hi[1])
            if lo_hi is not None:
                assert lo_hi[0] <= s.recovery_coefficient_harmonised <= lo_hi[1]
        done += 1
    assert done >= 2


# --------------------------------------------------------------------------- protocol compliance


def test_reconstruction_checks_find_every_off_protocol_site(small_trial, small_truth):
    # each truth reason must show up as a failing check; compliant sites get no fail
    reason_to_check = {
        "no scatter correction": "scatter_correction",
        "scatter windows missing": "energy_window_scatter",
        "iterations x subsets": "iterations_x_subsets",
        "collimator": "collimator",
    }
    enrol = _enrolment(small_trial)
    warns: dict[str, set[str]] = {}
    n = 0
    for (site_id, patient_id), row in enrol.items():
        if row["kind"] != "patient":
            continue
        off = small_truth["sites"][site_id]["off_protocol"]
        for nm in _nm_files(small_trial, site_id, patient_id):
            header = parse_nm_header(pydicom.dcmread(nm, stop_before_pixels=True))
            camera = EXAMPLE.site(site_id).camera_profile(header.manufacturer, header.model)
            results = check_reconstruction(header, EXAMPLE.protocol, camera)
            fails = {c.check for c in results if c.status == "fail"}
            warns.setdefault(site_id, set()).update(c.check for c in results if c.status == "warn")
            n += 1
            if off:
                assert fails, (nm, off)
                for reason in off:
                    key = next(k for k in reason_to_check if reason.startswith(k))
                    assert reason_to_check[key] in fails, (nm, reason, fails)
            else:
                assert fails == set(), (nm, [c for c in results if c.status == "fail"])
    assert n >= 9  # 3 subjects x (3 or 4) time points
    print("\nrecon-check warnings per site:", warns)


def test_missing_energy_windows_is_not_stated_not_a_crash(small_trial):
    enrol = _enrolment(small_trial)
    site_id, patient_id = next(k for k, r in enrol.items() if r["kind"] == "patient" and k[0] == "SITE01")
    ds = pydicom.dcmread(_nm_files(small_trial, site_id, patient_id)[0], stop_before_pixels=True)
    del ds.EnergyWindowInformationSequence
    by_name = {c.check: c for c in check_reconstruction(parse_nm_header(ds), EXAMPLE.protocol)}
    # an optional attribute missing is "not stated" (warn), never a fail (issue 13)
    assert by_name["energy_window_photopeak"].status == "warn"
    assert "EnergyWindowInformationSequence" in by_name["energy_window_photopeak"].message
    assert by_name["energy_window_scatter"].status == "warn"


# --------------------------------------------------------------------------- calibration registry


def test_calibrations_register_and_cover_patient_scans(sites, small_trial):
    history: tuple = ()
    for run in sites.values():
        history, drift_flag, drift = register_calibration(
            history, run.cylinder.calibration, EXAMPLE.calibration.drift_tolerance_pct
        )
        assert drift is None and not drift_flag
    assert [c.version for c in history] == [1, 1, 1]
    enrol = _enrolment(small_trial)
    for (site_id, patient_id), row in enrol.items():
        if row["kind"] != "patient":
            continue
        for nm in _nm_files(small_trial, site_id, patient_id):
            h = parse_nm_header(pydicom.dcmread(nm, stop_before_pixels=True))
            cal, status = calibration_for(
                history, site_id, h.camera_id, h.radionuclide, h.acquisition_start, EXAMPLE.calibration.validity_days
            )
            assert status == "valid" and cal.site_id == site_id
    # a camera never calibrated
    h = dataclasses.replace(h, serial="NEVER-CALIBRATED")
    assert calibration_for(history, site_id, h.camera_id, h.radionuclide, h.acquisition_start, 180) == (
        None,
        "missing",
    )


# --------------------------------------------------------------------------- bad inputs


def test_fill_without_activity_is_a_fail_check(sites):
    run = sites["SITE01"]
    header, image, spacing, fill = run.cylinder_input
    res = calibrate_uniform_cylinder(
        header,
        image,
        spacing,
        dataclasses.replace(fill, total_activity_mbq=None),
        site_id="SITE01",
        protocol_name=PROTOCOL_NAME,
    )
    assert res.calibration is None and res.status == "fail"
    assert res.check("phantom_activity").status == "fail"
    assert "no total activity" in res.check("phantom_activity").message
    header, image, spacing, fill = run.nema_input
    res = analyse_nema_study(
        header,
        image,
        spacing,
        dataclasses.replace(fill, total_activity_mbq=None),
        site_id="SITE01",
        calibration=run.cylinder.calibration,
        reference_rc_band=BAND,
        protocol_name=PROTOCOL_NAME,
    )
    assert res.calibration is None and res.check("phantom_activity").status == "fail" and res.spheres == ()


def test_header_without_reference_time_is_a_fail_check(sites):
    header, image, spacing, fill = sites["SITE01"].cylinder_input
    res = calibrate_uniform_cylinder(
        dataclasses.replace(header, administration_datetime=None),
        image,
        spacing,
        fill,
        site_id="SITE01",
        protocol_name=PROTOCOL_NAME,
    )
    assert res.calibration is None
    assert "no activity reference time in the header" in res.check("phantom_reference_time").message


def test_fill_time_is_compared_modulo_whole_days(sites):
    # the fill log's calendar date is not shifted; its time of day must still agree
    header, image, spacing, fill = sites["SITE01"].cylinder_input
    shift = timedelta(days=-40)  # what the listener's de-identification does
    shifted = dataclasses.replace(
        header,
        administration_datetime=header.administration_datetime + shift,
        acquisition_start=header.acquisition_start + shift,
    )
    ok = calibrate_uniform_cylinder(shifted, image, spacing, fill, site_id="SITE01", protocol_name=PROTOCOL_NAME)
    assert ok.check("phantom_reference_time").status == "pass"
    assert ok.calibration.sensitivity_cps_per_mbq == pytest.approx(
        sites["SITE01"].cylinder.calibration.sensitivity_cps_per_mbq, rel=1e-12
    )
    typo = dataclasses.replace(fill, reference_datetime=fill.reference_datetime + timedelta(hours=1))
    res = calibrate_uniform_cylinder(header, image, spacing, typo, site_id="SITE01", protocol_name=PROTOCOL_NAME)
    assert res.check("phantom_reference_time").status == "warn" and res.calibration is not None


def test_bqml_decay_corrected_to_administration(nema_sites, phantom_truth):
    # a vendor image with DecayCorrection ADMIN holds concentrations at the reference time:
    # the same scan expressed that way must give the same vendor scale factor
    site_id = next(s for s, t in phantom_truth["sites"].items() if t["units"] == "BQML")
    run = nema_sites[site_id]
    for kind in ("cylinder", "nema"):
        header, image, spacing, fill = run.cylinder_input if kind == "cylinder" else run.nema_input
        dt_s = (header.acquisition_start - header.administration_datetime).total_seconds()
        undecay = math.exp(math.log(2) * dt_s / header.radionuclide_half_life_s)
        admin = dataclasses.replace(header, decay_correction="ADMIN")
        if kind == "cylinder":
            res = calibrate_uniform_cylinder(
                admin, image * undecay, spacing, fill, site_id=site_id, protocol_name=PROTOCOL_NAME
            )
            assert res.calibration.vendor_scale_factor == pytest.approx(
                run.cylinder.calibration.vendor_scale_factor, rel=1e-9
            )
        else:
            res = analyse_nema_study(
                admin,
                image * undecay,
                spacing,
                fill,
                site_id=site_id,
                calibration=run.cylinder.calibration,
                reference_rc_band=BAND,
                protocol_name=PROTOCOL_NAME,
            )
            for a, b in zip(res.spheres, run.nema.spheres):
                assert a.recovery_coefficient == pytest.approx(b.recovery_coefficient, rel=1e-6)


def test_nema_sphere_outside_fov_is_a_fail_check(nema_sites):
    run = nema_sites["SITE01"]
    header, image, spacing, fill = run.nema_input
    # crop the axial FOV 8 mm above the sphere plane: the larger spheres are cut
    k = int(round((run.nema.nema.sphere_plane_z_mm + 8.0) / spacing[0]))
    res = analyse_nema_study(
        header,
        image[:k],
        spacing,
        fill,
        site_id="SITE01",
        calibration=run.cylinder.calibration,
        reference_rc_band=BAND,
        protocol_name=PROTOCOL_NAME,
    )
    assert res.calibration is None and res.spheres == ()
    fov = res.check("phantom_fov")
    assert fov.status == "fail" and "outside the field of view" in fov.message
    # a truncated cylinder likewise
    header, image, spacing, fill = run.cylinder_input
    res = calibrate_uniform_cylinder(header, image[40:], spacing, fill, site_id="SITE01", protocol_name=PROTOCOL_NAME)
    assert res.calibration is None and res.check("phantom_fov").status == "fail"


def test_nema_without_or_with_wrong_calibration_is_a_fail_check(nema_sites):
    run1, run2 = nema_sites["SITE01"], nema_sites["SITE02"]
    header, image, spacing, fill = run1.nema_input
    kw = dict(site_id="SITE01", reference_rc_band=BAND, protocol_name=PROTOCOL_NAME)
    res = analyse_nema_study(header, image, spacing, fill, calibration=None, **kw)
    assert res.calibration is None and res.check("phantom_calibration").status == "fail"
    assert "no uniform-cylinder calibration" in res.check("phantom_calibration").message
    # SITE02's calibration (another camera, and a vendor scale factor for a counts image)
    res = analyse_nema_study(header, image, spacing, fill, calibration=run2.cylinder.calibration, **kw)
    msg = res.check("phantom_calibration").message
    assert res.calibration is None and "camera" in msg and "needs a sensitivity" in msg
    # a BQML image without calibration is not analysed either (documented choice)
    header, image, spacing, fill = run2.nema_input
    res = analyse_nema_study(header, image, spacing, fill, calibration=None, **kw)
    assert res.calibration is None and res.check("phantom_calibration").status == "fail"


def test_nema_without_band_still_measures_rcs(nema_sites):
    run = nema_sites["SITE02"]
    res = analyse_nema_study(
        *run.nema_input,
        site_id="SITE02",
        calibration=run.cylinder.calibration,
        reference_rc_band={},
        protocol_name=PROTOCOL_NAME,
    )
    assert len(res.spheres) == 6 and res.calibration.rc_fwhm_mm is not None
    assert res.calibration.filter_fwhm_mm is None and res.harmonising_filter is None
    assert res.check("harmonising_filter").status == "fail" and "empty" in res.check("harmonising_filter").message


def test_wrong_phantom_type_and_bad_fill(nema_sites):
    run = nema_sites["SITE01"]
    header, image, spacing, _ = run.cylinder_input
    nema_fill = run.nema_input[3]
    res = calibrate_uniform_cylinder(header, image, spacing, nema_fill, site_id="SITE01", protocol_name=PROTOCOL_NAME)
    assert res.calibration is None and res.check("phantom_type").status == "fail"
    header, image, spacing, fill = run.nema_input
    res = analyse_nema_study(
        header,
        image,
        spacing,
        dataclasses.replace(fill, sphere_to_background_ratio=None),
        site_id="SITE01",
        calibration=run.cylinder.calibration,
        reference_rc_band=BAND,
        protocol_name=PROTOCOL_NAME,
    )
    assert res.calibration is None and res.check("phantom_fill").status == "fail"
    # an empty image: a fail, not an exception
    res = calibrate_uniform_cylinder(
        run.cylinder_input[0],
        np.zeros((10, 10, 10)),
        spacing,
        run.cylinder_input[3],
        site_id="SITE01",
        protocol_name=PROTOCOL_NAME,
    )
    assert res.calibration is None and res.check("phantom_sensitivity").status == "fail"


def test_results_fit_the_warehouse(sites, nema_sites):
    # qa_checks is keyed by (check_name, scope, scope_id): one record per check name and
    # study; sphere rows carry exactly phantom_results columns
    from rntflow.warehouse.schema import TABLES

    columns = {c.name for c in TABLES["phantom_results"].columns}
    for run in nema_sites.values():
        for res in (sites[run.cylinder.calibration.site_id].cylinder, run.cylinder, run.nema):
            names = [c.check for c in res.checks]
            assert len(names) == len(set(names)), names
            assert {c.status for c in res.checks} <= {"pass", "warn", "fail"}
        for row in run.nema.spheres:
            assert set(dataclasses.asdict(row)) <= columns


# --------------------------------------------------------------------------- fill log


def test_fill_log_as_written_by_the_simulator(fills, small_truth):
    assert len(fills) == len(small_truth["phantoms"])
    for p in small_truth["phantoms"]:
        f = fills[p["subject_id"]]
        assert f.phantom_type == p["phantom_type"]
        assert f.total_activity_mbq == pytest.approx(p["total_activity_mbq"], abs=0.005)
        assert f.reference_datetime.isoformat() == p["reference_datetime"]
        assert f.volume_ml == pytest.approx(p["volume_ml"], abs=0.05)
        assert f.sphere_to_background_ratio == p["sphere_to_background_ratio"]  # None for cylinders


HEAD = "subject_id,phantom_type,total_activity_mbq,reference_datetime,volume_ml,sphere_to_background_ratio\n"


@pytest.mark.parametrize(
    "body, match",
    [
        (
            "A,uniform_cylinder,abc,2026-01-01T10:00:00,6800,\n",
            r"line 2 \(A\): total_activity_mbq 'abc' is not a number",
        ),
        ("A,uniform_cylinder,-5,2026-01-01T10:00:00,6800,\n", r"line 2 \(A\): total_activity_mbq must be positive"),
        ("A,uniform_cylinder,500,,6800,\nB,sphere,500,,6800,\n", r"line 3 \(B\): phantom_type 'sphere'"),
        ("A,uniform_cylinder,500,,6800,\nA,nema_iec_body,200,,8900,5\n", r"line 3 \(A\): subject_id A appears twice"),
        ("A,uniform_cylinder,500,19/01/2026 10:00,6800,\n", r"line 2 \(A\): reference_datetime"),
        (",uniform_cylinder,500,,6800,\n", r"line 2: subject_id is empty"),
    ],
)
def test_fill_log_errors_name_the_row(tmp_path, body, match):
    path = tmp_path / "phantom_fills.csv"
    path.write_text(HEAD + body)
    with pytest.raises(CalibrationError, match=match):
        load_phantom_fills(path)


def test_fill_log_empty_cells_and_missing_columns(tmp_path):
    path = tmp_path / "phantom_fills.csv"
    path.write_text("\ufeff" + HEAD + "A, Uniform_Cylinder ,,,,\n\n")
    assert load_phantom_fills(path) == {"A": PhantomFill("A", "uniform_cylinder")}
    path.write_text("subject_id,phantom_type,total_activity_mbq\nA,uniform_cylinder,500\n")
    with pytest.raises(CalibrationError, match="missing column"):
        load_phantom_fills(path)
    with pytest.raises(CalibrationError, match="cannot open"):
        load_phantom_fills(tmp_path / "nope.csv")
