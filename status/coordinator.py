"""The trial coordinator's view: what arrived, what was processed, what needs attention.

:func:`coordinator_status` gathers, read-only and PHI-free:

* **per site**: subjects enrolled (and phantoms), studies received / pending / held /
  quarantined (the listener inbox, :func:`listener.status.inbox_status`), studies processed
  (rows of the warehouse ``studies`` table), protocol non-compliant studies, QA failures
  and warnings, calibrations valid / due / expired / missing, and failed flow runs;
* **per subject and cycle**: which protocol time points were received, which are
  missing or still pending, studies outside every window, whether a dose exists
  (``voi_doses`` rows), QA failures and failed flow runs.

:func:`format_coordinator_status` renders it for a terminal (at most 100 columns).

Reading the warehouse
---------------------
The warehouse is read through an *in-memory* DuckDB connection on which
:func:`warehouse.catalog.create_views` builds the same views as the catalog file
(latest ``result_version`` per natural key, typed, empty when a table has no files).
The catalog file ``<warehouse>/rntflow.duckdb`` is deliberately not used: opening it
with :func:`warehouse.catalog.connect` creates it when missing (``status`` must not
write), and its views are stale for a table that got its first files after the last
refresh. A warehouse that does not exist yet reads as empty.

The clock
---------
Study and calibration dates in the warehouse are de-identified: the listener shifts every
date of the trial by one trial-wide number of days (see :mod:`listener.deid`), so they
cannot be compared with the wall clock. Deadlines (missing time points, calibration
expiry) are therefore measured against a *reference time* ``as_of``:

1. ``now`` when the caller passes it (taken to be on the warehouse's, shifted, clock);
2. otherwise the latest ``acquired_at`` of any study in the warehouse (the trial's own,
   shifted, "now": the last thing that happened);
3. otherwise the latest calibration ``valid_from``;
4. otherwise the wall clock (nothing dated exists, so nothing is compared).

The trade-off of (2): when a trial receives nothing for weeks, its clock stands still, so
calibrations look younger than they are and late time points show as pending. The wall
clock is reported separately as ``generated_at``.

Time points
-----------
Each patient study's ``t_h`` is mapped to the protocol window holding it
(``earliest_h <= t_h <= latest_h``; the nearest nominal time when windows overlap). A study
outside every window is listed as out-of-window (``early``, ``between`` windows, ``late``,
or ``no_time`` without ``t_h``). A window without a study is ``missing`` when its deadline
has passed (administration + ``latest_h`` before ``as_of``), or when a later study of the
same cycle or a later cycle of the subject exists; otherwise it is ``pending``. The
administration time is taken from the ``administrations`` table or, failing that, as the
median of ``acquired_at - t_h`` over the cycle's studies.

Calibrations
------------
For each camera, radionuclide and protocol the current calibration is the latest
``valid_from`` not after ``as_of`` (superseded ones are ignored when a newer one exists).
It is ``expired`` when ``as_of - valid_from > validity_days``, ``due`` when it expires within
``due_within_days`` (default :data:`DUE_WITHIN_DAYS`), else ``valid``. A camera seen in the
``studies`` table without any calibration is ``missing``.

PHI
---
Only pseudonyms (``subject_id``, de-identified ``study_id``) and the listener's keyed
``patient_hash`` of held studies are returned; the enrolment table's ``patient_id`` never
is. As a second line of defence, any enrolled ``patient_id`` found in the free-text fields
coming from the warehouse (QA and flow-run messages, found/expected values) is replaced by
``[redacted]``.
"""

from __future__ import annotations

import re
import sqlite3
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import duckdb

from rntflow.core.config import Enrolment, TimePointWindow, TrialConfig, load_enrolment
from rntflow.core.errors import WarehouseError
from rntflow.warehouse.catalog import create_views
from rntflow.warehouse.schema import TABLES

#: A calibration expiring within this many days is reported as ``due``.
DUE_WITHIN_DAYS = 30

#: Prefect state names counted as a failed flow run (compared case-insensitively).
FAILED_STATES = frozenset({"failed", "crashed", "timedout"})

#: Replacement for an enrolled PatientID found in free text.
REDACTED = "[redacted]"

#: Warehouse tables the status reads.
_TABLES_READ = ("studies", "qa_checks", "calibrations", "flow_runs", "administrations", "voi_doses")

#: What the status takes from them (trial-filtered; ``?`` is the trial id).
_QUERIES: dict[str, str] = {
    "studies": "SELECT site_id, study_id, subject_id, cycle, kind, camera_id, acquired_at, t_h,"
               " protocol_compliant FROM studies WHERE trial_id = ? ORDER BY site_id, study_id",
    "qa_checks": "SELECT site_id, check_name, scope, scope_id, subject_id, study_id, cycle, status,"
                 " value_found, value_expected, message FROM qa_checks WHERE trial_id = ?"
                 " ORDER BY site_id, check_name, scope, scope_id",
    "calibrations": "SELECT site_id, camera_id, radionuclide, protocol, calibration_id, valid_from,"
                    " valid_until, superseded_by, drift_pct, drift_flag FROM calibrations"
                    " WHERE trial_id = ? ORDER BY site_id, camera_id, valid_from",
    "flow_runs": "SELECT site_id, flow_run_id, flow_name, state, subject_id, study_id, started_at,"
                 " ended_at, computed_at, message FROM flow_runs WHERE trial_id = ?"
                 " ORDER BY flow_run_id",
    "administrations": "SELECT site_id, subject_id, cycle, administration_datetime"
                       " FROM administrations WHERE trial_id = ?",
    "dose_cycles": "SELECT site_id, subject_id, cycle, count(DISTINCT voi) AS n_vois FROM voi_doses"
                 " WHERE trial_id = ? GROUP BY site_id, subject_id, cycle",
}


