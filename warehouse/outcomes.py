"""Import of the trial's clinical outcomes CSV into the ``outcomes`` table.

File format (the simulator writes the same), one header row, comma-separated::

    subject_id,endpoint,lesion_voi,grade,response,event,time_to_event_months,assessed_months

=================  ===========================================================================
endpoint           required fields
=================  ===========================================================================
nephrotoxicity     ``grade``: CTCAE v5 integer 0-5
xerostomia         ``grade``: CTCAE v5 integer 0-5
liver_toxicity     ``grade``: CTCAE v5 integer 0-5 (TARE: liver/hepatobiliary toxicity)
lesion_response    ``lesion_voi`` (``Lesion_<n>``) and ``response`` in CR, PR, SD, PD
pfs                ``event`` 0 (censored) or 1 (progression/death), ``time_to_event_months`` >= 0
=================  ===========================================================================

``assessed_months`` (>= 0) is optional for every endpoint. Fields that do not belong to a
row's endpoint are ignored (stored as null). The whole file is validated before anything
is loaded: any problem raises :class:`~rntflow.core.errors.OutcomeImportError` listing every
problem with its row number (the header is row 1), and nothing is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb
import pandas as pd
from pydantic import BaseModel

from rntflow.core.csvfiles import read_csv_records
from rntflow.core.errors import OutcomeImportError
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.storage import open_store
from rntflow.warehouse.writer import LoadReport, has_files, hive_read_sql, load_table

OUTCOME_COLUMNS = (
    "subject_id",
    "endpoint",
    "lesion_voi",
    "grade",
    "response",
    "event",
    "time_to_event_months",
    "assessed_months",
)
TOXICITY_ENDPOINTS = ("nephrotoxicity", "xerostomia", "liver_toxicity")
ENDPOINTS = TOXICITY_ENDPOINTS + ("lesion_response", "pfs")
RESPONSES = ("CR", "PR", "SD", "PD")
CTCAE_GRADES = range(0, 6)  # CTCAE v5.0: grades 1-5; 0 = no adverse event
LESION_RE = re.compile(r"^Lesion_\d+$")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _int(text: str) -> int | None:
    value = _number(text)
    if value is None or value != int(value):
        return None
    return int(value)


class OutcomeRow(BaseModel):
    """The outcomes file's row model: cells as text (``None`` when empty), checked by
    :func:`_outcome_problems` since which fields are required depends on the endpoint."""

    subject_id: str | None = None
    endpoint: str | None = None
    lesion_voi: str | None = None
    grade: str | None = None
    response: str | None = None
    event: str | None = None
    time_to_event_months: str | None = None
    assessed_months: str | None = None


def _outcome_problems(row: OutcomeRow, known: set[str]) -> list[str]:
    """Every problem of one row (see the module docstring for the rules)."""
    bad = []
    if not row.subject_id:
        bad.append("subject_id is empty")
    elif row.subject_id not in known:
        bad.append(f"unknown subject_id {row.subject_id!r} (not enrolled)")
    if row.endpoint not in ENDPOINTS:
        bad.append(f"endpoint {row.endpoint or ''!r} is not one of {list(ENDPOINTS)}")
    if row.endpoint in TOXICITY_ENDPOINTS:
        grade = _int(row.grade or "")
        if grade is None or grade not in CTCAE_GRADES:
            bad.append(f"grade {row.grade or ''!r} is not a CTCAE integer grade 0-5")
    elif row.endpoint == "lesion_response":
        if not LESION_RE.match(row.lesion_voi or ""):
            bad.append(f"lesion_voi {row.lesion_voi or ''!r} is not Lesion_<n>")
        if row.response not in RESPONSES:
            bad.append(f"response {row.response or ''!r} is not one of {list(RESPONSES)}")
    elif row.endpoint == "pfs":
        if _int(row.event or "") not in (0, 1):
            bad.append(f"event {row.event or ''!r} is not 0 or 1")
        tte = _number(row.time_to_event_months or "")
        if tte is None or tte < 0:
            bad.append(f"time_to_event_months {row.time_to_event_months or ''!r} is not a number >= 0")
    if row.assessed_months:
        assessed = _number(row.assessed_months)
        if assessed is None or assessed < 0:
            bad.append(f"assessed_months {row.assessed_months!r} is not a number >= 0")
    return bad


def _outcome_record(row: OutcomeRow, sites: Mapping[str, str] | None) -> dict:
    """The ``outcomes`` columns of a valid row (fields of other endpoints are null)."""
    endpoint = row.endpoint
    return {
        "subject_id": row.subject_id,
        "site_id": sites.get(row.subject_id) if sites else None,
        "endpoint": endpoint,
        "lesion_voi": row.lesion_voi if endpoint == "lesion_response" else None,
        "grade": _int(row.grade or "") if endpoint in TOXICITY_ENDPOINTS else None,
        "response": row.response if endpoint == "lesion_response" else None,
        "event": _int(row.event or "") if endpoint == "pfs" else None,
        "time_to_event_months": _number(row.time_to_event_months or "") if endpoint == "pfs" else None,
        "assessed_months": _number(row.assessed_months) if row.assessed_months else None,
    }


def parse_outcomes(csv_path: str | Path, known_subject_ids: Iterable[str] | Mapping[str, str]) -> pd.DataFrame:
    """Read and validate an outcomes CSV.

    Parameters
    ----------
    csv_path : str or Path
        The outcomes file.
    known_subject_ids : iterable of str or mapping subject_id -> site_id
        Enrolled subjects; with a mapping, ``site_id`` is filled in.

    Returns
    -------
    pandas.DataFrame
        Columns of the ``outcomes`` table except ``trial_id``.

    Raises
    ------
    OutcomeImportError
        Listing each problem with its line number; nothing is imported.
    """
    csv_path = Path(csv_path)
    sites = dict(known_subject_ids) if isinstance(known_subject_ids, Mapping) else None
    known = set(known_subject_ids)
    found = read_csv_records(
        csv_path,
        OutcomeRow,
        error=OutcomeImportError,
        what=str(csv_path),
        columns=OUTCOME_COLUMNS,
        unique=[("subject_id", "endpoint", "lesion_voi")],
        check=lambda row: _outcome_problems(row, known),
    )
    found.raise_if_problems(OutcomeImportError, f"{csv_path}: nothing imported")
    records = [_outcome_record(row, sites) for _, row in found.rows]
    frame = pd.DataFrame.from_records(
        records,
        columns=[
            "subject_id",
            "site_id",
            "endpoint",
            "lesion_voi",
            "grade",
            "response",
            "event",
            "time_to_event_months",
            "assessed_months",
        ],
    )
    for col in ("grade", "event"):
        frame[col] = frame[col].astype("Int8")
    return frame


def warehouse_subjects(warehouse_dir: str | Path) -> pd.DataFrame:
    """Latest ``trial_id, site_id, subject_id`` rows of the warehouse's subjects table."""
    spec = TABLES["subjects"]
    store = open_store(warehouse_dir)
    if not has_files(store, spec):
        return pd.DataFrame(columns=["trial_id", "site_id", "subject_id"])
    sql = (
        f"SELECT DISTINCT trial_id, site_id, subject_id FROM ({hive_read_sql(store, spec)}) "
        "QUALIFY row_number() OVER (PARTITION BY trial_id, subject_id ORDER BY result_version DESC) = 1"
    )
    con = duckdb.connect()
    store.register(con)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def import_outcomes(
    warehouse_dir: str | Path,
    csv_path: str | Path,
    known_subject_ids: Iterable[str] | Mapping[str, str],
    *,
    trial_id: str | None = None,
) -> LoadReport:
    """Validate an outcomes CSV completely, then upsert it into the ``outcomes`` table.

    Parameters
    ----------
    warehouse_dir : str or Path
        Warehouse root.
    csv_path : str or Path
        Outcomes CSV (format in the module docstring).
    known_subject_ids : iterable of str or mapping subject_id -> site_id
        Enrolled subjects (from the warehouse ``subjects`` table or the enrolment file).
    trial_id : str, optional
        Trial of the outcomes; default: the single trial of the warehouse's subjects table.

    Returns
    -------
    LoadReport
        Re-importing the same file adds nothing; a corrected row adds a result version.

    Raises
    ------
    OutcomeImportError
        Naming row numbers and problems; nothing is loaded.
    """
    frame = parse_outcomes(csv_path, known_subject_ids)
    if trial_id is None:
        trials = sorted(set(warehouse_subjects(warehouse_dir)["trial_id"]))
        if len(trials) != 1:
            raise OutcomeImportError(
                f"{csv_path}: cannot tell the trial (warehouse subjects hold {trials or 'no trial'}); pass trial_id"
            )
        trial_id = trials[0]
    frame.insert(0, "trial_id", trial_id)
    return load_table(warehouse_dir, "outcomes", frame)
