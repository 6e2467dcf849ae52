"""Terminal rendering of the coordinator's status (plain text, at most 100 columns)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from rntflow.status.tare import tare_lines
from rntflow.status.values import hours as _hours

_CLOCK_TEXT = {
    "given": "as given",
    "latest_acquisition": "latest acquisition in the warehouse; dates are de-identified",
    "latest_calibration": "latest calibration in the warehouse; dates are de-identified",
    "wall_clock": "wall clock: nothing dated in the warehouse yet",
}


_OUT_OF_WINDOW_TEXT = {"early": "early", "late": "late", "between": "off-window", "no_time": "no t_h"}


def _clip(line: str, width: int) -> str:
    """A line wrapped (never cut) to ``width``; continuation lines indented under its text."""
    if len(line) <= width:
        return line
    lead = len(line) - len(line.lstrip())
    indent = " " * min(lead + 14, width // 2)
    return "\n".join(
        textwrap.wrap(line, width=width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=True)
    )


def _day(iso: str | None) -> str:
    return "?" if not iso else iso[:10]


def _middle(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters in the middle, keeping its end (a camera's serial)."""
    if len(text) <= n:
        return text
    tail = min(len(text.rsplit("|", 1)[-1]) + 1, max(n - 6, 1)) if "|" in text else (n - 3) // 2
    return text[: max(n - 3 - tail, 0)] + "..." + text[len(text) - tail :]


def _calibration_line(c: dict[str, Any], trial_nuclide: str | None = None, width: int = 100) -> str:
    nuclide = c.get("radionuclide")
    suffix = f" ({nuclide})" if nuclide and nuclide != trial_nuclide else ""
    if c["status"] == "missing":
        label, text = "MISSING", "camera in studies, no calibration"
    else:
        left = c["days_left"]
        text = (
            f"expired {_day(c['expires_at'])} ({-left:.0f} d ago)"
            if c["status"] == "expired"
            else f"until {_day(c['expires_at'])} ({left:.0f} d left)"
        )
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
    cols = [
        ("subj", lambda r: r["subjects_enrolled"]),
        ("recv", lambda r: r["studies_received"]),
        ("pend", lambda r: r["studies_pending"]),
        ("proc", lambda r: r["studies_processed"]),
        ("held", lambda r: r["studies_held"]),
        ("quar", lambda r: r["quarantined"]),
        ("nonc", lambda r: r["studies_non_compliant"]),
        ("QA fail", lambda r: r["qa"]["fail"]),
        ("QA warn", lambda r: r["qa"]["warn"]),
        ("failed", lambda r: r["flow_runs_failed"]),
    ]
    head = f"{'site':<8}" + "".join(f"{name:>{len(name) + 2}}" for name, _ in cols) + "  calibrations"
    lines = [head]
    for r in sites:
        cc = r["calibration_counts"]
        cal = (
            ", ".join(f"{cc[k]} {'ok' if k == 'valid' else k}" for k in ("expired", "missing", "due", "valid") if cc[k])
            or "-"
        )
        lines.append(f"{r['site_id']:<8}" + "".join(f"{fn(r):>{len(name) + 2}}" for name, fn in cols) + f"  {cal}")
    lines += [
        "(subj: subjects enrolled; recv/pend: studies received/pending in the inbox; proc: processed,",
        " in the warehouse; nonc: not protocol-compliant; failed: failed flow runs)",
    ]
    return lines


def _subject_lines(subjects: list[dict[str, Any]], label_w: int) -> list[str]:
    """A site's subject table: one line per subject and its failed runs, one per cycle (aligned)."""
    rows: list[tuple[str, str | None]] = []
    for s in subjects:
        state = s["state"].upper() if s["state"] in ("failed", "attention") else s["state"]
        extra = "" if s["enrolled"] else "  not in the enrolment table"
        rows.append((f"  {s['subject_id']}  [{state.replace('_', ' ')}]{extra}", None))
        for f in s["failed_runs"]:
            rows.append((f"    failed: {_run_text(f, who=False)}", None))
        if s.get("tare"):
            rows += [(line, None) for line in tare_lines(s["tare"])]
        elif not s["cycles"]:
            rows.append(("    no studies processed yet", None))
        for c in s["cycles"]:
            slots, notes = _cycle_cells(c, label_w)
            qa = (
                f"{c['qa']['fail']} fail"
                if c["qa"]["fail"]
                else (f"{c['qa']['warn']} warn" if c["qa"]["warn"] else "ok")
            )
            rows.append((f"    {slots}", f"dose {'yes' if c['dose'] else 'no':<3}  QA {qa:<6}  {notes}"))
    slot_w = max((len(t) for t, m in rows if m is not None), default=0)
    return [text if marker is None else f"{text:<{slot_w}}  {marker}".rstrip() for text, marker in rows]