# --------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarehouseSnapshot:
    """The warehouse rows the status needs, one list of dicts per table.

    Attributes
    ----------
    rows : dict
        Table name -> rows (column -> value; timestamps as aware UTC datetimes), for
        ``studies``, ``qa_checks``, ``calibrations``, ``flow_runs`` and ``administrations``;
        ``dose_cycles`` holds ``voi_doses`` aggregated to ``(site_id, subject_id, cycle,
        n_vois)``.
    """

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def get(self, table: str) -> list[dict[str, Any]]:
        """Rows of ``table`` (empty when it has none)."""
        return self.rows.get(table, [])


@dataclass(frozen=True)
class CalibrationState:
    """The current state of one camera's calibration.

    Attributes
    ----------
    camera_id : str
    status : str
        ``valid``, ``due``, ``expired`` or ``missing``.
    radionuclide, protocol, calibration_id : str or None
        Of the current calibration (``None`` when missing).
    valid_from, expires_at : str or None
        ISO 8601 UTC (de-identified clock).
    days_left : float or None
        Days from ``as_of`` to expiry (negative once expired).
    drift_flag : bool or None
        Sensitivity drift beyond the trial's tolerance at this calibration.
    drift_pct : float or None
    """

    camera_id: str
    status: str
    radionuclide: str | None = None
    protocol: str | None = None
    calibration_id: str | None = None
    valid_from: str | None = None
    expires_at: str | None = None
    days_left: float | None = None
    drift_flag: bool | None = None
    drift_pct: float | None = None


@dataclass
class _Cycle:
    """Accumulates one subject-cycle while the warehouse rows are walked."""

    cycle: int
    studies: list[dict[str, Any]] = field(default_factory=list)
    administered_at: datetime | None = None
    segmentation: bool = False
    n_dose_vois: int = 0
    qa: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Subject:
    """Accumulates one subject while the warehouse rows are walked."""

    subject_id: str
    site_id: str | None
    enrolled: bool
    cycles: dict[int, _Cycle] = field(default_factory=dict)
    studies_without_cycle: int = 0
    qa: list[dict[str, Any]] = field(default_factory=list)
    failed_runs: list[dict[str, Any]] = field(default_factory=list)

    def cycle(self, n: int) -> _Cycle:
        if n not in self.cycles:
            self.cycles[n] = _Cycle(n)
        return self.cycles[n]


# --------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------


def match_time_point(t_h: float | None, windows: Sequence[TimePointWindow]) -> int | None:
    """Index of the protocol window holding ``t_h``.

    Parameters
    ----------
    t_h : float or None
        Acquisition time after administration (h).
    windows : sequence of TimePointWindow
        ``config.protocol.time_points``.

    Returns
    -------
    int or None
        Index into ``windows`` (the nearest nominal time when windows overlap), ``None``
        when ``t_h`` is missing or outside every window.
    """
    if t_h is None or t_h != t_h:  # None or NaN
        return None
    hits = [i for i, w in enumerate(windows) if w.earliest_h <= t_h <= w.latest_h]
    if not hits:
        return None
    return min(hits, key=lambda i: abs(windows[i].nominal_h - t_h))


def out_of_window_reason(t_h: float | None, windows: Sequence[TimePointWindow]) -> str:
    """Why a study matches no window: ``no_time``, ``early``, ``late`` or ``between``."""
    if t_h is None or t_h != t_h:
        return "no_time"
    if t_h < min(w.earliest_h for w in windows):
        return "early"
    if t_h > max(w.latest_h for w in windows):
        return "late"
    return "between"


def calibration_state(valid_from: datetime, as_of: datetime, validity_days: int,
                      due_within_days: int = DUE_WITHIN_DAYS) -> tuple[str, datetime, float]:
    """Status of a calibration made at ``valid_from``, seen at ``as_of``.

    Parameters
    ----------
    valid_from : datetime
        Start of validity (aware).
    as_of : datetime
        Reference time (aware, same clock as ``valid_from``).
    validity_days : int
        ``config.calibration.validity_days``.
    due_within_days : int
        Horizon for ``due``.

    Returns
    -------
    (status, expires_at, days_left)
        ``expired`` when ``as_of - valid_from > validity_days``; ``due`` when it expires
        within ``due_within_days``; else ``valid``. ``days_left`` is negative once expired.
    """
    expires_at = valid_from + timedelta(days=validity_days)
    days_left = (expires_at - as_of).total_seconds() / 86400.0
    if as_of - valid_from > timedelta(days=validity_days):
        status = "expired"
    elif days_left <= due_within_days:
        status = "due"
    else:
        status = "valid"
    return status, expires_at, days_left


