"""Outcomes CSV import: validation of every case, nothing loaded on error, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from rntflow.cli import main
from rntflow.core.errors import OutcomeImportError
from rntflow.warehouse.catalog import connect
from rntflow.warehouse.outcomes import OUTCOME_COLUMNS, import_outcomes, parse_outcomes

HEADER = ",".join(OUTCOME_COLUMNS)
GOOD_ROWS = [
    "SUBJ-001,nephrotoxicity,,2,,,,12",
    "SUBJ-001,xerostomia,,1,,,,12",
    "SUBJ-001,lesion_response,Lesion_1,,PR,,,6",
    "SUBJ-001,lesion_response,Lesion_2,,PD,,,6",
    "SUBJ-002,pfs,,,,1,8.5,",
    "SUBJ-002,nephrotoxicity,,0,,,,12",
]
KNOWN = {"SUBJ-001": "SITE01", "SUBJ-002": "SITE02"}


def _write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "outcomes.csv"
    path.write_text("\n".join([header] + rows) + "\n")
    return path


def test_valid_file_imports_and_is_idempotent(tmp_path, wh_root):
    csv_path = _write(tmp_path, GOOD_ROWS)
    wh = wh_root
    report = import_outcomes(wh, csv_path, KNOWN, trial_id="T1")
    assert (report.rows_in, report.rows_new) == (6, 6)
    assert import_outcomes(wh, csv_path, KNOWN, trial_id="T1").rows_unchanged == 6
    frame = parse_outcomes(csv_path, KNOWN)
    assert frame.loc[4, "event"] == 1 and frame.loc[4, "time_to_event_months"] == 8.5
    assert frame.loc[0, "site_id"] == "SITE01" and frame.loc[0, "grade"] == 2
    corrected = _write(tmp_path, [GOOD_ROWS[0].replace(",2,", ",3,")] + GOOD_ROWS[1:])
    assert import_outcomes(wh, corrected, KNOWN, trial_id="T1").rows_new_version == 1


@pytest.mark.parametrize(
    "bad_row, problem",
    [
        ("SUBJ-999,nephrotoxicity,,2,,,,", "unknown subject_id 'SUBJ-999'"),
        ("SUBJ-001,nephrotoxicity,,7,,,,", "grade '7' is not a CTCAE integer grade 0-5"),
        ("SUBJ-001,xerostomia,,1.5,,,,", "grade '1.5'"),
        ("SUBJ-001,xerostomia,,,,,,", "grade ''"),
        ("SUBJ-001,hair_loss,,1,,,,", "endpoint 'hair_loss' is not one of"),
        ("SUBJ-001,lesion_response,Liver,,PR,,,", "lesion_voi 'Liver' is not Lesion_<n>"),
        ("SUBJ-001,lesion_response,Lesion_3,,MR,,,", "response 'MR'"),
        ("SUBJ-002,pfs,,,,2,5,", "event '2' is not 0 or 1"),
        ("SUBJ-002,pfs,,,,1,-3,", "time_to_event_months '-3'"),
        ("SUBJ-002,pfs,,,,1,3,soon", "assessed_months 'soon'"),
        (",pfs,,,,1,3,", "subject_id is empty"),
        (GOOD_ROWS[0], "appears twice (first on line 2)"),
    ],
)
def test_each_invalid_row_names_row_and_problem_and_loads_nothing(tmp_path, bad_row, problem):
    csv_path = _write(tmp_path, GOOD_ROWS + [bad_row])  # the bad row is row 8 (header is row 1)
    wh = tmp_path / "wh"
    with pytest.raises(OutcomeImportError) as err:
        import_outcomes(wh, csv_path, KNOWN, trial_id="T1")
    assert "line 8" in str(err.value) and problem in str(err.value)
    assert "nothing imported" in str(err.value)
    assert not list(wh.rglob("*.parquet"))


def test_missing_column(tmp_path):
    header = HEADER.replace(",grade", "")
    csv_path = _write(tmp_path, ["SUBJ-001,nephrotoxicity,,,,,12"], header=header)
    with pytest.raises(OutcomeImportError, match=r"line 1: missing column\(s\) grade"):
        import_outcomes(tmp_path / "wh", csv_path, KNOWN, trial_id="T1")


def test_all_problems_are_listed(tmp_path):
    csv_path = _write(tmp_path, ["SUBJ-999,nephrotoxicity,,9,,,,"] + GOOD_ROWS)
    with pytest.raises(OutcomeImportError) as err:
        import_outcomes(tmp_path / "wh", csv_path, KNOWN, trial_id="T1")
    assert (
        "2 problem(s)" in str(err.value)
        and "line 2 (SUBJ-999): unknown" in str(err.value)
        and "line 2 (SUBJ-999): grade" in str(err.value)
    )


def test_trial_id_is_required_without_subjects_table(tmp_path):
    with pytest.raises(OutcomeImportError, match="pass trial_id"):
        import_outcomes(tmp_path / "wh", _write(tmp_path, GOOD_ROWS), KNOWN)


CONFIG = """
trial_id: T-CLI
paths: {warehouse: wh, enrolment: enrolment.csv}
sites:
  - {id: SITE01, name: A, calling_ae_titles: [A1]}
  - {id: SITE02, name: B, calling_ae_titles: [B1]}
protocol:
  photopeak_windows: [{name: Lu177_208, center_kev: 208.0, width_pct: 20.0}]
  time_points: [{nominal_h: 24, earliest_h: 18, latest_h: 30}]
"""


def _cli(argv: list[str]) -> int:
    """Through the real entry point (its own parser once hid that ``outcomes import`` crashed)."""
    return main(argv)


def test_cli_imports_with_enrolment_subjects(tmp_path, capsys):
    (tmp_path / "trial.yaml").write_text(CONFIG)
    (tmp_path / "enrolment.csv").write_text(
        "site_id,patient_id,subject_id,kind\nSITE01,P1,SUBJ-001,patient\nSITE02,P2,SUBJ-002,patient\n"
    )
    csv_path = _write(tmp_path, GOOD_ROWS)
    assert _cli(["outcomes", "import", str(csv_path), "--config", str(tmp_path / "trial.yaml"), "--no-analyse"]) == 0
    assert "6 new" in capsys.readouterr().out
    with connect(tmp_path / "wh") as con:
        assert con.execute("SELECT trial_id, count(*) FROM outcomes GROUP BY ALL").fetchall() == [("T-CLI", 6)]
        assert con.execute("SELECT site_id FROM outcomes WHERE subject_id = 'SUBJ-002' LIMIT 1").fetchone() == (
            "SITE02",
        )
    bad = _write(tmp_path, GOOD_ROWS + ["SUBJ-404,pfs,,,,1,3,"])
    assert _cli(["outcomes", "import", str(bad), "--config", str(tmp_path / "trial.yaml")]) == 1
    assert "line 8 (SUBJ-404): unknown subject_id 'SUBJ-404'" in capsys.readouterr().err
