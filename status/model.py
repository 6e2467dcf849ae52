"""The trial coordinator's view: what arrived, what was processed, what needs attention.

:func:`coordinator_status` gathers, read-only and PHI-free:

* **per site**: subjects enrolled (and phantoms), studies received / pending / held /
  quarantined (the listener inbox, :func:`rntflow.listener.status.inbox_status`), studies
  processed (rows of the warehouse ``studies`` table), protocol non-compliant studies, QA
  failures and warnings, calibrations valid / due / expired / missing, and failed flow runs;
* **per subject and cycle**: which protocol time points were received, which are
  missing or still pending, studies outside every window, whether a dose exists
  (``voi_doses`` rows), QA failures and failed flow runs.

:func:`rntflow.status.render.format_coordinator_status` renders it for a terminal. The
reads are :mod:`rntflow.status.queries`'s, the time points :mod:`rntflow.status.cycles`'s,
the calibrations :mod:`rntflow.status.calibrations`'s.

The clock
---------
Study and calibration dates in the warehouse are de-identified: the listener shifts every
date of the trial by one trial-wide number of days (see :mod:`rntflow.listener.deid`), so
they cannot be compared with the wall clock. Deadlines (missing time points, calibration
expiry) are therefore measured against a *reference time* ``as_of``:

1. ``now`` when the caller passes it (``rntflow status --as-of``; on the warehouse's,
   shifted, clock);
2. otherwise *today*: the wall clock moved onto the de-identified clock by the trial's
   date shift (read-only from the listener's key table), so a calibration that expired in
   real time shows as expired and a time point whose window has passed as missing, even when
   the trial has received nothing for weeks;
3. before the first study (no shift drawn yet) the wall clock itself.

The wall clock is reported separately as ``generated_at``.

Calibrations
------------
For each camera, radionuclide and protocol the current calibration is the latest
``valid_from`` not after ``as_of`` (:func:`rntflow.core.calibration_policy.current_calibration`:
one superseded only after ``as_of`` is still current at ``as_of``). It is ``expired`` when
``as_of - valid_from > validity_days``, ``due`` when it expires within ``due_within_days``
(default :data:`rntflow.status.calibrations.DUE_WITHIN_DAYS`), else ``valid``. A camera
seen in the ``studies`` table without any calibration is ``missing``.

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
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rntflow.core.config import TrialConfig
from rntflow.core.enrolment import Enrolment, load_enrolment
from rntflow.core.errors import WarehouseError
from rntflow.core.qa import WAITING
from rntflow.listener.deid import read_trial_shift_days
from rntflow.status.calibrations import DUE_WITHIN_DAYS, calibration_states
from rntflow.status.cycles import SubjectRows, cycle_status, subject_flags, subject_state
from rntflow.status.queries import WarehouseSnapshot, read_inbox, read_warehouse
from rntflow.status.tare import tare_treatments
from rntflow.status.values import int_or_none, iso, utc

#: Prefect state names counted as a failed flow run (compared case-insensitively).
FAILED_STATES = frozenset({"failed", "crashed", "timedout"})

#: Replacement for an enrolled PatientID found in free text.
REDACTED = "[redacted]"

_NO_TIME = datetime.min.replace(tzinfo=UTC)


class _Redactor:
    """Replaces enrolled PatientIDs in free text (identifier columns are left alone)."""

    def __init__(self, patient_ids: Iterable[str]) -> None:
        ids = sorted({p for p in patient_ids if p}, key=len, reverse=True)
        self._re = (
            re.compile("(?<![A-Za-z0-9])(?:" + "|".join(re.escape(p) for p in ids) + ")(?![A-Za-z0-9])")
            if ids
            else None
        )

    def __call__(self, text: Any) -> Any:
        if self._re is None or not isinstance(text, str):
            return text
        return self._re.sub(REDACTED, text)


def _reference_time(now: datetime | None, wall: datetime, shift_days: int | None) -> tuple[datetime, str]:
    """``as_of`` and how it was chosen (module docstring, "The clock").

    By default today's wall-clock time moved onto the warehouse's de-identified clock by the
    trial's date shift, so that deadlines and calibration validity are counted to *today*;
    before the first study (no shift drawn yet) the wall clock itself.
    """
    if now is not None:
        return utc(now) or wall, "given"
    if shift_days is not None:
        return wall + timedelta(days=shift_days), "today"
    return wall, "wall_clock"


def _empty_site(site_id: str, name: str | None, in_config: bool) -> dict[str, Any]:
    return {
        "site_id": site_id,
        "name": name,
        "in_config": in_config,
        "subjects_enrolled": 0,
        "phantoms_enrolled": 0,
        "studies_received": 0,
        "studies_pending": 0,
        "studies_handed_off": 0,
        "studies_held": 0,
        "held_instances": 0,
        "quarantined": 0,
        "rejections": 0,
        "held_studies": [],
        "studies_processed": 0,
        "patient_studies_processed": 0,
        "phantom_studies_processed": 0,
        "studies_non_compliant": 0,
        "qa": {"fail": 0, "warn": 0, "pass": 0},
        "qa_failures": [],
        "calibrations": [],
        "calibration_counts": {"valid": 0, "due": 0, "expired": 0, "missing": 0},
        "flow_runs_failed": 0,
        "failed_runs": [],
    }


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


@dataclass
class _Tally:
    """Sites and subjects as the warehouse and inbox rows are walked.

    Attributes
    ----------
    sites : dict
        ``site_id`` -> site record (config sites first, in config order).
    subjects : dict
        ``subject_id`` -> :class:`rntflow.status.cycles.SubjectRows` (patients only).
    phantoms : set of str
        Enrolled phantom subject ids (shown per site, never as subjects).
    studies_by_id : dict
        ``study_id`` -> ``studies`` row.
    cameras : dict
        ``site_id`` -> cameras seen in studies.
    unattributed : dict
        Inbox rejections and quarantine of unknown callers, failed runs without a site.
    """

    sites: dict[str, dict[str, Any]]
    subjects: dict[str, SubjectRows] = field(default_factory=dict)
    phantoms: set[str] = field(default_factory=set)
    studies_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    cameras: dict[str, set[str]] = field(default_factory=dict)
    unattributed: dict[str, Any] = field(default_factory=lambda: {"rejections": 0, "quarantined": 0, "failed_runs": []})

    def site(self, site_id: str | None) -> dict[str, Any] | None:
        """The site record (created, marked not in the config, when first seen)."""
        if site_id is None:
            return None
        if site_id not in self.sites:
            self.sites[site_id] = _empty_site(site_id, None, False)
        return self.sites[site_id]

    def subject(self, subject_id: str | None, site_id: str | None) -> SubjectRows | None:
        """The subject record (created, not enrolled, when first seen); ``None`` for phantoms."""
        if subject_id is None or subject_id in self.phantoms:  # phantom scans are shown per site
            return None
        if subject_id not in self.subjects:
            self.subjects[subject_id] = SubjectRows(subject_id, site_id, False)
        return self.subjects[subject_id]


def _add_enrolment(t: _Tally, enrolment: list[Enrolment]) -> None:
    for e in enrolment:
        row = t.site(e.site_id)
        row["phantoms_enrolled" if e.kind == "phantom" else "subjects_enrolled"] += 1
    t.phantoms.update(e.subject_id for e in enrolment if e.kind == "phantom")
    for e in enrolment:
        if e.kind == "patient":
            t.subjects[e.subject_id] = SubjectRows(e.subject_id, e.site_id, True)


def _add_inbox(t: _Tally, inbox: dict[str, Any] | None) -> None:
    if inbox is None:
        return
    for site_id, counts in inbox["sites"].items():
        row = t.site(site_id)
        for key in (
            "studies_received",
            "studies_pending",
            "studies_handed_off",
            "held_instances",
            "quarantined",
            "rejections",
        ):
            row[key] = int(counts.get(key, 0) or 0)
        row["held_studies"] = [
            {"patient_hash": h.get("patient_hash"), "instances": h.get("instances")}
            for h in counts.get("held_studies", [])
        ]
        row["studies_held"] = len(row["held_studies"])
        row["failed_instances"] = int(counts.get("failed_instances", 0) or 0)
        row["failed_studies"] = list(counts.get("failed_studies", []))
        last = counts.get("last_received_at_s")
        row["last_received_at"] = iso(datetime.fromtimestamp(last, UTC)) if last else None
        row["recent_rejections"] = [_rejection(r) for r in counts.get("recent_rejections", [])]
    for key in ("rejections", "quarantined"):
        t.unattributed[key] = int(inbox.get("unattributed", {}).get(key, 0) or 0)
    t.unattributed["recent_rejections"] = [
        _rejection(r) for r in inbox.get("unattributed", {}).get("recent_rejections", [])
    ]


def _rejection(r: dict[str, Any]) -> dict[str, Any]:
    """A refused association as the coordinator sees it (wall-clock time: the inbox is not shifted)."""
    return {
        "calling_ae": r.get("calling_ae"),
        "address": r.get("address"),
        "reason": r.get("reason"),
        "at": iso(datetime.fromtimestamp(r["at_s"], UTC)) if r.get("at_s") else None,
    }


def _add_studies(t: _Tally, wh: WarehouseSnapshot) -> None:
    for s in wh.get("studies"):
        t.studies_by_id[s["study_id"]] = s
        row = t.site(s["site_id"])
        row["studies_processed"] += 1
        if s.get("kind") == "phantom":
            row["phantom_studies_processed"] += 1
        elif s.get("kind") in (None, "patient") and s.get("subject_id") is not None:
            row["patient_studies_processed"] += 1
        if s.get("protocol_compliant") is False:
            row["studies_non_compliant"] += 1
        if s.get("camera_id"):
            t.cameras.setdefault(s["site_id"], set()).add(s["camera_id"])
        subj = t.subject(s.get("subject_id"), s["site_id"])
        if subj is None or s.get("kind") == "phantom":
            continue
        cycle = int_or_none(s.get("cycle"))
        if cycle is None:
            subj.studies_without_cycle += 1
        elif s.get("kind") == "segmentation":
            subj.cycle(cycle).segmentation = True
        else:
            subj.cycle(cycle).studies.append(s)
    for a in wh.get("administrations"):
        subj = t.subject(a.get("subject_id"), a.get("site_id"))
        cycle = int_or_none(a.get("cycle"))
        if subj is not None and cycle is not None:
            subj.cycle(cycle).administered_at = a.get("administration_datetime")
    for d in wh.get("dose_cycles"):
        subj = t.subject(d.get("subject_id"), d.get("site_id"))
        cycle = int_or_none(d.get("cycle"))
        if subj is not None and cycle is not None:
            subj.cycle(cycle).n_dose_vois = int(d["n_vois"])


def _add_qa(t: _Tally, wh: WarehouseSnapshot, redact: _Redactor) -> None:
    for q in wh.get("qa_checks"):
        study = t.studies_by_id.get(q.get("study_id") or "")
        subject_id = q.get("subject_id") or (study or {}).get("subject_id")
        cycle = int_or_none(q.get("cycle"))
        if cycle is None and study is not None:
            cycle = int_or_none(study.get("cycle"))
        rec = {
            "check_name": q["check_name"],
            "scope": q["scope"],
            "scope_id": q["scope_id"],
            "subject_id": subject_id,
            "study_id": q.get("study_id"),
            "cycle": cycle,
            "status": q["status"],
            "value_found": redact(q.get("value_found")),
            "value_expected": redact(q.get("value_expected")),
            "message": redact(q.get("message")),
        }
        row = t.site(q["site_id"])
        row["qa"][q["status"]] = row["qa"].get(q["status"], 0) + 1
        if q["status"] == "fail":
            row["qa_failures"].append(rec)
        elif q["status"] == "warn" and q["check_name"] != "processing":  # waiting studies are listed apart
            row.setdefault("qa_warnings", []).append(rec)
        subj = t.subject(subject_id, q["site_id"])
        if subj is not None and q["status"] in ("fail", "warn"):
            if cycle is not None:
                subj.cycle(cycle).qa.append(rec)
            subj.qa.append(rec)


def _waiting_studies(wh: WarehouseSnapshot, redact: _Redactor) -> list[dict[str, Any]]:
    """Studies whose latest processing outcome is *waiting*, with what they wait for.

    ``process-study`` writes the outcome as the study's ``processing`` QA result
    (flows/process_study.py); a waiting study is processed again when what it waits for
    arrives, so this list empties by itself.
    """
    out = []
    for q in wh.get("qa_checks"):
        if q["check_name"] == "processing" and q.get("value_found") == WAITING:
            out.append(
                {
                    "site_id": q["site_id"],
                    "subject_id": q.get("subject_id"),
                    "study_id": q.get("study_id"),
                    "reason": redact(q.get("message")),
                    "since": iso(q["computed_at"]) if q.get("computed_at") else None,
                }
            )
    return sorted(out, key=lambda w: (w["site_id"], w["subject_id"] or "", w["study_id"] or ""))


def _add_failed_runs(t: _Tally, wh: WarehouseSnapshot, redact: _Redactor) -> None:
    for run in _current_failed_runs(wh.get("flow_runs")):
        study = t.studies_by_id.get(run.get("study_id") or "")
        subject_id = run.get("subject_id") or (study or {}).get("subject_id")
        subj = t.subjects.get(subject_id) if subject_id else None
        site_id = run.get("site_id") or (subj.site_id if subj else None) or (study or {}).get("site_id")
        rec = {
            "flow_run_id": run["flow_run_id"],
            "flow_name": run["flow_name"],
            "state": run.get("state"),
            "subject_id": subject_id,
            "study_id": run.get("study_id"),
            "at": None if _run_time(run) == _NO_TIME else iso(_run_time(run)),
            "message": redact(run.get("message")),
        }
        row = t.site(site_id)
        if row is None:
            t.unattributed["failed_runs"].append(rec)
        else:
            row["failed_runs"].append(rec)
            row["flow_runs_failed"] += 1
        s = t.subject(subject_id, site_id)
        if s is not None:
            s.failed_runs.append(rec)


def _subject_rows(
    t: _Tally, config: TrialConfig, as_of: datetime, site_order: dict[str, int], tare: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    windows = list(config.protocol.time_points)
    out = []
    for subj in sorted(
        t.subjects.values(),
        key=lambda s: (site_order.get(s.site_id or "", len(site_order)), s.site_id or "", s.subject_id),
    ):
        last_cycle = max(subj.cycles, default=None)
        cycles = [
            cycle_status(subj.cycles[n], windows, as_of, later_cycle=n != last_cycle) for n in sorted(subj.cycles)
        ]
        srec: dict[str, Any] = {
            "subject_id": subj.subject_id,
            "site_id": subj.site_id,
            "enrolled": subj.enrolled,
            "studies_processed": sum(c["studies_processed"] for c in cycles) + subj.studies_without_cycle,
            "studies_without_cycle": subj.studies_without_cycle,
            "cycles": cycles,
            "qa": {
                "fail": sum(q["status"] == "fail" for q in subj.qa),
                "warn": sum(q["status"] == "warn" for q in subj.qa),
            },
            "failed_runs": subj.failed_runs,
        }
        treatments = tare.get(subj.subject_id, [])
        if treatments:  # a radioembolisation subject: treatments instead of cycles
            srec["tare"] = treatments
        srec["flags"] = subject_flags(srec)
        srec["state"] = subject_state(srec)
        out.append(srec)
    return out


def _totals(site_rows: list[dict[str, Any]], subject_rows: list[dict[str, Any]]) -> dict[str, int]:
    count_keys = [k for k, v in _empty_site("X", None, True).items() if isinstance(v, int) and not isinstance(v, bool)]
    totals = {k: sum(r[k] for r in site_rows) for k in count_keys}
    totals["qa_fail"] = sum(r["qa"]["fail"] for r in site_rows)
    totals["qa_warn"] = sum(r["qa"]["warn"] for r in site_rows)
    for k in ("valid", "due", "expired", "missing"):
        totals[f"calibrations_{k}"] = sum(r["calibration_counts"][k] for r in site_rows)
    totals["subjects_failed"] = sum(s["state"] == "failed" for s in subject_rows)
    totals["subjects_attention"] = sum(s["state"] == "attention" for s in subject_rows)
    return totals


def _sources(
    config: TrialConfig, wh: WarehouseSnapshot, warehouse_error: str | None, inbox_error: str | None
) -> dict[str, Any]:
    inbox_path = Path(config.spool_dir) / "inbox.sqlite"
    return {
        "warehouse": {
            "path": config.warehouse_root,
            "error": warehouse_error,
            "rows": {k: len(v) for k, v in wh.rows.items()},
        },
        "inbox": {"path": str(inbox_path), "present": inbox_path.exists(), "error": inbox_error},
        "enrolment": {"path": str(config.enrolment_file), "present": config.enrolment_file.exists()},
    }


def coordinator_status(
    config: TrialConfig, now: datetime | None = None, *, due_within_days: int = DUE_WITHIN_DAYS
) -> dict[str, Any]:
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
        A calibration expiring within this many days (d) is ``due`` (default 30).

    Returns
    -------
    dict
        ``trial_id``, ``generated_at`` (wall clock), ``as_of`` and ``clock`` (how ``as_of``
        was chosen: ``given``, ``latest_acquisition``, ``latest_calibration`` or
        ``wall_clock``), ``protocol`` (time points, validity, due horizon), ``sources``
        (warehouse/inbox availability and errors), ``sites`` (list, config order),
        ``subjects`` (list, by site then subject), ``unattributed`` (inbox rejections and
        quarantine of unknown callers, failed runs without a site), ``waiting`` (studies
        that wait for something: site, subject, study, reason, since) and ``totals``.

    Raises
    ------
    EnrolmentError
        When the enrolment table exists but is malformed.
    """
    wall = datetime.now(UTC)
    windows = list(config.protocol.time_points)
    enrolment: list[Enrolment] = load_enrolment(config.enrolment_file)
    redact = _Redactor(e.patient_id for e in enrolment)
    warehouse_error = None
    try:
        wh = read_warehouse(config.warehouse_root, config.trial_id)
    except WarehouseError as exc:
        wh, warehouse_error = WarehouseSnapshot(), str(exc)
    inbox, inbox_error = read_inbox(config)
    as_of, clock = _reference_time(now, wall, read_trial_shift_days(config.keys_dir))

    t = _Tally({s.id: _empty_site(s.id, s.name, True) for s in config.sites})
    _add_enrolment(t, enrolment)
    _add_inbox(t, inbox)
    _add_studies(t, wh)
    _add_qa(t, wh, redact)
    validity_days = config.calibration.validity_days
    for site_id, sts in calibration_states(
        wh.get("calibrations"), t.cameras, as_of, validity_days, due_within_days
    ).items():
        row = t.site(site_id)
        row["calibrations"] = [asdict(c) for c in sts]
        for c in sts:
            row["calibration_counts"][c.status] += 1
    _add_failed_runs(t, wh, redact)

    waiting = _waiting_studies(wh, redact)
    for w in waiting:
        row = t.site(w["site_id"])
        if row is not None:
            row["studies_waiting"] = row.get("studies_waiting", 0) + 1

    site_order = {s.id: i for i, s in enumerate(config.sites)}
    tare = tare_treatments(wh.rows)
    for subject_id, treatments in tare.items():  # TARE subjects with results are known even without studies rows
        t.subject(subject_id, treatments[0]["site_id"])
    subject_rows = _subject_rows(t, config, as_of, site_order, tare)
    site_rows = sorted(t.sites.values(), key=lambda r: (site_order.get(r["site_id"], len(site_order)), r["site_id"]))
    return {
        "trial_id": config.trial_id,
        "generated_at": iso(wall),
        "as_of": iso(as_of),
        "clock": clock,
        "protocol": {
            "radionuclide": config.protocol.radionuclide,
            "time_points_h": [w.nominal_h for w in windows],
            "windows_h": [[w.earliest_h, w.latest_h] for w in windows],
            "calibration_validity_days": validity_days,
            "calibration_due_within_days": due_within_days,
        },
        "sources": _sources(config, wh, warehouse_error, inbox_error),
        "sites": site_rows,
        "subjects": subject_rows,
        "waiting": waiting,
        "unattributed": t.unattributed,
        "totals": {**_totals(site_rows, subject_rows), "studies_waiting": len(waiting)},
    }