def calibration_states(calibrations: Iterable[dict[str, Any]], cameras: dict[str, set[str]],
                       as_of: datetime, validity_days: int,
                       due_within_days: int = DUE_WITHIN_DAYS) -> dict[str, list[CalibrationState]]:
    """The current calibration of every camera, per site.

    Parameters
    ----------
    calibrations : iterable of dict
        Rows of the ``calibrations`` table (``site_id``, ``camera_id``, ``radionuclide``,
        ``protocol``, ``calibration_id``, ``valid_from``, ``superseded_by``, ``drift_pct``,
        ``drift_flag``).
    cameras : dict
        ``site_id`` -> cameras seen in studies; one without a calibration is ``missing``.
    as_of : datetime
        Reference time; calibrations made after it do not count.
    validity_days, due_within_days : int
        See :func:`calibration_state`.

    Returns
    -------
    dict
        ``site_id`` -> states sorted by camera, one per camera, radionuclide and protocol.
    """
    by_key: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for c in calibrations:
        by_key.setdefault((c["site_id"], c["camera_id"], c["radionuclide"], c["protocol"]), []).append(c)
    calibrated: dict[str, set[str]] = {}
    states: dict[str, list[CalibrationState]] = {}
    for (site_id, camera_id, nuclide, protocol), cals in sorted(by_key.items()):
        usable = [c for c in cals if c["valid_from"] is not None and c["valid_from"] <= as_of]
        if not usable:
            continue  # only calibrations made after as_of: none at that time
        current = [c for c in usable if not c.get("superseded_by")] or usable
        cal = max(current, key=lambda c: c["valid_from"])
        status, expires_at, days_left = calibration_state(cal["valid_from"], as_of, validity_days,
                                                          due_within_days)
        calibrated.setdefault(site_id, set()).add(camera_id)
        states.setdefault(site_id, []).append(CalibrationState(
            camera_id=camera_id, status=status, radionuclide=nuclide, protocol=protocol,
            calibration_id=cal.get("calibration_id"), valid_from=_iso(cal["valid_from"]),
            expires_at=_iso(expires_at), days_left=round(days_left, 1),
            drift_flag=cal.get("drift_flag"), drift_pct=_num(cal.get("drift_pct"))))
    for site_id, cams in cameras.items():
        for camera_id in sorted(cams - calibrated.get(site_id, set())):
            states.setdefault(site_id, []).append(CalibrationState(camera_id=camera_id, status="missing"))
    return {k: sorted(v, key=lambda c: (c.camera_id, c.radionuclide or "", c.protocol or ""))
            for k, v in states.items()}


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def _int(value: Any) -> int | None:
    f = _num(value)
    return None if f is None else int(f)


def _hours(h: float) -> str:
    return f"{h:g}h"


class _Redactor:
    """Replaces enrolled PatientIDs in free text (identifier columns are left alone)."""

    def __init__(self, patient_ids: Iterable[str]) -> None:
        ids = sorted({p for p in patient_ids if p}, key=len, reverse=True)
        self._re = (re.compile("(?<![A-Za-z0-9])(?:" + "|".join(re.escape(p) for p in ids)
                               + ")(?![A-Za-z0-9])") if ids else None)

    def __call__(self, text: Any) -> Any:
        if self._re is None or not isinstance(text, str):
            return text
        return self._re.sub(REDACTED, text)


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def read_warehouse(warehouse_dir: str | Path, trial_id: str) -> WarehouseSnapshot:
    """Read what the status needs from the warehouse Parquet files (never writes).

    Parameters
    ----------
    warehouse_dir : str or Path
        Warehouse root; a missing folder reads as an empty warehouse.
    trial_id : str
        Only this trial's rows are returned.

    Returns
    -------
    WarehouseSnapshot

    Raises
    ------
    WarehouseError
        When DuckDB cannot read the files (e.g. a corrupt Parquet file).
    """
    specs = {name: TABLES[name] for name in _TABLES_READ}
    con = duckdb.connect()
    try:
        try:
            con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error:  # pragma: no cover - ICU missing: timestamps are converted below
            pass
        create_views(con, warehouse_dir, specs)
        rows: dict[str, list[dict[str, Any]]] = {}
        for name, sql in _QUERIES.items():
            cur = con.execute(sql, [trial_id])
            cols = [d[0] for d in cur.description]
            rows[name] = [dict(zip(cols, r)) for r in cur.fetchall()]
    except duckdb.Error as exc:
        raise WarehouseError(f"warehouse {warehouse_dir}: cannot read: {exc}") from None
    finally:
        con.close()
    for table in rows.values():
        for row in table:
            for k, v in row.items():
                if isinstance(v, datetime):
                    row[k] = _utc(v)
    return WarehouseSnapshot(rows)


def _read_inbox(config: TrialConfig) -> tuple[dict[str, Any] | None, str | None]:
    from rntflow.listener.status import inbox_status

    try:
        return inbox_status(config), None
    except sqlite3.Error as exc:
        return None, f"inbox {Path(config.spool_dir) / 'inbox.sqlite'}: cannot read: {exc}"


# --------------------------------------------------------------------------------------
# the status
# --------------------------------------------------------------------------------------


def _reference_time(now: datetime | None, wh: WarehouseSnapshot,
                    wall: datetime) -> tuple[datetime, str]:
    if now is not None:
        return _utc(now) or wall, "given"
    acquired = [s["acquired_at"] for s in wh.get("studies") if s.get("acquired_at") is not None]
    if acquired:
        return max(acquired), "latest_acquisition"
    calibrated = [c["valid_from"] for c in wh.get("calibrations") if c.get("valid_from") is not None]
    if calibrated:
        return max(calibrated), "latest_calibration"
    return wall, "wall_clock"


