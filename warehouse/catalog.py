"""The DuckDB catalog: ``<warehouse>/rntflow.duckdb``, views over the Parquet files.

For each table of :data:`warehouse.schema.TABLES`:

* ``<table>``: the latest ``result_version`` per natural key, read from the materialised
  ``latest/<table>`` files (:mod:`warehouse.latest`), each column cast to its schema type;
* ``<table>_history``: every result version of every row, read from the append-only files
  ``<table>/trial_id=<t>/site_id=<s>/part-<uuid>.parquet`` (``union_by_name``, so files
  written before a column was added read it as NULL).

The views resolve their file globs when a query runs, so they are never stale: a session
opened before the first study, or long before the last load, sees exactly the rows in the
Parquet files at query time. Every table has a zero-row ``_schema.parquet`` in both
layouts (written by :func:`init_warehouse`), so the globs always match and an empty table
reads as typed and empty.

The catalog file is therefore static: it only changes when the view definitions do (a new
rntflow version, a schema change, the warehouse moved). :func:`init_warehouse` compares a
digest of the definitions with the one recorded beside the catalog
(``.rntflow.duckdb.digest``) and only then rebuilds it: into a temporary file, renamed over
``rntflow.duckdb`` (sessions already open keep the old file and its views), and an
analyst's leftover ``rntflow.duckdb.wal`` (from a read-write session, open or killed) is
moved aside so that it can never be replayed onto the new file. The pipeline never opens
the catalog file, read-only or otherwise: it reads through in-memory connections with the
same views (:func:`dose_effect_frame`), so no analyst session (read-only or read-write,
open, crashed, holding DuckDB's file lock) can disturb it. The catalog is written with the
storage format of DuckDB :data:`STORAGE_COMPATIBILITY`, so any DuckDB CLI from that version
on opens it.

Derived views for the dose-effect analysis (``voi_dose_cumulative`` and
``dose_effect_targets`` read tables materialised at load time under ``latest/<view>/``,
computed with the SQL below on one trial-and-site partition at a time, see
:data:`warehouse.writer.MATERIALISED`; on an in-memory connection over a warehouse never
initialised they are computed per query):

* ``voi_dose_cycle``: one dose per subject, cycle, VOI and engine: the multi-time-point
  result where the cycle has one, else its single-time-point result (Madsen before
  Hänscheid: :data:`rntflow.core.methods.METHOD_PREFERENCE`); the provisional rows it
  replaces stay in ``voi_doses``;
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
  ``Lesions_mean``, liver_toxicity (TARE) -> ``Liver_Normal``; ``effect`` is 1 for a toxicity
  grade at or above the endpoint's :data:`EVENT_MIN_GRADE`, a CR/PR response, or a PFS event,
  else 0. One row per outcome and engine: filter on the engine. Radioembolisation subjects'
  targets come from ``tare_doses`` (mean delivered dose summed over treatments) with engine
  :data:`TARE_ENGINE`, so a 177Lu analysis (engines ``organ``/``sphere``) never mixes them in.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import duckdb
import pandas as pd

from rntflow.core.files import write_text_atomic
from rntflow.core.methods import METHOD_PREFERENCE, method_order_sql
from rntflow.warehouse import latest
from rntflow.warehouse.columns import Table, duckdb_type
from rntflow.warehouse.schema import DERIVED, TABLES
from rntflow.warehouse.storage import Store, open_store
from rntflow.warehouse.writer import (
    MATERIALISED,
    ensure_schema_files,
    has_files,
    hive_read_sql,
    latest_version_sql,
    repair_latest,
    schema_files_current,
    table_dir,
    table_lock,
)

CATALOG_NAME = "rntflow.duckdb"
#: Oldest DuckDB whose storage format the catalog file is written in (its CLI opens it).
STORAGE_COMPATIBILITY = "v1.0.0"

#: Outcome endpoint -> the dose target it is analysed against (see module docstring).
ENDPOINT_TARGET_SQL = """CASE o.endpoint
        WHEN 'nephrotoxicity' THEN 'Kidneys'
        WHEN 'xerostomia' THEN 'Parotids'
        WHEN 'lesion_response' THEN o.lesion_voi
        WHEN 'pfs' THEN 'Lesions_mean'
        WHEN 'liver_toxicity' THEN 'Liver_Normal' END"""

#: The best dose method (``multi_time_point``): its rows are kept outright in ``voi_dose_cycle``,
#: the others ranked by :func:`rntflow.core.methods.method_order_sql` (the one ranking rule).
_BEST_METHOD_SQL = "'" + METHOD_PREFERENCE[0] + "'"

#: Lowest CTCAE grade that counts as an event, per toxicity endpoint. Nephrotoxicity: grade
#: >= 2 (creatinine > 1.5 x baseline, the usual renal endpoint of PRRT dose-effect studies,
#: e.g. Bodei et al. 2008 EJNMMI 35:1847). Xerostomia: grade >= 1 (symptomatic dry mouth),
#: the grade PSMA-RLT series report, since grade >= 2 is rare (e.g. VISION, Sartor et al.
#: 2021 NEJM 385:1091). The simulator draws both events at these grades.
#: Liver toxicity after radioembolisation: grade >= 3 (severe hepatotoxicity, the endpoint of
#: TARE normal-liver NTCP studies, e.g. Strigari et al. 2010 J Nucl Med 51:1377, Chiesa et al.
#: 2015 EJNMMI 42:1718).
EVENT_MIN_GRADE = {"nephrotoxicity": 2, "xerostomia": 1, "liver_toxicity": 3}

#: Engine of the radioembolisation doses in ``dose_effect`` (local deposition, ``tare_doses``).
TARE_ENGINE = "local_deposition"

#: Radioembolisation dose targets: each subject's delivered mean dose per lesion and for the
#: non-tumour perfused liver, summed over treatments (``tare_doses``), in the columns of
#: ``dose_effect_targets``.
TARE_TARGETS_SQL = f"""
    SELECT trial_id, site_id, subject_id, voi AS target_voi, '{TARE_ENGINE}' AS engine,
           '{TARE_ENGINE}' AS method, count(*) AS n_cycles, sum(mean_dose_gy) AS dose_gy,
           CAST(NULL AS DOUBLE) AS dose_sd_gy, CAST(NULL AS DOUBLE) AS bed_gy, true AS all_final,
           1 AS n_vois
    FROM tare_doses
    WHERE voi = 'Liver_Normal' OR regexp_full_match(voi, 'Lesion_[0-9]+')
    GROUP BY trial_id, site_id, subject_id, voi"""


Root = str | Path | Store


def catalog_path(warehouse_dir: Root) -> Path:
    """The analysts' DuckDB file: ``<warehouse>/rntflow.duckdb``; for an S3 root, in the
    store's local folder (:mod:`warehouse.storage`), its views reading the ``s3://`` files."""
    return open_store(warehouse_dir).local_dir / CATALOG_NAME


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _typed(spec: Table, present: set[str] | None = None) -> str:
    """Every schema column cast to its type (NULL when not in ``present``)."""
    return ", ".join(
        (
            f"CAST({_q(c.name)} AS {duckdb_type(c.arrow_type)})"
            if present is None or c.name in present
            else f"CAST(NULL AS {duckdb_type(c.arrow_type)})"
        )
        + f" AS {_q(c.name)}"
        for c in spec.columns
    )


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def latest_view_sql(warehouse_dir: Root, spec: Table) -> str:
    """SELECT of ``spec``'s latest rows from the ``latest/`` files (glob resolved at query time)."""
    return (
        f"SELECT {_typed(spec)} FROM read_parquet({_lit(latest.latest_glob(warehouse_dir, spec))}, "
        f"union_by_name = true, hive_partitioning = false)"
    )


