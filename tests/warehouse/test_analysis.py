"""Dose-effect models recover known parameters from data simulated with fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from rntflow.analysis.arm_comparison import compare_arms
from rntflow.analysis.dose_logistic import fit_logistic_dose, lesion_response_fit, logistic_d50_point
from rntflow.analysis.population_kinetics import population_kinetics
from rntflow.analysis.site_effect import dose_response_by_site, per_site_d50, site_effect_test
from rntflow.analysis.survival import pfs_vs_dose

# Kidney-like NTCP: kidney limits 23-40 Gy (de Wit-van der Veen, de Vries-Huizing and Stokkel, "Current status
# of clinical dosimetry and personalized radionuclide therapy", NKI Amsterdam review).
D50_GY, GAMMA50 = 28.0, 1.8


def simulate(n: int, seed: int, d50: float = D50_GY, gamma50: float = GAMMA50, spread: float = 0.35):
    rng = np.random.default_rng(seed)
    dose = rng.lognormal(math.log(d50), spread, n)
    p = 1.0 / (1.0 + (d50 / dose) ** (4 * gamma50))
    return dose, (rng.random(n) < p).astype(int)


def test_ntcp_fit_recovers_known_parameters_within_ci():
    dose, y = simulate(600, seed=20260101)
    fit = fit_logistic_dose(dose, y)
    assert fit.converged and fit.n == 600
    assert fit.d50_ci_gy[0] < D50_GY < fit.d50_ci_gy[1]
    assert fit.gamma50_ci[0] < GAMMA50 < fit.gamma50_ci[1]
    # the intervals are informative (not trivially wide): a few Gy, a fraction of gamma50
    assert fit.d50_ci_gy[1] - fit.d50_ci_gy[0] < 5.0
    assert fit.gamma50_ci[1] - fit.gamma50_ci[0] < 1.5
    assert fit.probability(fit.d50_gy) == pytest.approx(0.5)


def test_mle_equals_logistic_regression_in_log_dose():
    """P = expit(4 gamma50 (ln D - ln D50)) is a logistic regression in ln D (independent check)."""
    dose, y = simulate(300, seed=5)
    fit = fit_logistic_dose(dose, y)
    a, b = sm.Logit(y, sm.add_constant(np.log(dose))).fit(disp=0).params
    assert fit.gamma50 == pytest.approx(b / 4, rel=1e-6)
    assert fit.d50_gy == pytest.approx(math.exp(-a / b), rel=1e-6)


def test_profile_ci_coverage_is_near_nominal():
    """Over 200 simulated trials the 95 % profile interval covers the truth 90-99 % of the time."""
    covered_d50 = covered_g = 0
    reps = 200
    for seed in range(reps):
        fit = fit_logistic_dose(*simulate(150, seed=1000 + seed))
        covered_d50 += fit.d50_ci_gy[0] <= D50_GY <= fit.d50_ci_gy[1]
        covered_g += fit.gamma50_ci[0] <= GAMMA50 <= fit.gamma50_ci[1]
    assert 0.90 <= covered_d50 / reps <= 0.99
    assert 0.90 <= covered_g / reps <= 0.99


def test_degenerate_data_do_not_converge():
    assert not fit_logistic_dose([10, 20, 30], [0, 0, 0]).converged
    assert not fit_logistic_dose([10, 20, 30, 40], [0, 0, 1, 1]).converged  # complete separation


def _multisite(scale_site_d: float, seed: int) -> pd.DataFrame:
    dose, y = simulate(800, seed=seed)
    sites = np.repeat(["SITE01", "SITE02", "SITE03", "SITE04"], 200)
    reported = np.where(sites == "SITE04", dose * scale_site_d, dose)  # a calibration error at one site
    return pd.DataFrame({"cumulative_dose_gy": reported, "effect": y, "site_id": sites})


def test_per_site_fits_and_site_effect_detects_a_miscalibrated_site():
    df = _multisite(1.4, seed=11)
    fits = dose_response_by_site(df).set_index("site_id")
    assert list(fits.index) == ["pooled", "SITE01", "SITE02", "SITE03", "SITE04"]
    assert fits.loc["SITE04", "d50_ci_low_gy"] < 1.4 * D50_GY < fits.loc["SITE04", "d50_ci_high_gy"]
    assert fits.loc["SITE01", "d50_ci_low_gy"] < D50_GY < fits.loc["SITE01", "d50_ci_high_gy"]
    test = site_effect_test(df)
    assert test.dof == 3 and test.p_value < 0.001
    assert test.site_dose_scale["SITE04"] / test.site_dose_scale["SITE01"] == pytest.approx(1.4, rel=0.1)
    loo = test.leave_one_out.set_index("site_id")
    assert loo.loc["SITE04", "d50_change_pct"] < -3  # removing the biased site lowers the pooled D50


def test_site_effect_not_flagged_for_harmonised_sites():
    test = site_effect_test(_multisite(1.0, seed=12))
    assert test.p_value > 0.05
    assert max(abs(v - 1) for v in test.site_dose_scale.values()) < 0.1


def test_lesion_response_fit_uses_cr_pr_as_responders():
    dose, y = simulate(400, seed=3, d50=80.0, gamma50=1.2, spread=0.6)
    rng = np.random.default_rng(4)
    response = np.where(y == 1, rng.choice(["CR", "PR"], len(y)), rng.choice(["SD", "PD"], len(y)))
    df = pd.DataFrame({"endpoint": "lesion_response", "cumulative_dose_gy": dose, "response": response})
    fit = lesion_response_fit(df)
    assert fit.d50_ci_gy[0] < 80.0 < fit.d50_ci_gy[1]
    assert fit.gamma50_ci[0] < 1.2 < fit.gamma50_ci[1]


def test_pfs_kaplan_meier_medians_and_cox_direction():
    """Exponential PFS: KM median -> ln2 / hazard (law of the exponential distribution)."""
    rng = np.random.default_rng(8)
    n = 2000
    dose = rng.uniform(20, 120, n)
    hazard_per_month = np.where(dose > np.median(dose), 0.05, 0.10)
    t = rng.exponential(1 / hazard_per_month)
    censor = 60.0
    df = pd.DataFrame(
        {"cumulative_dose_gy": dose, "time_to_event_months": np.minimum(t, censor), "event": (t < censor).astype(int)}
    )
    res = pfs_vs_dose(df)
    groups = res.groups.set_index("group")
    assert groups.loc["low", "median_pfs_months"] == pytest.approx(math.log(2) / 0.10, rel=0.12)
    assert groups.loc["high", "median_pfs_months"] == pytest.approx(math.log(2) / 0.05, rel=0.12)
    assert res.logrank_p < 1e-6
    assert res.cox_hr_per_10gy < 1 and res.cox_hr_ci_per_10gy[1] < 1
    assert groups["n"].sum() == n


def test_population_kinetics_excludes_single_time_point_models():
    tac = pd.DataFrame(
        {
            "voi": ["Kidney_L"] * 6 + ["Liver"] * 3,
            "model": ["bi_exp"] * 4 + ["madsen", "hanscheid"] + ["mono_exp"] * 3,
            "effective_half_life_h": [40.0, 45.0, 50.0, 55.0, 999.0, 999.0, 60.0, 70.0, None],
        }
    )
    out = population_kinetics(tac).set_index("voi")
    kid = np.array([40.0, 45.0, 50.0, 55.0])
    assert out.loc["Kidney_L", "n"] == 4 and out.loc["Liver", "n"] == 2
    assert out.loc["Kidney_L", "median_h"] == pytest.approx(np.median(kid))
    assert out.loc["Kidney_L", "iqr_h"] == pytest.approx(np.percentile(kid, 75) - np.percentile(kid, 25))


def test_point_d50_equals_the_full_fit_and_per_site_d50_recovers_a_site_scale():
    df = _multisite(1.25, seed=21)
    full = fit_logistic_dose(df["cumulative_dose_gy"], df["effect"])
    assert logistic_d50_point(df["cumulative_dose_gy"], df["effect"]) == pytest.approx(full.d50_gy, rel=1e-9)
    assert math.isnan(logistic_d50_point([10, 20, 30, 40], [0, 0, 1, 1]))  # separated
    sites = per_site_d50(df["cumulative_dose_gy"], df["effect"], df["site_id"])
    others = math.exp(np.mean([math.log(sites[s]) for s in ("SITE01", "SITE02", "SITE03")]))
    assert sites["SITE04"] / others == pytest.approx(1.25, rel=0.1)


def test_compare_arms_on_the_same_outcomes():
    """Doses of one site scaled by k in the second arm: per-site dose ratio k exactly, the
    other sites 1, and the pooled D50 moves towards k (a quarter of the data is scaled)."""
    dose, y = simulate(800, seed=31)
    sites = np.repeat(["SITE01", "SITE02", "SITE03", "SITE04"], 200)
    first = pd.DataFrame(
        {
            "subject_id": [f"S{i}" for i in range(800)],
            "endpoint": "nephrotoxicity",
            "lesion_voi": None,
            "site_id": sites,
            "effect": y,
            "cumulative_dose_gy": dose,
        }
    )
    second = first.assign(cumulative_dose_gy=np.where(sites == "SITE02", 1.3 * dose, dose))
    cmp = compare_arms(first, second)
    ratio = cmp.site_dose_ratio.set_index("site_id")["dose_ratio_median"]
    assert ratio["SITE02"] == pytest.approx(1.3) and ratio.drop("SITE02").tolist() == pytest.approx([1, 1, 1])
    assert 1.02 < cmp.d50_ratio < 1.3
    fits = cmp.fits.set_index("arm")
    assert fits.loc["vendor face value", "site_effect_p"] < fits.loc["cross-calibrated", "site_effect_p"]
    assert list(fits["n"]) == [800, 800]


def test_pfs_cox_under_separation_is_reported_not_estimable():
    """Every event at the low doses, none above: the Cox MLE is at infinity."""
    df = pd.DataFrame(
        {
            "cumulative_dose_gy": [10, 12, 14, 40, 45, 50],
            "time_to_event_months": [3, 4, 5, 24, 24, 24],
            "event": [1, 1, 1, 0, 0, 0],
        }
    )
    res = pfs_vs_dose(df)
    assert not res.cox_converged and math.isnan(res.cox_hr_per_10gy)
    assert res.logrank_p < 0.05


def test_compare_arms_refuses_several_rows_per_outcome():
    df = pd.DataFrame(
        {
            "subject_id": ["S1", "S1"],
            "endpoint": "nephrotoxicity",
            "lesion_voi": None,
            "site_id": "SITE01",
            "effect": [1, 1],
            "cumulative_dose_gy": [10.0, 11.0],
            "engine": ["organ", "voxel_dpk"],
        }
    )
    with pytest.raises(ValueError, match="one engine per target"):
        compare_arms(df, df)