def _empty_site(site_id: str, name: str | None, in_config: bool) -> dict[str, Any]:
    return {
        "site_id": site_id, "name": name, "in_config": in_config,
        "subjects_enrolled": 0, "phantoms_enrolled": 0,
        "studies_received": 0, "studies_pending": 0, "studies_handed_off": 0,
        "studies_held": 0, "held_instances": 0, "quarantined": 0, "rejections": 0,
        "held_studies": [],
        "studies_processed": 0, "patient_studies_processed": 0, "phantom_studies_processed": 0,
        "studies_non_compliant": 0,
        "qa": {"fail": 0, "warn": 0, "pass": 0},
        "qa_failures": [],
        "calibrations": [],
        "calibration_counts": {"valid": 0, "due": 0, "expired": 0, "missing": 0},
        "flow_runs_failed": 0,
        "failed_runs": [],
    }


_NO_TIME = datetime.min.replace(tzinfo=timezone.utc)


def _run_time(run: dict[str, Any]) -> datetime:
    for key in ("ended_at", "started_at", "computed_at"):
        if run.get(key) is not None:
            return run[key]
    return _NO_TIME


def _current_failed_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed runs not followed by a later run of the same flow for the same subject/study."""
    latest: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        key = (run.get("flow_name"), run.get("subject_id"), run.get("study_id"))
        if key not in latest or _run_time(run) >= _run_time(latest[key]):
            latest[key] = run
    failed = [r for r in latest.values() if str(r.get("state") or "").lower() in FAILED_STATES]
    return sorted(failed, key=lambda r: (_run_time(r), str(r.get("flow_run_id"))))


def _cycle_status(cyc: _Cycle, windows: Sequence[TimePointWindow], as_of: datetime,
                  later_cycle: bool) -> dict[str, Any]:
    patient = sorted(cyc.studies, key=lambda s: (_num(s.get("t_h")) is None, _num(s.get("t_h")) or 0.0))
    admin = cyc.administered_at
    if admin is None:
        offsets = [s["acquired_at"] - timedelta(hours=float(s["t_h"])) for s in patient
                   if s.get("acquired_at") is not None and _num(s.get("t_h")) is not None]
        if offsets:
            ref = offsets[0]
            admin = ref + timedelta(seconds=statistics.median((o - ref).total_seconds() for o in offsets))
    slots: list[list[dict[str, Any]]] = [[] for _ in windows]
    out_of_window = []
    for s in patient:
        t_h = _num(s.get("t_h"))
        i = match_time_point(t_h, windows)
        if i is None:
            out_of_window.append({"study_id": s["study_id"], "t_h": t_h,
                                  "reason": out_of_window_reason(t_h, windows)})
        else:
            slots[i].append(s)
    latest_t = max((_num(s.get("t_h")) for s in patient if _num(s.get("t_h")) is not None), default=None)
    time_points = []
    for w, got in zip(windows, slots):
        deadline = None if admin is None else admin + timedelta(hours=w.latest_h)
        if got:
            state = "received"
        elif (deadline is not None and as_of > deadline) or later_cycle or (
                latest_t is not None and latest_t > w.latest_h):
            state = "missing"
        else:
            state = "pending"
        time_points.append({
            "nominal_h": w.nominal_h, "earliest_h": w.earliest_h, "latest_h": w.latest_h,
            "state": state, "deadline": _iso(deadline),
            "studies": [{"study_id": s["study_id"], "t_h": _num(s.get("t_h"))} for s in got],
        })
    qa_fail = [q for q in cyc.qa if q["status"] == "fail"]
    return {
        "cycle": cyc.cycle,
        "administered_at": _iso(admin),
        "studies_processed": len(patient),
        "time_points": time_points,
        "received_h": [tp["nominal_h"] for tp in time_points if tp["state"] == "received"],
        "missing_h": [tp["nominal_h"] for tp in time_points if tp["state"] == "missing"],
        "pending_h": [tp["nominal_h"] for tp in time_points if tp["state"] == "pending"],
        "out_of_window": out_of_window,
        "non_compliant_studies": [s["study_id"] for s in patient if s.get("protocol_compliant") is False],
        "segmentation": cyc.segmentation,
        "dose": cyc.n_dose_vois > 0,
        "dose_vois": cyc.n_dose_vois,
        "qa": {"fail": len(qa_fail), "warn": sum(q["status"] == "warn" for q in cyc.qa)},
        "qa_failures": qa_fail,
    }


def _subject_flags(subj: dict[str, Any]) -> list[str]:
    flags = []
    if subj["failed_runs"]:
        flags.append("flow_failed")
    if subj["qa"]["fail"]:
        flags.append("qa_fail")
    if any(c["missing_h"] for c in subj["cycles"]):
        flags.append("missing_time_point")
    if any(c["out_of_window"] for c in subj["cycles"]):
        flags.append("out_of_window")
    if any(c["non_compliant_studies"] for c in subj["cycles"]):
        flags.append("non_compliant")
    if not subj["enrolled"]:
        flags.append("not_enrolled")
    return flags


def _subject_state(subj: dict[str, Any]) -> str:
    flags = subj["flags"]
    if "flow_failed" in flags:
        return "failed"
    if flags:
        return "attention"
    if not subj["cycles"]:
        return "no_studies"
    if any(c["pending_h"] or not c["dose"] for c in subj["cycles"]):
        return "in_progress"
    return "ok"


def coordinator_status(config: TrialConfig, now: datetime | None = None, *,
                       due_within_days: int = DUE_WITHIN_DAYS) -> dict[str, Any]:
    """The coordinator's view of a trial, JSON-serialisable and PHI-free.

    Parameters
    ----------
    config : TrialConfig
        The trial (sites, protocol time points, calibration validity, paths).
    now : datetime, optional
        Reference time for deadlines and calibration ages, on the warehouse's
        (de-identified) clock. Default: the latest study acquisition in the warehouse (see
        the module docstring, "The clock"). A naive datetime is taken as UTC.
    due_within_days : int
        A calibration expiring within this many days is ``due`` (default 30).

    Returns
    -------
    dict
        ``trial_id``, ``generated_at`` (wall clock), ``as_of`` and ``clock`` (how ``as_of``
        was chosen: ``given``, ``latest_acquisition``, ``latest_calibration`` or
        ``wall_clock``), ``protocol`` (time points, validity, due horizon), ``sources``
        (warehouse/inbox availability and errors), ``sites`` (list, config order),
        ``subjects`` (list, by site then subject), ``unattributed`` (inbox rejections and
        quarantine of unknown callers, failed runs without a site) and ``totals``.

    Raises
    ------
    EnrolmentError
        When the enrolment table exists but is malformed.
    """
    wall = datetime.now(timezone.utc)
    windows = list(config.protocol.time_points)
    enrolment: list[Enrolment] = load_enrolment(config.enrolment_file)
    redact = _Redactor(e.patient_id for e in enrolment)

    warehouse_error = None
    try:
        wh = read_warehouse(config.warehouse_dir, config.trial_id)
    except WarehouseError as exc:
        wh, warehouse_error = WarehouseSnapshot(), str(exc)
    inbox, inbox_error = _read_inbox(config)
    as_of, clock = _reference_time(now, wh, wall)

    # ---- sites --------------------------------------------------------------------
    sites: dict[str, dict[str, Any]] = {
        s.id: _empty_site(s.id, s.name, True) for s in config.sites}

    def site(site_id: str | None) -> dict[str, Any] | None:
        if site_id is None:
            return None
        if site_id not in sites:
            sites[site_id] = _empty_site(site_id, None, False)
        return sites[site_id]

    for e in enrolment:
        row = site(e.site_id)
        row["phantoms_enrolled" if e.kind == "phantom" else "subjects_enrolled"] += 1

    unattributed: dict[str, Any] = {"rejections": 0, "quarantined": 0, "failed_runs": []}
    if inbox is not None:
        for site_id, counts in inbox["sites"].items():
            row = site(site_id)
            for key in ("studies_received", "studies_pending", "studies_handed_off", "held_instances",
                        "quarantined", "rejections"):
                row[key] = int(counts.get(key, 0) or 0)
            row["held_studies"] = [{"patient_hash": h.get("patient_hash"), "instances": h.get("instances")}
                                   for h in counts.get("held_studies", [])]
            row["studies_held"] = len(row["held_studies"])
        for key in ("rejections", "quarantined"):
            unattributed[key] = int(inbox.get("unattributed", {}).get(key, 0) or 0)

    # ---- subjects -----------------------------------------------------------------
    site_order = {s.id: i for i, s in enumerate(config.sites)}
    subjects: dict[str, _Subject] = {}
    phantoms = {e.subject_id for e in enrolment if e.kind == "phantom"}
    for e in enrolment:
        if e.kind == "patient":
            subjects[e.subject_id] = _Subject(e.subject_id, e.site_id, True)

    def subject(subject_id: str | None, site_id: str | None) -> _Subject | None:
        if subject_id is None or subject_id in phantoms:  # phantom scans are shown per site
            return None
        if subject_id not in subjects:
            subjects[subject_id] = _Subject(subject_id, site_id, False)
        return subjects[subject_id]

    studies_by_id: dict[str, dict[str, Any]] = {}
    cameras: dict[str, set[str]] = {}
    for s in wh.get("studies"):
        studies_by_id[s["study_id"]] = s
        row = site(s["site_id"])
        row["studies_processed"] += 1
        if s.get("kind") == "phantom":
            row["phantom_studies_processed"] += 1
        elif s.get("kind") in (None, "patient") and s.get("subject_id") is not None:
            row["patient_studies_processed"] += 1
        if s.get("protocol_compliant") is False:
            row["studies_non_compliant"] += 1
        if s.get("camera_id"):
            cameras.setdefault(s["site_id"], set()).add(s["camera_id"])
        subj = subject(s.get("subject_id"), s["site_id"])
        if subj is None or s.get("kind") == "phantom":
            continue
        cycle = _int(s.get("cycle"))
        if cycle is None:
            subj.studies_without_cycle += 1
        elif s.get("kind") == "segmentation":
            subj.cycle(cycle).segmentation = True
        else:
            subj.cycle(cycle).studies.append(s)

    for a in wh.get("administrations"):
        subj = subject(a.get("subject_id"), a.get("site_id"))
        cycle = _int(a.get("cycle"))
        if subj is not None and cycle is not None:
            subj.cycle(cycle).administered_at = a.get("administration_datetime")

    for d in wh.get("dose_cycles"):
        subj = subject(d.get("subject_id"), d.get("site_id"))
        cycle = _int(d.get("cycle"))
        if subj is not None and cycle is not None:
            subj.cycle(cycle).n_dose_vois = int(d["n_vois"])

    # ---- QA -----------------------------------------------------------------------
    for q in wh.get("qa_checks"):
        study = studies_by_id.get(q.get("study_id") or "")
        subject_id = q.get("subject_id") or (study or {}).get("subject_id")
        cycle = _int(q.get("cycle"))
        if cycle is None and study is not None:
            cycle = _int(study.get("cycle"))
        rec = {"check_name": q["check_name"], "scope": q["scope"], "scope_id": q["scope_id"],
               "subject_id": subject_id, "study_id": q.get("study_id"), "cycle": cycle,
               "status": q["status"], "value_found": redact(q.get("value_found")),
               "value_expected": redact(q.get("value_expected")), "message": redact(q.get("message"))}
        row = site(q["site_id"])
        row["qa"][q["status"]] = row["qa"].get(q["status"], 0) + 1
        if q["status"] == "fail":
            row["qa_failures"].append(rec)
        subj = subject(subject_id, q["site_id"])
        if subj is not None and q["status"] in ("fail", "warn"):
            if cycle is not None:
                subj.cycle(cycle).qa.append(rec)
            subj.qa.append(rec)

    # ---- calibrations -------------------------------------------------------------
    validity = config.calibration.validity_days
    for site_id, sts in calibration_states(wh.get("calibrations"), cameras, as_of, validity,
                                           due_within_days).items():
        row = site(site_id)
        row["calibrations"] = [asdict(c) for c in sts]
        for c in sts:
            row["calibration_counts"][c.status] += 1

    # ---- flow runs ----------------------------------------------------------------
    for run in _current_failed_runs(wh.get("flow_runs")):
        study = studies_by_id.get(run.get("study_id") or "")
        subject_id = run.get("subject_id") or (study or {}).get("subject_id")
        subj = subjects.get(subject_id) if subject_id else None
        site_id = run.get("site_id") or (subj.site_id if subj else None) or (study or {}).get("site_id")
        rec = {"flow_run_id": run["flow_run_id"], "flow_name": run["flow_name"], "state": run.get("state"),
               "subject_id": subject_id, "study_id": run.get("study_id"),
               "at": None if _run_time(run) == _NO_TIME else _iso(_run_time(run)),
               "message": redact(run.get("message"))}
        row = site(site_id)
        if row is None:
            unattributed["failed_runs"].append(rec)
        else:
            row["failed_runs"].append(rec)
            row["flow_runs_failed"] += 1
        s = subject(subject_id, site_id)
        if s is not None:
            s.failed_runs.append(rec)

    # ---- assemble -----------------------------------------------------------------
    subject_rows = []
    for subj in sorted(subjects.values(),
                       key=lambda s: (site_order.get(s.site_id or "", len(site_order)), s.site_id or "",
                                      s.subject_id)):
        last_cycle = max(subj.cycles, default=None)
        cycles = [_cycle_status(subj.cycles[n], windows, as_of, later_cycle=n != last_cycle)
                  for n in sorted(subj.cycles)]
        srec: dict[str, Any] = {
            "subject_id": subj.subject_id, "site_id": subj.site_id, "enrolled": subj.enrolled,
            "studies_processed": sum(c["studies_processed"] for c in cycles) + subj.studies_without_cycle,
            "studies_without_cycle": subj.studies_without_cycle,
            "cycles": cycles,
            "qa": {"fail": sum(q["status"] == "fail" for q in subj.qa),
                   "warn": sum(q["status"] == "warn" for q in subj.qa)},
            "failed_runs": subj.failed_runs,
        }
        srec["flags"] = _subject_flags(srec)
        srec["state"] = _subject_state(srec)
        subject_rows.append(srec)

    site_rows = sorted(sites.values(), key=lambda r: (site_order.get(r["site_id"], len(site_order)), r["site_id"]))
    count_keys = [k for k, v in _empty_site("X", None, True).items() if isinstance(v, int) and not isinstance(v, bool)]
    totals = {k: sum(r[k] for r in site_rows) for k in count_keys}
    totals["qa_fail"] = sum(r["qa"]["fail"] for r in site_rows)
    totals["qa_warn"] = sum(r["qa"]["warn"] for r in site_rows)
    for k in ("valid", "due", "expired", "missing"):
        totals[f"calibrations_{k}"] = sum(r["calibration_counts"][k] for r in site_rows)
    totals["subjects_failed"] = sum(s["state"] == "failed" for s in subject_rows)
    totals["subjects_attention"] = sum(s["state"] == "attention" for s in subject_rows)

    return {
        "trial_id": config.trial_id,
        "generated_at": _iso(wall),
        "as_of": _iso(as_of),
        "clock": clock,
        "protocol": {
            "radionuclide": config.protocol.radionuclide,
            "time_points_h": [w.nominal_h for w in windows],
            "windows_h": [[w.earliest_h, w.latest_h] for w in windows],
            "calibration_validity_days": validity,
            "calibration_due_within_days": due_within_days,
        },
        "sources": {
            "warehouse": {"path": str(config.warehouse_dir), "error": warehouse_error,
                          "rows": {k: len(v) for k, v in wh.rows.items()}},
            "inbox": {"path": str(Path(config.spool_dir) / "inbox.sqlite"),
                      "present": (Path(config.spool_dir) / "inbox.sqlite").exists(), "error": inbox_error},
            "enrolment": {"path": str(config.enrolment_file), "present": config.enrolment_file.exists()},
        },
        "sites": site_rows,
        "subjects": subject_rows,
        "unattributed": unattributed,
        "totals": totals,
    }


# --------------------------------------------------------------------------------------
# terminal rendering
# --------------------------------------------------------------------------------------

_CLOCK_TEXT = {
    "given": "as given",
    "latest_acquisition": "latest acquisition in the warehouse; dates are de-identified",
    "latest_calibration": "latest calibration in the warehouse; dates are de-identified",
    "wall_clock": "wall clock: nothing dated in the warehouse yet",
}


_OUT_OF_WINDOW_TEXT = {"early": "early", "late": "late", "between": "off-window", "no_time": "no t_h"}


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _day(iso: str | None) -> str:
    return "?" if not iso else iso[:10]


def _middle(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters in the middle, keeping its end (a camera's serial)."""
    if len(text) <= n:
        return text
    tail = min(len(text.rsplit("|", 1)[-1]) + 1, max(n - 6, 1)) if "|" in text else (n - 3) // 2
    return text[: max(n - 3 - tail, 0)] + "..." + text[len(text) - tail:]


