"""Prefect tasks that write to and read from the warehouse (thin wrappers of ``warehouse/``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from prefect import task
from prefect.tasks import exponential_backoff

from rntflow.core.version import RNTFLOW_VERSION as __version__
from rntflow.warehouse.catalog import refresh_catalog
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.writer import LoadReport, load_table, read_latest

#: Warehouse writes retry: a table lock held by another flow, a full disk being cleared.
WRITE_RETRIES = 3


@task(
    name="load-rows",
    retries=WRITE_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
)
def load_rows(warehouse_dir: str, table: str, rows: list[dict], context: dict) -> dict:
    """Upsert ``rows`` (plus the ``context`` columns, e.g. trial/site/subject) into ``table``.

    Returns the :class:`~warehouse.writer.LoadReport` as a dict (rows new, unchanged,
    new versions). Columns the table does not have are dropped (records carry extras).
    """
    if not rows:
        return {"rows_in": 0, "rows_new": 0, "rows_unchanged": 0, "rows_new_version": 0, "files_written": 0}
    names = set(TABLES[table].column_names)
    frame = pd.DataFrame([{**context, **r} for r in rows])
    frame = frame[[c for c in frame.columns if c in names]]
    report: LoadReport = load_table(warehouse_dir, table, frame)
    return {
        k: getattr(report, k) for k in ("rows_in", "rows_new", "rows_unchanged", "rows_new_version", "files_written")
    }


@task(name="refresh-catalog", retries=WRITE_RETRIES, retry_delay_seconds=1)
def refresh(warehouse_dir: str) -> str:
    """Re-create the DuckDB catalog's views (new tables and columns appear)."""
    return str(refresh_catalog(warehouse_dir))


@task(name="read-table")
def read_table(warehouse_dir: str, table: str, where: str | None = None, params: list | None = None) -> pd.DataFrame:
    """Latest rows of ``table`` matching ``where``."""
    return read_latest(warehouse_dir, table, where, params)


def flow_run_row(
    flow_name: str,
    state: str,
    started_at: datetime,
    *,
    subject_id: str | None = None,
    study_id: str | None = None,
    site_id: str | None = None,
    message: str | None = None,
) -> dict:
    """A ``flow_runs`` record for the current Prefect flow run (id from the run context)."""
    from prefect.runtime import flow_run

    ended = datetime.now(UTC)
    return {
        "flow_run_id": str(flow_run.id or f"local-{started_at.timestamp():.0f}"),
        "flow_name": flow_name,
        "state": state,
        "subject_id": subject_id,
        "study_id": study_id,
        "site_id": site_id,
        "started_at": started_at,
        "ended_at": ended,
        "duration_s": (ended - started_at).total_seconds(),
        "software_version": __version__,
        "message": message,
    }


def warehouse_dir_of(config) -> str:
    """The warehouse root ``config`` names: a local folder or ``s3://bucket/prefix[?...]``."""
    return config.warehouse_root
