"""The QA result model (rntflow.core.qa): vocabulary, rows, and rows the warehouse accepts."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from rntflow.core.errors import VocabularyError, WarehouseError
from rntflow.core.qa import (
    FAIL,
    PASS,
    SCOPES,
    STATUSES,
    WARN,
    CheckResult,
    qa_row,
    status_if,
    worst_status,
)
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.writer import load_table, read_latest


def _check(status: str = PASS) -> CheckResult:
    return CheckResult("collimator", status, "MEGP", "MEGP", "collimator as protocol")


def test_status_vocabulary_is_ordered_best_first():
    assert STATUSES == (PASS, WARN, FAIL) == ("pass", "warn", "fail")


@pytest.mark.parametrize("bad", ["ok", "FAIL", "", None, "error"])
def test_check_result_rejects_a_status_outside_the_vocabulary(bad):
    with pytest.raises(VocabularyError, match="status"):
        _check(bad)


def test_check_result_is_frozen_and_replace_validates():
    c = _check()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.status = FAIL  # type: ignore[misc]
    assert dataclasses.replace(c, status=WARN).status == WARN
    with pytest.raises(VocabularyError):
        dataclasses.replace(c, status="warning")


def test_status_if_and_worst_status():
    assert status_if(True) == PASS
    assert status_if(False) == FAIL
    assert status_if(False, WARN) == WARN
    assert worst_status([]) == PASS
    assert worst_status([PASS, WARN, PASS]) == WARN
    assert worst_status(iter([WARN, FAIL, PASS])) == FAIL
    with pytest.raises(VocabularyError):
        worst_status([PASS, "bad"])


def test_qa_row_columns_and_extras():
    row = qa_row(_check(WARN), "study", "ST1", subject_id="S1", study_id="ST1", cycle=2)
    assert row == {
        "check_name": "collimator",
        "scope": "study",
        "scope_id": "ST1",
        "status": "warn",
        "value_found": "MEGP",
        "value_expected": "MEGP",
        "message": "collimator as protocol",
        "subject_id": "S1",
        "study_id": "ST1",
        "cycle": 2,
    }


def test_qa_row_rejects_unknown_scope_and_overwrites():
    with pytest.raises(VocabularyError, match="scope"):
        qa_row(_check(), "patient", "S1")  # type: ignore[arg-type]
    with pytest.raises(VocabularyError, match="overwrite"):
        qa_row(_check(), "study", "ST1", status=FAIL)


def test_vocabularies_are_the_warehouse_schema_s():
    cols = {c.name: c for c in TABLES["qa_checks"].columns}
    assert set(cols["status"].allowed) == set(STATUSES)
    assert set(cols["scope"].allowed) == set(SCOPES)
    row = qa_row(_check(), "cycle", "S1/1", subject_id="S1", cycle=1)
    assert set(row) <= set(cols)


def test_rows_load_into_the_warehouse_and_read_back(tmp_path):
    checks = [(_check(s), scope, f"id-{i}") for i, (s, scope) in enumerate(zip(STATUSES * 3, SCOPES))]
    rows = [qa_row(c, scope, sid, trial_id="T", site_id="SITE01") for c, scope, sid in checks]
    report = load_table(tmp_path, "qa_checks", pd.DataFrame(rows))
    assert report.rows_new == len(SCOPES)
    back = read_latest(tmp_path, "qa_checks").sort_values("scope_id")
    assert list(back["status"]) == [c.status for c, _, _ in sorted(checks, key=lambda t: t[2])]
    assert list(back["scope"]) == [scope for _, scope, _ in sorted(checks, key=lambda t: t[2])]


def test_warehouse_rejects_a_hand_made_row_outside_the_vocabulary(tmp_path):
    """What qa_row prevents: the writer refuses a status outside the schema's vocabulary too."""
    row = {**qa_row(_check(), "study", "ST1", trial_id="T", site_id="SITE01"), "status": "ok"}
    with pytest.raises(WarehouseError):
        load_table(tmp_path, "qa_checks", pd.DataFrame([row]))
