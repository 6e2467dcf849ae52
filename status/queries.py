"""What the coordinator's status reads: warehouse rows (read-only SQL) and the listener inbox.

The warehouse is read through an *in-memory* DuckDB connection on which
:func:`rntflow.warehouse.catalog.create_views` builds the same views as the catalog file
(latest ``result_version`` per natural key, typed, empty when a table has no files).
The catalog file ``<warehouse>/rntflow.duckdb`` is deliberately not used: opening it
with :func:`rntflow.warehouse.catalog.connect` creates it when missing (``status`` must not
write), and its views are stale for a table that got its first files after the last
refresh. A warehouse that does not exist yet reads as empty.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from rntflow.core.config import TrialConfig
from rntflow.core.errors import WarehouseError
from rntflow.listener.status import inbox_status
from rntflow.status.tare import TARE_QUERIES, TARE_TABLES
from rntflow.status.values import utc
from rntflow.warehouse.catalog import create_views
from rntflow.warehouse.schema import TABLES

#: Warehouse tables the status reads.
_TABLES_READ = ("studies", "qa_checks", "calibrations", "flow_runs", "administrations", "voi_doses") + TARE_TABLES

#: What the status takes from them (trial-filtered; ``?`` is the trial id).
_QUERIES: dict[str, str] = {
    "studies": "SELECT site_id, study_id, subject_id, cycle, kind, camera_id, acquired_at, t_h,"
    " protocol_compliant FROM studies WHERE trial_id = ? ORDER BY site_id, study_id",
    "qa_checks": "SELECT site_id, check_name, scope, scope_id, subject_id, study_id, cycle, status,"
    " value_found, value_expected, message, computed_at FROM qa_checks WHERE trial_id = ?"
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
    **TARE_QUERIES,
}


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
                    row[k] = utc(v)
    return WarehouseSnapshot(rows)


def read_inbox(config: TrialConfig) -> tuple[dict[str, Any] | None, str | None]:
    """The listener inbox's counts (:func:`rntflow.listener.status.inbox_status`), or the read error.

    Returns
    -------
    (dict or None, str or None)
        The inbox status and ``None``, or ``None`` and why the inbox could not be read.
    """
    try:
        return inbox_status(config), None
    except sqlite3.Error as exc:
        return None, f"inbox {Path(config.spool_dir) / 'inbox.sqlite'}: cannot read: {exc}"
