"""The ``latest/`` layout: each table's latest result versions, materialised at load time.

Layout (beside the append-only history of :mod:`warehouse.writer`)::

    <warehouse>/latest/<table>/_schema.parquet               0 rows, the declared schema
    <warehouse>/latest/<table>/<trial_id>/<site_id>.parquet  site-partitioned tables
    <warehouse>/latest/<table>/<trial_id>.parquet            tables partitioned by trial only

A latest file holds, for the rows of one history partition folder
(``<table>/trial_id=<t>[/site_id=<s>]/``), exactly one row per natural key: the one with the
highest ``result_version``. Unlike the history files, it stores *every* schema column,
partition columns included, so a plain Parquet reader (pyarrow, pandas, Polars, Spark)
gets the same rows and values as the DuckDB view ``<table>`` by reading the folder
``latest/<table>`` (pyarrow's dataset discovery skips ``_schema.parquet``: names starting
with ``_`` or ``.`` are ignored by default).

Each latest file is replaced atomically (:meth:`warehouse.storage.Store.write_parquet`: a
rename locally, one PUT on S3) under the
table lock, after the load's history files are published. Its Parquet key-value metadata
records a digest of the history file names it was computed from
(:data:`HISTORY_DIGEST_KEY`); a latest file whose digest does not match its history folder
(a load that crashed between the two writes, or a warehouse written before ``latest/``
existed) is recomputed from the history before the next load of that partition uses it,
and by :func:`repair_latest`, which the catalog refresh runs.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from rntflow.warehouse.columns import Table
from rntflow.warehouse.storage import Store, open_store

Root = str | Path | Store

_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None
_DB_LOCK = threading.Lock()
_REGISTERED: Store | None = None


def cursor(root: Root | None = None) -> duckdb.DuckDBPyConnection:
    """A new cursor on this process's shared in-memory DuckDB (a connect costs ~0.1 s, a cursor ~5 ms).

    Close it after use; temporary views and registered tables are private to the cursor.
    With an S3 ``root`` the cursor reads its ``s3://`` locations (the filesystem is
    registered on the shared database, one S3 root at a time).
    """
    global _DB, _REGISTERED
    with _DB_LOCK:
        if _DB is None or _DB[0] != os.getpid():  # not inherited across fork
            _DB = (os.getpid(), duckdb.connect())
            _REGISTERED = None
        if root is not None:
            store = open_store(root)
            if not store.is_local and _REGISTERED is not store:
                store.register(_DB[1])
                _REGISTERED = store
        return _DB[1].cursor()


#: Folder of the materialised latest versions, under the warehouse root.
LATEST_DIR = "latest"
#: Zero-row file with the declared schema, so that a table without rows still reads typed.
SCHEMA_FILE = "_schema.parquet"
#: Parquet metadata key of the history digest a latest file was computed from.
HISTORY_DIGEST_KEY = b"rntflow.history_digest"


def latest_table_dir(warehouse_dir: Root, table: str) -> str:
    """``<warehouse>/latest/<table>`` (a location, see :mod:`warehouse.storage`)."""
    return open_store(warehouse_dir).loc(LATEST_DIR, table)


def latest_glob(warehouse_dir: Root, spec: Table) -> str:
    """Glob of every latest file of ``spec`` (the schema file included)."""
    return latest_table_dir(warehouse_dir, spec.name) + "/**/*.parquet"


def latest_file(warehouse_dir: Root, spec: Table, values: dict[str, str]) -> str:
    """Latest file of the partition with ``values`` (partition column -> value)."""
    parts = [str(values[p]) for p in spec.partition_by]
    return "/".join([latest_table_dir(warehouse_dir, spec.name), *parts[:-1], parts[-1] + ".parquet"])


def history_folder(warehouse_dir: Root, spec: Table, values: dict[str, str]) -> str:
    """History partition folder ``<table>/trial_id=<t>[/site_id=<s>]``."""
    return open_store(warehouse_dir).loc(spec.name, *(f"{p}={values[p]}" for p in spec.partition_by))


def history_digest(warehouse_dir: Root, folder: str) -> str:
    """Digest of the names of the published history files in ``folder`` (count + SHA-256)."""
    names = [
        n
        for n in open_store(warehouse_dir).listdir(folder, dirs=False)
        if n.endswith(".parquet") and not n.startswith(".")
    ]
    return f"{len(names)}:{hashlib.sha256(chr(10).join(names).encode()).hexdigest()[:32]}"


def full_schema(spec: Table, digest: str | None = None) -> pa.Schema:
    """Arrow schema of a latest file (every column; the history digest in the metadata)."""
    schema = spec.arrow_schema()
    if digest is not None:
        schema = schema.with_metadata({**schema.metadata, HISTORY_DIGEST_KEY: digest.encode()})
    return schema


def conform(arrow: pa.Table, spec: Table, digest: str | None = None) -> pa.Table:
    """``arrow`` with exactly the columns of ``spec`` in order and type (missing ones null)."""
    cols = [
        arrow.column(c.name).cast(c.arrow_type)
        if c.name in arrow.column_names
        else pa.nulls(arrow.num_rows, type=c.arrow_type)
        for c in spec.columns
    ]
    return pa.Table.from_arrays(cols, schema=full_schema(spec, digest))


def write_latest(warehouse_dir: Root, path: str, table: pa.Table) -> None:
    """Replace ``path`` atomically with ``table`` (zstd).

    Not fsync'd: a latest file is derived data. One torn by a power cut has no readable
    footer, so its digest does not match and it is recomputed from the (fsync'd) history
    like any stale one (:func:`is_current`).
    """
    open_store(warehouse_dir).write_parquet(path, table, durable=False)


def schema_files(warehouse_dir: Root, spec: Table) -> tuple[str, str]:
    """The zero-row schema files: ``latest/<table>/_schema.parquet`` and ``<table>/_schema.parquet``.

    They hold every column (partition columns included), so the catalog's globs always
    match a file and an empty table reads typed. pyarrow's dataset discovery skips them
    (leading ``_``), and the history glob of hive readers (``<table>/*/*/*.parquet``) does
    not reach them.
    """
    return (
        latest_table_dir(warehouse_dir, spec.name) + "/" + SCHEMA_FILE,
        open_store(warehouse_dir).loc(spec.name, SCHEMA_FILE),
    )


def derived_schema_file(warehouse_dir: Root, name: str) -> str:
    """``latest/<name>/_schema.parquet`` of a materialised derived table."""
    return latest_table_dir(warehouse_dir, name) + "/" + SCHEMA_FILE


def schema_file_current(warehouse_dir: Root, path: str, spec) -> bool:
    """Whether ``path`` exists with ``spec``'s schema (a :class:`Table` or derived view)."""
    try:
        return open_store(warehouse_dir).read_schema(path).equals(full_schema(spec), check_metadata=False)
    except (OSError, pa.ArrowInvalid):
        return False


def schema_files_current(warehouse_dir: Root, spec: Table) -> bool:
    """Whether both schema files exist with the declared schema."""
    return all(schema_file_current(warehouse_dir, path, spec) for path in schema_files(warehouse_dir, spec))


def write_schema_files(warehouse_dir: Root, spec: Table) -> None:
    """(Re)write both schema files (call under the table lock)."""
    for path in schema_files(warehouse_dir, spec):
        write_latest(warehouse_dir, path, full_schema(spec).empty_table())


def _stored_digest(warehouse_dir: Root, path: str) -> str | None:
    try:
        meta = open_store(warehouse_dir).read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = meta.get(HISTORY_DIGEST_KEY)
    return value.decode() if value is not None else None


def is_current(warehouse_dir: Root, spec: Table, values: dict[str, str]) -> bool:
    """Whether the partition's latest file matches its history files (both absent counts)."""
    digest = history_digest(warehouse_dir, history_folder(warehouse_dir, spec, values))
    path = latest_file(warehouse_dir, spec, values)
    stored = _stored_digest(warehouse_dir, path)
    if stored is None and not open_store(warehouse_dir).exists(path):
        return digest.startswith("0:")
    return stored == digest


def latest_from_history_sql(source: str, natural_key: tuple[str, ...]) -> str:
    """SELECT of the highest ``result_version`` per natural key of ``source`` (NULL keys equal)."""
    keys = ", ".join(f'"{k}"' for k in natural_key)
    return f"SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY result_version DESC) = 1"


def rebuild_partition(warehouse_dir: Root, spec: Table, values: dict[str, str]) -> int:
    """Recompute one partition's latest file from its history (call under the table lock).

    Returns the number of latest rows written (0 and no file when the history is empty).
    """
    store = open_store(warehouse_dir)
    folder = history_folder(store, spec, values)
    digest = history_digest(store, folder)
    path = latest_file(store, spec, values)
    if digest.startswith("0:"):
        store.delete(path)
        return 0
    glob = (folder + "/*.parquet").replace("'", "''")
    con = cursor(store)
    try:
        hive_types = ", ".join(f"'{p}': VARCHAR" for p in spec.partition_by)
        src = (
            f"(SELECT * FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = true, "
            f"hive_types = {{{hive_types}}}))"
        )
        arrow = con.sql(latest_from_history_sql(src, spec.natural_key)).to_arrow_table()
    finally:
        con.close()
    write_latest(store, path, conform(arrow, spec, digest))
    return arrow.num_rows


def merge_partition(warehouse_dir: Root, spec: Table, values: dict[str, str], rows: pa.Table) -> None:
    """Fold ``rows`` (new keys and new versions, all columns) into the partition's latest file.

    The previous latest file is known to be current (see :func:`is_current`) and ``rows``
    already published in the history; rows of the same natural key replace the old ones.
    """
    store = open_store(warehouse_dir)
    path = latest_file(store, spec, values)
    digest = history_digest(store, history_folder(store, spec, values))
    rows = conform(rows, spec)
    if store.exists(path):
        old = conform(store.read_table(path), spec)
        same = " AND ".join(f'o."{k}" IS NOT DISTINCT FROM n."{k}"' for k in spec.natural_key)
        con = cursor()
        try:
            con.register("o_rows", old)
            con.register("n_rows", rows)
            kept = con.sql(f"SELECT o.* FROM o_rows o ANTI JOIN n_rows n ON {same}").to_arrow_table()
        finally:
            con.close()
        rows = pa.concat_tables([conform(kept, spec), rows])
    write_latest(store, path, conform(rows, spec, digest))


def history_partitions(warehouse_dir: Root, spec: Table) -> list[dict[str, str]]:
    """Partition values of every history folder of ``spec``."""
    store = open_store(warehouse_dir)
    found: list[dict[str, str]] = []

    def walk(folder: str, depth: int, values: dict[str, str]) -> None:
        if depth == len(spec.partition_by):
            found.append(values)
            return
        prefix = spec.partition_by[depth] + "="
        for name in store.listdir(folder, dirs=True):
            if name.startswith(prefix):
                walk(folder + "/" + name, depth + 1, {**values, spec.partition_by[depth]: name[len(prefix) :]})

    walk(store.loc(spec.name), 0, {})
    return found


def current_files(warehouse_dir: Root, spec: Table) -> list[str] | None:
    """The latest files of ``spec`` when every partition's is current, else ``None``."""
    files = []
    for values in history_partitions(warehouse_dir, spec):
        if not is_current(warehouse_dir, spec, values):
            return None
        path = latest_file(warehouse_dir, spec, values)
        if open_store(warehouse_dir).exists(path):
            files.append(path)
    return files


def derived_file(warehouse_dir: Root, name: str, spec: Table, values: dict[str, str]) -> str:
    """File of the derived table ``name`` materialised from one partition of ``spec``."""
    parts = [str(values[p]) for p in spec.partition_by]
    return "/".join([latest_table_dir(warehouse_dir, name), *parts[:-1], parts[-1] + ".parquet"])


def derived_is_current(warehouse_dir: Root, name: str, spec: Table, values: dict[str, str]) -> bool:
    """Whether the derived file was computed from the partition's current history."""
    digest = history_digest(warehouse_dir, history_folder(warehouse_dir, spec, values))
    path = derived_file(warehouse_dir, name, spec, values)
    stored = _stored_digest(warehouse_dir, path)
    if stored is None and not open_store(warehouse_dir).exists(path):
        return digest.startswith("0:")
    return stored == digest


def materialise_partitions(
    warehouse_dir: Root, spec: Table, partitions: list[dict[str, str]], views: list, definitions: dict[str, str]
) -> int:
    """Recompute the derived tables ``views`` for some partitions of ``spec`` (under its lock).

    ``definitions`` maps view names to their SELECT, in dependency order. They run once over
    the partitions' latest files together (as the relation ``spec.name``): each of ``views``
    as a temporary table (so later ones reuse it), the others as temporary views. Each
    result is split by partition and stored with that partition's history digest. Every
    definition must keep the rows of one partition apart (they group by subject, who belongs
    to one site). Returns the rows written.
    """
    store = open_store(warehouse_dir)
    sources = {}
    for values in partitions:
        source = latest_file(store, spec, values)
        if store.exists(source):
            sources[tuple(values[p] for p in spec.partition_by)] = (values, source)
        else:
            for view in views:
                store.delete(derived_file(store, view.name, spec, values))
    if not sources:
        return 0
    listed = ", ".join("'" + str(src).replace("'", "''") + "'" for _, src in sources.values())
    wanted = {v.name: v for v in views}
    con = cursor(store)
    n = 0
    try:
        con.execute(
            f'CREATE TEMP VIEW "{spec.name}" AS SELECT * FROM read_parquet([{listed}], '
            "union_by_name = true, hive_partitioning = false)"
        )
        for name, sql in definitions.items():
            if not wanted:
                break
            if name not in wanted:
                con.execute(f'CREATE TEMP VIEW "{name}" AS {sql}')
                continue
            con.execute(f'CREATE TEMP TABLE "{name}" AS {sql}')
            arrow = con.sql(f'SELECT * FROM "{name}"').to_arrow_table()
            view = wanted.pop(name)
            for values, _ in sources.values():
                mask = None
                for p in spec.partition_by:
                    eq = pc.equal(arrow[p], values[p])
                    mask = eq if mask is None else pc.and_(mask, eq)
                part = arrow.filter(mask) if len(sources) > 1 else arrow
                digest = history_digest(store, history_folder(store, spec, values))
                write_latest(store, derived_file(store, name, spec, values), conform(part, view, digest))
                n += part.num_rows
    finally:
        con.close()
    return n
