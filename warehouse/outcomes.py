"""Import of the trial's clinical outcomes CSV into the ``outcomes`` table.

File format (the simulator writes the same), one header row, comma-separated::

    subject_id,endpoint,lesion_voi,grade,response,event,time_to_event_months,assessed_months

=================  ===========================================================================
endpoint           required fields
=================  ===========================================================================
nephrotoxicity     ``grade``: CTCAE v5 integer 0-5
xerostomia         ``grade``: CTCAE v5 integer 0-5
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

from rntflow.core.csvfiles import dict_reader
from rntflow.core.errors import OutcomeImportError
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.writer import LoadReport, has_files, hive_read_sql, load_table

OUTCOME_COLUMNS = ("subject_id", "endpoint", "lesion_voi", "grade", "response", "event",
                   "time_to_event_months", "assessed_months")
TOXICITY_ENDPOINTS = ("nephrotoxicity", "xerostomia")
ENDPOINTS = TOXICITY_ENDPOINTS + ("lesion_response", "pfs")
RESPONSES = ("CR", "PR", "SD", "PD")
CTCAE_GRADES = range(0, 6)  # CTCAE v5.0: grades 1-5; 0 = no adverse event
LESION_RE = re.compile(r"^Lesion_\d+$")
MAX_LISTED_PROBLEMS = 25


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
        Listing each problem with its row number.
    """
    csv_path = Path(csv_path)
    sites = dict(known_subject_ids) if isinstance(known_subject_ids, Mapping) else None
    known = set(known_subject_ids)
    try:
        fh = csv_path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise OutcomeImportError(f"{csv_path}: cannot read: {exc}") from None
    problems: list[str] = []
    records: list[dict] = []
    with fh:
        reader, missing = dict_reader(fh, OUTCOME_COLUMNS)
        if missing:
            raise OutcomeImportError(f"{csv_path}: row 1: missing column(s) {missing}")
        seen: dict[tuple, int] = {}
        for row_no, raw in enumerate(reader, start=2):
            rec = {k: (raw.get(k) or "").strip() for k in OUTCOME_COLUMNS}
            bad = []
            sid, endpoint = rec["subject_id"], rec["endpoint"]
            if not sid:
                bad.append("subject_id is empty")
            elif sid not in known:
                bad.append(f"unknown subject_id {sid!r} (not enrolled)")
            if endpoint not in ENDPOINTS:
                bad.append(f"endpoint {endpoint!r} is not one of {list(ENDPOINTS)}")
            out = {"subject_id": sid, "site_id": sites.get(sid) if sites else None, "endpoint": endpoint,
                   "lesion_voi": None, "grade": None, "response": None, "event": None,
                   "time_to_event_months": None, "assessed_months": None}
            if endpoint in TOXICITY_ENDPOINTS:
                grade = _int(rec["grade"])
                if grade is None or grade not in CTCAE_GRADES:
                    bad.append(f"grade {rec['grade']!r} is not a CTCAE integer grade 0-5")
                out["grade"] = grade
            elif endpoint == "lesion_response":
                if not LESION_RE.match(rec["lesion_voi"]):
                    bad.append(f"lesion_voi {rec['lesion_voi']!r} is not Lesion_<n>")
                if rec["response"] not in RESPONSES:
                    bad.append(f"response {rec['response']!r} is not one of {list(RESPONSES)}")
                out["lesion_voi"], out["response"] = rec["lesion_voi"], rec["response"]
            elif endpoint == "pfs":
                event = _int(rec["event"])
                if event not in (0, 1):
                    bad.append(f"event {rec['event']!r} is not 0 or 1")
                tte = _number(rec["time_to_event_months"])
                if tte is None or tte < 0:
                    bad.append(f"time_to_event_months {rec['time_to_event_months']!r} is not a number >= 0")
                out["event"], out["time_to_event_months"] = event, tte
            if rec["assessed_months"]:
                assessed = _number(rec["assessed_months"])
                if assessed is None or assessed < 0:
                    bad.append(f"assessed_months {rec['assessed_months']!r} is not a number >= 0")
                out["assessed_months"] = assessed
            key = (sid, endpoint, out["lesion_voi"])
            if not bad and key in seen:
                bad.append(f"duplicate of row {seen[key]} (same subject, endpoint and lesion)")
            seen.setdefault(key, row_no)
            problems += [f"row {row_no}: {b}" for b in bad]
            records.append(out)
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        raise OutcomeImportError(
            f"{csv_path}: {len(problems)} problem(s), nothing imported:\n  " + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more else "")
        )
    frame = pd.DataFrame.from_records(records, columns=["subject_id", "site_id", "endpoint", "lesion_voi", "grade",
                                                         "response", "event", "time_to_event_months",
                                                         "assessed_months"])
    for col in ("grade", "event"):
        frame[col] = frame[col].astype("Int8")
    return frame


def warehouse_subjects(warehouse_dir: str | Path) -> pd.DataFrame:
    """Latest ``trial_id, site_id, subject_id`` rows of the warehouse's subjects table."""
    spec = TABLES["subjects"]
    if not has_files(Path(warehouse_dir), spec):
        return pd.DataFrame(columns=["trial_id", "site_id", "subject_id"])
    sql = (f"SELECT DISTINCT trial_id, site_id, subject_id FROM ({hive_read_sql(Path(warehouse_dir).resolve(), spec)}) "
           "QUALIFY row_number() OVER (PARTITION BY trial_id, subject_id ORDER BY result_version DESC) = 1")
    con = duckdb.connect()
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def import_outcomes(warehouse_dir: str | Path, csv_path: str | Path,
                    known_subject_ids: Iterable[str] | Mapping[str, str], *,
                    trial_id: str | None = None) -> LoadReport:
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
