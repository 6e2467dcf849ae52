"""Fault tolerance of the flows: transient failures retry, persistent ones are recorded and isolated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import rntflow.tasks.timepoint as tp_tasks
from rntflow.core.config import load_config
from rntflow.flows.process_study import process_study
from rntflow.status import coordinator_status
from rntflow.warehouse.writer import read_latest
from tests.configs import trial_paths

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def trial_cfg(small_trial, tmp_path):
    cfg = yaml.safe_load((ROOT / "deployments" / "trial.example.yaml").read_text())
    cfg["paths"] = trial_paths(tmp_path, small_trial)
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _study(small_trial: Path, site: str, patient_prefix: str) -> tuple[str, Path]:
    """A study copied to a pseudonymous folder, as the listener's de-identified layout names it
    (the flow parameters then carry no PatientID, as in production)."""
    folder = sorted((small_trial / "dicom" / site).glob(f"{patient_prefix}*/*"))[0]
    pid = folder.parent.name
    dest = small_trial.parent / "faults-deid" / site / _subject(small_trial, pid) / folder.name
    if not dest.exists():
        shutil.copytree(folder, dest)
    return pid, dest


def _subject(small_trial: Path, patient_id: str) -> str:
    import csv

    with (small_trial / "enrolment.csv").open() as fh:
        return next(r["subject_id"] for r in csv.DictReader(fh) if r["patient_id"] == patient_id)


def test_a_task_failing_twice_completes_through_retries(small_trial, trial_cfg, prefect_harness, monkeypatch):
    calls = {"n": 0}
    real = tp_tasks.load_study

    def flaky(study_dir):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError("transient: NFS hiccup")
        return real(study_dir)

    monkeypatch.setattr(tp_tasks, "load_study", flaky)
    pid, study = _study(small_trial, "SITE01", "AMC")  # SITE01's patient, first time point
    out = process_study("SITE01", _subject(small_trial, pid), "patient", study.name, str(study), 0, 1, trial_cfg)
    assert calls["n"] >= 3  # classify-study failed twice, its retries got through
    assert out["kind"] == "patient"
    runs = read_latest(load_config(trial_cfg).warehouse_dir, "flow_runs")
    # the camera has no calibration yet: the study waits for it (never "Completed" with nothing produced)
    assert list(runs["state"]) == ["Waiting"] and "calibration of camera" in runs["message"].iloc[0]


def test_a_persistent_failure_marks_its_subject_and_spares_the_others(
    small_trial, trial_cfg, prefect_harness, monkeypatch
):
    real = tp_tasks.load_study
    bad_pid, bad_study = _study(small_trial, "SITE01", "AMC")  # SITE01's patient
    bad_subject = _subject(small_trial, bad_pid)

    def broken_for_one_subject(study_dir):
        if Path(study_dir) == bad_study:
            raise RuntimeError("corrupt pixel data in every attempt")
        return real(study_dir)

    monkeypatch.setattr(tp_tasks, "load_study", broken_for_one_subject)
    with pytest.raises(RuntimeError):
        process_study("SITE01", bad_subject, "patient", bad_study.name, str(bad_study), 0, 1, trial_cfg)
    ok_pid, ok_study = _study(small_trial, "SITE02", "QC-CYL")
    ok_subject = _subject(small_trial, ok_pid)
    process_study("SITE02", ok_subject, "phantom", ok_study.name, str(ok_study), 0, 1, trial_cfg)

    config = load_config(trial_cfg)
    runs = read_latest(config.warehouse_dir, "flow_runs").set_index("subject_id")
    assert runs.loc[bad_subject, "state"] == "Failed" and "corrupt pixel data" in runs.loc[bad_subject, "message"]
    assert runs.loc[ok_subject, "state"] == "Completed"
    qa = read_latest(config.warehouse_dir, "qa_checks", "check_name = 'processing'").set_index("subject_id")
    assert qa.loc[bad_subject, "status"] == "fail"
    status = coordinator_status(config)
    subjects = {s["subject_id"]: s for s in status["subjects"]}
    assert subjects[bad_subject]["state"] == "failed"
    assert subjects[bad_subject]["failed_runs"][0]["message"].startswith("RuntimeError")
    site01 = next(s for s in status["sites"] if s["site_id"] == "SITE01")
    assert site01["flow_runs_failed"] == 1


def test_a_structure_set_sent_on_its_own_joins_its_time_point(small_trial, trial_cfg, prefect_harness, tmp_path):
    # the first time point arrives without its RTSTRUCT; the structure set follows as a study of its own
    pid, full = _study(small_trial, "SITE01", "AMC")
    subject = _subject(small_trial, pid)
    images = tmp_path / "deid" / "SITE01" / subject / "tp1"
    rtss = tmp_path / "deid" / "SITE01" / subject / "tp1-rtss"
    for sub in ("NM", "CT"):
        shutil.copytree(full / sub, images / sub)
    shutil.copytree(full / "RTSTRUCT", rtss / "RTSTRUCT")
    ph_pid, phantom = _study(small_trial, "SITE01", "QC-CYL")  # the camera's calibration first
    process_study("SITE01", _subject(small_trial, ph_pid), "phantom", phantom.name, str(phantom), 0, 1, trial_cfg)
    process_study("SITE01", subject, "patient", "tp1", str(images), 0, 1, trial_cfg)
    config = load_config(trial_cfg)
    from rntflow.tasks.products import ProductStore

    store = ProductStore(config.products_dir)
    assert store.timepoints("SITE01", subject)[0].voi_names == []
    out = process_study("SITE01", subject, "patient", "tp1-rtss", str(rtss), 0, 1, trial_cfg)
    assert out["kind"] == "segmentation" and out["cycle"] == 1
    meta = store.timepoints("SITE01", subject)[0]
    assert {"Kidney_L", "Kidney_R", "Liver"} <= set(meta.voi_names)
    assert set(store.vois(meta)) == set(meta.voi_names)


def test_arrival_order_does_not_matter_for_a_time_point_and_its_calibration(
    small_trial, trial_cfg, prefect_harness, tmp_path
):
    """Issue 14: a time point that arrives before its camera's calibration waits, says why, and is
    quantified by itself when the phantom arrives; a structure set sent before its CT waits too."""
    from rntflow.status import coordinator_status
    from rntflow.tasks.products import ProductStore

    config = load_config(trial_cfg)
    pid, full = _study(small_trial, "SITE01", "AMC")  # SITE01's patient, first time point
    subject = _subject(small_trial, pid)
    deid = config.spool_dir / "deid" / "SITE01" / subject  # where the listener keeps it (re-runs look there)
    images, rtss = deid / "tp1", deid / "tp1-rtss"
    for sub in ("NM", "CT"):
        shutil.copytree(full / sub, images / sub)
    shutil.copytree(full / "RTSTRUCT", rtss / "RTSTRUCT")

    process_study("SITE01", subject, "patient", "tp1-rtss", str(rtss), 0, 1, trial_cfg)  # VOIs before their CT
    process_study("SITE01", subject, "patient", "tp1", str(images), 0, 1, trial_cfg)  # before the calibration
    qa = read_latest(config.warehouse_dir, "qa_checks", "check_name = 'processing'").set_index("study_id")
    assert qa.loc["tp1", "value_found"] == "waiting" and "calibration" in qa.loc["tp1", "message"]
    assert qa.loc["tp1-rtss", "value_found"] == "waiting" and "CT" in qa.loc["tp1-rtss", "message"]
    status = coordinator_status(config)
    waiting = {w["study_id"]: w for w in status["waiting"]}
    assert {"tp1", "tp1-rtss"} <= set(waiting) and "calibration" in waiting["tp1"]["reason"]

    ph_pid, phantom = _study(small_trial, "SITE01", "QC-CYL")
    ph_dir = config.spool_dir / "deid" / "SITE01" / _subject(small_trial, ph_pid) / phantom.name
    shutil.copytree(phantom, ph_dir)
    process_study("SITE01", _subject(small_trial, ph_pid), "phantom", phantom.name, str(ph_dir), 0, 1, trial_cfg)

    qa = read_latest(config.warehouse_dir, "qa_checks", "check_name = 'processing'").set_index("study_id")
    assert qa.loc["tp1", "value_found"] == "processed"  # re-run by the calibration's arrival
    assert qa.loc["tp1-rtss", "value_found"] == "processed"  # re-run by its CT's arrival
    meta = ProductStore(config.products_dir).timepoints("SITE01", subject)[0]
    assert {"Kidney_L", "Kidney_R", "Liver"} <= set(meta.voi_names)
    runs = (
        read_latest(config.warehouse_dir, "flow_runs").sort_values("ended_at").drop_duplicates("study_id", keep="last")
    )
    assert set(runs["state"]) == {"Completed"}
