"""HTML reports: content, escaping, offline-ness, robustness, determinism and the TAC curves."""

# Over 600 lines on purpose: one module per user-facing product (its fixtures are shared by
# every test here); splitting it would repeat or scatter them.

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from rntflow.analysis.figures import svg_figure
from rntflow.analysis.report_values import NONE_TEXT
from rntflow.analysis.subject_report import subject_report_html
from rntflow.analysis.tac_curves import tac_curve
from rntflow.analysis.trial_report import trial_report_html
from rntflow.dosimetry.cycle import compute_cycle_dosimetry
from rntflow.dosimetry.cycle_types import CycleSettings, TimePoint, Voi
from rntflow.physics.ntcp import logistic_ntcp as ntcp_logistic

SUBJECT = "SITE01-S07"
SITE = "SITE01"
VERSION = "9.8.7-test"
BAD_VOI = "<b>x</b>"
LABEL = "nephrotoxicity vs dose_gy"


# ----------------------------------------------------------------------------- synthetic frames
def _doses() -> pd.DataFrame:
    rows = []
    for cycle, final in ((1, True), (2, None)):
        for voi, dose in (("Kidney_L", 4.321), (BAD_VOI, 12.5)):
            rows.append(
                {
                    "trial_id": "T",
                    "site_id": SITE,
                    "subject_id": SUBJECT,
                    "cycle": cycle,
                    "voi": voi,
                    "engine": "organ",
                    "method": "multi_time_point",
                    "dose_gy": dose * cycle,
                    "dose_sd_gy": 0.4,
                    "bed_gy": None if cycle == 2 else 1.1 * dose,
                    "mass_g": 150.0,
                    "tia_mbq_h": 12000.0,
                    "administered_activity_mbq": 7400.0,
                    "calibration_id": "CAL-1",
                    "final": final,
                }
            )
        # a provisional single-time-point result the multi-time-point one supersedes
        rows.append(
            {
                "trial_id": "T",
                "site_id": SITE,
                "subject_id": SUBJECT,
                "cycle": cycle,
                "voi": "Kidney_L",
                "engine": "organ",
                "method": "single_time_point_hanscheid",
                "dose_gy": 99.0,
                "dose_sd_gy": 9.9,
                "bed_gy": None,
                "mass_g": 150.0,
                "tia_mbq_h": 13000.0,
                "administered_activity_mbq": 7400.0,
                "calibration_id": "CAL-1",
                "final": False,
            }
        )
    return pd.DataFrame(rows)


def _timepoints() -> pd.DataFrame:
    rows = [
        {
            "subject_id": SUBJECT,
            "cycle": 1,
            "voi": voi,
            "study_id": f"ST{t}",
            "t_h": float(t),
            "activity_mbq": 100.0 * math.exp(-0.01 * t),
            "activity_sd_mbq": 4.0 if t < 96 else None,
            "volume_ml": 150.0,
            "mass_g": 150.0,
            "recovery_coefficient": 1.0,
            "calibration_id": "CAL-1",
        }
        for voi in ("Kidney_L", BAD_VOI)
        for t in (4, 24, 96)
    ]
    # cycle 2: points but no fit for Kidney_L
    rows += [{"subject_id": SUBJECT, "cycle": 2, "voi": "Kidney_L", "t_h": 24.0, "activity_mbq": 70.0}]
    return pd.DataFrame(rows)


def _fits() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "subject_id": SUBJECT,
                "cycle": 1,
                "voi": "Kidney_L",
                "model": "mono_exp",
                "params_json": json.dumps({"a0_mbq": 100.0, "lambda_per_h": 0.01}),
                "n_timepoints": 3,
                "aicc": -4.2,
                "r2": 0.998,
                "tia_mbq_h": 10000.0,
                "tia_sd_mbq_h": 250.0,
                "effective_half_life_h": 69.3,
                "fallback_reason": None,
            },
            {
                "subject_id": SUBJECT,
                "cycle": 1,
                "voi": BAD_VOI,
                "model": "trapezoid",
                "params_json": "{}",
                "n_timepoints": 3,
                "tia_mbq_h": 9000.0,
                "fallback_reason": "every model rejected",
            },
            # cycle 2: a fit but no points (single time point, Madsen)
            {
                "subject_id": SUBJECT,
                "cycle": 2,
                "voi": "Lesion_1",
                "model": "madsen",
                "params_json": json.dumps({"t_h": 24.0, "activity_mbq": 5.0, "t_eff_h": 80.0}),
                "n_timepoints": 1,
                "tia_mbq_h": 600.0,
                "effective_half_life_h": 80.0,
            },
        ]
    )


