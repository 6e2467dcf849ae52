"""The coordinator's status: ``rntflow.status.coordinator_status`` and ``rntflow status``."""

# Over 600 lines on purpose: one module per user-facing product (its fixtures are shared by
# every test here); splitting it would repeat or scatter them.

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rntflow.cli import main
from rntflow.core.config import TimePointWindow, load_config
from rntflow.core.protocol import match_window as match_time_point
from rntflow.listener.inbox import SCHEMA as INBOX_SCHEMA
from rntflow.status import REDACTED, coordinator_status, format_coordinator_status
from rntflow.status.calibrations import calibration_state, calibration_states
from rntflow.warehouse.catalog import catalog_path, refresh_catalog
from rntflow.warehouse.writer import load_table

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "trial.example.yaml"
TRIAL = "RNT-DEMO-LU177"
#: De-identified (shifted) administration time of every first cycle.
T0 = datetime(2023, 2, 1, 8, 0, tzinfo=UTC)
#: The trial's last acquisition: the reference time the tests below give explicitly.
AS_OF = T0 + timedelta(weeks=8, hours=24.5)

#: The enrolment table: PatientIDs (PHI) that must never be shown.
ENROLMENT = [
    ("SITE01", "P-AMS-100001", "RNT-001-0001", "patient"),
    ("SITE01", "P-AMS-100002", "RNT-001-0002", "patient"),
    ("SITE01", "QC-AMS-01", "RNT-001-Q001", "phantom"),
    ("SITE02", "KRK778899", "RNT-002-0001", "patient"),
    ("SITE03", "WUE 4455667", "RNT-003-0001", "patient"),
]
PATIENT_IDS = [e[1] for e in ENROLMENT]
#: Camera ids as the flows write them: Manufacturer|Model|Serial.
CAM_GE = "GE MEDICAL SYSTEMS|Discovery NM/CT 670 Pro|GE-670-2002"
CAM_GE_B = "GE MEDICAL SYSTEMS|Discovery NM/CT 670 Pro|GE-670-2003"


