"""Identical bytes from two sites: one row and one hand-off per site (issue 15, finding 9).

Run alone: ``.venv/bin/pytest tests/listener/test_cross_site.py -q``
"""

from __future__ import annotations

import sqlite3

from rntflow.listener.inbox import SCHEMA, open_db
from rntflow.listener.status import inbox_status
from tests.listener.conftest import PATIENT, scu, wait_until
from tests.listener.dicomgen import ct_series


def push(port: int, datasets, calling: str) -> list[int]:
    assoc = scu(calling).associate("127.0.0.1", port, ae_title="RNTFLOW")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_same_bytes_from_another_site_get_that_sites_rows(trial, listener):
    cts = ct_series(PATIENT, 3, size=16)
    assert push(listener.port, cts, "SITE01_PACS") == [0, 0, 0]
    assert push(listener.port, cts, "GEPACS02") == [0, 0, 0]
    assert push(listener.port, cts[:1], "GEPACS02") == [0]  # a true re-send: duplicate
    handed = wait_until(lambda: len(listener.dispatcher.accepted) >= 2 and listener.dispatcher.accepted)
    assert sorted((h.site_id, h.n_instances) for h in handed) == [("SITE01", 3), ("SITE02", 3)]
    st = inbox_status(trial)["sites"]
    assert (st["SITE01"]["instances"], st["SITE02"]["instances"]) == (3, 3)
    assert st["SITE02"]["duplicates"] == 1
    db = sqlite3.connect(trial.spool_dir / "inbox.sqlite")
    assert db.execute("SELECT COUNT(*) FROM instances WHERE version > 1").fetchone()[0] == 0


def test_old_inbox_is_migrated_to_per_site_dedup(tmp_path):
    path = tmp_path / "inbox.sqlite"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace("UNIQUE (site_id, sop_uid, sha256)", "UNIQUE (sop_uid, sha256)"))
    row = ("SITE01", "1.2.3", "ab" * 32, "raw/SITE01/x.dcm", 10, "1.2", "1.2.1", "1.2.840")
    old.execute(
        "INSERT INTO instances (site_id, sop_uid, sha256, path, n_bytes, study_uid,"
        " series_uid, sop_class_uid, received_at_s) VALUES (?,?,?,?,?,?,?,?,0)",
        row,
    )
    old.commit()
    old.close()
    conn = open_db(path)
    assert conn.execute("SELECT site_id, sop_uid FROM instances").fetchall() == [("SITE01", "1.2.3")]
    conn.execute(
        "INSERT INTO instances (site_id, sop_uid, sha256, path, n_bytes, study_uid,"
        " series_uid, sop_class_uid, received_at_s) VALUES (?,?,?,?,?,?,?,?,0)",
        ("SITE02", *row[1:]),
    )
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 2
    open_db(path).close()  # idempotent
    conn.close()