def _dvhs() -> pd.DataFrame:
    bins = np.arange(0.0, 10.0, 0.5)
    return pd.DataFrame(
        [
            {
                "subject_id": SUBJECT,
                "cycle": 1,
                "voi": voi,
                "engine": engine,
                "dose_bin_gy": b,
                "volume_fraction": max(0.0, 1.0 - b / 8.0),
            }
            for voi in ("Kidney_L", BAD_VOI)
            for engine in ("voxel_dpk", "voxel_led")
            for b in bins
        ]
    )


def _qa() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "check_name": "fit_r2",
                "scope": "voi",
                "scope_id": f"{SUBJECT}/1/Kidney_L",
                "status": "pass",
                "value_found": "0.998",
                "value_expected": ">= 0.9",
                "message": "PASS-MESSAGE",
                "subject_id": SUBJECT,
            },
            {
                "check_name": "calibration_age",
                "scope": "calibration",
                "scope_id": "CAL-1",
                "status": "warn",
                "value_found": "400 d",
                "value_expected": "<= 365 d",
                "message": "WARN-MESSAGE",
                "subject_id": None,
            },
            {
                "check_name": "energy_window",
                "scope": "study",
                "scope_id": "ST96",
                "status": "fail",
                "value_found": "15 %",
                "value_expected": "20 %",
                "message": "FAIL-MESSAGE",
                "subject_id": SUBJECT,
            },
            {
                "check_name": "fit_r2",
                "scope": "voi",
                "scope_id": "other",
                "status": "fail",
                "value_found": "0.1",
                "value_expected": ">= 0.9",
                "message": "OTHER-SUBJECT",
                "subject_id": "SITE02-S01",
            },
        ]
    )


def _calibrations() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "trial_id": "T",
                "site_id": SITE,
                "camera_id": "CAM-A",
                "calibration_id": "CAL-1",
                "radionuclide": "Lu-177",
                "protocol": "lu177-std",
                "valid_from": pd.Timestamp("2024-01-02", tz="UTC"),
                "sensitivity_cps_per_mbq": 9.87,
                "sensitivity_sd_cps_per_mbq": None,
                "bqml_scale_factor": None,
                "rc_fwhm_mm": 11.2,
            },
            {
                "trial_id": "T",
                "site_id": "SITE02",
                "camera_id": "CAM-B",
                "calibration_id": "CAL-UNUSED",
                "radionuclide": "Lu-177",
                "protocol": "lu177-std",
                "sensitivity_cps_per_mbq": 5.55,
            },
        ]
    )


def _subject_report(**overrides) -> str:
    kwargs = dict(
        trial_id="T-REPORT",
        site_id=SITE,
        subject_id=SUBJECT,
        voi_doses=_doses(),
        tac_fits=_fits(),
        voi_timepoints=_timepoints(),
        dvhs=_dvhs(),
        qa_checks=_qa(),
        calibrations=_calibrations(),
        software_version=VERSION,
        generated_at="2025-01-01T00:00:00Z",
    )
    kwargs.update(overrides)
    return subject_report_html(**kwargs)


@pytest.fixture(scope="module")
def subject_html() -> str:
    return _subject_report()


