"""TAC fits: analytic TIA integrals, recovery of known curves, fallbacks, single time point."""

import math

import numpy as np
import pytest
from scipy.integrate import quad

from rntflow.core.errors import KineticsError
from rntflow.dosimetry.kinetics import fit_tac, trapezoid_tia
from rntflow.dosimetry.single_time_point import haenscheid_tia, madsen_tia
from rntflow.physics.kinetic_models import model_activity_mbq, model_tia_mbq_h

LAM_LU = math.log(2) / 159.528  # ICRP-107 177Lu half-life (h)


@pytest.mark.parametrize(
    "model,params",
    [
        ("mono_exp", [1000.0, 0.02]),
        ("bi_exp_uptake", [1000.0, 0.02, 0.5]),
        ("bi_exp", [600.0, 0.01, 400.0, 0.2]),
        ("tri_exp", [600.0, 0.01, 400.0, 0.2, 1.5]),
    ],
)
def test_analytic_tia_equals_numeric_integral(model, params):
    # law of mathematics: the closed form equals the quadrature to 1e-6
    num, _ = quad(lambda t: model_activity_mbq(model, params, t), 0, np.inf, limit=200)
    assert model_tia_mbq_h(model, params) == pytest.approx(num, rel=1e-6)


def test_noise_free_mono_exp_recovered_exactly():
    t = np.array([4.0, 24.0, 96.0, 168.0])
    a = model_activity_mbq("mono_exp", [800.0, 0.015], t)
    fit = fit_tac(t, a, "Lu-177")
    assert fit.model == "mono_exp"
    assert fit.tia_mbq_h == pytest.approx(800.0 / 0.015, rel=1e-6)
    assert fit.effective_half_life_h == pytest.approx(math.log(2) / 0.015, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_noisy_bi_exp_tia_within_propagated_uncertainty():
    # 6 points allow bi_exp; with 3% noise the TIA must agree with truth within 3 sd
    rng = np.random.default_rng(7)
    t = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
    truth = [500.0, 0.01, 500.0, 0.2]
    a = model_activity_mbq("bi_exp", truth, t) * (1 + 0.03 * rng.standard_normal(t.size))
    fit = fit_tac(t, a, "Lu-177", activity_sd_mbq=0.03 * a)
    true_tia = model_tia_mbq_h("bi_exp", truth)
    assert set(fit.candidates) == {"mono_exp", "bi_exp_uptake", "bi_exp"}
    assert abs(fit.tia_mbq_h - true_tia) < 3 * fit.tia_sd_mbq_h
    assert 0 < fit.tia_sd_mbq_h < 0.2 * fit.tia_mbq_h


def test_covariance_sd_matches_monte_carlo():
    # the linearised TIA sd must match the spread of refits of noisy replicates (+-30%)
    rng = np.random.default_rng(3)
    t = np.array([4.0, 24.0, 72.0, 120.0, 168.0])
    clean = model_activity_mbq("mono_exp", [900.0, 0.02], t)
    sd = 0.05 * clean
    tias = [
        fit_tac(
            t, clean + sd * rng.standard_normal(t.size), "Lu-177", activity_sd_mbq=sd, models=["mono_exp"]
        ).tia_mbq_h
        for _ in range(150)
    ]
    predicted = fit_tac(t, clean, "Lu-177", activity_sd_mbq=sd, models=["mono_exp"]).tia_sd_mbq_h
    assert np.std(tias) == pytest.approx(predicted, rel=0.3)


def test_negative_time_raises():
    with pytest.raises(KineticsError):
        fit_tac([-1.0, 24.0, 96.0], [10.0, 8.0, 4.0], "Lu-177")


def test_non_positive_points_excluded_with_warning():
    t = [4.0, 24.0, 48.0, 96.0, 168.0]
    a = list(model_activity_mbq("mono_exp", [800.0, 0.015], np.array(t)))
    a[2] = 0.0
    fit = fit_tac(t, a, "Lu-177")
    assert any("excluded 1 non-positive" in w for w in fit.warnings)
    assert fit.tia_mbq_h == pytest.approx(800.0 / 0.015, rel=1e-6)


def test_non_decaying_curve_falls_back_to_physical_decay():
    t = np.array([4.0, 24.0, 96.0, 168.0])
    a = np.array([10.0, 20.0, 30.0, 40.0])  # still rising: no biological clearance seen
    fit = fit_tac(t, a, "Lu-177")
    assert fit.model == "trapezoid" and fit.fallback_reason
    # by hand: linear from 0, trapezoids, physical tail A_n / lambda_phys
    by_hand = 10 * 4 / 2 + (10 + 20) / 2 * 20 + (20 + 30) / 2 * 72 + (30 + 40) / 2 * 72 + 40 / LAM_LU
    assert fit.tia_mbq_h == pytest.approx(by_hand, rel=1e-4)


def test_trapezoid_constant_start_and_sd():
    fit = trapezoid_tia([2.0, 10.0], [5.0, 4.0], "Lu-177", start="constant", activity_sd_mbq=[1.0, 1.0])
    w0, w1 = 2.0 + 4.0, 4.0 + 1 / LAM_LU
    assert fit.tia_mbq_h == pytest.approx(5 * w0 + 4 * w1, rel=1e-4)
    assert fit.tia_sd_mbq_h == pytest.approx(math.hypot(w0, w1), rel=1e-4)


def test_haenscheid_exact_at_t_eff_and_two_t_eff():
    # Hänscheid 2018: A(t) 2t/ln2 equals A0/lambda for a mono-exponential at t = T_eff
    t_eff = 50.0
    lam = math.log(2) / t_eff
    a0 = 100.0
    true = a0 / lam
    for t in (t_eff, 2 * t_eff):
        est = haenscheid_tia(t, a0 * math.exp(-lam * t), t_eff).tia_mbq_h
        # at t = T_eff: A0/2 * 2T/ln2 = A0/lam exactly; at 2 T_eff: A0/4 * 4T/ln2 = A0/lam
        assert est == pytest.approx(true, rel=1e-12)
    assert haenscheid_tia(10.0, 5.0, t_eff).warnings  # 0.2 T_eff: outside 0.75-2.5
    assert not haenscheid_tia(60.0, 5.0, t_eff).warnings


def test_madsen_exact_for_population_half_life():
    lam = math.log(2) / 40.0
    assert madsen_tia(72.0, 300 * math.exp(-lam * 72.0), 40.0).tia_mbq_h == pytest.approx(300 / lam, rel=1e-12)
    with pytest.raises(KineticsError):
        madsen_tia(-1.0, 10.0, 40.0)


# ----------------------------------------------------------------------------- uptake with 4 points


def _uptake_curve(t_peak_h: float, lam_eff: float, a_peak: float = 500.0):
    """bi_exp_uptake A0 (exp(-l1 t) - exp(-l2 t)) with its maximum at t_peak_h."""
    from scipy.optimize import brentq

    # t_peak = ln(l2/l1)/(l2 - l1): solve for l2
    l2 = brentq(lambda l2: math.log(l2 / lam_eff) / (l2 - lam_eff) - t_peak_h, lam_eff * 1.0001, 50.0)
    a0 = a_peak / (math.exp(-lam_eff * t_peak_h) - math.exp(-l2 * t_peak_h))
    return [a0, lam_eff, l2]


@pytest.mark.parametrize("t_peak_h", [18.0, 24.0, 30.0])
def test_uptake_peak_after_first_scan_uses_uptake_model(t_peak_h):
    # lesion-like: uptake peaking around 24 h, effective half-life 60 h, scans at 4, 24, 96, 168 h
    lam = math.log(2) / 60.0
    params = _uptake_curve(t_peak_h, lam)
    t = np.array([4.0, 24.0, 96.0, 168.0])
    a = model_activity_mbq("bi_exp_uptake", params, t)
    true_tia = model_tia_mbq_h("bi_exp_uptake", params)
    fit = fit_tac(t, a, "Lu-177")
    assert fit.model == "uptake_mono_exp" and fit.peak_h == 24.0
    assert any("peak at 24 h" in w for w in fit.warnings)
    # the clearance is fitted from the peak on (24, 96, 168 h): the uptake term still lifts
    # the 24 h point a little, so T_eff reads at most ~20 % long (60 h true)
    assert 60.0 <= fit.effective_half_life_h < 1.2 * 60.0
    assert fit.tia_mbq_h == pytest.approx(true_tia, rel=0.05)
    # a mono-exponential over all 4 points is what the rule avoids: its half-life is far too long
    mono = fit_tac(t, a, "Lu-177", models=["mono_exp"])
    assert mono.effective_half_life_h > 1.5 * 60.0
    assert mono.effective_half_life_h - 60.0 > 3 * (fit.effective_half_life_h - 60.0)


def test_uptake_model_curve_and_uncertainty():
    lam = math.log(2) / 60.0
    t = np.array([4.0, 24.0, 96.0, 168.0])
    a = model_activity_mbq("bi_exp_uptake", _uptake_curve(24.0, lam), t)
    sd = 0.05 * a
    fit = fit_tac(t, a, "Lu-177", activity_sd_mbq=sd)
    assert fit.model == "uptake_mono_exp"
    assert np.all(np.isfinite(fit.activity_mbq(np.array([0.0, 10.0, 24.0, 200.0]))))
    assert fit.activity_mbq(0.0) == 0.0
    assert fit.activity_mbq(96.0) == pytest.approx(a[2], rel=0.05)
    # SD: trapezoid part + tail part, both from 5 % per point: a few % of the TIA
    assert 0.01 < fit.tia_sd_mbq_h / fit.tia_mbq_h < 0.08


def test_uptake_rule_not_applied_when_peak_first_or_enough_points():
    lam = math.log(2) / 60.0
    # peak before the first scan: ordinary AICc choice (mono_exp with 4 points)
    t = np.array([24.0, 48.0, 96.0, 168.0])
    a = model_activity_mbq("bi_exp_uptake", _uptake_curve(10.0, lam), t)
    assert fit_tac(t, a, "Lu-177").model == "mono_exp"
    # within noise of the first point (< 5 % rise): no uptake phase claimed
    t4 = np.array([4.0, 24.0, 96.0, 168.0])
    a4 = np.array([100.0, 103.0, 60.0, 30.0])
    assert fit_tac(t4, a4, "Lu-177").model == "mono_exp"
    # peak at the last-but-none point: fewer than 2 points from the peak
    assert fit_tac(t4, np.array([10.0, 20.0, 30.0, 40.0]), "Lu-177").model != "uptake_mono_exp"
    # 6 points: bi_exp_uptake has a defined AICc and competes as before
    t6 = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
    a6 = model_activity_mbq("bi_exp_uptake", _uptake_curve(24.0, lam), t6)
    assert fit_tac(t6, a6, "Lu-177").model in ("bi_exp_uptake", "tri_exp")
    # an explicit model list is honoured
    assert (
        fit_tac(
            t4, model_activity_mbq("bi_exp_uptake", _uptake_curve(24.0, lam), t4), "Lu-177", models=["mono_exp"]
        ).model
        == "mono_exp"
    )