def history_view_sql(warehouse_dir: Root, spec: Table) -> str:
    """SELECT of every version of ``spec`` (glob resolved at query time).

    The history files keep their partition columns in the folder names
    (``trial_id=<t>/site_id=<s>``); they are read from the path, since one glob must also
    match the zero-row ``<table>/_schema.parquet`` (which has no partition folders).
    """
    root = table_dir(warehouse_dir, spec.name)
    cols = []
    for c in spec.columns:
        if c.name in spec.partition_by:
            cols.append(f"coalesce({_q(c.name)}, regexp_extract(filename, '/{c.name}=([^/]*)/', 1)) AS {_q(c.name)}")
        else:
            cols.append(f"CAST({_q(c.name)} AS {duckdb_type(c.arrow_type)}) AS {_q(c.name)}")
    return (
        f"SELECT {', '.join(cols)} FROM read_parquet({_lit(root + '/**/*.parquet')}, "
        f"union_by_name = true, hive_partitioning = false, filename = true)"
    )


def history_sql(con: duckdb.DuckDBPyConnection, warehouse_dir: Store, spec: Table) -> str:
    """SELECT of all versions of ``spec`` with every schema column, typed.

    Reads the files at query time when the table is initialised (its history schema file
    exists); otherwise (an in-memory connection on a warehouse never written) from the files
    present now, or an empty typed SELECT when there are none.
    """
    if warehouse_dir.exists(latest.schema_files(warehouse_dir, spec)[1]):
        return history_view_sql(warehouse_dir, spec)
    if has_files(warehouse_dir, spec):
        present = {row[0] for row in con.execute(f"DESCRIBE {hive_read_sql(warehouse_dir, spec)}").fetchall()}
        return hive_read_sql(warehouse_dir, spec, _typed(spec, present))
    return f"SELECT {_typed(spec, set())} WHERE false"


