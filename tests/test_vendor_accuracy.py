"""The per-site accuracy table (benchmarks/bench_vendor_accuracy.py) on a warehouse whose
errors are known by construction."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from benchmarks.bench_vendor_accuracy import main as bench_main
from rntflow.evaluation import accuracy_markdown, compare_with_truth, vendor_accuracy, voi_class
from rntflow.warehouse.writer import load_table

TRIAL = "T-ACC"
#: (site, subject, voi, true volume mL, true dose Gy)
TRUE = [
    ("SITE01", "S1", "Kidney_L", 150.0, 4.0),
    ("SITE01", "S1", "Kidney_R", 160.0, 5.0),
    ("SITE01", "S1", "Liver", 1800.0, 2.0),
    ("SITE01", "S1", "Lesion_1", 20.0, 40.0),
    ("SITE01", "S1", "Lesion_2", 4.0, 30.0),
    ("SITE02", "S2", "Kidney_L", 150.0, 4.0),
    ("SITE02", "S2", "Kidney_R", 150.0, 8.0),
    ("SITE02", "S2", "Spleen", 150.0, 3.0),
]
#: measured / true per engine; SITE02's kidneys also carry a worse single-time-point row
SCALE = {"organ": 1.05, "sphere": 0.9, "voxel_dpk": 1.10}


def _truth() -> dict:
    subjects: dict = {}
    for site, subj, voi, vol, _ in TRUE:
        s = subjects.setdefault(subj, {"site_id": site, "vois": {}})
        s["vois"][voi] = {"volume_ml": vol, "mass_g": vol, "tissue": "x"}
    sites = {"SITE01": {"vendor": {"profile": "siemens"}}, "SITE02": {"vendor": {"profile": "ge_hermes"}}}
    return {"subjects": subjects, "sites": sites}


@pytest.fixture
def demo(tmp_path):
    wh = tmp_path / "warehouse"
    rows = []
    for site, subj, voi, vol, dose in TRUE:
        engines = ("sphere", "voxel_dpk") if voi.startswith("Lesion") else ("organ", "voxel_dpk")
        for eng in engines:
            base = dict(trial_id=TRIAL, site_id=site, subject_id=subj, cycle=1, voi=voi, engine=eng)
            base.update(mass_g=vol, calibration_id=f"CAL-{site}", final=True)
            # the spleen has single-time-point doses only: Madsen's ranks above Hanscheid's
            # (core/methods.py), though not alphabetically; a lower-ranked method's dose is wrong
            best = "single_time_point_madsen" if voi == "Spleen" else "multi_time_point"
            rows.append({**base, "method": best, "dose_gy": dose * SCALE[eng]})
            rows.append({**base, "method": "single_time_point_hanscheid", "dose_gy": dose * 3.0})
    load_table(wh, "voi_doses", pd.DataFrame(rows))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cal = dict(trial_id=TRIAL, camera_id="cam", radionuclide="Lu-177", protocol="P", valid_from=t0)
    load_table(
        wh,
        "calibrations",
        pd.DataFrame(
            [
                {**cal, "site_id": "SITE01", "calibration_id": "CAL-SITE01", "rc_fwhm_source": "nema"},
                {**cal, "site_id": "SITE02", "calibration_id": "CAL-SITE02", "rc_fwhm_source": "cylinder_edge"},
            ]
        ),
    )
    studies = [
        dict(trial_id=TRIAL, site_id=s, study_id=f"{s}-{k}", kind="patient", protocol_compliant=ok)
        for s, flags in (("SITE01", (True, True)), ("SITE02", (True, False)))
        for k, ok in enumerate(flags)
    ]
    load_table(wh, "studies", pd.DataFrame(studies))
    truth_csv = tmp_path / "truth_voi_doses.csv"
    pd.DataFrame(
        [
            dict(subject_id=subj, site_id=site, cycle=1, voi=voi, mass_g=vol, tia_mbq_h=1.0, dose_gy=d, n_timepoints=4)
            for site, subj, voi, vol, d in TRUE
        ]
    ).to_csv(truth_csv, index=False)
    return wh, truth_csv


def test_voi_classes():
    assert voi_class("Kidney_R", 150.0) == "kidneys" and voi_class("Kidneys", 300.0) is None
    assert voi_class("Lesion_3", 10.0) == "lesions >= 10 mL" and voi_class("Lesion_3", 9.9) == "lesions < 10 mL"
    assert voi_class("Spleen", 1.0) == "spleen" and voi_class("Parotid_L", 20.0) is None


def test_best_method_and_engine_are_compared(demo):
    wh, truth_csv = demo
    organ = compare_with_truth(wh, truth_csv)
    assert set(organ["method"]) == {"multi_time_point", "single_time_point_madsen"}
    assert organ["error_pct"].abs().max() < 11.0
    assert organ.set_index("voi")["engine"].to_dict()["Lesion_1"] == "sphere"
    voxel = compare_with_truth(wh, truth_csv, ("voxel_dpk",))
    assert voxel["error_pct"].to_numpy() == pytest.approx(10.0)


def test_table_by_site_class_and_engine(demo):
    wh, truth_csv = demo
    t = vendor_accuracy(wh, _truth(), truth_csv)
    q = t.set_index(["site_id", "voi_class", "engine"])
    assert q.loc[("SITE01", "kidneys", "organ"), "n"] == 2
    assert q.loc[("SITE01", "kidneys", "organ"), "mean_error_pct"] == pytest.approx(5.0)
    assert q.loc[("SITE01", "lesions >= 10 mL", "organ"), "max_error_pct"] == pytest.approx(-10.0)
    assert q.loc[("SITE01", "lesions < 10 mL", "voxel"), "min_error_pct"] == pytest.approx(10.0)
    assert ("SITE02", "liver", "organ") not in q.index and q.loc[("SITE02", "spleen", "voxel"), "n"] == 1
    site = t.drop_duplicates("site_id").set_index("site_id")
    assert site.loc["SITE01", ["vendor", "rc_route", "compliant"]].tolist() == ["siemens", "NEMA RC", "yes"]
    assert site.loc["SITE02", ["vendor", "rc_route", "compliant"]].tolist() == [
        "ge_hermes",
        "cylinder edge FWHM",
        "no (1/2)",
    ]
    md = accuracy_markdown(t)
    assert "| SITE02 | ge_hermes | cylinder edge FWHM | no (1/2) | kidneys | +5.0 (+5.0 to +5.0), 2 |" in md
    # cycles with fewer scans than asked for are left out
    assert vendor_accuracy(wh, _truth(), truth_csv, min_timepoints=5).empty


def test_benchmark_script_prints_the_table(demo, tmp_path, capsys):
    wh, truth_csv = demo
    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "truth_voi_doses.csv").write_text(truth_csv.read_text())
    import json

    (trial / "truth.json").write_text(json.dumps(_truth()))
    assert bench_main(["--warehouse", str(wh), "--trial", str(trial), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "| SITE01 | siemens | NEMA RC | yes | liver |" in out
    assert len(pd.read_csv(tmp_path / "t.csv")) == 12