def _dose_effect() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 30
    dose = rng.uniform(5.0, 45.0, n)
    rows = pd.DataFrame(
        {
            "site_id": rng.choice(["SITE01", "SITE02"], n),
            "subject_id": [f"S{i}" for i in range(n)],
            "endpoint": "nephrotoxicity",
            "target_voi": "Kidneys",
            "engine": "organ",
            "method": "multi_time_point",
            "cumulative_dose_gy": dose,
            "cumulative_bed_gy": 1.2 * dose,
            "effect": (dose > 25.0).astype(int),
        }
    )
    xero = rows.assign(endpoint="xerostomia", target_voi="Parotids", effect=0)
    return pd.concat([rows, xero], ignore_index=True)


FITS_TABLE = pd.DataFrame(
    {
        "group": ["pooled", "SITE01", "SITE02"],
        "n": [30, 15, 15],
        "n_events": [12, 6, 6],
        "d50_gy": [24.68, 21.37, 27.91],
        "gamma50": [2.345, 1.876, 3.012],
    }
)
CURVES = [
    {"label": g, "d50_gy": d, "gamma50": s}
    for g, d, s in zip(FITS_TABLE["group"], FITS_TABLE["d50_gy"], FITS_TABLE["gamma50"])
]


def _trial_report(**overrides) -> str:
    kwargs = dict(
        trial_id="T-REPORT",
        generated_at="2025-01-01T00:00:00Z",
        software_version=VERSION,
        dose_effect=_dose_effect(),
        fits={LABEL: FITS_TABLE},
        curves={LABEL: CURVES},
        population_kinetics=pd.DataFrame({"voi": ["Kidney_L"], "n": [12], "median_h": [55.5]}),
        notes=["Site <SITE02> re-calibrated & re-analysed."],
    )
    kwargs.update(overrides)
    return trial_report_html(**kwargs)