def _calibration_line(c: dict[str, Any], trial_nuclide: str | None = None, width: int = 100) -> str:
    nuclide = c.get("radionuclide")
    suffix = f" ({nuclide})" if nuclide and nuclide != trial_nuclide else ""
    if c["status"] == "missing":
        label, text = "MISSING", "camera in studies, no calibration"
    else:
        left = c["days_left"]
        text = (f"expired {_day(c['expires_at'])} ({-left:.0f} d ago)" if c["status"] == "expired"
                else f"until {_day(c['expires_at'])} ({left:.0f} d left)")
        if c.get("drift_flag"):
            text += f", DRIFT {c['drift_pct']:+.1f}%" if c.get("drift_pct") is not None else ", DRIFT"
        label = c["status"] if c["status"] == "valid" else c["status"].upper()
    head = f"  calibration {label:<7}  "
    room = max(width - len(head) - len(suffix) - 2 - len(text), 12)
    return f"{head}{_middle(c['camera_id'], room)}{suffix}: {text}"


def _qa_text(q: dict[str, Any]) -> str:
    where = q["scope"] + " " + str(q["scope_id"])
    parts = [f"{q['check_name']} ({where})"]
    if q.get("value_found") or q.get("value_expected"):
        parts.append(f"found {q.get('value_found') or '?'}, expected {q.get('value_expected') or '?'}")
    if q.get("message"):
        parts.append(str(q["message"]))
    return ": ".join(parts)


