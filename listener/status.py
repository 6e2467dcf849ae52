"""What the inbox holds, per site: ``inbox_status(config)`` (used by ``rntflow status``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from rntflow.core.config import TrialConfig


def inbox_status(config: TrialConfig) -> dict[str, Any]:
    """Per-site counters and study states, PHI-free.

    Returns
    -------
    dict
        ``{"sites": {site_id: {...}}, "totals": {...}}`` where each site has
        ``instances``, ``bytes``, ``duplicates``, ``new_versions``, ``unusable_instances``,
        ``studies_received``, ``studies_pending`` (receiving or stable, not yet handed off),
        ``studies_handed_off``, ``held_instances``, ``held_studies`` (list of
        ``{"patient_hash", "instances"}``), ``failed_instances`` (acknowledged but not
        de-identifiable after retries, e.g. a full disk), ``failed_studies`` (list of
        ``{"study_key", "patient_hash", "failed_instances", "error"}``), ``quarantined``,
        ``rejections``, ``storage_failures`` and ``outbox_pending``.
    """
    db = Path(config.spool_dir) / "inbox.sqlite"
    sites: dict[str, dict[str, Any]] = {}
    for s in config.sites:
        sites[s.id] = {
            k: 0
            for k in (
                "instances",
                "bytes",
                "duplicates",
                "new_versions",
                "unusable_instances",
                "studies_received",
                "studies_pending",
                "studies_handed_off",
                "held_instances",
                "quarantined",
                "rejections",
                "storage_failures",
                "outbox_pending",
                "failed_instances",
            )
        }
        sites[s.id]["held_studies"] = []
        sites[s.id]["failed_studies"] = []
        sites[s.id]["last_received_at_s"] = None
        sites[s.id]["recent_rejections"] = []
    unattributed = {"rejections": 0, "quarantined": 0, "recent_rejections": []}
    if not db.exists():
        return {"sites": sites, "unattributed": unattributed, "totals": _totals(sites)}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        q = conn.execute

        def put(site: str | None, key: str, value: Any) -> None:
            if site in sites:
                sites[site][key] = value
            elif key in unattributed:
                unattributed[key] += value

        for site, n, b, nv, un, held in q(
            "SELECT site_id, COUNT(*), SUM(n_bytes), SUM(flagged), SUM(1-usable),"
            " SUM(state='held') FROM instances GROUP BY site_id"
        ):
            put(site, "instances", n)
            put(site, "bytes", b or 0)
            put(site, "new_versions", nv or 0)
            put(site, "unusable_instances", un or 0)
            put(site, "held_instances", held or 0)
        for site, n in q("SELECT site_id, n FROM duplicates"):
            put(site, "duplicates", n)
        for site, n, pend, done in q(
            "SELECT site_id, COUNT(*), SUM(state IN ('receiving','stable')),"
            " SUM(state='handed_off') FROM studies GROUP BY site_id"
        ):
            put(site, "studies_received", n)
            put(site, "studies_pending", pend or 0)
            put(site, "studies_handed_off", done or 0)
        for site, phash, n in q(
            "SELECT site_id, patient_hash, n_instances FROM studies WHERE state='held' ORDER BY first_at_s"
        ):
            if site in sites:
                sites[site]["held_studies"].append({"patient_hash": phash, "instances": n})
        _failed(q, sites)
        for site, last in q("SELECT site_id, MAX(last_at_s) FROM studies GROUP BY site_id"):
            if site in sites:
                sites[site]["last_received_at_s"] = last
        _recent_rejections(q, sites, unattributed)
        for table, key in (
            ("quarantine", "quarantined"),
            ("rejections", "rejections"),
            ("failures", "storage_failures"),
        ):
            for site, n in q(f"SELECT site_id, COUNT(*) FROM {table} GROUP BY site_id"):
                put(site, key, n)
        for site, n in q("SELECT site_id, COUNT(*) FROM outbox WHERE state='pending' GROUP BY site_id"):
            put(site, "outbox_pending", n)
    finally:
        conn.close()
    return {"sites": sites, "unattributed": unattributed, "totals": _totals(sites)}


def _failed(q: Any, sites: dict[str, dict[str, Any]]) -> None:
    """Fill ``failed_instances`` and ``failed_studies`` (PHI-free: keys and hashes)."""
    for site, study_key, phash, n, error in q(
        "SELECT i.site_id, s.study_key, s.patient_hash, COUNT(*), MAX(i.last_error)"
        " FROM instances i JOIN studies s ON s.site_id=i.site_id AND"
        " s.study_uid=i.study_uid WHERE i.state='failed' GROUP BY i.site_id, i.study_uid"
        " ORDER BY MIN(i.received_at_s)"
    ):
        if site in sites:
            sites[site]["failed_instances"] += n
            sites[site]["failed_studies"].append(
                {"study_key": study_key, "patient_hash": phash, "failed_instances": n, "error": error}
            )


#: How many of the latest rejected associations are listed (per site and unattributed).
RECENT_REJECTIONS = 20


def _recent_rejections(q: Any, sites: dict[str, dict[str, Any]], unattributed: dict[str, Any]) -> None:
    """The latest refused associations with calling AE title, address and reason."""
    for site, calling, called, address, reason, at in q(
        "SELECT site_id, calling_ae, called_ae, address, reason, at_s FROM rejections ORDER BY at_s DESC LIMIT ?",
        (RECENT_REJECTIONS * (len(sites) + 1),),
    ):
        target = sites[site]["recent_rejections"] if site in sites else unattributed["recent_rejections"]
        if len(target) < RECENT_REJECTIONS:
            target.append(
                {"calling_ae": calling, "called_ae": called, "address": address, "reason": reason, "at_s": at}
            )


def _totals(sites: dict[str, dict[str, Any]]) -> dict[str, int]:
    keys = [k for k, v in next(iter(sites.values())).items() if isinstance(v, int) and not isinstance(v, bool)]
    return {k: sum(s[k] for s in sites.values()) for k in keys}


def format_status(status: dict[str, Any]) -> str:
    """A plain-text table of :func:`inbox_status` for the terminal."""
    cols = [
        "instances",
        "bytes",
        "studies_received",
        "studies_pending",
        "studies_handed_off",
        "held_instances",
        "quarantined",
        "rejections",
    ]
    lines = ["site      " + " ".join(f"{c:>18}" for c in cols)]
    for site, row in status["sites"].items():
        lines.append(f"{site:<10}" + " ".join(f"{row[c]:>18}" for c in cols))
        for h in row["held_studies"]:
            lines.append(f"    held: unenrolled patient {h['patient_hash']}: {h['instances']} instance(s)")
        for f in row.get("failed_studies", []):
            lines.append(
                f"    FAILED: study {f['study_key'] or '(not de-identified)'}"
                f" (patient {f['patient_hash']}): {f['failed_instances']} instance(s)"
                f" not de-identified ({f['error']})"
            )
    return "\n".join(lines)