def write_trial(root: Path, tare: bool = False) -> Path:
    """The example trial config copied under ``root`` with its data paths there (its 177Lu
    sites only unless ``tare``: the radioembolisation sites have a test of their own)."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    if not tare:
        raw["sites"] = [s for s in raw["sites"] if s["id"] in ("SITE01", "SITE02", "SITE03")]
        raw.pop("tare_arms", None)
    raw["paths"] = {
        "spool": "data/spool",
        "warehouse": "data/warehouse",
        "keys": "data/keys",
        "enrolment": "data/trial/enrolment.csv",
        "phantom_fills": "data/trial/fills.csv",
        "prefect_home": "data/prefect",
    }
    path = root / "deploy" / "trial.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    enrol = root / "deploy" / "data" / "trial" / "enrolment.csv"
    enrol.parent.mkdir(parents=True)
    enrol.write_text("site_id,patient_id,subject_id,kind\n" + "".join(",".join(e) + "\n" for e in ENROLMENT))
    return path


def _study(
    site: str,
    study_id: str,
    subject: str | None,
    cycle: int | None,
    t_h: float | None,
    camera: str,
    kind: str = "patient",
    compliant: bool = True,
    admin: datetime = T0,
) -> dict:
    return {
        "trial_id": TRIAL,
        "site_id": site,
        "study_id": study_id,
        "subject_id": subject,
        "cycle": cycle,
        "kind": kind,
        "camera_id": camera,
        "t_h": t_h,
        "n_instances": 100,
        "protocol_compliant": compliant,
        "acquired_at": admin + timedelta(hours=t_h or 0.0),
    }


# Over 100 lines on purpose: the fixture's rows, one block per table, as data.
def fill_warehouse(wh: Path) -> None:
    """A trial in progress with one of each thing the coordinator must see."""
    c2 = T0 + timedelta(weeks=8)
    studies = [
        # RNT-001-0001: cycle 1 lacks 168 h (a later cycle exists); cycle 2 has 4 h, 24 h so far
        _study("SITE01", "ST-A1", "RNT-001-0001", 1, 4.1, "CAM01"),
        _study("SITE01", "ST-A2", "RNT-001-0001", 1, 23.8, "CAM01"),
        _study("SITE01", "ST-A3", "RNT-001-0001", 1, 95.0, "CAM01"),
        _study("SITE01", "ST-A4", "RNT-001-0001", 2, 4.0, "CAM01", admin=c2),
        _study("SITE01", "ST-A5", "RNT-001-0001", 2, 24.5, "CAM01", admin=c2),
        # RNT-001-0002: complete cycle, but its dosimetry flow failed
        *[_study("SITE01", f"ST-B{i}", "RNT-001-0002", 1, t, "CAM01") for i, t in enumerate((4, 24, 96, 168))],
        # RNT-002-0001: 96 h missing, a late scan at 200 h, one study off-protocol, a camera never calibrated
        _study("SITE02", "ST-C1", "RNT-002-0001", 1, 4.0, CAM_GE),
        _study("SITE02", "ST-C2", "RNT-002-0001", 1, 24.0, CAM_GE_B, compliant=False),
        _study("SITE02", "ST-C3", "RNT-002-0001", 1, 200.0, CAM_GE),
        # phantoms
        _study("SITE01", "PH-1", None, None, None, "CAM01", kind="phantom", admin=T0 - timedelta(days=10)),
        _study("SITE02", "PH-2", None, None, None, CAM_GE, kind="phantom", admin=T0 - timedelta(days=200)),
    ]
    load_table(wh, "studies", pd.DataFrame(studies))

    def cal(site, camera, cal_id, valid_from, superseded_by=None, drift=None):
        return {
            "trial_id": TRIAL,
            "site_id": site,
            "camera_id": camera,
            "radionuclide": "Lu-177",
            "protocol": "LU177-POST",
            "valid_from": valid_from,
            "calibration_id": cal_id,
            "sensitivity_cps_per_mbq": 10.4,
            "superseded_by": superseded_by,
            "drift_pct": drift,
            "drift_flag": None if drift is None else abs(drift) > 5,
        }

    load_table(
        wh,
        "calibrations",
        pd.DataFrame(
            [
                cal("SITE01", "CAM01", "CAL-OLD", T0 - timedelta(days=400), superseded_by="CAL-1"),
                cal("SITE01", "CAM01", "CAL-1", T0 - timedelta(days=10), drift=6.0),
                cal("SITE02", CAM_GE, "CAL-2", T0 - timedelta(days=200)),
            ]
        ),
    )
    doses = [
        {
            "trial_id": TRIAL,
            "site_id": "SITE01",
            "subject_id": "RNT-001-0001",
            "cycle": 1,
            "voi": voi,
            "engine": "voxel_dpk",
            "method": "multi_time_point",
            "dose_gy": 3.0,
        }
        for voi in ("Kidney_L", "Kidney_R", "Lesion_1")
    ]
    load_table(wh, "voi_doses", pd.DataFrame(doses))
    load_table(
        wh,
        "qa_checks",
        pd.DataFrame(
            [
                # a study-scope failure without subject_id: attributed through the study
                {
                    "trial_id": TRIAL,
                    "site_id": "SITE02",
                    "check_name": "scatter_correction",
                    "scope": "study",
                    "scope_id": "ST-C2",
                    "study_id": "ST-C2",
                    "status": "fail",
                    "value_found": "off",
                    "value_expected": "on",
                    "message": "no scatter correction",
                },
                {
                    "trial_id": TRIAL,
                    "site_id": "SITE02",
                    "check_name": "calibration_age",
                    "scope": "calibration",
                    "scope_id": "CAL-2",
                    "status": "fail",
                    "value_found": "257 d",
                    "value_expected": "<= 180 d",
                    "message": "calibration expired",
                },
                {
                    "trial_id": TRIAL,
                    "site_id": "SITE01",
                    "check_name": "fit_r2",
                    "scope": "voi",
                    "scope_id": "RNT-001-0001/1/Kidney_L",
                    "subject_id": "RNT-001-0001",
                    "cycle": 1,
                    "status": "warn",
                    "value_found": "0.89",
                    "value_expected": ">= 0.9",
                    "message": "poor fit",
                },
                {
                    "trial_id": TRIAL,
                    "site_id": "SITE01",
                    "check_name": "energy_window",
                    "scope": "study",
                    "scope_id": "ST-A1",
                    "study_id": "ST-A1",
                    "subject_id": "RNT-001-0001",
                    "cycle": 1,
                    "status": "pass",
                    "message": "ok",
                },
            ]
        ),
    )

    def run(run_id, flow, state, subject, at, message=None, site=None):
        return {
            "trial_id": TRIAL,
            "site_id": site,
            "flow_run_id": run_id,
            "flow_name": flow,
            "state": state,
            "subject_id": subject,
            "started_at": at,
            "ended_at": at + timedelta(minutes=3),
            "message": message,
        }

    load_table(
        wh,
        "flow_runs",
        pd.DataFrame(
            [
                # a failure that a later run fixed: not shown
                run("fr-1", "dosimetry", "Failed", "RNT-001-0001", T0 + timedelta(days=8), "registration failed"),
                run("fr-2", "dosimetry", "Completed", "RNT-001-0001", T0 + timedelta(days=9)),
                # a current failure; a flow that (wrongly) put a PatientID in its message
                run(
                    "fr-3",
                    "dosimetry",
                    "Failed",
                    "RNT-001-0002",
                    T0 + timedelta(days=8),
                    "TAC fit did not converge for P-AMS-100002 (Kidney_L)",
                ),
                run("fr-4", "calibration", "Crashed", None, T0 - timedelta(days=9), "worker lost", site="SITE03"),
            ]
        ),
    )


def fill_inbox(spool: Path) -> None:
    spool.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(spool / "inbox.sqlite")
    con.executescript(INBOX_SCHEMA)
    rows = [("SITE01", f"1.2.3.{i}", None, "handed_off") for i in range(7)]
    rows += [
        ("SITE02", "1.2.4.1", None, "handed_off"),
        ("SITE02", "1.2.4.2", None, "receiving"),
        ("SITE02", "1.2.4.9", "7f3a9c0e11d2", "held"),
    ]
    con.executemany(
        "INSERT INTO studies (site_id, study_uid, patient_hash, n_instances, first_at_s, last_at_s,"
        " state) VALUES (?, ?, ?, 12, 0, 0, ?)",
        rows,
    )
    con.execute(
        "INSERT INTO quarantine (site_id, path, reason, status, n_bytes, at_s)"
        " VALUES ('SITE03', 'q/x.bin', 'not DICOM', 49152, 10, 0)"
    )
    con.commit()
    con.close()


@pytest.fixture()
def trial(tmp_path: Path) -> Path:
    path = write_trial(tmp_path)
    cfg = load_config(path)
    refresh_catalog(cfg.warehouse_dir)  # a stale catalog (built before any files) must not hide rows
    fill_warehouse(cfg.warehouse_dir)
    fill_inbox(cfg.spool_dir)
    return path


def _sites(status: dict) -> dict:
    return {s["site_id"]: s for s in status["sites"]}


def _subjects(status: dict) -> dict:
    return {s["subject_id"]: s for s in status["subjects"]}


# ---------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------


def test_match_time_point_windows_and_overlap():
    w = [
        TimePointWindow(nominal_h=4, earliest_h=2, latest_h=8),
        TimePointWindow(nominal_h=24, earliest_h=6, latest_h=30),
    ]
    assert match_time_point(3.0, w) == 0
    assert match_time_point(7.0, w) == 0  # in both windows: nearest nominal
    assert match_time_point(20.0, w) == 1
    assert match_time_point(30.0, w) == 1  # inclusive bounds
    assert match_time_point(31.0, w) is None
    assert match_time_point(None, w) is None
    assert match_time_point(float("nan"), w) is None


def test_calibration_state_boundaries():
    t = datetime(2024, 1, 1, tzinfo=UTC)
    assert calibration_state(t, t + timedelta(days=100), 180)[0] == "valid"
    status, expires, left = calibration_state(t, t + timedelta(days=150), 180)
    assert (status, expires, left) == ("due", t + timedelta(days=180), 30.0)
    assert calibration_state(t, t + timedelta(days=149), 180)[0] == "valid"
    assert calibration_state(t, t + timedelta(days=149), 180, due_within_days=31)[0] == "due"
    assert calibration_state(t, t + timedelta(days=180), 180)[0] == "due"
    assert calibration_state(t, t + timedelta(days=180, seconds=1), 180)[0] == "expired"


def test_current_calibration_is_the_one_in_force_at_as_of():
    """A calibration superseded only after ``as_of`` is current; a stale row without ``superseded_by`` is not."""
    t = datetime(2024, 1, 1, tzinfo=UTC)

    def row(cal_id, days, superseded_by=None):
        return {
            "site_id": "SITE01",
            "camera_id": "CAM01",
            "radionuclide": "Lu-177",
            "protocol": "P",
            "calibration_id": cal_id,
            "valid_from": t + timedelta(days=days),
            "superseded_by": superseded_by,
            "drift_pct": None,
            "drift_flag": None,
        }

    rows = [row("A", 0), row("B", 50, superseded_by="C"), row("C", 120)]
    states = calibration_states(rows, {"SITE01": {"CAM01", "CAM02"}}, t + timedelta(days=100), 180)["SITE01"]
    assert [(c.camera_id, c.calibration_id, c.status) for c in states] == [
        ("CAM01", "B", "valid"),
        ("CAM02", None, "missing"),
    ]
    later = calibration_states(rows, {}, t + timedelta(days=130), 180)["SITE01"]
    assert [c.calibration_id for c in later] == ["C"]
    assert calibration_states(rows, {}, t - timedelta(days=1), 180) == {}


# ---------------------------------------------------------------------------------------
# the status of a trial in progress
# ---------------------------------------------------------------------------------------


def test_sites_counts(trial):
    status = coordinator_status(load_config(trial), now=AS_OF)
    sites = _sites(status)
    assert [s["site_id"] for s in status["sites"]] == ["SITE01", "SITE02", "SITE03"]
    assert {k: s["subjects_enrolled"] for k, s in sites.items()} == {"SITE01": 2, "SITE02": 1, "SITE03": 1}
    assert sites["SITE01"]["phantoms_enrolled"] == 1
    # processed = rows of the warehouse studies table (phantoms included)
    assert {k: s["studies_processed"] for k, s in sites.items()} == {"SITE01": 10, "SITE02": 4, "SITE03": 0}
    assert sites["SITE01"]["patient_studies_processed"] == 9
    assert sites["SITE02"]["phantom_studies_processed"] == 1
    assert sites["SITE02"]["studies_non_compliant"] == 1
    # inbox counters
    assert sites["SITE01"]["studies_received"] == 7
    assert (sites["SITE02"]["studies_received"], sites["SITE02"]["studies_pending"]) == (3, 1)
    assert sites["SITE02"]["studies_held"] == 1
    assert sites["SITE02"]["held_studies"] == [{"patient_hash": "7f3a9c0e11d2", "instances": 12}]
    assert sites["SITE03"]["quarantined"] == 1
    # QA: failures counted per site, passes and warnings separately
    assert sites["SITE02"]["qa"] == {"fail": 2, "warn": 0, "pass": 0}
    assert sites["SITE01"]["qa"] == {"fail": 0, "warn": 1, "pass": 1}
    assert {q["check_name"] for q in sites["SITE02"]["qa_failures"]} == {"scatter_correction", "calibration_age"}
    assert status["totals"]["qa_fail"] == 2
    assert status["totals"]["subjects_enrolled"] == 4


def test_clock_is_today_on_the_de_identified_clock(trial, tmp_path):
    """Deadlines count to today (wall clock moved by the trial's date shift), not to the last scan."""
    import sqlite3

    cfg = load_config(trial)
    wall = coordinator_status(cfg)  # no key table yet: the wall clock itself
    assert wall["clock"] == "wall_clock"
    cfg.keys_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(cfg.keys_dir / "keys.sqlite") as con:
        con.execute("CREATE TABLE trial_shift (date_shift_days INTEGER NOT NULL)")
        con.execute("INSERT INTO trial_shift VALUES (-400)")
    status = coordinator_status(cfg)
    as_of = datetime.fromisoformat(status["as_of"].replace("Z", "+00:00"))
    assert status["clock"] == "today"
    assert abs((datetime.now(UTC) - timedelta(days=400) - as_of).total_seconds()) < 600
    given = coordinator_status(cfg, now=T0 + timedelta(days=1))
    assert given["clock"] == "given" and given["as_of"].startswith("2023-02-02T08:00")


def test_calibrations_valid_expired_missing_due(trial):
    cfg = load_config(trial)
    sites = _sites(coordinator_status(cfg, now=AS_OF))
    site1 = {c["camera_id"]: c for c in sites["SITE01"]["calibrations"]}
    assert list(site1) == ["CAM01"]
    assert site1["CAM01"]["calibration_id"] == "CAL-1"  # the superseded one is ignored
    assert site1["CAM01"]["status"] == "valid"
    assert site1["CAM01"]["days_left"] == pytest.approx(180 - 10 - 56 - 24.5 / 24, abs=0.1)
    site2 = {c["camera_id"]: c for c in sites["SITE02"]["calibrations"]}
    assert site2[CAM_GE]["status"] == "expired" and site2[CAM_GE]["days_left"] < 0
    assert site2[CAM_GE_B]["status"] == "missing"  # a camera in studies, no calibration
    assert sites["SITE02"]["calibration_counts"] == {"valid": 0, "due": 0, "expired": 1, "missing": 1}
    assert sites["SITE03"]["calibrations"] == []
    # due: within 30 days (parameter) of expiry
    later = coordinator_status(cfg, now=T0 + timedelta(days=155))
    assert _sites(later)["SITE01"]["calibrations"][0]["status"] == "due"
    assert (
        _sites(coordinator_status(cfg, now=T0 + timedelta(days=155), due_within_days=10))["SITE01"]["calibrations"][0][
            "status"
        ]
        == "valid"
    )
    # seen before CAL-1 existed, the superseded calibration was the current one (and expired)
    early = coordinator_status(cfg, now=T0 - timedelta(days=20))
    cam = _sites(early)["SITE01"]["calibrations"][0]
    assert (cam["calibration_id"], cam["status"]) == ("CAL-OLD", "expired")


def test_subject_time_points_doses_and_qa(trial):
    subjects = _subjects(coordinator_status(load_config(trial), now=AS_OF))
    assert list(subjects) == ["RNT-001-0001", "RNT-001-0002", "RNT-002-0001", "RNT-003-0001"]
    assert "RNT-001-Q001" not in subjects  # phantoms are not subjects
    a = subjects["RNT-001-0001"]
    c1, c2 = a["cycles"]
    assert (c1["received_h"], c1["missing_h"], c1["pending_h"]) == ([4, 24, 96], [168], [])
    assert c1["dose"] and c1["dose_vois"] == 3
    assert c1["qa"] == {"fail": 0, "warn": 1}
    assert (c2["received_h"], c2["missing_h"], c2["pending_h"]) == ([4, 24], [], [96, 168])
    assert not c2["dose"]
    assert a["failed_runs"] == []  # the failure was re-run successfully
    assert a["state"] == "attention" and "missing_time_point" in a["flags"]
    assert a["studies_processed"] == 5

    c = subjects["RNT-002-0001"]["cycles"][0]
    assert c["received_h"] == [4, 24] and c["missing_h"] == [96, 168]
    assert c["out_of_window"] == [{"study_id": "ST-C3", "t_h": 200.0, "reason": "late"}]
    assert c["non_compliant_studies"] == ["ST-C2"]
    assert c["qa"]["fail"] == 1  # the study-scope check, via its study
    assert subjects["RNT-002-0001"]["qa"] == {"fail": 1, "warn": 0}
    assert {"qa_fail", "out_of_window", "non_compliant"} <= set(subjects["RNT-002-0001"]["flags"])

    assert subjects["RNT-003-0001"]["cycles"] == [] and subjects["RNT-003-0001"]["state"] == "no_studies"


def test_failed_flow_run_shown(trial):
    status = coordinator_status(load_config(trial), now=AS_OF)
    b = _subjects(status)["RNT-001-0002"]
    assert b["state"] == "failed" and "flow_failed" in b["flags"]
    [run] = b["failed_runs"]
    assert (run["flow_run_id"], run["flow_name"], run["state"]) == ("fr-3", "dosimetry", "Failed")
    assert run["message"] == f"TAC fit did not converge for {REDACTED} (Kidney_L)"
    sites = _sites(status)
    assert sites["SITE01"]["flow_runs_failed"] == 1
    assert [r["flow_run_id"] for r in sites["SITE03"]["failed_runs"]] == ["fr-4"]  # no subject: by site
    text = format_coordinator_status(status)
    assert "RNT-001-0002  [FAILED]" in text
    assert "    failed: dosimetry Failed: TAC fit did not converge for [redacted]" in text
    assert "  run failed  calibration Crashed: worker lost" in text


def test_terminal_output(trial):
    text = format_coordinator_status(coordinator_status(load_config(trial), now=AS_OF))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "    C1: 4h   24h  96h  ---   dose yes  QA 1 warn  (missing 168h)" in lines, text
    assert "    C2: 4h   24h  ...  ...   dose no   QA ok" in lines
    assert ("    C1: 4h   24h  ---  ---  dose no   QA 1 fail  (missing 96h 168h; late 200h; 1 non-compliant)") in lines
    assert any(
        line.startswith(
            "SITE02       1     3     1     4     1     0     1        2        0       0  1 expired, 1 missing"
        )
        for line in lines
    )
    # long Manufacturer|Model|Serial ids are shortened in the middle, keeping the serial
    assert any(
        line.startswith("  calibration EXPIRED  GE MEDICAL SYSTEMS|")
        and line.endswith("...|GE-670-2002: expired 2023-01-12 (77 d ago)")
        for line in lines
    )
    assert any(
        line.startswith("  calibration MISSING  GE MEDICAL SYSTEMS|")
        and line.endswith("...|GE-670-2003: camera in studies, no calibration")
        for line in lines
    )
    assert "  calibration valid    CAM01: until 2023-07-21 (113 d left), DRIFT +6.0%" in lines
    assert "  held        unenrolled patient 7f3a9c0e11d2: 12 instance(s)" in lines
    assert "  QA fail     scatter_correction (study ST-C2): found off, expected on" in text


def test_no_patient_id_in_any_output(trial, capsys):
    status = coordinator_status(load_config(trial), now=AS_OF)
    outputs = [format_coordinator_status(status), json.dumps(status)]
    assert main(["status", "--config", str(trial)]) == 0
    assert main(["status", "--config", str(trial), "--json"]) == 0
    outputs.append(capsys.readouterr().out)
    for text in outputs:
        for pid in PATIENT_IDS:
            assert pid not in text


def test_cli_json_parses(trial, capsys):
    assert main(["status", "--config", str(trial), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"trial_id", "as_of", "clock", "sites", "subjects", "totals", "protocol", "sources"} <= set(doc)
    assert doc["trial_id"] == TRIAL
    assert _sites(doc)["SITE02"]["calibration_counts"]["expired"] == 1
    assert (
        main(["status", "--config", str(trial), "--json", "--as-of", "2023-02-02T08:00", "--due-within-days", "5"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["clock"] == "given" and doc["protocol"]["calibration_due_within_days"] == 5


# ---------------------------------------------------------------------------------------
# nothing there yet, or something broken
# ---------------------------------------------------------------------------------------


def test_empty_warehouse_and_no_inbox(tmp_path, capsys):
    path = write_trial(tmp_path)
    cfg = load_config(path)
    status = coordinator_status(cfg)
    assert status["clock"] == "wall_clock"
    assert {k: s["subjects_enrolled"] for k, s in _sites(status).items()} == {"SITE01": 2, "SITE02": 1, "SITE03": 1}
    assert all(s["studies_processed"] == 0 and s["studies_received"] == 0 for s in status["sites"])
    assert all(s["cycles"] == [] and s["state"] == "no_studies" for s in status["subjects"])
    assert status["sources"]["inbox"]["present"] is False
    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warehouse: no results yet" in out and "inbox: nothing received yet" in out
    assert main(["status", "--config", str(path), "--json"]) == 0
    json.loads(capsys.readouterr().out)
    # status only reads: no catalog, no warehouse, no spool were created
    assert not catalog_path(cfg.warehouse_dir).exists()
    assert not cfg.warehouse_dir.exists() and not cfg.spool_dir.exists()


def test_no_enrolment_table(tmp_path):
    path = write_trial(tmp_path)
    cfg = load_config(path)
    cfg.enrolment_file.unlink()
    status = coordinator_status(cfg, now=AS_OF)
    assert status["subjects"] == [] and status["sources"]["enrolment"]["present"] is False
    assert "enrolment table: not found" in format_coordinator_status(status)


def test_unreadable_warehouse_is_reported_not_fatal(tmp_path):
    path = write_trial(tmp_path)
    cfg = load_config(path)
    fill_inbox(cfg.spool_dir)
    bad = cfg.warehouse_dir / "studies" / f"trial_id={TRIAL}" / "site_id=SITE01" / "part-bad.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet at all")
    status = coordinator_status(cfg, now=AS_OF)
    assert "cannot read" in status["sources"]["warehouse"]["error"]
    assert _sites(status)["SITE01"]["studies_received"] == 7  # the inbox is still shown
    assert "WAREHOUSE UNREADABLE" in format_coordinator_status(status)


def test_subject_not_in_enrolment_is_flagged(tmp_path):
    path = write_trial(tmp_path)
    cfg = load_config(path)
    load_table(cfg.warehouse_dir, "studies", pd.DataFrame([_study("SITE03", "ST-X", "RNT-003-9999", 1, 4.0, "CAM03")]))
    subjects = _subjects(coordinator_status(cfg, now=T0 + timedelta(hours=5)))  # just after its 4 h scan
    assert subjects["RNT-003-9999"]["enrolled"] is False
    assert "not_enrolled" in subjects["RNT-003-9999"]["flags"]
    assert subjects["RNT-003-9999"]["cycles"][0]["pending_h"] == [24, 96, 168]


def test_a_tare_subject_shows_scout_plan_post_treatment_and_predicted_vs_delivered(tmp_path):
    """Issue 18: a radioembolisation subject is shown by treatment (scout and plan, post-treatment
    doses, predicted vs delivered), not as cycles of time points; one still missing its
    post-treatment study is in progress and says what it waits for."""
    path = write_trial(tmp_path, tare=True)
    cfg = load_config(path)
    with cfg.enrolment_file.open("a") as fh:
        fh.write("SITE04,HO-PAT-1,RNT-04001,patient\nSITE04,HO-PAT-2,RNT-04002,patient\n")
    wh = cfg.warehouse_dir
    base = {"trial_id": TRIAL, "site_id": "SITE04"}
    plans = [
        {
            **base,
            "subject_id": sid,
            "treatment": 1,
            "study_id": f"SC-{sid}",
            "arm_id": "TARE-HO166",
            "device": "QuiremSpheres",
            "radionuclide": "Ho-166",
            "scout_agent": "Ho-166-scout",
            "lung_shunt_fraction": lsf,
            "planned_activity_gbq": gbq,
            "broken_limits": broken,
        }
        for sid, lsf, gbq, broken in (("RNT-04001", 0.035, 2.23, ""), ("RNT-04002", 0.31, 1.89, "lung 34.1 Gy > 30 Gy"))
    ]
    load_table(wh, "tare_plans", pd.DataFrame(plans))
    doses = [
        {**base, "subject_id": "RNT-04001", "treatment": 1, "study_id": "PT-1", "voi": v,
         "administered_activity_gbq": 2.18, "mean_dose_gy": d}
        for v, d in (("Lesion_1", 125.0), ("Lesion_2", 40.0), ("Liver_Normal", 19.8), ("Lungs", 1.5))
    ]  # fmt: skip
    load_table(wh, "tare_doses", pd.DataFrame(doses))
    pvd = [
        {**base, "subject_id": "RNT-04001", "treatment": 1, "voi": v, "scout_study_id": "SC-RNT-04001",
         "post_study_id": "PT-1", "predicted_dose_gy": p, "delivered_dose_gy": d}
        for v, p, d in (("Lesion_1", 119.0, 125.0), ("Lesion_2", 44.0, 40.0), ("Liver_Normal", 20.1, 19.8))
    ]  # fmt: skip
    load_table(wh, "tare_predicted_delivered", pd.DataFrame(pvd))
    status = coordinator_status(cfg, now=AS_OF)
    subjects = _subjects(status)
    done, waiting = subjects["RNT-04001"], subjects["RNT-04002"]
    assert [t["complete"] for t in done["tare"]] == [True]
    assert done["tare"][0]["delivered_gy"]["Lesions_mean"] == pytest.approx(82.5)
    assert waiting["tare"][0]["missing"] == ["post-treatment study", "predicted vs delivered"]
    assert waiting["state"] == "in_progress" and not waiting["cycles"]
    text = format_coordinator_status(status, width=140)
    assert "treatment 1: scout SC-RNT-04001: LSF 3.5 %, plan 2.23 GBq" in text
    assert "delivered tumour 82 Gy (predicted 82)" in text and "normal liver 20 Gy (predicted 20)" in text
    assert "limits: lung 34.1 Gy > 30 Gy" in text and "waiting for: post-treatment study" in text
    assert "no studies processed yet" not in text.split("RNT-04001")[1].split("RNT-04002")[0]