def _run_text(r: dict[str, Any], who: bool = True) -> str:
    name = (r.get("subject_id") or r.get("study_id") or "") if who else ""
    head = f"{r['flow_name']} {r.get('state') or ''}".strip() + (f" [{name}]" if name else "")
    return head + (f": {r['message']}" if r.get("message") else "")


def _cycle_cells(c: dict[str, Any], label_w: int) -> tuple[str, str]:
    tokens = []
    for tp in c["time_points"]:
        tok = {"received": _hours(tp["nominal_h"]), "missing": "---", "pending": "..."}[tp["state"]]
        tokens.append(f"{tok:<{label_w}}")
    notes = []
    if c["missing_h"]:
        notes.append("missing " + " ".join(_hours(h) for h in c["missing_h"]))
    for o in c["out_of_window"]:
        notes.append(_OUT_OF_WINDOW_TEXT[o["reason"]] + ("" if o["t_h"] is None else " " + _hours(o["t_h"])))
    if c["non_compliant_studies"]:
        notes.append(f"{len(c['non_compliant_studies'])} non-compliant")
    slots = f"C{c['cycle']}: " + " ".join(tokens).rstrip()
    return slots, (f"({'; '.join(notes)})" if notes else "")


def _site_table(sites: list[dict[str, Any]]) -> list[str]:
    cols = [("subj", lambda r: r["subjects_enrolled"]), ("recv", lambda r: r["studies_received"]),
            ("pend", lambda r: r["studies_pending"]), ("proc", lambda r: r["studies_processed"]),
            ("held", lambda r: r["studies_held"]), ("quar", lambda r: r["quarantined"]),
            ("nonc", lambda r: r["studies_non_compliant"]), ("QA fail", lambda r: r["qa"]["fail"]),
            ("QA warn", lambda r: r["qa"]["warn"]), ("failed", lambda r: r["flow_runs_failed"])]
    head = f"{'site':<8}" + "".join(f"{name:>{len(name) + 2}}" for name, _ in cols) + "  calibrations"
    lines = [head]
    for r in sites:
        cc = r["calibration_counts"]
        cal = ", ".join(f"{cc[k]} {'ok' if k == 'valid' else k}" for k in ("expired", "missing", "due", "valid")
                        if cc[k]) or "-"
        lines.append(f"{r['site_id']:<8}" + "".join(f"{fn(r):>{len(name) + 2}}" for name, fn in cols)
                     + f"  {cal}")
    lines += ["(subj: subjects enrolled; recv/pend: studies received/pending in the inbox; "
              "proc: processed,",
              " in the warehouse; nonc: not protocol-compliant; failed: failed flow runs)"]
    return lines