def _current_latest_sql(con: duckdb.DuckDBPyConnection, warehouse_dir: Store, spec: Table) -> str:
    """The ``<table>`` view's SELECT: the ``latest/`` glob once initialised, else the history."""
    if warehouse_dir.exists(latest.schema_files(warehouse_dir, spec)[0]):
        return latest_view_sql(warehouse_dir, spec)
    return latest_version_sql(f"({history_sql(con, warehouse_dir, spec)})", spec.natural_key)


#: The targets ``dose_effect`` joins to (pushed down to the scan of ``dose_effect_targets``).
TARGETS_SQL = "target_voi IN ('Kidneys', 'Parotids') OR starts_with(target_voi, 'Lesion')"


def _targets_sql() -> str:
    """The cumulative rows plus the derived targets (``Kidneys``, ``Parotids``, ``Lesions_mean``).

    One pass over the cumulative doses (materialised once); a whole-organ VOI (e.g.
    ``Kidneys``) present for a subject wins over the mean of its halves.
    """
    return """
    WITH c AS MATERIALIZED (SELECT * FROM voi_dose_cumulative),
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
    # multi-time-point result that replaced it once the later scans came; the best method
    # (rntflow.core.methods) wins. The best method's rows are kept outright (one per key: the
    # natural key holds the method) and only the others are ranked, which is faster than a
    # window over the whole table (BENCHMARKS.md, "Warehouse").
    "voi_dose_cycle": f"""
    WITH stp AS (SELECT * FROM voi_doses WHERE method <> {_BEST_METHOD_SQL}
                 QUALIFY row_number() OVER (PARTITION BY trial_id, subject_id, cycle, voi, engine
                                            ORDER BY {method_order_sql("method")}) = 1)
    (SELECT trial_id, site_id, subject_id, cycle, voi, engine, method, dose_gy, dose_sd_gy, bed_gy, final
     FROM voi_doses WHERE method = {_BEST_METHOD_SQL})
    UNION ALL
    (SELECT s.trial_id, s.site_id, s.subject_id, s.cycle, s.voi, s.engine, s.method, s.dose_gy, s.dose_sd_gy,
            s.bed_gy, s.final
     FROM stp s ANTI JOIN (SELECT * FROM voi_doses WHERE method = {_BEST_METHOD_SQL}) m
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
               WHEN o.endpoint = 'liver_toxicity' THEN o.grade >= {EVENT_MIN_GRADE["liver_toxicity"]}
               WHEN o.endpoint = 'lesion_response' THEN o.response IN ('CR', 'PR')
               WHEN o.endpoint = 'pfs' THEN o.event = 1 END AS INTEGER) AS effect
    FROM outcomes o
    JOIN (SELECT trial_id, site_id, subject_id, target_voi, engine, method, n_cycles, dose_gy, dose_sd_gy,
                 bed_gy, all_final, n_vois
          FROM dose_effect_targets WHERE {TARGETS_SQL}
          UNION ALL {TARE_TARGETS_SQL}) t
      ON t.trial_id = o.trial_id AND t.subject_id = o.subject_id
     AND t.target_voi = {ENDPOINT_TARGET_SQL}""",
}


def view_definitions(
    warehouse_dir: Root, tables: dict[str, Table] | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> dict[str, str]:
    """View name -> SELECT, for every table (latest and history) and the derived views.

    On an initialised warehouse (see :func:`init_warehouse`) every table's views read their
    globs at query time; ``con`` is needed only for a table never initialised (its views
    are then built from the files present now).
    """
    warehouse_dir = open_store(warehouse_dir)
    tables = TABLES if tables is None else tables
    defs: dict[str, str] = {}
    for spec in tables.values():
        if con is None:
            defs[spec.name] = latest_view_sql(warehouse_dir, spec)
            defs[spec.name + "_history"] = history_view_sql(warehouse_dir, spec)
        else:
            defs[spec.name] = _current_latest_sql(con, warehouse_dir, spec)
            defs[spec.name + "_history"] = history_sql(con, warehouse_dir, spec)
    if {"voi_doses", "outcomes", "tare_doses"} <= set(tables):
        defs.update(DERIVED_VIEWS)
        for names in MATERIALISED.values():
            for name in names:
                view = DERIVED[name]
                if con is None or warehouse_dir.exists(latest.derived_schema_file(warehouse_dir, name)):
                    glob = latest.latest_table_dir(warehouse_dir, name) + "/**/*.parquet"
                    defs[name] = (
                        f"SELECT {_typed(view)} FROM read_parquet({_lit(glob)}, union_by_name = true, "
                        f"hive_partitioning = false)"
                    )
    return defs


def create_views(
    con: duckdb.DuckDBPyConnection, warehouse_dir: Root, tables: dict[str, Table] | None = None
) -> list[str]:
    """Create or replace every view on ``con`` (e.g. an in-memory connection); returns the names.

    For an S3 root, registers the store's filesystem on ``con`` first.
    """
    open_store(warehouse_dir).register(con)
    names = []
    for name, sql in view_definitions(warehouse_dir, tables, con).items():
        con.execute(f"CREATE OR REPLACE VIEW {_q(name)} AS {sql}")
        names.append(name)
    return names


def _digest_path(warehouse_dir: Store) -> Path:
    return warehouse_dir.local_dir / f".{CATALOG_NAME}.digest"


def _definitions_digest(warehouse_dir: Store, tables: dict[str, Table]) -> str:
    text = "\n".join(f"{k}\t{v}" for k, v in view_definitions(warehouse_dir, tables).items())
    return hashlib.sha256(f"{STORAGE_COMPATIBILITY}\n{text}".encode()).hexdigest()


def catalog_is_current(warehouse_dir: Root, tables: dict[str, Table] | None = None) -> bool:
    """Whether the catalog file exists with the current view definitions (reads no DuckDB file)."""
    warehouse_dir = open_store(warehouse_dir)
    tables = TABLES if tables is None else tables
    digest = _digest_path(warehouse_dir)
    return (
        catalog_path(warehouse_dir).exists()
        and digest.exists()
        and digest.read_text().strip() == _definitions_digest(warehouse_dir, tables)
        and all(schema_files_current(warehouse_dir, spec) for spec in tables.values())
    )


def _build_catalog(warehouse_dir: Store, tables: dict[str, Table], digest: str) -> Path:
    """Write the catalog into a new file and rename it over ``rntflow.duckdb``."""
    path = catalog_path(warehouse_dir)
    local = warehouse_dir.local_dir
    tmp = local / f".{CATALOG_NAME}.{uuid.uuid4().hex}.tmp"
    try:
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
        try:
            warehouse_dir.register(con)  # CREATE VIEW binds its query: the s3:// files must be readable
            for name, sql in view_definitions(warehouse_dir, tables).items():
                con.execute(f"CREATE VIEW {_q(name)} AS {sql}")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        # An analyst's WAL belongs to the old file: move it aside (kept, never replayed onto
        # the new file). A session still open keeps the old file and its WAL handle.
        wal = Path(str(path) + ".wal")
        if wal.exists():
            os.replace(wal, local / f".{CATALOG_NAME}.wal.{uuid.uuid4().hex}.stale")
        os.replace(tmp, path)
        write_text_atomic(_digest_path(warehouse_dir), digest + "\n")
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    return path


def init_warehouse(warehouse_dir: Root, tables: dict[str, Table] | None = None) -> Path:
    """Initialise (or bring up to date) a warehouse: schema files and the catalog.

    Writes each table's zero-row ``_schema.parquet`` files when missing or outdated, and
    rebuilds ``rntflow.duckdb`` only when its view definitions changed (or it is missing).
    Never opens the existing catalog file. Safe to call concurrently (a flock on
    ``<warehouse>/.catalog.lock`` serialises the rebuild).

    Returns
    -------
    Path
        The catalog file.
    """
    warehouse_dir = open_store(warehouse_dir)
    tables = TABLES if tables is None else tables
    warehouse_dir.local_dir.mkdir(parents=True, exist_ok=True)
    for spec in tables.values():
        if not schema_files_current(warehouse_dir, spec):
            with table_lock(warehouse_dir, spec.name):
                ensure_schema_files(warehouse_dir, spec)
    with warehouse_dir.lock(".catalog.lock"):
        digest = _definitions_digest(warehouse_dir, tables)
        recorded = _digest_path(warehouse_dir)
        if not catalog_path(warehouse_dir).exists() or not recorded.exists() or recorded.read_text().strip() != digest:
            _build_catalog(warehouse_dir, tables, digest)
    return catalog_path(warehouse_dir)


def refresh_catalog(warehouse_dir: Root, tables: dict[str, Table] | None = None) -> Path:
    """Bring the warehouse up to date for analysts: ``latest/`` files and the catalog.

    Recomputes any ``latest/`` file that does not match its history
    (:func:`warehouse.writer.repair_latest`) and runs :func:`init_warehouse`. Views read
    their files at query time, so this is not needed after a load; it rebuilds the catalog
    file only when the view definitions changed.

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
    path = init_warehouse(warehouse_dir, tables)
    repair_latest(warehouse_dir, tables)
    return path


