"""Every sub-command through the real entry point (``rntflow.cli.main`` or the console script)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest

from rntflow.cli import build_parser, main

CONFIG = """
trial_id: T-CLI
paths: {warehouse: wh, enrolment: enrolment.csv, phantom_fills: phantom_fills.csv, spool: spool, keys: keys}
sites:
  - {id: SITE01, name: A, calling_ae_titles: [A1]}
  - {id: SITE02, name: B, calling_ae_titles: [B1]}
protocol:
  photopeak_windows: [{name: Lu177_208, center_kev: 208.0, width_pct: 20.0}]
  time_points: [{nominal_h: 24, earliest_h: 18, latest_h: 30}]
"""
ENROLMENT = "site_id,patient_id,subject_id,kind\nSITE01,P1,SUBJ-001,patient\nSITE01,PH1,SITE01-PH-CYL,phantom\n"
FILLS = (
    "subject_id,phantom_type,total_activity_mbq,reference_datetime,volume_ml,sphere_to_background_ratio\n"
    "SITE01-PH-CYL,uniform_cylinder,505.1,2026-01-19T12:00:00,6815.7,\n"
)


@pytest.fixture
def trial(tmp_path: Path) -> Path:
    (tmp_path / "trial.yaml").write_text(CONFIG)
    (tmp_path / "enrolment.csv").write_text(ENROLMENT)
    (tmp_path / "phantom_fills.csv").write_text(FILLS)
    return tmp_path / "trial.yaml"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _all_parsers(parser, prefix="rntflow"):
    yield prefix, parser
    for name, sub in _subparsers(parser).items():
        yield from _all_parsers(sub, f"{prefix} {name}")


def test_console_script_lists_every_subcommand():
    exe = Path(sys.executable).with_name("rntflow")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for name in (
        "simulate",
        "push",
        "listen",
        "status",
        "demo",
        "check-config",
        "outcomes",
        "cross-calibration-effect",
        "tare-plan",
        "reprocess",
        "campaign",
    ):
        assert name in out


def test_every_option_of_every_subcommand_has_help():
    missing = [
        f"{where} {'/'.join(a.option_strings) or a.dest}"
        for where, parser in _all_parsers(build_parser())
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)) and not a.help
    ]
    assert missing == []


@pytest.mark.parametrize("argv", [[name, "--help"] for name in _subparsers(build_parser())])
def test_every_subcommand_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: rntflow" in capsys.readouterr().out


def test_check_config_valid(trial, capsys):
    assert main(["check-config", "--config", str(trial)]) == 0
    assert "valid; trial T-CLI, 2 sites, 2 enrolled" in capsys.readouterr().out


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "enrolment.csv").unlink(), "enrolment.csv does not exist"),
        (
            lambda d: (d / "enrolment.csv").write_text(ENROLMENT + "SITE09,P9,SUBJ-009,patient\n"),
            "site id(s) SITE09 are not in the config's sites",
        ),
        (
            lambda d: (d / "phantom_fills.csv").write_text(FILLS.replace("505.1", "5O5.1")),
            "total_activity_mbq '5O5.1' is not a number",
        ),
        (lambda d: (d / "phantom_fills.csv").unlink(), "phantom_fills.csv does not exist"),
        (
            lambda d: (d / "phantom_fills.csv").write_text(FILLS.replace("SITE01-PH-CYL", "SITE01-PH-XXX")),
            "SITE01-PH-XXX not enrolled as phantom",
        ),
    ],
)
def test_check_config_validates_the_files_it_points_to(trial, capsys, break_it, message):
    break_it(trial.parent)
    assert main(["check-config", "--config", str(trial)]) == 2
    err = capsys.readouterr().err
    assert "problem(s)" in err and message in err


def test_check_config_of_an_invalid_yaml_is_one_line(tmp_path, capsys):
    bad = tmp_path / "trial.yaml"
    bad.write_text("trial_id: T\nsites: 3\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rntflow: error:") and "sites" in err


def test_outcomes_import_through_the_entry_point(trial, capsys):
    csv_path = trial.parent / "outcomes.csv"
    csv_path.write_text(
        "subject_id,endpoint,lesion_voi,grade,response,event,time_to_event_months,assessed_months\n"
        "SUBJ-001,nephrotoxicity,,1,,,,12\n"
    )
    assert main(["outcomes", "import", str(csv_path), "--config", str(trial), "--no-analyse"]) == 0
    assert "1 new" in capsys.readouterr().out


def test_status_on_an_empty_trial(trial, capsys):
    assert main(["status", "--config", str(trial)]) == 0
    assert "SITE01" in capsys.readouterr().out


def test_tare_plan(capsys):
    assert (
        main(
            [
                "tare-plan",
                "--tumour-dose-gy",
                "120",
                "--normal-liver-mass-kg",
                "1.2",
                "--tumour-mass-kg",
                "0.2",
                "--ratio",
                "4",
                "--lung-shunt",
                "0.05",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "tumour_dose_gy       | 120.0" in out and "activity_gbq" in out


def test_push_of_a_missing_folder_is_one_line(capsys):
    assert main(["push", "/no/such/folder", "--calling-aet", "A"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_simulate_a_tiny_trial(tmp_path, capsys):
    assert (
        main(["simulate", "--out", str(tmp_path / "sim"), "--sites", "1", "--subjects-per-site", "1", "--cycles", "1"])
        == 0
    )
    assert (tmp_path / "sim" / "truth.json").exists() and "synthetic trial in" in capsys.readouterr().out


def test_reprocess_dry_run_on_an_empty_spool(trial, capsys):
    assert main(["reprocess", "--config", str(trial), "--site", "SITE01", "--dry-run"]) == 0
    assert "0 studies selected (dry run: nothing ran)" in capsys.readouterr().out


def test_campaign_dry_run_on_an_empty_spool(trial, capsys):
    assert main(["campaign", "--config", str(trial), "--runs", "2", "--dry-run"]) == 0
    assert "0 studies in 0 shards (dry run: nothing started)" in capsys.readouterr().out


def test_reprocess_selects_by_every_filter():
    from datetime import datetime

    from rntflow.listener.handoff import StudyHandoff
    from rntflow.tasks.reprocess import select_studies

    hs = [
        StudyHandoff("S1", "PH", "phantom", "k1", "/d1", 1, 1),
        StudyHandoff("S1", "A", "patient", "k2", "/d2", 3, 1),
        StudyHandoff("S2", "B", "patient", "k3", "/d3", 3, 2),
    ]
    t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    arrivals = {("S1", "k1"): t0, ("S1", "k2"): t0 + 86400, ("S2", "k3"): t0 + 2 * 86400}
    keys = lambda sel: [h.study_key for h in sel]  # noqa: E731
    assert keys(select_studies(hs, arrivals)) == ["k1", "k2", "k3"]
    assert keys(select_studies(hs, arrivals, site_ids=["S1"])) == ["k1", "k2"]  # phantom first, kept in order
    assert keys(select_studies(hs, arrivals, subject_ids=["B"])) == ["k3"]
    assert keys(select_studies(hs, arrivals, study_keys=["k2"])) == ["k2"]
    assert keys(select_studies(hs, arrivals, since=datetime(2026, 1, 2))) == ["k2", "k3"]
    assert keys(select_studies(hs, arrivals, site_ids=["S1"], since=datetime(2026, 1, 2, 12))) == []


def test_listen_on_a_busy_port_is_one_line(trial, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["listen", "--config", str(trial), "--port", str(port), "--dispatch", "none"]) == 2
    err = capsys.readouterr().err
    assert f"port {port} is already in use" in err and "Traceback" not in err
