"""The coordinators' CSV files: stripped headers, missing columns named."""

from __future__ import annotations

import io

import pytest

from rntflow.core.csvfiles import dict_reader
from rntflow.core.errors import CalibrationError
from rntflow.core.fills import FILL_COLUMNS, load_phantom_fills


def test_header_is_stripped_and_missing_columns_are_named():
    reader, missing = dict_reader(io.StringIO(" a ,b\n1,2\n"), ["a", "b", "c"])
    assert missing == ["c"]
    assert list(reader) == [{"a": "1", "b": "2"}]


def test_fill_log_without_a_column_is_refused_naming_it(tmp_path):
    path = tmp_path / "fills.csv"
    path.write_text(",".join(FILL_COLUMNS[:-1]) + "\n")
    with pytest.raises(CalibrationError, match=f"missing column.*{FILL_COLUMNS[-1]}"):
        load_phantom_fills(path)


def test_one_bad_fill_log_row_fails_only_its_own_phantom(tmp_path):
    """A site without its own bad row is not failed by another site's typo (issue 14)."""
    from rntflow.core.fills import load_phantom_fill

    path = tmp_path / "fills.csv"
    path.write_text(
        ",".join(FILL_COLUMNS) + "\n"
        "SITE01-PH-CYL,uniform_cylinder,505.1,2026-01-19T12:00:00,6815.7,\n"
        "SITE02-PH-CYL,uniform_cylinder,5O5.1,2026-01-19T12:00:00,6815.7,\n"
    )
    assert load_phantom_fill(path, "SITE01-PH-CYL").total_activity_mbq == 505.1
    assert load_phantom_fill(path, "SITE03-PH-CYL") is None
    with pytest.raises(CalibrationError, match=r"line 3 \(SITE02-PH-CYL\): total_activity_mbq '5O5.1'"):
        load_phantom_fill(path, "SITE02-PH-CYL")
    with pytest.raises(CalibrationError, match="1 problem"):
        load_phantom_fills(path)


def test_enrolment_lists_every_problem_without_showing_patient_ids(tmp_path):
    from rntflow.core.enrolment import load_enrolment
    from rntflow.core.errors import EnrolmentError

    path = tmp_path / "enrolment.csv"
    path.write_text("site_id,patient_id,subject_id,kind\nS1,PID-777,A,\nS1,PID-777,B,patient\nS2,P3,A,ghost\nS2,,C,\n")
    with pytest.raises(EnrolmentError) as err:
        load_enrolment(path)
    text = str(err.value)
    assert "4 problem(s)" in text and "line 5 (C): patient_id is empty" in text
    assert "line 4 (A): subject_id A appears twice" in text
    assert "PID-777" not in text
    path.write_text("site_id,patient_id,subject_id\nS1,P1,A\n")
    assert [(e.subject_id, e.kind) for e in load_enrolment(path)] == [("A", "patient")]
