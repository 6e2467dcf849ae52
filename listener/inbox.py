"""The spool's SQLite inbox index: its schema, how it is opened, and its migrations.

``<spool>/inbox.sqlite`` indexes the instances received and their studies, the hand-off
outbox, the quarantine, refused associations, storage failures, duplicate counts and the
open associations (:data:`SCHEMA`). :func:`open_db` opens (and creates) it in WAL mode with
``synchronous=NORMAL`` (the durability contract is :mod:`rntflow.listener.spool`'s) and
brings an inbox created by an older version up to date.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    site_id TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    flagged INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL,
    n_bytes INTEGER NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    modality TEXT,
    usable INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL DEFAULT 'received',   -- received | held | deid | failed
    deid_path TEXT,
    received_at_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,      -- de-identification attempts that failed
    next_try_at_s REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (site_id, sop_uid, sha256)
);
CREATE INDEX IF NOT EXISTS ix_inst_state ON instances(state);
CREATE INDEX IF NOT EXISTS ix_inst_study ON instances(site_id, study_uid);
CREATE TABLE IF NOT EXISTS studies (
    site_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    patient_hash TEXT,
    subject_id TEXT,
    kind TEXT,
    study_key TEXT,
    n_instances INTEGER NOT NULL DEFAULT 0,
    first_at_s REAL NOT NULL,
    last_at_s REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'receiving',  -- receiving | held | stable | handed_off | failed
    handoff_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, study_uid)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    site_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    handoff_version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',    -- pending | done
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at_s REAL NOT NULL,
    last_error TEXT,
    run_id TEXT,
    created_at_s REAL NOT NULL,
    done_at_s REAL,
    UNIQUE (site_id, study_uid, handoff_version)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    site_id TEXT,
    path TEXT NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER NOT NULL,
    n_bytes INTEGER NOT NULL,
    at_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY,
    site_id TEXT,
    calling_ae TEXT,
    called_ae TEXT,
    address TEXT,
    reason TEXT NOT NULL,
    at_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY,
    site_id TEXT,
    reason TEXT NOT NULL,
    at_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    site_id TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
-- studies an association is still delivering: not stable until it ends (see stable.py)
CREATE TABLE IF NOT EXISTS open_assocs (
    assoc_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    opened_at_s REAL NOT NULL,
    PRIMARY KEY (assoc_id, site_id, study_uid)
);
"""


def open_db(path: Path) -> sqlite3.Connection:
    """Open (and create) the inbox database in WAL mode."""
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    _migrate(conn)
    return conn


#: columns added to ``instances`` since the first schema: (name, declaration)
_ADDED_COLUMNS = (
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("next_try_at_s", "REAL NOT NULL DEFAULT 0"),
    ("last_error", "TEXT"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Add columns an inbox created by an older version lacks (idempotent)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(instances)")}
    for name, decl in _ADDED_COLUMNS:
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE instances ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError:  # another connection added it meanwhile
                pass
    _migrate_site_dedup(conn)


def _instances_sql(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='instances'").fetchone()
    return row[0] if row else ""


def _migrate_site_dedup(conn: sqlite3.Connection) -> None:
    """Rebuild an ``instances`` table unique on (sop_uid, sha256) as unique per site.

    Identical bytes sent by two sites are two rows (one per site), so that the second
    site's study is indexed, de-identified and handed off too (issue 15, finding 9).
    """
    if "UNIQUE (sop_uid, sha256)" not in _instances_sql(conn):
        return
    create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS instances") :]
    create = create[: create.index(");") + 2].replace("IF NOT EXISTS instances", "instances_site_dedup")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "UNIQUE (sop_uid, sha256)" in _instances_sql(conn):  # not done meanwhile
            cols = ", ".join(r[1] for r in conn.execute("PRAGMA table_info(instances)"))
            conn.execute(create)
            conn.execute(f"INSERT INTO instances_site_dedup ({cols}) SELECT {cols} FROM instances")
            conn.execute("DROP TABLE instances")
            conn.execute("ALTER TABLE instances_site_dedup RENAME TO instances")
            conn.execute("CREATE INDEX IF NOT EXISTS ix_inst_state ON instances(state)")
            conn.execute("CREATE INDEX IF NOT EXISTS ix_inst_study ON instances(site_id, study_uid)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
