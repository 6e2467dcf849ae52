"""Blood-sample CSV import (validation, nothing loaded on error, idempotent), the marrow task, the
CLI, and the QA flow's marrow limit on the blood-based dose."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from rntflow.cli import main
from rntflow.warehouse.blood import BLOOD_COLUMNS, BloodImportError, import_blood_samples, parse_blood_samples
from rntflow.warehouse.catalog import connect
from rntflow.warehouse.writer import load_table, read_latest

HEADER = ",".join(BLOOD_COLUMNS)
TIMES = (0.5, 1.0, 2.0, 4.0, 24.0, 48.0, 96.0, 168.0)
C0_BQ_PER_ML, T_EFF_H = 300000.0, 30.0  # mono-exponential blood curve: TIAC = C0 T_eff / ln2


def _rows(subject: str = "SUBJ-001", cycle: int = 1, scale: float = 1.0) -> list[str]:
    lam = math.log(2) / T_EFF_H
    return [f"{subject},{cycle},{t:g},{scale * C0_BQ_PER_ML * math.exp(-lam * t):.1f}" for t in TIMES]


GOOD_ROWS = _rows("SUBJ-001", 1) + _rows("SUBJ-001", 2) + _rows("SUBJ-002", 1)
KNOWN = {"SUBJ-001": "SITE01", "SUBJ-002": "SITE02"}
CYCLES = {"SUBJ-001": [1, 2], "SUBJ-002": [1]}


def _write(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "blood.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header] + rows) + "\n")
    return path


def test_valid_file_imports_and_is_idempotent(tmp_path):
    wh = tmp_path / "wh"
    report, _ = import_blood_samples(wh, _write(tmp_path, GOOD_ROWS), KNOWN, trial_id="T1", administered_cycles=CYCLES)
    assert (report.rows_in, report.rows_new) == (24, 24)
    again, _ = import_blood_samples(wh, _write(tmp_path, GOOD_ROWS), KNOWN, trial_id="T1")
    assert (again.rows_new, again.rows_unchanged, again.files_written) == (0, 24, 0)
    held = read_latest(wh, "blood_samples")
    assert set(held["site_id"]) == {"SITE01", "SITE02"} and not held["excluded"].any()
    first = held[(held["subject_id"] == "SUBJ-001") & (held["cycle"] == 1)].sort_values("t_h").iloc[0]
    assert first["t_h"] == 0.5 and first["activity_per_ml_mbq"] == pytest.approx(0.3 * 2 ** (-0.5 / 30), rel=1e-6)
    # a corrected concentration is a new version; a corrected time replaces the old sample
    fixed = list(GOOD_ROWS)
    fixed[0] = fixed[0].rsplit(",", 1)[0] + ",123456.0"
    subject, cycle, _, conc = fixed[1].split(",")
    fixed[1] = f"{subject},{cycle},1.25,{conc}"  # the sample at 1 h was taken at 1.25 h
    rep, _ = import_blood_samples(wh, _write(tmp_path, fixed, name="fixed.csv"), KNOWN, trial_id="T1")
    assert (rep.rows_new, rep.rows_new_version) == (1, 2)  # new t_h 1.25; changed value; old t_h 1 excluded
    held = read_latest(wh, "blood_samples", "subject_id = ? AND cycle = 1", ["SUBJ-001"])
    assert held.loc[held["t_h"] == 1.0, "excluded"].tolist() == [True]
    assert held.loc[held["t_h"] == 0.5, "activity_per_ml_mbq"].tolist() == [pytest.approx(0.123456)]
    # other cycles are untouched by a file that does not list them
    only_two = import_blood_samples(wh, _write(tmp_path, _rows("SUBJ-002", 1), name="s2.csv"), KNOWN, trial_id="T1")
    assert only_two[0].rows_unchanged == 8 and len(only_two[1]) == 8


@pytest.mark.parametrize(
    "bad_row, problem",
    [
        ("SUBJ-999,1,4,1000", "unknown subject_id 'SUBJ-999' (not enrolled)"),
        (",1,4,1000", "subject_id is empty"),
        ("SUBJ-001,0,4,1000", "cycle '0' is not an integer >= 1"),
        ("SUBJ-001,1.5,4,1000", "cycle '1.5' is not an integer >= 1"),
        ("SUBJ-001,x,4,1000", "cycle 'x'"),
        ("SUBJ-002,2,4,1000", "cycle 2 has no administration in the warehouse (cycles 1)"),
        ("SUBJ-001,1,-1,1000", "t_h '-1' is not a number of hours > 0"),
        ("SUBJ-001,1,0,1000", "t_h '0' is not a number of hours > 0"),
        ("SUBJ-001,1,2000,1000", "t_h '2000'"),
        ("SUBJ-001,1,soon,1000", "t_h 'soon'"),
        ("SUBJ-001,1,,1000", "t_h ''"),
        ("SUBJ-001,1,5,-3", "activity_concentration_bq_per_ml '-3' is not a number >= 0"),
        ("SUBJ-001,1,5,", "activity_concentration_bq_per_ml ''"),
        ("SUBJ-001,1,5,nan", "activity_concentration_bq_per_ml 'nan'"),
        (GOOD_ROWS[0], "appears twice (first on line 2)"),
    ],
)
def test_each_invalid_row_names_row_and_problem_and_loads_nothing(tmp_path, bad_row, problem):
    csv_path = _write(tmp_path, GOOD_ROWS + [bad_row])  # the bad row is line 26 (header is line 1)
    wh = tmp_path / "wh"
    with pytest.raises(BloodImportError) as err:
        import_blood_samples(wh, csv_path, KNOWN, trial_id="T1", administered_cycles=CYCLES)
    assert "line 26" in str(err.value) and problem in str(err.value), str(err.value)
    assert "nothing imported" in str(err.value)
    assert not list(wh.rglob("*.parquet"))


def test_the_same_time_written_twice_differently_is_a_duplicate(tmp_path):
    with pytest.raises(BloodImportError, match=r"line 3 \(SUBJ-001\): subject_id, cycle, t_h repeat line 2"):
        parse_blood_samples(_write(tmp_path, ["SUBJ-001,1,4,100", "SUBJ-001,1.0,4.00,100"]), KNOWN)


def test_missing_column_and_all_problems_listed(tmp_path):
    header = HEADER.replace(",t_h", "")
    with pytest.raises(BloodImportError, match=r"line 1: missing column\(s\) t_h"):
        parse_blood_samples(_write(tmp_path, ["SUBJ-001,1,100"], header=header), KNOWN)
    with pytest.raises(BloodImportError) as err:
        parse_blood_samples(_write(tmp_path, ["SUBJ-999,0,4,-1"] + GOOD_ROWS), KNOWN)
    assert "3 problem(s)" in str(err.value) and str(err.value).count("line 2 (SUBJ-999)") == 3


# ----------------------------------------------------------------------------- marrow task and QA
TRIAL = "T-BLOOD"
ADMIN_MBQ = 7400.0
#: Image-based Bone_Marrow organ dose per cycle: 2 x 0.9 = 1.8 Gy, a warning against 2 Gy.
IMAGE_DOSE_GY = 0.9


def _seed_warehouse(wh: Path) -> None:
    """Subjects, administrations, image-based doses and TIAs of two subjects, two cycles each."""
    subjects = [("SUBJ-001", "SITE01"), ("SUBJ-002", "SITE02")]
    load_table(wh, "subjects", pd.DataFrame([{"trial_id": TRIAL, "site_id": s, "subject_id": p} for p, s in subjects]))
    admin, doses, fits = [], [], []
    for p, s in subjects:
        for c in (1, 2):
            base = {"trial_id": TRIAL, "site_id": s, "subject_id": p, "cycle": c}
            admin.append(
                {
                    **base,
                    "radionuclide": "Lu-177",
                    "administered_activity_mbq": ADMIN_MBQ,
                    "administration_datetime": datetime(2026, 1, 5 + 42 * (c - 1) // 30, 9, tzinfo=UTC),
                }
            )
            for voi, d, tia in (("Bone_Marrow", IMAGE_DOSE_GY, 2000.0), ("Kidney_L", 3.0, 9000.0)):
                for engine in ("organ", "voxel_dpk"):
                    doses.append(
                        {
                            **base,
                            "voi": voi,
                            "engine": engine,
                            "method": "multi_time_point",
                            "dose_gy": d + (0.1 if engine == "voxel_dpk" else 0.0),
                            "tia_mbq_h": tia,
                            "mass_g": 300.0,
                            "final": True,
                        }
                    )
                fits.append({**base, "voi": voi, "model": "mono_exp", "tia_mbq_h": tia})
    load_table(wh, "administrations", pd.DataFrame(admin))
    load_table(wh, "voi_doses", pd.DataFrame(doses))
    load_table(wh, "tac_fits", pd.DataFrame(fits))


def _blood_dose_gy(scale: float) -> float:
    """Closed form of the blood-based dose of :func:`_rows` x scale (tac_fits of _seed_warehouse)."""
    from rntflow.dosimetry.marrow import marrow_dose_from_tiac

    tiac = scale * C0_BQ_PER_ML / 1e6 * T_EFF_H / math.log(2)
    wb = 9000.0 + tiac * 5300.0  # imaged VOIs but the marrow, plus the ICRP 89 blood pool
    return marrow_dose_from_tiac(tiac, "Lu-177", whole_body_tia_mbq_h=wb).dose_gy


def test_marrow_task_writes_both_methods_labelled(tmp_path):
    from rntflow.tasks.marrow import marrow_doses_task

    wh = tmp_path / "wh"
    _seed_warehouse(wh)
    rows = _rows("SUBJ-001", 1, 4.0) + _rows("SUBJ-001", 2, 4.0)
    import_blood_samples(wh, _write(tmp_path, rows), KNOWN, trial_id=TRIAL)
    blood = marrow_doses_task.fn(str(wh), TRIAL)
    assert sorted(blood["cycle"]) == [1, 2] and set(blood["method"]) == {"blood"}
    assert blood["dose_gy"].tolist() == [pytest.approx(_blood_dose_gy(4.0), rel=1e-3)] * 2
    assert set(blood["kinetics_model"]) <= {"mono_exp", "bi_exp"}
    with connect(wh) as con:
        got = con.execute(
            "SELECT method, engine, count(*) FROM marrow_doses GROUP BY ALL ORDER BY method, engine"
        ).fetchall()
    assert got == [("blood", "blood", 2), ("image", "organ", 2), ("image", "voxel_dpk", 2)]
    again = marrow_doses_task.fn(str(wh), TRIAL)  # idempotent: same rows, no new version
    assert again["result_version"].tolist() == [1, 1]


CONFIG = """
trial_id: T-BLOOD
paths: {warehouse: wh, enrolment: enrolment.csv, products: products}
sites:
  - {id: SITE01, name: A, calling_ae_titles: [A1]}
  - {id: SITE02, name: B, calling_ae_titles: [B1]}
