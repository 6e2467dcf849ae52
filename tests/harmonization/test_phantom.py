"""Phantom analysis against synthetic phantoms with a known truth.

Synthetic images: the object is voxelised with partial-volume fractions (5^3 subsamples),
blurred with a Gaussian of known FWHM and given Poisson noise. Tolerances are defended
next to each assertion.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from scipy import ndimage

from rntflow.core.errors import CalibrationError
from rntflow.harmonization.cylinder import analyse_uniform_cylinder, to_bq_per_ml
from rntflow.harmonization.filter import harmonising_filter
from rntflow.harmonization.nema import NemaTruth, analyse_nema_phantom, locate_nema_spheres, nema_true_concentrations
from rntflow.physics.decay import activity_at, decay_integral_s
from rntflow.physics.recovery import FWHM_PER_SIGMA, rc_blurred_sphere, sphere_volume_ml

from .conftest import LU177_HALF_LIFE_S, nema_phantom, sphere_fraction, uniform_cylinder_counts

SP = (4.8, 4.8, 4.8)
VOXEL_MM = 4.8


def effective_fwhm_mm(fwhm_mm: float, voxel_mm: float = VOXEL_MM) -> float:
    """Gaussian FWHM plus the two voxel box-car blurs of the test (voxelised object and
    partial-voxel VOI weights), each of variance voxel^2/12 per axis."""
    sigma2 = (fwhm_mm / FWHM_PER_SIGMA) ** 2 + 2 * voxel_mm**2 / 12
    return math.sqrt(sigma2) * FWHM_PER_SIGMA


# ----------------------------------------------------------------------------- decay


def test_decay_integral_law():
    # exact integral: T for lambda T -> 0; T_half / ln2 for T -> infinity (mean life)
    assert decay_integral_s(1.0, LU177_HALF_LIFE_S) == pytest.approx(
        1.0 - 0.5 * math.log(2) / LU177_HALF_LIFE_S, rel=1e-12
    )
    assert decay_integral_s(1e9, 3600.0) == pytest.approx(3600.0 / math.log(2), rel=1e-9)
    # one half-life: integral = T_half / (2 ln 2)
    assert decay_integral_s(3600.0, 3600.0) == pytest.approx(3600.0 / (2 * math.log(2)), rel=1e-12)
    assert activity_at(100.0, datetime(2026, 1, 1), datetime(2026, 1, 1, 1), 3600.0) == pytest.approx(50.0)


# ----------------------------------------------------------------------------- uniform cylinder


def test_sensitivity_recovered_with_decay_during_acquisition():
    # a short half-life (2 h) and a 60 min scan make the decay correction 16 %: ignoring it
    # would be far outside the 2 % tolerance; Poisson on ~1e7 counts is 0.03 %, and the
    # 3-FWHM VOI captures the spill-out beyond 99.9 % (Gaussian tail beyond 3 FWHM ~ 0).
    rng = np.random.default_rng(11)
    s_true, a0_mbq, t_s, th_s = 12.0, 500.0, 3600.0, 7200.0
    counts = s_true * a0_mbq * decay_integral_s(t_s, th_s)
    img = uniform_cylinder_counts(counts, 15.0, rng)
    res = analyse_uniform_cylinder(img, SP, t_s, a0_mbq, "CNTS", th_s, system_fwhm_mm=15.0)
    assert res.sensitivity_cps_per_mbq == pytest.approx(s_true, rel=0.02)
    naive = res.voi_total / (a0_mbq * t_s)
    assert abs(naive / s_true - 1) > 0.1  # the exact integral matters here
    assert res.standard_uncertainty < 0.01 * s_true
    assert res.rel_uncertainty_poisson == pytest.approx(1 / math.sqrt(res.voi_total))
    # phantom volume ~ pi 108^2 186 mm^3 = 6.8 L (threshold at 50 % of the blurred edge)
    assert res.phantom_volume_ml == pytest.approx(math.pi * 108**2 * 186 / 1000, rel=0.05)


def test_small_voi_would_miss_spill_out():
    # law check: with a VOI equal to the physical cylinder (margin 0) the sum loses the
    # spill-out; our 3-FWHM VOI must be larger than this by > 5 % at 15 mm FWHM
    rng = np.random.default_rng(12)
    img = uniform_cylinder_counts(1e7, 15.0, rng)
    full = analyse_uniform_cylinder(img, SP, 1000.0, 100.0, "CNTS", LU177_HALF_LIFE_S, system_fwhm_mm=15.0)
    tight = analyse_uniform_cylinder(
        img, SP, 1000.0, 100.0, "CNTS", LU177_HALF_LIFE_S, system_fwhm_mm=15.0, voi_margin_fwhm=0.0
    )
    assert full.voi_total > 1.05 * tight.voi_total
    assert full.voi_total == pytest.approx(img.sum(), rel=1e-3)


def test_vendor_scale_factor_for_bqml():
    rng = np.random.default_rng(13)
    a0_mbq, scale_true = 400.0, 0.92
    img = uniform_cylinder_counts(1e7, 12.0, rng)  # shape only
    voxel_ml = VOXEL_MM**3 / 1000
    img *= scale_true * a0_mbq * 1e6 / (img.sum() * voxel_ml)  # -> Bq/mL reading 92 % of truth
    res = analyse_uniform_cylinder(
        img, SP, 1200.0, a0_mbq, "BQML", LU177_HALF_LIFE_S, system_fwhm_mm=12.0, total_counts=1e7
    )
    assert res.vendor_scale_factor == pytest.approx(scale_true, rel=0.02)
    assert res.sensitivity_cps_per_mbq is None


@pytest.mark.parametrize("activity", [None, 0.0])
def test_cylinder_without_activity_is_clear_error(activity):
    img = uniform_cylinder_counts(1e6, 15.0, np.random.default_rng(1))
    with pytest.raises(CalibrationError, match="no activity information"):
        analyse_uniform_cylinder(img, SP, 1000.0, activity, "CNTS", LU177_HALF_LIFE_S)


@pytest.mark.parametrize("img", [np.zeros((20, 20, 20)), np.zeros((0, 5, 5)), np.full((5, 5, 5), np.nan)])
def test_empty_image_is_clear_error(img):
    with pytest.raises(CalibrationError):
        analyse_uniform_cylinder(img, SP, 1000.0, 100.0, "CNTS", LU177_HALF_LIFE_S)


def test_truncated_cylinder_is_error():
    img = uniform_cylinder_counts(1e6, 10.0, np.random.default_rng(1), shape=(30, 80, 80))  # 144 mm < 186 mm
    with pytest.raises(CalibrationError, match="field of view"):
        analyse_uniform_cylinder(img, SP, 1000.0, 100.0, "CNTS", LU177_HALF_LIFE_S)


def test_to_bq_per_ml_inverts_sensitivity():
    s, t_s = 10.0, 1800.0
    voxel_ml = 0.11
    c_bq_per_ml = 5000.0
    counts = s * (c_bq_per_ml * voxel_ml * 1e-6) * decay_integral_s(t_s, LU177_HALF_LIFE_S)
    out = to_bq_per_ml(np.array([counts]), "CNTS", voxel_ml, t_s, LU177_HALF_LIFE_S, sensitivity_cps_per_mbq=s)
    assert out[0] == pytest.approx(c_bq_per_ml, rel=1e-12)
    with pytest.raises(CalibrationError):
        to_bq_per_ml(np.array([1.0]), "CNTS", voxel_ml)
    with pytest.raises(CalibrationError):
        to_bq_per_ml(np.array([1.0]), "CNTS", voxel_ml, t_s, LU177_HALF_LIFE_S, sensitivity_cps_per_mbq=-s)


def test_to_bq_per_ml_corrects_decay_during_a_long_acquisition():
    # law: 1 MBq in a 1 mL voxel seen at 10 cps/MBq for 20 h of 90Y (ICRP-107 64.1 h) gives
    # 10 * (1 - exp(-lambda T)) / lambda counts (exact integral of A0 exp(-lambda t)), by hand
    # 6.47e5 counts, 10 % fewer than the 7.2e5 of a source that did not decay
    th_s, t_s = 64.1 * 3600.0, 20 * 3600.0
    lam = math.log(2) / th_s
    counts = 10.0 * 1.0 * (1 - math.exp(-lam * t_s)) / lam
    assert counts == pytest.approx(6.47e5, rel=1e-3)
    out = to_bq_per_ml(np.array([counts]), "cnts", 1.0, t_s, th_s, sensitivity_cps_per_mbq=10.0)
    assert out[0] == pytest.approx(1e6, rel=1e-9)
    naive = counts / (10.0 * t_s) * 1e6  # ignoring the decay during the scan
    assert naive < 0.95e6


def test_to_bq_per_ml_divides_vendor_values_by_the_scale_factor():
    # a vendor reading 10 % high (measured / true = 1.1) is brought back to the truth
    assert to_bq_per_ml(np.array([110.0]), "BQML", 0.1, vendor_scale_factor=1.1)[0] == pytest.approx(100.0)
    assert to_bq_per_ml(np.array([110.0]), "BQML", 0.1)[0] == 110.0  # no cross-calibration: face value
    for bad in (0.0, -1.1):
        with pytest.raises(CalibrationError):
            to_bq_per_ml(np.array([1.0]), "BQML", 0.1, vendor_scale_factor=bad)
    with pytest.raises(CalibrationError):
        to_bq_per_ml(np.array([1.0]), "Bq/mL", 0.1)


# ----------------------------------------------------------------------------- analytic RC


@pytest.mark.parametrize("d_mm, fwhm_mm", [(20.0, 10.0), (10.0, 12.0)])
def test_blurred_sphere_rc_matches_numerical_convolution(d_mm, fwhm_mm):
    # independent check of the overlap-volume integral: voxelise the sphere on a 0.5 mm
    # grid, blur numerically, average over the sphere. Grid discretisation ~0.5 %.
    h = 0.5
    n = int((d_mm + 6 * fwhm_mm) / h)
    c = np.full(3, (n - 1) * h / 2)
    f = sphere_fraction((n, n, n), h, c, d_mm / 2, sub=3)
    blurred = ndimage.gaussian_filter(f, fwhm_mm / FWHM_PER_SIGMA / h, mode="constant")
    numeric = (blurred * f).sum() / f.sum()
    assert rc_blurred_sphere(d_mm, fwhm_mm) == pytest.approx(numeric, abs=0.01)


def test_blurred_sphere_rc_limits():
    assert rc_blurred_sphere(37.0, 0.0) == 1.0
    assert rc_blurred_sphere(37.0, 0.01) == pytest.approx(1.0, abs=1e-3)
    assert rc_blurred_sphere(200.0, 10.0) > 0.9
    assert rc_blurred_sphere(5.0, 50.0) < 0.01
    rcs = [rc_blurred_sphere(d, 12.0) for d in (10, 13, 17, 22, 28, 37)]
    assert all(a < b for a, b in zip(rcs, rcs[1:]))


# ----------------------------------------------------------------------------- NEMA


def _noisy_nema(fwhm_mm, seed, **kw):
    # 0.2 counts per Bq/mL at 1000 Bq/mL background: 200 counts/voxel (7 % noise per voxel)
    return nema_phantom(fwhm_mm, 8.0, 1000.0, np.random.default_rng(seed), counts_per_unit=0.2, **kw)


@pytest.mark.parametrize("handed, theta0", [(1, 0.3), (-1, 2.0)])
def test_nema_rc_matches_blurred_sphere_model(handed, theta0):
    # Truth: RC = 1/SBR + (1 - 1/SBR) RC0(d, FWHM_eff) for a hot sphere in a warm background,
    # FWHM_eff including the test's voxelisation. Tolerance 0.05 (the half-width of the trial's
    # reference RC bands) for d >= 17 mm.
    img, centres = _noisy_nema(12.0, 3 + handed, handed=handed, theta0=theta0)
    truth = NemaTruth(1000.0, 8000.0, 8.0)
    res = analyse_nema_phantom(img, SP, truth)
    fe = effective_fwhm_mm(12.0)
    for s, c in zip(res.spheres, centres):
        assert np.linalg.norm(np.array(s.centre_zyx_mm) - c) < 2.0  # located within 2 mm
        if s.diameter_mm >= 17:
            expected = 1 / 8 + (7 / 8) * rc_blurred_sphere(s.diameter_mm, fe)
            assert s.rc == pytest.approx(expected, abs=0.05)
            # background-relative RC: background measured within ~1 % here
            assert s.rc_background_relative == pytest.approx(s.rc, rel=0.03)
    assert res.rc_curve.fwhm_mm == pytest.approx(fe, abs=1.0)
    assert res.rc_curve.amplitude == pytest.approx(1.0, abs=0.05)
    v37 = float(sphere_volume_ml(37.0))
    assert res.rc_curve(v37) == pytest.approx(res.spheres[-1].rc, abs=0.03)
    assert res.rc_curve(v37, sbr=math.inf) == pytest.approx(
        res.rc_curve.amplitude * rc_blurred_sphere(37.0, res.rc_curve.fwhm_mm)
    )


def test_nema_true_concentrations():
    ref = datetime(2026, 3, 1, 8, 0)
    t = nema_true_concentrations(100.0, ref, ref + timedelta(seconds=LU177_HALF_LIFE_S), 9700.0, 4.0, LU177_HALF_LIFE_S)
    v_sph = float(sum(sphere_volume_ml(d) for d in (10, 13, 17, 22, 28, 37)))
    assert float(sphere_volume_ml(37.0)) == pytest.approx(26.52, abs=0.01)  # pi d^3 / 6
    assert t.background_bq_per_ml == pytest.approx(50e6 / (9700 + 4 * v_sph))
    assert t.sphere_bq_per_ml == pytest.approx(4 * t.background_bq_per_ml)
    with pytest.raises(CalibrationError, match="no activity information"):
        nema_true_concentrations(None, ref, ref, 9700.0, 4.0, LU177_HALF_LIFE_S)


def test_sphere_outside_fov_is_clear_error():
    # sphere plane ~10 mm from the top edge of the axial FOV (inside the body): the 37 mm
    # sphere (radius 18.5 mm) is cut
    img, _ = nema_phantom(10.0, 8.0, 1000.0, None, shape=(40, 80, 80), plane_z_mm=39 * 4.8 - 8.0)
    with pytest.raises(CalibrationError, match="outside the field of view"):
        locate_nema_spheres(img, SP)


def test_nema_without_spheres_is_clear_error():
    img, _ = nema_phantom(10.0, 1.0, 1000.0, None)  # SBR 1: nothing hot
    with pytest.raises(CalibrationError, match="no hot spheres"):
        analyse_nema_phantom(
            img + np.random.default_rng(0).normal(0, 10.0, img.shape), SP, NemaTruth(1000.0, 1000.0, 1.0)
        )


# ----------------------------------------------------------------------------- harmonising filter


def _band_for(fwhm_ref_mm: float, half_width: float = 0.05) -> dict[str, tuple[float, float]]:
    fe = effective_fwhm_mm(fwhm_ref_mm)
    band = {}
    for d in (17, 22, 28, 37):
        rc = 1 / 8 + 7 / 8 * rc_blurred_sphere(d, fe)
        band[str(d)] = (rc - half_width, rc + half_width)
    return band


def test_harmonising_filter_brings_sharp_site_to_reference():
    # Gaussians add in quadrature: a 8 mm site needs sqrt(16^2 - 8^2) = 13.9 mm to look like
    # a 16 mm reference. The band (+-0.05) admits a range of filters: accept +-3 mm.
    img, _ = _noisy_nema(8.0, 21)
    truth = NemaTruth(1000.0, 8000.0, 8.0)
    nema = analyse_nema_phantom(img, SP, truth)
    res = harmonising_filter(img, SP, nema, _band_for(16.0))
    assert res.status == "filter"
    assert res.fwhm_mm == pytest.approx(math.sqrt(16**2 - 8**2), abs=3.0)
    assert all(lo <= res.rc_after[d] <= hi for d, (lo, hi) in res.band.items())
    assert any(res.rc_before[d] > hi for d, (lo, hi) in res.band.items())


def test_harmonising_filter_fails_for_blurry_site_and_passes_reference():
    truth = NemaTruth(1000.0, 8000.0, 8.0)
    img, _ = _noisy_nema(22.0, 22)
    res = harmonising_filter(img, SP, analyse_nema_phantom(img, SP, truth), _band_for(14.0))
    assert res.status == "fail" and res.fwhm_mm is None and "below" in res.message
    img, _ = _noisy_nema(14.0, 23)
    res = harmonising_filter(img, SP, analyse_nema_phantom(img, SP, truth), _band_for(14.0))
    assert res.status == "pass" and res.fwhm_mm == 0.0


def test_band_with_unknown_sphere_is_error():
    img, _ = _noisy_nema(12.0, 5)
    truth = NemaTruth(1000.0, 8000.0, 8.0)
    with pytest.raises(CalibrationError, match="does not have"):
        harmonising_filter(img, SP, analyse_nema_phantom(img, SP, truth), {"50": (0.5, 0.9)})


# ----------------------------------------------------------------------------- through DICOM


def test_uniform_cylinder_through_dicom_file(tmp_path):
    # the whole chain on a file written with the trial's NM conventions: header timing and
    # activity -> activity at acquisition start -> sensitivity (within 2 %)
    import pydicom

    from rntflow.harmonization.headers import nm_to_image, parse_nm_header
    from rntflow.harmonization.phantom import array_and_spacing

    from .conftest import make_nm_dataset

    ref = datetime(2026, 3, 1, 8, 0)
    acq = ref + timedelta(hours=3)
    a_ref_mbq, s_true = 800.0, 9.5
    a0 = activity_at(a_ref_mbq, ref, acq, LU177_HALF_LIFE_S)
    counts = s_true * a0 * decay_integral_s(60 * 20.0, LU177_HALF_LIFE_S)
    img = uniform_cylinder_counts(counts, 14.0, np.random.default_rng(31), shape=(60, 80, 80))
    assert img.max() < 65535
    ds = make_nm_dataset(img.astype(np.uint16), units="CNTS", acq_start=acq, admin=ref, activity_mbq=a_ref_mbq)
    path = tmp_path / "qc_cyl.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    hdr = parse_nm_header(back)
    arr, sp = array_and_spacing(nm_to_image(back))
    a0_hdr = activity_at(
        hdr.administered_activity_mbq, hdr.administration_datetime, hdr.acquisition_start, hdr.radionuclide_half_life_s
    )
    res = analyse_uniform_cylinder(
        arr, sp, hdr.acquisition_duration_s, a0_hdr, hdr.units, hdr.radionuclide_half_life_s, system_fwhm_mm=14.0
    )
    assert res.sensitivity_cps_per_mbq == pytest.approx(s_true, rel=0.02)


def _through_dicom(img: np.ndarray, path, acq: datetime, ref: datetime, a_ref_mbq: float):
    """Header, (z, y, x) array and spacing of ``img`` written and read back as a trial NM file."""
    import pydicom

    from rntflow.harmonization.headers import nm_to_image, parse_nm_header
    from rntflow.harmonization.phantom import array_and_spacing

    from .conftest import make_nm_dataset

    assert img.max() < 65535
    make_nm_dataset(
        np.rint(img).astype(np.uint16), units="CNTS", acq_start=acq, admin=ref, activity_mbq=a_ref_mbq
    ).save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    return (parse_nm_header(back), *array_and_spacing(nm_to_image(back)))


def test_phantom_studies_cylinder_then_nema(tmp_path):
    # the glue (header + fill log -> checks -> calibration): the cylinder gives the sensitivity
    # (within 2 %, as above), the NEMA study uses it to put its image in Bq/mL, so its RCs
    # match the blurred-sphere model within the 0.05 of the tests above (the 2 % calibration
    # error moves an RC of 0.8 by 0.016) and the fitted FWHM is within 1.5 mm of the truth
    from rntflow.core.fills import PhantomFill
    from rntflow.harmonization.phantom_study import analyse_nema_study, calibrate_uniform_cylinder

    ref = datetime(2026, 3, 1, 8, 0)
    acq = ref + timedelta(hours=3)
    s_true, tau_s = 9.5, decay_integral_s(60 * 20.0, LU177_HALF_LIFE_S)
    a_cyl = 800.0
    counts = s_true * activity_at(a_cyl, ref, acq, LU177_HALF_LIFE_S) * tau_s
    cyl = uniform_cylinder_counts(counts, 12.0, np.random.default_rng(41), shape=(60, 80, 80))
    hdr, arr, sp = _through_dicom(cyl, tmp_path / "cyl.dcm", acq, ref, a_cyl)
    fill = PhantomFill("SITE01-PH-CYL", "uniform_cylinder", a_cyl, ref, math.pi * 108**2 * 186 / 1000)
    res = calibrate_uniform_cylinder(hdr, arr, sp, fill, site_id="SITE01", protocol_name="P")
    assert [c.check for c in res.checks] == [
        "phantom_type",
        "phantom_header",
        "phantom_scatter_correction",
        "phantom_reference_time",
        "phantom_activity",
        "phantom_fov",
        "phantom_volume",
        "phantom_sensitivity",
        "cylinder_edge_resolution",
    ]
    assert res.status == "pass", res.checks
    assert res.calibration.sensitivity_cps_per_mbq == pytest.approx(s_true, rel=0.02)
    # until the NEMA phantom arrives the recovery FWHM is the cylinder edge's (voxel-averaged
    # test image: the box of the 4.8 mm voxel adds its variance)
    assert res.calibration.rc_fwhm_source == "cylinder_edge"
    assert res.calibration.rc_fwhm_mm == pytest.approx(effective_fwhm_mm(12.0), rel=0.10)
    wrong = calibrate_uniform_cylinder(
        hdr, arr, sp, PhantomFill("X", "nema_iec_body", a_cyl, ref, 9700.0, 8.0), site_id="SITE01", protocol_name="P"
    )
    assert wrong.calibration is None and wrong.check("phantom_type").status == "fail"

    v_bg_ml = 9700.0
    nema_fill = PhantomFill("SITE01-PH-NEMA", "nema_iec_body", 1600.0, ref, v_bg_ml, 8.0)
    truth = nema_true_concentrations(1600.0, ref, acq, v_bg_ml, 8.0, LU177_HALF_LIFE_S)
    bg_counts = s_true * truth.background_bq_per_ml * 1e-6 * VOXEL_MM**3 / 1000 * tau_s
    img, _ = nema_phantom(12.0, 8.0, bg_counts, None)
    hdr, arr, sp = _through_dicom(np.random.default_rng(42).poisson(img), tmp_path / "nema.dcm", acq, ref, 1600.0)
    band = _band_for(12.0)
    res = analyse_nema_study(
        hdr,
        arr,
        sp,
        nema_fill,
        site_id="SITE01",
        calibration=res.calibration,
        reference_rc_band=band,
        protocol_name="P",
    )
    assert res.status == "pass", res.checks
    assert res.check("harmonising_filter").value_found == "no filter needed"
    assert res.calibration.rc_fwhm_mm == pytest.approx(effective_fwhm_mm(12.0), abs=1.5)
    assert res.calibration.rc_fwhm_source == "nema"  # the NEMA RC curve wins
    assert res.calibration.filter_fwhm_mm == 0.0
    fe = effective_fwhm_mm(12.0)
    for row in res.spheres:
        if row.sphere_diameter_mm >= 17:
            expected = 1 / 8 + 7 / 8 * rc_blurred_sphere(row.sphere_diameter_mm, fe)
            assert row.recovery_coefficient == pytest.approx(expected, abs=0.05)
            assert row.in_reference_band is True
            assert row.recovery_coefficient_harmonised == row.recovery_coefficient
        else:
            assert row.in_reference_band is None
    uncalibrated = analyse_nema_study(
        hdr, arr, sp, nema_fill, site_id="SITE01", calibration=None, reference_rc_band=band, protocol_name="P"
    )
    assert uncalibrated.calibration is None and uncalibrated.check("phantom_calibration").status == "fail"