def format_coordinator_status(status: dict[str, Any], width: int = 100, max_items: int = 10) -> str:
    """Render :func:`coordinator_status` as plain text for a terminal.

    Parameters
    ----------
    status : dict
        The result of :func:`coordinator_status`.
    width : int
        Longest line (longer free text is cut with ``...``); default 100.
    max_items : int
        Most QA failures / failed runs listed per site (the rest are counted).

    Returns
    -------
    str
        A site table, then per site its calibrations, QA failures, failed runs, held
        studies and a subject table with one line per cycle, e.g.
        ``C1: 4h 24h 96h ---  (missing 168h)  dose yes  QA ok``.
    """
    tps = " ".join(_hours(h) for h in status["protocol"]["time_points_h"])
    out = [f"rntflow status: trial {status['trial_id']}",
           f"as of {status['as_of'][:16].replace('T', ' ')} UTC ({_CLOCK_TEXT.get(status['clock'], status['clock'])})",
           f"protocol time points {tps}; calibrations valid "
           f"{status['protocol']['calibration_validity_days']} d, due within "
           f"{status['protocol']['calibration_due_within_days']} d"]
    src = status["sources"]
    if src["warehouse"]["error"]:
        out.append(f"WAREHOUSE UNREADABLE: {src['warehouse']['error']}")
    elif not any(src["warehouse"]["rows"].values()):
        out.append("warehouse: no results yet")
    if src["inbox"]["error"]:
        out.append(f"INBOX UNREADABLE: {src['inbox']['error']}")
    elif not src["inbox"]["present"]:
        out.append("inbox: nothing received yet")
    if not src["enrolment"]["present"]:
        out.append("enrolment table: not found")
    out += ["", *_site_table(status["sites"])]

    subjects_by_site: dict[str | None, list[dict[str, Any]]] = {}
    for s in status["subjects"]:
        subjects_by_site.setdefault(s["site_id"], []).append(s)
    label_w = max((len(_hours(h)) for h in status["protocol"]["time_points_h"]), default=3)
    label_w = max(label_w, 3)

    def listed(items: list[Any], render) -> list[str]:
        lines = [render(x) for x in items[:max_items]]
        if len(items) > max_items:
            lines.append(f"              ... and {len(items) - max_items} more (see --json)")
        return lines

    site_ids = [r["site_id"] for r in status["sites"]]
    site_ids += [k for k in subjects_by_site if k not in site_ids]
    by_id = {r["site_id"]: r for r in status["sites"]}
    for site_id in site_ids:
        r = by_id.get(site_id)
        subs = subjects_by_site.get(site_id, [])
        out.append("")
        name = (r or {}).get("name") or ("(not in the trial config)" if site_id else "(no site)")
        out.append(f"{site_id or '-'}  {name}")
        if r is not None:
            nuclide = status["protocol"].get("radionuclide")
            out += [_calibration_line(c, nuclide, width) for c in r["calibrations"]]
            out += listed(r["qa_failures"], lambda q: f"  QA fail     {_qa_text(q)}")
            # runs of a subject are shown under the subject below
            out += listed([f for f in r["failed_runs"] if not f.get("subject_id")],
                          lambda f: f"  run failed  {_run_text(f)}")
            out += [f"  held        unenrolled patient {h['patient_hash']}: {h['instances']} instance(s)"
                    for h in r["held_studies"]]
        if not subs:
            out.append("  no subjects enrolled")
            continue
        rows = []
        for s in subs:
            state = s["state"].upper() if s["state"] in ("failed", "attention") else s["state"]
            extra = "" if s["enrolled"] else "  not in the enrolment table"
            head = f"  {s['subject_id']}  [{state.replace('_', ' ')}]{extra}"
            rows.append((head, None))
            for f in s["failed_runs"]:
                rows.append((f"    failed: {_run_text(f, who=False)}", None))
            if not s["cycles"]:
                rows.append(("    no studies processed yet", None))
            for c in s["cycles"]:
                slots, notes = _cycle_cells(c, label_w)
                qa = f"{c['qa']['fail']} fail" if c["qa"]["fail"] else (
                    f"{c['qa']['warn']} warn" if c["qa"]["warn"] else "ok")
                rows.append((f"    {slots}", f"dose {'yes' if c['dose'] else 'no':<3}  QA {qa:<6}  {notes}"))
        slot_w = max((len(t) for t, m in rows if m is not None), default=0)
        for text, marker in rows:
            out.append(text if marker is None else f"{text:<{slot_w}}  {marker}".rstrip())
    un = status.get("unattributed", {})
    if un.get("rejections") or un.get("quarantined") or un.get("failed_runs"):
        out += ["", f"unattributed: {un.get('rejections', 0)} rejected association(s), "
                    f"{un.get('quarantined', 0)} quarantined"]
        out += listed(un.get("failed_runs", []), lambda f: f"  run failed  {_run_text(f)}")
    out += ["", "time points: <n>h received, --- missing (window passed), ... pending;",
            "             early/late/off-window <t_h>: a study outside every protocol window"]
    return "\n".join(_clip(line, width) for line in out)
