"""The DuckDB catalog: ``<warehouse>/rntflow.duckdb``, views over the Parquet files.

For each table of :data:`warehouse.schema.TABLES`:

* ``<table>_history``: every result version of every row, read with hive partitioning and
  ``union_by_name`` (so files written before a column was added read it as NULL), each
  column cast to its schema type;
* ``<table>``: the latest ``result_version`` per natural key.

A table without files yet still gets both views, empty and typed. The views store the
absolute Parquet glob; re-run :func:`refresh_catalog` after a table gets its first files,
after a schema change, or after moving the warehouse. A refresh builds a new catalog file
and renames it over the old one, so it never waits for (or disturbs) open readers; they
see the new views when they reconnect.

Derived views for the dose-effect analysis:

* ``voi_dose_cumulative``: dose, dose SD (quadrature, cycles independent) and BED summed
  over cycles per trial, site, subject, VOI, engine and method;
* ``dose_effect_targets``: the cumulative rows plus three derived targets per subject:
  ``Kidneys`` (when no ``Kidneys`` VOI exists: the mean of ``Kidney_L``/``Kidney_R``),
  ``Parotids`` (mean of ``Parotid_L``/``Parotid_R``) and ``Lesions_mean`` (mean over the
  subject's ``Lesion_<n>``). Means are unweighted; the SD of a mean of k values is
  ``sqrt(sum sd^2) / k`` (independent errors);
* ``dose_effect``: outcomes joined to their target: nephrotoxicity -> ``Kidneys``,
  xerostomia -> ``Parotids``, lesion_response -> that ``lesion_voi``, pfs ->
  ``Lesions_mean``; ``effect`` is 1 for grade >= 2 (toxicity), a CR/PR response, or a PFS
  event, else 0. One row per outcome and (engine, method): filter on those.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb

from warehouse.schema import TABLES, Table, duckdb_type
from warehouse.writer import has_files, hive_read_sql

CATALOG_NAME = "rntflow.duckdb"

#: Outcome endpoint -> the dose target it is analysed against (see module docstring).
ENDPOINT_TARGET_SQL = """CASE o.endpoint
        WHEN 'nephrotoxicity' THEN 'Kidneys'
        WHEN 'xerostomia' THEN 'Parotids'
        WHEN 'lesion_response' THEN o.lesion_voi
        WHEN 'pfs' THEN 'Lesions_mean' END"""

TOXICITY_GRADE_THRESHOLD = 2  # CTCAE grade >= 2 counts as a toxicity event (documented choice)


def catalog_path(warehouse_dir: str | Path) -> Path:
    return Path(warehouse_dir) / CATALOG_NAME


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def history_sql(con: duckdb.DuckDBPyConnection, warehouse_dir: Path, spec: Table) -> str:
    """SELECT of all versions of ``spec`` with every schema column, typed."""
    if has_files(warehouse_dir, spec):
        present = {row[0] for row in con.execute(f"DESCRIBE {hive_read_sql(warehouse_dir, spec)}").fetchall()}
        cols = [
            (f"CAST({_q(c.name)} AS {duckdb_type(c.arrow_type)})" if c.name in present
             else f"CAST(NULL AS {duckdb_type(c.arrow_type)})") + f" AS {_q(c.name)}"
            for c in spec.columns
        ]
        return hive_read_sql(warehouse_dir, spec, ", ".join(cols))
    cols = [f"CAST(NULL AS {duckdb_type(c.arrow_type)}) AS {_q(c.name)}" for c in spec.columns]
    return f"SELECT {', '.join(cols)} WHERE false"


DERIVED_VIEWS: dict[str, str] = {
    "voi_dose_cumulative": """
    SELECT trial_id, site_id, subject_id, voi, engine, method,
           count(*) AS n_cycles, sum(dose_gy) AS dose_gy,
           sqrt(sum(dose_sd_gy * dose_sd_gy)) AS dose_sd_gy, sum(bed_gy) AS bed_gy
    FROM voi_doses GROUP BY trial_id, site_id, subject_id, voi, engine, method""",
    # One pass over the cumulative doses (materialised once), then the derived targets;
    # a whole-organ VOI (e.g. Kidneys) present for a subject wins over the mean of its halves.
    "dose_effect_targets": """
    WITH c AS MATERIALIZED (SELECT * FROM voi_dose_cumulative),
    derived AS (
        SELECT trial_id, site_id, subject_id, engine, method,
               CASE WHEN voi IN ('Kidney_L', 'Kidney_R') THEN 'Kidneys'
                    WHEN voi IN ('Parotid_L', 'Parotid_R') THEN 'Parotids'
                    WHEN regexp_full_match(voi, 'Lesion_[0-9]+') THEN 'Lesions_mean' END AS target_voi,
               min(n_cycles) AS n_cycles, avg(dose_gy) AS dose_gy,
               sqrt(sum(dose_sd_gy * dose_sd_gy)) / count(*) AS dose_sd_gy, avg(bed_gy) AS bed_gy,
               count(*) AS n_vois
        FROM c
        WHERE voi IN ('Kidney_L', 'Kidney_R', 'Parotid_L', 'Parotid_R') OR regexp_full_match(voi, 'Lesion_[0-9]+')
        GROUP BY ALL
    )
    SELECT trial_id, site_id, subject_id, voi AS target_voi, engine, method, n_cycles, dose_gy,
           dose_sd_gy, bed_gy, 1 AS n_vois FROM c
    UNION ALL
    SELECT d.trial_id, d.site_id, d.subject_id, d.target_voi, d.engine, d.method, d.n_cycles, d.dose_gy,
           d.dose_sd_gy, d.bed_gy, d.n_vois
    FROM derived d
    ANTI JOIN c ON c.trial_id = d.trial_id AND c.subject_id = d.subject_id AND c.voi = d.target_voi
               AND c.engine = d.engine AND c.method = d.method""",
    "dose_effect": f"""
    SELECT o.trial_id, coalesce(o.site_id, t.site_id) AS site_id, o.subject_id, o.endpoint,
           o.lesion_voi, t.target_voi, t.engine, t.method, t.n_cycles, t.n_vois,
           t.dose_gy AS cumulative_dose_gy, t.dose_sd_gy AS cumulative_dose_sd_gy,
           t.bed_gy AS cumulative_bed_gy,
           o.grade, o.response, o.event, o.time_to_event_months, o.assessed_months,
           CAST(CASE
               WHEN o.endpoint IN ('nephrotoxicity', 'xerostomia') THEN o.grade >= {TOXICITY_GRADE_THRESHOLD}
               WHEN o.endpoint = 'lesion_response' THEN o.response IN ('CR', 'PR')
               WHEN o.endpoint = 'pfs' THEN o.event = 1 END AS INTEGER) AS effect
    FROM outcomes o
    JOIN dose_effect_targets t
      ON t.trial_id = o.trial_id AND t.subject_id = o.subject_id
     AND t.target_voi = {ENDPOINT_TARGET_SQL}""",
}


def create_views(con: duckdb.DuckDBPyConnection, warehouse_dir: str | Path,
                 tables: dict[str, Table] | None = None) -> list[str]:
    """Create or replace every view on ``con``; returns the view names."""
    warehouse_dir = Path(warehouse_dir).resolve()
    tables = TABLES if tables is None else tables
    names = []
    for spec in tables.values():
        con.execute(f"CREATE OR REPLACE VIEW {_q(spec.name + '_history')} AS {history_sql(con, warehouse_dir, spec)}")
        keys = ", ".join(_q(k) for k in spec.natural_key)
        con.execute(
            f"CREATE OR REPLACE VIEW {_q(spec.name)} AS SELECT * FROM {_q(spec.name + '_history')} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY result_version DESC) = 1"
        )
        names += [spec.name, spec.name + "_history"]
    if {"voi_doses", "outcomes"} <= set(tables):
        for name, sql in DERIVED_VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
            names.append(name)
    return names


def refresh_catalog(warehouse_dir: str | Path, tables: dict[str, Table] | None = None) -> Path:
    """Create or refresh ``<warehouse>/rntflow.duckdb`` with a view per table.

    Parameters
    ----------
    warehouse_dir : str or Path
        Warehouse root.
    tables : dict, optional
        Schema registry (default :data:`warehouse.schema.TABLES`).

    Returns
    -------
    Path
        The catalog file.
    """
    warehouse_dir = Path(warehouse_dir).resolve()
    warehouse_dir.mkdir(parents=True, exist_ok=True)
    path = catalog_path(warehouse_dir)
    # Build a fresh catalog beside the old one and rename it into place: open readers keep
    # the old file (POSIX), nobody sees a half-built catalog, and no DuckDB lock is needed.
    tmp = warehouse_dir / f".{CATALOG_NAME}.{uuid.uuid4().hex}.tmp"
    try:
        con = duckdb.connect(str(tmp))
        try:
            create_views(con, warehouse_dir, tables)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    return path


def connect(warehouse_dir: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the warehouse catalog (creating it first when it does not exist yet).

    Parameters
    ----------
    warehouse_dir : str or Path
        Warehouse root.
    read_only : bool
        Open read-only (several readers may share the file); default ``True``.
    """
    path = catalog_path(warehouse_dir)
    if not path.exists():
        refresh_catalog(warehouse_dir)
    return duckdb.connect(str(path), read_only=read_only)
