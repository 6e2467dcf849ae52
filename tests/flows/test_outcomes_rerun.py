"""``rntflow outcomes import`` re-runs the dose-effect flow when outcomes change (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rntflow.cli import main

CONFIG = """
trial_id: T-OUT
paths: {warehouse: wh, enrolment: enrolment.csv, prefect_home: prefect}
sites:
  - {id: SITE01, name: A, calling_ae_titles: [A1]}
protocol:
  photopeak_windows: [{name: Lu177_208, center_kev: 208.0, width_pct: 20.0}]
  time_points: [{nominal_h: 24, earliest_h: 18, latest_h: 30}]
"""
HEADER = "subject_id,endpoint,lesion_voi,grade,response,event,time_to_event_months,assessed_months\n"


@pytest.mark.slow
def test_changed_outcomes_rerun_dose_effect_and_unchanged_do_not(tmp_path: Path, prefect_harness, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # prefect_environment() only fills in unset values
    (tmp_path / "trial.yaml").write_text(CONFIG)
    (tmp_path / "enrolment.csv").write_text("site_id,patient_id,subject_id,kind\nSITE01,P1,SUBJ-001,patient\n")
    csv_path = tmp_path / "outcomes.csv"
    csv_path.write_text(HEADER + "SUBJ-001,nephrotoxicity,,1,,,,12\n")
    argv = ["outcomes", "import", str(csv_path), "--config", str(tmp_path / "trial.yaml")]
    report = tmp_path / "wh" / "reports" / "dose_effect.md"

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 new" in out and "dose-effect re-run" in out
    assert report.exists() and "T-OUT" in report.read_text()
    first = report.stat().st_mtime_ns

    assert main(argv) == 0  # the same file again: nothing changed, nothing re-run
    assert "dose-effect not re-run: no outcome changed" in capsys.readouterr().out
    assert report.stat().st_mtime_ns == first

    csv_path.write_text(HEADER + "SUBJ-001,nephrotoxicity,,3,,,,12\n")  # a corrected grade: a new version
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 changed (new version)" in out and "dose-effect re-run" in out
    assert report.stat().st_mtime_ns > first