protocol:
  photopeak_windows: [{name: Lu177_208, center_kev: 208.0, width_pct: 20.0}]
  time_points: [{nominal_h: 24, earliest_h: 18, latest_h: 30}]
dose_limits:
  Bone_Marrow: {dose_gy: 2.0}
"""


def _trial(tmp_path: Path) -> Path:
    from rntflow.tasks.products import TimePointMeta

    (tmp_path / "trial.yaml").write_text(CONFIG)
    (tmp_path / "enrolment.csv").write_text(
        "site_id,patient_id,subject_id,kind\nSITE01,P1,SUBJ-001,patient\nSITE02,P2,SUBJ-002,patient\n"
    )
    for subject, site in KNOWN.items():
        for c in (1, 2):
            meta = TimePointMeta(
                site, subject, f"ST-{subject}-{c}", "CAM1", datetime(2026, 1, 6), datetime(2026, 1, 5),
                ADMIN_MBQ, "Lu-177", 24.0, c, None, "valid", 0.02, None, True,
            )  # fmt: skip
            folder = tmp_path / "products" / site / subject / meta.study_id
            folder.mkdir(parents=True)
            (folder / "meta.json").write_text(meta.to_json())
    _seed_warehouse(tmp_path / "wh")
    return tmp_path / "trial.yaml"


def test_cli_no_qa_imports_and_computes(tmp_path, capsys):
    config = _trial(tmp_path)
    bad = _write(tmp_path, GOOD_ROWS + ["SUBJ-404,1,4,100"], name="bad.csv")
    assert main(["blood", "import", str(bad), "--config", str(config), "--no-qa"]) == 1
    assert "line 26 (SUBJ-404): unknown subject_id 'SUBJ-404'" in capsys.readouterr().err
    assert not (tmp_path / "wh" / "blood_samples").exists() or not list(
        (tmp_path / "wh" / "blood_samples").rglob("*.parquet")
    )
    good = _write(tmp_path, _rows("SUBJ-001", 1) + _rows("SUBJ-001", 2))
    assert main(["blood", "import", str(good), "--config", str(config), "--no-qa"]) == 0
    out = capsys.readouterr().out
    assert "16 new" in out and "2 cycle(s) of 1 subject(s)" in out
    with connect(tmp_path / "wh") as con:
        assert con.execute("SELECT count(*) FROM marrow_doses WHERE method = 'blood'").fetchone() == (2,)


def test_qa_marrow_limit_uses_the_blood_based_dose_when_present(tmp_path, prefect_harness):
    """SUBJ-001 has blood samples (blood-based 2 x ~1.3 Gy: fail); SUBJ-002 has none (image 1.8 Gy: warn)."""
    from rntflow.flows.qa import qa_flow

    config = _trial(tmp_path)
    wh = tmp_path / "wh"
    import_blood_samples(
        wh, _write(tmp_path, _rows("SUBJ-001", 1, 5.0) + _rows("SUBJ-001", 2, 5.0)), KNOWN, trial_id=TRIAL
    )
    qa_flow(str(config))
    checks = read_latest(wh, "qa_checks", "check_name = 'limit_dose_gy'")
    by = {r["scope_id"]: r for r in checks.to_dict("records")}
    blood = by["SUBJ-001/Bone_Marrow"]
    want = 2 * _blood_dose_gy(5.0)
    assert want > 2.0 and blood["status"] == "fail"
    assert blood["value_found"] == f"{want:.2f} Gy"
    assert "blood-based red-marrow dose" in blood["message"]
    image = by["SUBJ-002/Bone_Marrow"]
    assert image["status"] == "warn" and image["value_found"] == f"{2 * IMAGE_DOSE_GY:.2f} Gy"
    assert "blood" not in image["message"]
    # cycle 1's samples withdrawn (excluded): that cycle falls back to the image-based dose, labelled so
    held = read_latest(wh, "blood_samples", "subject_id = 'SUBJ-001' AND cycle = 1")
    bookkeeping = ["result_version", "row_hash", "computed_at", "input_hash"]
    load_table(wh, "blood_samples", held.drop(columns=bookkeeping).assign(excluded=True))
    qa_flow(str(config), subject_ids=["SUBJ-001"])
    mixed = read_latest(wh, "qa_checks", "check_name = 'limit_dose_gy' AND scope_id = 'SUBJ-001/Bone_Marrow'")
    assert "cycle(s) 2; image-based Bone_Marrow VOI for the others" in mixed["message"].iloc[0]
    assert mixed["value_found"].iloc[0] == f"{want / 2 + IMAGE_DOSE_GY:.2f} Gy"
    marrow = read_latest(wh, "marrow_doses", "method = 'blood'").set_index("cycle")
    assert marrow.loc[1, "withdrawn"] == True and marrow.loc[2, "withdrawn"] == False  # noqa: E712
