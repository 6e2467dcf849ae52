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

* ``voi_dose_cycle``: one dose per subject, cycle, VOI and engine: the multi-time-point
  result where the cycle has one, else its single-time-point result (Madsen before
  Hänscheid); the provisional rows it replaces stay in ``voi_doses``;
* ``voi_dose_cumulative``: dose, dose SD (quadrature, cycles independent) and BED summed
  over cycles per trial, site, subject, VOI and engine; ``method`` is the cycles' common
  method or ``mixed``; ``all_final`` is true when every cycle is final;
* ``dose_effect_targets``: the cumulative rows plus three derived targets per subject:
  ``Kidneys`` (when no ``Kidneys`` VOI exists: the mean of ``Kidney_L``/``Kidney_R``),
  ``Parotids`` (mean of ``Parotid_L``/``Parotid_R``) and ``Lesions_mean`` (mean over the
  subject's ``Lesion_<n>``). Means are unweighted; the SD of a mean of k values is
  ``sqrt(sum sd^2) / k`` (independent errors);
* ``dose_effect``: outcomes joined to their target: nephrotoxicity -> ``Kidneys``,
  xerostomia -> ``Parotids``, lesion_response -> that ``lesion_voi``, pfs ->
  ``Lesions_mean``; ``effect`` is 1 for a toxicity grade at or above the endpoint's
  :data:`EVENT_MIN_GRADE`, a CR/PR response, or a PFS event, else 0. One row per outcome and
  engine: filter on the engine.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb
import pandas as pd

from rntflow.warehouse.schema import TABLES, Table, duckdb_type
from rntflow.warehouse.writer import has_files, hive_read_sql, latest_version_sql

CATALOG_NAME = "rntflow.duckdb"

#: Outcome endpoint -> the dose target it is analysed against (see module docstring).
ENDPOINT_TARGET_SQL = """CASE o.endpoint
        WHEN 'nephrotoxicity' THEN 'Kidneys'
        WHEN 'xerostomia' THEN 'Parotids'
        WHEN 'lesion_response' THEN o.lesion_voi
        WHEN 'pfs' THEN 'Lesions_mean' END"""

#: Kinetics methods in order of preference for a cycle's dose (higher wins).
METHOD_RANK_SQL = ("CASE method WHEN 'multi_time_point' THEN 3 WHEN 'single_time_point_madsen' THEN 2 "
                   "WHEN 'single_time_point_hanscheid' THEN 1 ELSE 0 END")

#: Lowest CTCAE grade that counts as an event, per toxicity endpoint. Nephrotoxicity: grade
#: >= 2 (creatinine > 1.5 x baseline, the usual renal endpoint of PRRT dose-effect studies,
#: e.g. Bodei et al. 2008 EJNMMI 35:1847). Xerostomia: grade >= 1 (symptomatic dry mouth),
#: the grade PSMA-RLT series report, since grade >= 2 is rare (e.g. VISION, Sartor et al.
#: 2021 NEJM 385:1091). The simulator draws both events at these grades.
EVENT_MIN_GRADE = {"nephrotoxicity": 2, "xerostomia": 1}


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


#: The VOIs a ``dose_effect`` target is made of (pushed down to the Parquet scan).
TARGET_SOURCE_VOIS_SQL = ("voi IN ('Kidneys', 'Kidney_L', 'Kidney_R', 'Parotids', 'Parotid_L', 'Parotid_R') "
                          "OR starts_with(voi, 'Lesion')")


def _targets_sql(voi_filter: str | None = None) -> str:
    """The cumulative rows plus the derived targets (``Kidneys``, ``Parotids``, ``Lesions_mean``).

    One pass over the cumulative doses (materialised once); a whole-organ VOI (e.g.
    ``Kidneys``) present for a subject wins over the mean of its halves. ``voi_filter``
    restricts the source VOIs first (the ``dose_effect`` view needs only its targets').
    """
    where = f"WHERE {voi_filter}" if voi_filter else ""
    return f"""
    WITH c AS MATERIALIZED (SELECT * FROM voi_dose_cumulative {where}),
    derived AS (
        SELECT trial_id, site_id, subject_id, engine,
               CASE WHEN voi IN ('Kidney_L', 'Kidney_R') THEN 'Kidneys'
                    WHEN voi IN ('Parotid_L', 'Parotid_R') THEN 'Parotids'
                    ELSE 'Lesions_mean' END AS target_voi,
               CASE WHEN min(method) = max(method) THEN min(method) ELSE 'mixed' END AS method,
               min(n_cycles) AS n_cycles, avg(dose_gy) AS dose_gy,
               sqrt(sum(dose_sd_gy * dose_sd_gy)) / count(*) AS dose_sd_gy, avg(bed_gy) AS bed_gy,
               bool_and(all_final) AS all_final, count(*) AS n_vois
        FROM c
        WHERE voi IN ('Kidney_L', 'Kidney_R', 'Parotid_L', 'Parotid_R') OR regexp_full_match(voi, 'Lesion_[0-9]+')
        GROUP BY ALL
    ),
    whole AS (SELECT trial_id, subject_id, engine, voi FROM c WHERE voi IN ('Kidneys', 'Parotids', 'Lesions_mean'))
    SELECT trial_id, site_id, subject_id, voi AS target_voi, engine, method, n_cycles, dose_gy,
           dose_sd_gy, bed_gy, all_final, 1 AS n_vois FROM c
    UNION ALL
    SELECT d.trial_id, d.site_id, d.subject_id, d.target_voi, d.engine, d.method, d.n_cycles, d.dose_gy,
           d.dose_sd_gy, d.bed_gy, d.all_final, d.n_vois
    FROM derived d
    ANTI JOIN whole w ON w.trial_id = d.trial_id AND w.subject_id = d.subject_id AND w.voi = d.target_voi
                     AND w.engine = d.engine"""


DERIVED_VIEWS: dict[str, str] = {
    # One dose per cycle: a cycle may hold a provisional single-time-point result and the
    # multi-time-point result that replaced it once the later scans came; the latter wins.
    "voi_dose_cycle": f"""
    WITH stp AS (SELECT * FROM voi_doses WHERE method <> 'multi_time_point'
                 QUALIFY row_number() OVER (PARTITION BY trial_id, subject_id, cycle, voi, engine
                                            ORDER BY {METHOD_RANK_SQL} DESC) = 1)
    (SELECT trial_id, site_id, subject_id, cycle, voi, engine, method, dose_gy, dose_sd_gy, bed_gy, final
     FROM voi_doses WHERE method = 'multi_time_point')
    UNION ALL
    (SELECT s.trial_id, s.site_id, s.subject_id, s.cycle, s.voi, s.engine, s.method, s.dose_gy, s.dose_sd_gy,
            s.bed_gy, s.final
     FROM stp s ANTI JOIN (SELECT * FROM voi_doses WHERE method = 'multi_time_point') m
       ON m.trial_id = s.trial_id AND m.subject_id = s.subject_id AND m.cycle = s.cycle AND m.voi = s.voi
      AND m.engine = s.engine)""",
    "voi_dose_cumulative": """
    SELECT trial_id, site_id, subject_id, voi, engine,
           CASE WHEN min(method) = max(method) THEN min(method) ELSE 'mixed' END AS method,
           count(*) AS n_cycles, sum(dose_gy) AS dose_gy,
           sqrt(sum(dose_sd_gy * dose_sd_gy)) AS dose_sd_gy, sum(bed_gy) AS bed_gy,
           coalesce(bool_and(final), false) AS all_final
    FROM voi_dose_cycle GROUP BY trial_id, site_id, subject_id, voi, engine""",
    "dose_effect_targets": _targets_sql(),
    "dose_effect": f"""
    SELECT o.trial_id, coalesce(o.site_id, t.site_id) AS site_id, o.subject_id, o.endpoint,
           o.lesion_voi, t.target_voi, t.engine, t.method, t.n_cycles, t.n_vois,
           t.dose_gy AS cumulative_dose_gy, t.dose_sd_gy AS cumulative_dose_sd_gy,
           t.bed_gy AS cumulative_bed_gy, t.all_final,
           o.grade, o.response, o.event, o.time_to_event_months, o.assessed_months,
           CAST(CASE
               WHEN o.endpoint = 'nephrotoxicity' THEN o.grade >= {EVENT_MIN_GRADE["nephrotoxicity"]}
               WHEN o.endpoint = 'xerostomia' THEN o.grade >= {EVENT_MIN_GRADE["xerostomia"]}
               WHEN o.endpoint = 'lesion_response' THEN o.response IN ('CR', 'PR')
               WHEN o.endpoint = 'pfs' THEN o.event = 1 END AS INTEGER) AS effect
    FROM outcomes o
    JOIN ({_targets_sql(TARGET_SOURCE_VOIS_SQL)}) t
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
        con.execute(f"CREATE OR REPLACE VIEW {_q(spec.name)} AS "
                    f"{latest_version_sql(_q(spec.name + '_history'), spec.natural_key)}")
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


#: Engines of the dose-effect analyses: one dose per target, the organ S-value engine for
#: organs and the sphere model for lesions (the voxel engines' means are a second opinion).
ANALYSIS_ENGINES = ("organ", "sphere")


def dose_effect_frame(warehouse_dir: str | Path, engines: tuple[str, ...] = ANALYSIS_ENGINES) -> pd.DataFrame:
    """The ``dose_effect`` view's rows of ``engines`` (one row per outcome with the default)."""
    con = connect(warehouse_dir)
    try:
        return con.execute("SELECT * FROM dose_effect WHERE list_contains(?, engine)", [list(engines)]).df()
    finally:
        con.close()


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