def _svgs(text: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", text, flags=re.S)


def _section(text: str, heading: str) -> str:
    """HTML from the ``<h2>`` whose text starts with ``heading`` to the next ``<h2>``."""
    start = text.index(f"<h2>{heading}")
    end = text.find("<h2>", start + 4)
    return text[start : end if end >= 0 else None]


# ----------------------------------------------------------------------------- subject report
def test_subject_report_identifies_subject_and_software(subject_html):
    assert SUBJECT in subject_html
    assert "T-REPORT" in subject_html and SITE in subject_html
    assert f"rntflow {VERSION}" in subject_html
    assert "2025-01-01T00:00:00Z" in subject_html
    assert subject_html.startswith("<!DOCTYPE html>") and subject_html.rstrip().endswith("</html>")


def test_subject_report_lists_formatted_doses_and_cumulative(subject_html):
    per_cycle = _section(subject_html, "Absorbed doses")
    for value in ("4.32", "8.64", "12.50", "25.00", "99.00"):  # every VOI, cycle and method, 2 decimals
        assert f">{value}<" in per_cycle
    assert ">9.3<" in per_cycle  # relative uncertainty 0.4 / 4.321 = 9.3 %
    cumulative = _section(subject_html, "Cumulative")
    # multi-time-point wins over Hänscheid in each cycle: 4.321 + 8.642, not + 99
    assert ">12.96<" in cumulative and ">37.50<" in cumulative
    assert ">0.57<" in cumulative  # sqrt(0.4^2 + 0.4^2)
    assert "provisional" in cumulative  # cycle 2 is not final


def test_subject_report_draws_one_tac_and_one_dvh_figure_per_cycle(subject_html):
    # cycle 1: TAC (Kidney_L + BAD_VOI) and DVH (Kidney_L + BAD_VOI); cycle 2: TAC only
    # (Kidney_L points without a fit, Lesion_1 fit without points, in the lesions panel)
    assert subject_html.count("<svg") == 3
    assert len(_svgs(subject_html)) == 3
    assert subject_html.count("<figure>") == 3
    assert "no closed form" in subject_html  # the trapezoid fit is drawn as segments with a note
    fits = _section(subject_html, "Absorbed doses")
    assert ">mono_exp<" in fits and ">10000.0<" in fits and ">69.3<" in fits  # the fit table
    assert ">no fit<" in fits  # cycle 2 Kidney_L: points only


def test_subject_report_qa_failures_first_and_other_subjects_excluded(subject_html):
    qa = _section(subject_html, "Quality assurance")
    assert qa.index("FAIL-MESSAGE") < qa.index("WARN-MESSAGE") < qa.index("PASS-MESSAGE")
    assert "OTHER-SUBJECT" not in subject_html and "SITE02-S01" not in subject_html


def test_subject_report_lists_used_calibration_only(subject_html):
    cal = _section(subject_html, "Calibrations used")
    assert "CAL-1" in cal and "CAM-A" in cal and "9.87" in cal
    assert "CAL-UNUSED" not in cal


def test_subject_report_has_methods(subject_html):
    methods = _section(subject_html, "Methods")
    for word in (
        "AICc",
        "Hänscheid",
        "Madsen",
        "dose-point kernel",
        "local energy deposition",
        "EANM",
        "repair half-time",
        "cross-calibration",
        "background",
    ):
        assert word in methods


def test_methods_quote_the_code_they_describe(subject_html):
    """The methods text takes the method order, chi-square quantile and jitter from the code."""
    from rntflow.analysis.dose_logistic import CHI2_1_95
    from rntflow.analysis.figures import JITTER
    from rntflow.core.methods import METHOD_PREFERENCE

    order = "multi-time-point preferred over single-time-point Madsen over Hänscheid"
    assert METHOD_PREFERENCE == ("multi_time_point", "single_time_point_madsen", "single_time_point_hanscheid")
    assert order in _section(subject_html, "Methods") and order in _section(subject_html, "Cumulative")
    trial_methods = _section(_trial_report(), "Methods")
    assert f"95 % quantile, {CHI2_1_95:.2f})" in trial_methods and CHI2_1_95 == pytest.approx(3.841, abs=1e-3)
    assert f"&plusmn;{JITTER:g} for visibility" in trial_methods


def _assert_offline(text: str) -> None:
    assert "<script" not in text.lower()
    assert "<link" not in text.lower() and "@import" not in text and "url(http" not in text
    without_ns = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", text)
    assert "http://" not in without_ns and "https://" not in without_ns
    assert "<?xml" not in text and "<!DOCTYPE svg" not in text


def test_reports_are_offline(subject_html):
    _assert_offline(subject_html)
    _assert_offline(_trial_report())


def test_subject_report_escapes_data_text(subject_html):
    assert BAD_VOI not in subject_html
    assert "&lt;b&gt;x&lt;/b&gt;" in subject_html
    # outside the SVGs too (tables and captions)
    outside = re.sub(r"<svg\b.*?</svg>", "", subject_html, flags=re.S)
    assert "&lt;b&gt;x&lt;/b&gt;" in outside


SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_templates_escape_script_in_subject_site_and_trial_names():
    """Identifiers come from the sites' DICOM and config: a ``<script>`` in them must stay text."""
    subject, site = f"S-{SCRIPT}", f"SITE-{SCRIPT}"
    frames = {
        name: df.assign(subject_id=subject) if "subject_id" in df else df
        for name, df in (
            ("voi_doses", _doses()),
            ("tac_fits", _fits()),
            ("voi_timepoints", _timepoints()),
            ("dvhs", _dvhs()),
            ("qa_checks", _qa()),
        )
    }
    frames["voi_doses"] = frames["voi_doses"].assign(site_id=site)
    text = _subject_report(site_id=site, subject_id=subject, trial_id=f"T-{SCRIPT}", software_version=SCRIPT, **frames)
    assert "<script" not in text.lower()
    assert f"<title>Dosimetry report \u2013 T-{ESCAPED_SCRIPT} \u2013 S-{ESCAPED_SCRIPT}</title>" in text
    assert f"<td>SITE-{ESCAPED_SCRIPT}</td>" in text and f"<td>S-{ESCAPED_SCRIPT}</td>" in text
    assert f"<td>rntflow {ESCAPED_SCRIPT}</td>" in text
    assert ">4.32<" in text  # the subject's rows are still shown (not dropped as another subject's)

    dose_effect = _dose_effect().assign(site_id=lambda d: d["site_id"] + SCRIPT)
    fits = FITS_TABLE.assign(group=[f"{g}{SCRIPT}" for g in FITS_TABLE["group"]])
    trial = _trial_report(
        trial_id=SCRIPT,
        dose_effect=dose_effect,
        fits={f"{LABEL} {SCRIPT}": fits},
        curves={f"{LABEL} {SCRIPT}": CURVES},
        notes=[SCRIPT],
    )
    assert "<script" not in trial.lower()
    assert f"<h3>{LABEL} {ESCAPED_SCRIPT}</h3>" in trial and f"<p>{ESCAPED_SCRIPT}</p>" in trial
    assert f"<td>pooled{ESCAPED_SCRIPT}</td>" in trial
    assert "30 observed outcome(s)" in trial  # the label's endpoint still selects the outcomes


def test_subject_report_empty_frames_give_none():
    empty = pd.DataFrame()
    text = subject_report_html(
        trial_id="T",
        site_id=SITE,
        subject_id=SUBJECT,
        voi_doses=empty,
        tac_fits=empty,
        voi_timepoints=empty,
        dvhs=empty,
        qa_checks=empty,
        calibrations=empty,
        software_version=VERSION,
        generated_at="now",
    )
    assert SUBJECT in text and NONE_TEXT in text
    assert "<svg" not in text
    for heading in ("Absorbed doses", "Cumulative", "Quality assurance", "Calibrations used"):
        assert NONE_TEXT in _section(text, heading)


def test_subject_report_tolerates_missing_columns_and_nans():
    doses = pd.DataFrame(
        {
            "subject_id": [SUBJECT],
            "cycle": [1],
            "voi": ["Kidney_R"],
            "engine": ["organ"],
            "method": ["multi_time_point"],
            "dose_gy": [3.0],
            "dose_sd_gy": [np.nan],
        }
    )
    points = pd.DataFrame(
        {
            "subject_id": [SUBJECT] * 2,
            "cycle": [1, 1],
            "voi": ["Kidney_R"] * 2,
            "t_h": [24.0, np.nan],
            "activity_mbq": [50.0, 10.0],
        }
    )
    fits = pd.DataFrame(
        {
            "subject_id": [SUBJECT],
            "cycle": [1],
            "voi": ["Kidney_R"],
            "model": ["bi_exp"],
            "params_json": ["not json"],
            "tia_mbq_h": [np.nan],
        }
    )
    qa = pd.DataFrame({"check_name": ["x"], "status": [None]})
    text = subject_report_html(
        trial_id="T",
        site_id=SITE,
        subject_id=SUBJECT,
        voi_doses=doses,
        tac_fits=fits,
        voi_timepoints=points,
        dvhs=pd.DataFrame(),
        qa_checks=qa,
        calibrations=pd.DataFrame({"calibration_id": ["C"]}),
        software_version=VERSION,
        generated_at="now",
    )
    assert ">3.00<" in text and text.count("<svg") == 1


def test_subject_report_is_deterministic(subject_html):
    assert _subject_report() == subject_html


# ----------------------------------------------------------------------------- trial report
def test_trial_report_draws_one_curve_per_curve_dict_and_shows_fits():
    text = _trial_report()
    svgs = _svgs(text)
    assert len(svgs) == 1
    legend = re.findall(r"<text[^>]*>([^<]*D50 = [^<]*)</text>", svgs[0])
    assert len(legend) == len(CURVES)
    assert any(t.startswith("pooled") for t in legend)
    for value in ("24.68", "21.37", "27.91", "2.345", "1.876", "3.012"):
        assert f">{value}<" in text
    assert "Kidney_L" in _section(text, "Population kinetics") and "55.5" in text
    assert "Site &lt;SITE02&gt; re-calibrated &amp; re-analysed." in text
    assert "profile-likelihood" in _section(text, "Methods")
    # only the nephrotoxicity outcomes of the label are plotted
    assert "30 observed outcome(s)" in text


def test_trial_report_handles_labels_without_curves_or_data():
    text = _trial_report(
        fits={LABEL: FITS_TABLE, "pfs vs bed_gy": pd.DataFrame()},
        curves={LABEL: [], "lesion_response vs dose_gy": [{"label": "bad", "d50_gy": None, "gamma50": 1.0}]},
        population_kinetics=pd.DataFrame(),
        notes=None,
    )
    assert text.count("<svg") == 3
    assert not any("D50 = " in svg for svg in _svgs(text))  # no curve drawn
    assert "curve bad not drawn" in text
    assert NONE_TEXT in _section(text, "Population kinetics")

    empty = trial_report_html(
        trial_id="T",
        generated_at="now",
        software_version=VERSION,
        dose_effect=pd.DataFrame(),
        fits={},
        curves={},
        population_kinetics=pd.DataFrame(),
    )
    assert NONE_TEXT in empty and "<svg" not in empty
    _assert_offline(empty)


def test_trial_report_is_deterministic():
    assert _trial_report() == _trial_report()


# ----------------------------------------------------------------------------- physics of the curves
def test_tac_curve_mono_exp_matches_closed_form():
    a0, lam = 123.4, 0.0123
    t = np.array([0.0, 4.0, 24.0, 96.0, 168.0])
    params = json.dumps({"a0_mbq": a0, "lambda_per_h": lam})
    np.testing.assert_allclose(tac_curve("mono_exp", params, t), a0 * np.exp(-lam * t), rtol=1e-9)


def test_tac_curve_other_fitted_models_use_documented_key_order():
    t = np.array([1.0, 10.0, 100.0])
    bi = {"a1_mbq": 30.0, "lambda1_per_h": 0.2, "a2_mbq": 70.0, "lambda2_per_h": 0.01}
    np.testing.assert_allclose(
        tac_curve("bi_exp", json.dumps(bi), t), 30.0 * np.exp(-0.2 * t) + 70.0 * np.exp(-0.01 * t), rtol=1e-9
    )
    tri = {"a1_mbq": 30.0, "lambda1_per_h": 0.2, "a2_mbq": 70.0, "lambda2_per_h": 0.01, "lambda3_per_h": 1.5}
    expected = 30.0 * np.exp(-0.2 * t) + 70.0 * np.exp(-0.01 * t) - 100.0 * np.exp(-1.5 * t)
    np.testing.assert_allclose(tac_curve("tri_exp", tri, t), expected, rtol=1e-9)
    up = {"a0_mbq": 50.0, "lambda1_per_h": 0.02, "lambda2_per_h": 0.5}
    np.testing.assert_allclose(
        tac_curve("bi_exp_uptake", up, t), 50.0 * (np.exp(-0.02 * t) - np.exp(-0.5 * t)), rtol=1e-9
    )


def _uptake_cycle_fit() -> tuple[dict, list[dict]]:
    """The tac_fits row and voi_timepoints rows of a lesion whose uptake peaks between 4 and 24 h."""
    lam_clear, lam_up = math.log(2.0) / 60.0, 0.15  # 1/h: T_eff 60 h, uptake peak at ~18.5 h
    z, y, x = np.ogrid[:24, :24, :24]
    ball = (z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 25
    voxel_ml = 4.8**3 / 1000.0
    volume_ml = float(ball.sum()) * voxel_ml
    tps = [
        TimePoint(f"S{i}", t, np.where(ball, 5e5 * (math.exp(-lam_clear * t) - math.exp(-lam_up * t)), 0.0))
        for i, t in enumerate((4.0, 24.0, 96.0, 168.0))
    ]
    res = compute_cycle_dosimetry(
        tps,
        [Voi("Lesion_1", ball.astype(np.float32), volume_ml, volume_ml)],
        CycleSettings("Lu-177", 7400.0, (4.8, 4.8, 4.8), voxel_engine="organ", partial_volume_correction=False),
    )
    return res.tac_fits[0], res.voi_timepoints


def test_tac_curve_uptake_mono_exp_from_the_cycle_row_integrates_to_its_tia():
    # law: the TIA is the area under the TAC from 0 to infinity (MIRD schema). The redrawn
    # uptake_mono_exp curve (lines from (0, 0) through the measured uptake points, the fitted
    # exponential from the peak on) must enclose the fit's TIA: within 1 % (parameters are
    # rounded to 8 decimals in params_json; quadrature is far more precise than that).
    fit, points = _uptake_cycle_fit()
    assert fit["model"] == "uptake_mono_exp"
    params = json.loads(fit["params_json"])
    assert params["peak_h"] == 24.0 and params["uptake_t_h"] == [4.0, 24.0]

    def curve(t: float) -> float:
        return float(tac_curve("uptake_mono_exp", fit["params_json"], t))

    rising, _ = quad(curve, 0.0, params["peak_h"], points=params["uptake_t_h"][:-1], limit=200)
    tail, _ = quad(curve, params["peak_h"], math.inf, limit=200)
    assert rising + tail == pytest.approx(fit["tia_mbq_h"], rel=0.01)
    # the uptake part goes through the measured points, the tail halves every T_eff
    measured = {p["t_h"]: p["activity_mbq"] for p in points}
    np.testing.assert_allclose(
        tac_curve("uptake_mono_exp", params, [4.0, 23.999999]), [measured[4.0], measured[24.0]], rtol=1e-6
    )
    t_eff = fit["effective_half_life_h"]
    np.testing.assert_allclose(
        tac_curve("uptake_mono_exp", params, 100.0 + t_eff),
        tac_curve("uptake_mono_exp", params, 100.0) / 2.0,
        rtol=1e-6,
    )


def test_tac_curve_uptake_mono_exp_rejects_points_that_do_not_end_at_the_peak():
    params = {
        "a0_mbq": 10.0,
        "lambda_per_h": 0.01,
        "peak_h": 24.0,
        "uptake_t_h": [4.0, 20.0],
        "uptake_activity_mbq": [3.0, 8.0],
    }
    with pytest.raises(ValueError):
        tac_curve("uptake_mono_exp", params, [1.0])
    with pytest.raises(ValueError):
        tac_curve("uptake_mono_exp", {"a0_mbq": 10.0, "lambda_per_h": 0.01}, [1.0])


@pytest.mark.parametrize("model", ["madsen", "hanscheid"])
def test_tac_curve_single_time_point_passes_through_measured_point(model):
    params = json.dumps({"t_h": 48.0, "activity_mbq": 37.5, "t_eff_h": 60.0})
    np.testing.assert_allclose(tac_curve(model, params, 48.0), 37.5, rtol=1e-12)
    # halves every t_eff_h
    np.testing.assert_allclose(tac_curve(model, params, [108.0, 0.0]), [37.5 / 2, 37.5 * 2**0.8], rtol=1e-12)


@pytest.mark.parametrize(
    "model, params",
    [
        ("trapezoid", "{}"),
        ("mono_exp", "{}"),
        ("mono_exp", "nope"),
        ("madsen", '{"t_h": 1, "activity_mbq": 1, "t_eff_h": 0}'),
    ],
)
def test_tac_curve_rejects_undrawable_input(model, params):
    with pytest.raises(ValueError):
        tac_curve(model, params, [1.0])


def test_ntcp_logistic_is_half_at_d50_and_follows_gamma50():
    d50, gamma = 25.0, 2.0
    assert ntcp_logistic(d50, d50, gamma) == pytest.approx(0.5)
    # normalised slope: dP/dlnD = gamma50 at D50
    h = 1e-6
    slope = (ntcp_logistic(d50 * math.exp(h), d50, gamma) - ntcp_logistic(d50 * math.exp(-h), d50, gamma)) / (2 * h)
    assert slope == pytest.approx(gamma, rel=1e-6)
    np.testing.assert_allclose(ntcp_logistic([10.0, 40.0], d50, gamma), 1 / (1 + (d50 / np.array([10.0, 40.0])) ** 8))


def test_svg_figure_returns_bare_deterministic_svg():
    from matplotlib.figure import Figure

    def draw() -> str:
        fig = Figure(figsize=(2, 2))
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], label="a & b")
        ax.legend()
        return svg_figure(fig, salt="test")

    svg = draw()
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<metadata" not in svg and "a &amp; b" in svg
    assert draw() == svg
