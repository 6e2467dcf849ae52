"""Per subject and cycle: which protocol time points were received, are missing or pending.

Each patient study's ``t_h`` is put into the protocol window it belongs to by
:func:`rntflow.core.protocol.assign_to_windows` (``earliest_h <= t_h <= latest_h``; the
nearest nominal time when windows overlap). A study outside every window is listed as
out-of-window (``early``, ``between`` windows, ``late``, or ``no_time`` without ``t_h``). A
window without a study is ``missing`` when its deadline has passed (administration +
``latest_h`` before ``as_of``), or when a later study of the same cycle or a later cycle of
the subject exists; otherwise it is ``pending``. The administration time is taken from the
``administrations`` table or, failing that, as the median of ``acquired_at - t_h`` over the
cycle's studies.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rntflow.core.config import TimePointWindow
from rntflow.core.protocol import assign_to_windows, out_of_window_reason, time_point_deadline
from rntflow.status.values import iso, num


@dataclass
class CycleRows:
    """Accumulates one subject-cycle while the warehouse rows are walked.

    Attributes
    ----------
    cycle : int
    studies : list of dict
        Its patient studies (``studies`` rows).
    administered_at : datetime or None
        From the ``administrations`` table.
    segmentation : bool
        A segmentation study arrived.
    n_dose_vois : int
        VOIs with a dose (``voi_doses``).
    qa : list of dict
        Its QA failures and warnings.
    """

    cycle: int
    studies: list[dict[str, Any]] = field(default_factory=list)
    administered_at: datetime | None = None
    segmentation: bool = False
    n_dose_vois: int = 0
    qa: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SubjectRows:
    """Accumulates one subject while the warehouse rows are walked."""

    subject_id: str
    site_id: str | None
    enrolled: bool
    cycles: dict[int, CycleRows] = field(default_factory=dict)
    studies_without_cycle: int = 0
    qa: list[dict[str, Any]] = field(default_factory=list)
    failed_runs: list[dict[str, Any]] = field(default_factory=list)

    def cycle(self, n: int) -> CycleRows:
        """The cycle ``n`` (created when first seen)."""
        if n not in self.cycles:
            self.cycles[n] = CycleRows(n)
        return self.cycles[n]


def _estimated_administration(patient: list[dict[str, Any]]) -> datetime | None:
    """Median of ``acquired_at - t_h`` over the studies that have both, or ``None``."""
    offsets = [
        s["acquired_at"] - timedelta(hours=float(s["t_h"]))
        for s in patient
        if s.get("acquired_at") is not None and num(s.get("t_h")) is not None
    ]
    if not offsets:
        return None
    ref = offsets[0]
    return ref + timedelta(seconds=statistics.median((o - ref).total_seconds() for o in offsets))


def _time_point_rows(
    patient: list[dict[str, Any]],
    slots: list[list[dict[str, Any]]],
    windows: Sequence[TimePointWindow],
    admin: datetime | None,
    as_of: datetime,
    later_cycle: bool,
) -> list[dict[str, Any]]:
    """One row per protocol window: ``received``, ``missing`` or ``pending``, with its deadline."""
    latest_t = max((num(s.get("t_h")) for s in patient if num(s.get("t_h")) is not None), default=None)
    rows = []
    for w, got in zip(windows, slots):
        deadline = None if admin is None else time_point_deadline(admin, w)
        if got:
            state = "received"
        elif (
            (deadline is not None and as_of > deadline)
            or later_cycle
            or (latest_t is not None and latest_t > w.latest_h)
        ):
            state = "missing"
        else:
            state = "pending"
        rows.append(
            {
                "nominal_h": w.nominal_h,
                "earliest_h": w.earliest_h,
                "latest_h": w.latest_h,
                "state": state,
                "deadline": iso(deadline),
                "studies": [{"study_id": s["study_id"], "t_h": num(s.get("t_h"))} for s in got],
            }
        )
    return rows


def cycle_status(
    cyc: CycleRows, windows: Sequence[TimePointWindow], as_of: datetime, later_cycle: bool
) -> dict[str, Any]:
    """The status of one subject-cycle.

    Parameters
    ----------
    cyc : CycleRows
    windows : sequence of TimePointWindow
        ``config.protocol.time_points``.
    as_of : datetime
        Reference time (aware UTC) deadlines are compared with.
    later_cycle : bool
        A later cycle of the subject exists (every empty window is then ``missing``).

    Returns
    -------
    dict
        ``cycle``, ``administered_at``, ``time_points`` (per window), ``received_h``,
        ``missing_h``, ``pending_h``, ``out_of_window``, ``non_compliant_studies``,
        ``segmentation``, ``dose``, ``dose_vois``, ``qa`` counts and ``qa_failures``.
    """
    patient = sorted(cyc.studies, key=lambda s: (num(s.get("t_h")) is None, num(s.get("t_h")) or 0.0))
    admin = cyc.administered_at if cyc.administered_at is not None else _estimated_administration(patient)
    times = [num(s.get("t_h")) for s in patient]
    assigned = assign_to_windows(times, windows)
    slots = [[patient[k] for k in ks] for ks in assigned.slots]
    out_of_window = [
        {"study_id": patient[k]["study_id"], "t_h": times[k], "reason": out_of_window_reason(times[k], windows)}
        for k in assigned.out_of_window
    ]
    time_points = _time_point_rows(patient, slots, windows, admin, as_of, later_cycle)
    qa_fail = [q for q in cyc.qa if q["status"] == "fail"]
    return {
        "cycle": cyc.cycle,
        "administered_at": iso(admin),
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


def subject_flags(subj: dict[str, Any]) -> list[str]:
    """What needs the coordinator's attention for a subject (its assembled record)."""
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


def subject_state(subj: dict[str, Any]) -> str:
    """``failed``, ``attention``, ``no_studies``, ``in_progress`` or ``ok`` (from its flags)."""
    flags = subj["flags"]
    if "flow_failed" in flags:
        return "failed"
    if flags:
        return "attention"
    if subj.get("tare"):  # radioembolisation: complete when every treatment has both studies and the comparison
        return "ok" if all(t["complete"] for t in subj["tare"]) else "in_progress"
    if not subj["cycles"]:
        return "no_studies"
    if any(c["pending_h"] or not c["dose"] for c in subj["cycles"]):
        return "in_progress"
    return "ok"