#: Engines of the dose-effect analyses: one dose per target, the organ S-value engine for
#: organs and the sphere model for lesions (the voxel engines' means are a second opinion).
ANALYSIS_ENGINES = ("organ", "sphere")


def pipeline_connection(warehouse_dir: Root) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views (the pipeline's, not the file)."""
    init_warehouse(warehouse_dir)
    con = duckdb.connect()
    create_views(con, warehouse_dir)
    return con


def dose_effect_frame(warehouse_dir: Root, engines: tuple[str, ...] = ANALYSIS_ENGINES) -> pd.DataFrame:
    """The ``dose_effect`` view's rows of ``engines`` (one row per outcome with the default).

    Read through :func:`pipeline_connection`: never through the analysts' catalog file.
    """
    con = pipeline_connection(warehouse_dir)
    try:
        return con.execute("SELECT * FROM dose_effect WHERE list_contains(?, engine)", [list(engines)]).df()
    finally:
        con.close()


def connect(
    warehouse_dir: Root, read_only: bool = True, tables: dict[str, Table] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the analysts' catalog ``<warehouse>/rntflow.duckdb`` (initialised first when needed).

    Parameters
    ----------
    warehouse_dir : str or Path
        Warehouse root.
    read_only : bool
        Open read-only (several readers may share the file); default ``True``. A read-write
        session holds DuckDB's exclusive lock on the file (other analysts cannot open it
        meanwhile) but never disturbs the pipeline.
    tables : dict, optional
        Schema registry the catalog must match (default :data:`warehouse.schema.TABLES`).
    """
    if not catalog_is_current(warehouse_dir, tables):
        init_warehouse(warehouse_dir, tables)
    con = duckdb.connect(str(catalog_path(warehouse_dir)), read_only=read_only)
    open_store(warehouse_dir).register(con)
    return con