def _header_lines(status: dict[str, Any]) -> list[str]:
    """Title, clock, protocol and data-source lines that open the status text."""
    tps = " ".join(_hours(h) for h in status["protocol"]["time_points_h"])
    out = [
        f"rntflow status: trial {status['trial_id']}",
        f"as of {status['as_of'][:16].replace('T', ' ')} UTC ({_CLOCK_TEXT.get(status['clock'], status['clock'])})",
        f"protocol time points {tps}; calibrations valid "
        f"{status['protocol']['calibration_validity_days']} d, due within "
        f"{status['protocol']['calibration_due_within_days']} d",
    ]
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
    return out


def _listed(items: list[Any], render: Callable[[Any], str], max_items: int) -> list[str]:
    """Render at most ``max_items`` items, one line each, then count the rest."""
    lines = [render(x) for x in items[:max_items]]
    if len(items) > max_items:
        lines.append(f"              ... and {len(items) - max_items} more (see --json)")
    return lines


def _refused_text(j: dict[str, Any]) -> str:
    """One refused association (calling AE, address, time, reason)."""
    return f"  refused     {j['calling_ae']} from {j['address']} at {j['at']}: {j['reason']}"


def _site_detail_lines(r: dict[str, Any], status: dict[str, Any], width: int, max_items: int) -> list[str]:
    """Calibrations, QA results, failures, held and waiting studies of one configured site."""
    nuclide = status["protocol"].get("radionuclide")
    out = [_calibration_line(c, nuclide, width) for c in r["calibrations"]]
    out += _listed(r["qa_failures"], lambda q: f"  QA fail     {_qa_text(q)}", max_items)
    out += _listed(r.get("qa_warnings", []), lambda q: f"  QA warn     {_qa_text(q)}", max_items)
    if r.get("last_received_at"):
        out.append(f"  last received {r['last_received_at']} (wall clock)")
    out += _listed(
        r.get("failed_studies", []),
        lambda f: (
            f"  FAILED      study {f['study_key']}: {f['failed_instances']} instance(s) "
            f"acknowledged but not stored de-identified ({f['error']})"
        ),
        max_items,
    )
    out += _listed(r.get("recent_rejections", []), _refused_text, max_items)
    # runs of a subject are shown under the subject below
    out += _listed(
        [f for f in r["failed_runs"] if not f.get("subject_id")], lambda f: f"  run failed  {_run_text(f)}", max_items
    )
    out += [
        f"  held        unenrolled patient {h['patient_hash']}: {h['instances']} instance(s)" for h in r["held_studies"]
    ]
    out += _listed(
        [w for w in status.get("waiting", []) if w["site_id"] == r["site_id"]],
        lambda w: f"  waiting     {w['subject_id']} {w['study_id']}: {w['reason']}",
        max_items,
    )
    return out


def _unattributed_lines(un: dict[str, Any], max_items: int) -> list[str]:
    """Rejections, quarantined files and failed runs that belong to no site (empty when none)."""
    if not (un.get("rejections") or un.get("quarantined") or un.get("failed_runs")):
        return []
    out = [
        "",
        f"unattributed: {un.get('rejections', 0)} rejected association(s), {un.get('quarantined', 0)} quarantined",
    ]
    out += _listed(un.get("failed_runs", []), lambda f: f"  run failed  {_run_text(f)}", max_items)
    out += _listed(un.get("recent_rejections", []), _refused_text, max_items)
    return out


def format_coordinator_status(status: dict[str, Any], width: int = 100, max_items: int = 10) -> str:
    """Render :func:`rntflow.status.model.coordinator_status` as plain text for a terminal.

    Parameters
    ----------
    status : dict
        The result of :func:`rntflow.status.model.coordinator_status`.
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
    out = [*_header_lines(status), "", *_site_table(status["sites"])]

    subjects_by_site: dict[str | None, list[dict[str, Any]]] = {}
    for s in status["subjects"]:
        subjects_by_site.setdefault(s["site_id"], []).append(s)
    label_w = max((len(_hours(h)) for h in status["protocol"]["time_points_h"]), default=3)
    label_w = max(label_w, 3)

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
            out += _site_detail_lines(r, status, width, max_items)
        if not subs:
            out.append("  no subjects enrolled")
            continue
        out += _subject_lines(subs, label_w)
    out += _unattributed_lines(status.get("unattributed", {}), max_items)
    out += [
        "",
        "time points: <n>h received, --- missing (window passed), ... pending;",
        "             early/late/off-window <t_h>: a study outside every protocol window",
    ]
    return "\n".join(_clip(line, width) for line in out)
