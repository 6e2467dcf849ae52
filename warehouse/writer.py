"""Atomic, idempotent Parquet writer for the warehouse.

The warehouse root is a folder or ``s3://bucket/prefix``; every file goes through
:mod:`warehouse.storage` (on S3 a file is published by one PUT, atomic per object, and the
table lock is a ``flock`` in the store's local folder: one writing host).

Layout: ``<warehouse>/<table>/trial_id=<t>/site_id=<s>/part-<uuid>.parquet`` (hive
partitioning; tables without a site partition stop at ``trial_id=``). Files are
append-only: a load never rewrites an existing file, so a new schema column needs no
rewrite (the catalog reads with ``union_by_name``).

Each file is written to a hidden temporary file in the same folder
(``.part-<uuid>.parquet.<random>.tmp``, :func:`rntflow.core.files.atomic_write`; which the ``*.parquet`` glob of the views does not match),
flushed and fsync'd, then renamed with :func:`os.replace` (atomic on POSIX) and the folder
fsync'd. A reader therefore sees a whole file or none.

Upsert semantics, per natural key (:attr:`warehouse.schema.Table.natural_key`):

* a key not yet in the table is written with ``result_version = 1``;
* a row whose content hash equals that of the key's latest version is skipped;
* a changed row is written with ``result_version = latest + 1``; older versions stay
  (``<table>_history`` view).

Concurrent loads into one table are serialised by an exclusive ``flock`` on
``<warehouse>/<table>/.lock``; temporary files left by a crashed writer are removed by the
next load (under that lock).

Atomicity is per file (one file per partition and load). A load that fails half-way may
have published some partitions' files; re-running it completes it without duplicates,
because the published rows are then "unchanged".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rntflow.core.errors import WarehouseError
from rntflow.core.files import remove_stale_temps
from rntflow.warehouse import latest
from rntflow.warehouse.columns import Table
from rntflow.warehouse.schema import DERIVED, TABLES
from rntflow.warehouse.storage import Store, open_store

Root = str | Path | Store

_PARTITION_VALUE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class LoadReport:
    """What one :func:`load_table` call did.

    Attributes
    ----------
    rows_in : int
        Rows in the frame given.
    rows_new : int
        Rows for natural keys not seen before (written as version 1).
    rows_unchanged : int
        Rows identical to their key's latest version (not written).
    rows_new_version : int
        Changed rows written as a new result version.
    files_written : int
        Parquet files created.
    """

    rows_in: int
    rows_new: int
    rows_unchanged: int
    rows_new_version: int
    files_written: int


def table_dir(warehouse_dir: Root, table: str) -> str:
    """Folder holding a table's Parquet files (a location, see :mod:`warehouse.storage`)."""
    return open_store(warehouse_dir).loc(table)


def _spec(table: str, tables: dict[str, Table] | None) -> Table:
    tables = TABLES if tables is None else tables
    try:
        return tables[table]
    except KeyError:
        raise WarehouseError(f"unknown warehouse table {table!r}; known: {sorted(tables)}") from None


def validate_frame(spec: Table, df: pd.DataFrame) -> pa.Table:
    """Check ``df`` against the table schema and conform it to the Arrow schema.

    Bookkeeping columns may be absent (they are filled by the writer).

    Returns
    -------
    pyarrow.Table
        The rows typed as the schema says, bookkeeping columns still missing.

    Raises
    ------
    WarehouseError
        Naming the column for: an unknown column, a missing or null not-null column, a
        value outside a closed vocabulary, a value that cannot be cast, a partition value
        unsafe for a path, or a duplicated natural key.
    """
    writer_filled = {"result_version", "row_hash", "computed_at", "input_hash"}
    unknown = [c for c in df.columns if c not in spec.column_names]
    if unknown:
        raise WarehouseError(f"{spec.name}: column(s) {unknown} are not in the schema")
    fields = []
    arrays = []
    for col in spec.columns:
        if col.name in writer_filled and col.name not in df.columns:
            continue
        if col.name not in df.columns:
            if not col.nullable:
                raise WarehouseError(f"{spec.name}: required column {col.name!r} is missing")
            values = pa.nulls(len(df), type=col.arrow_type)
        else:
            series = df[col.name]
            if not col.nullable and col.name not in writer_filled and series.isna().any():
                first = int(np.flatnonzero(series.isna().to_numpy())[0])
                raise WarehouseError(
                    f"{spec.name}: column {col.name!r} must not be null "
                    f"({int(series.isna().sum())} null value(s), first at row {first})"
                )
            try:
                values = pa.array(series, type=col.arrow_type, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
                raise WarehouseError(
                    f"{spec.name}: column {col.name!r}: cannot store as {col.arrow_type}: {exc}"
                ) from None
            if col.allowed:
                bad = {str(v) for v in pd.unique(series.dropna())} - set(col.allowed)
                if bad:
                    raise WarehouseError(
                        f"{spec.name}: column {col.name!r}: value(s) {sorted(bad)} not in {list(col.allowed)}"
                    )
        fields.append(pa.field(col.name, col.arrow_type, nullable=col.nullable))
        arrays.append(values)
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    for part in spec.partition_by:
        vals = set(table.column(part).unique().drop_null().to_pylist()) if part in table.column_names else set()
        bad = [v for v in vals if not _PARTITION_VALUE_RE.match(str(v))]
        if bad:
            raise WarehouseError(f"{spec.name}: column {part!r}: value(s) {bad} are not safe partition names")
    keys = list(spec.natural_key)
    counts = table.select(keys).group_by(keys).aggregate([([], "count_all")])  # NULL keys group together
    dup = counts.filter(pc.greater(counts["count_all"], 1))
    if dup.num_rows:
        example = {k: dup[k][0].as_py() for k in keys}
        raise WarehouseError(f"{spec.name}: natural key {list(spec.natural_key)} repeated in the frame, e.g. {example}")
    return table


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al 2014): decorrelates combined 64-bit hashes."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def content_hash(spec: Table, table: pa.Table) -> pd.Series:
    """Per-row content hash (16 hex digits) over the content columns (and ``input_hash``).

    Each non-null cell contributes ``mix(hash(value) xor hash(column name))`` and the
    contributions are summed modulo 2**64. Null cells contribute nothing, so adding a new
    (null) column to the schema does not change the hash of old rows, and column order is
    irrelevant. Values are hashed with :func:`pandas.util.hash_pandas_object` after Arrow's
    default pandas conversion of the schema-typed column, so equal typed values hash equal.
    """
    cols = [c for c in spec.content_columns if c in table.column_names]
    if "input_hash" in table.column_names:
        cols.append("input_hash")
    total = np.zeros(table.num_rows, dtype=np.uint64)
    for name in cols:
        column = table.column(name)
        name_hash = np.uint64(pd.util.hash_array(np.array([name], dtype=object))[0])
        cell = _mix64(_value_hashes(column) ^ name_hash)
        cell[column.is_null().to_numpy(zero_copy_only=False)] = 0
        with np.errstate(over="ignore"):
            total += cell
    return pd.Series(_hex16(total), dtype=object)


def _value_hashes(column: pa.ChunkedArray) -> np.ndarray:
    """:func:`pandas.util.hash_pandas_object` of the column's pandas conversion, per row.

    The hash of an element depends on its value only, so a text column is hashed once per
    distinct value (Arrow dictionary encoding) and spread back by index: the same numbers,
    without converting every row to a Python string. Null rows get an arbitrary value
    (the caller zeroes them).
    """
    if pa.types.is_string(column.type) and column.num_chunks:
        enc = column.combine_chunks().dictionary_encode()
        if len(enc.dictionary) == 0:
            return np.zeros(len(column), dtype=np.uint64)
        uniq = pd.util.hash_pandas_object(enc.dictionary.to_pandas(), index=False, categorize=False).to_numpy(np.uint64)
        return uniq[enc.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    return pd.util.hash_pandas_object(column.to_pandas(), index=False, categorize=False).to_numpy(np.uint64)


#: Two hex digits of every byte value, for :func:`_hex16`.
_HEX_BYTE = np.array([f"{i:02x}" for i in range(256)], dtype="<U2")


def _hex16(values: np.ndarray) -> np.ndarray:
    """``"%016x" % v`` for every uint64 ``v`` (vectorised: byte lookup, 8 x U2 viewed as U16)."""
    octets = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(_HEX_BYTE[octets]).view("<U16").ravel().astype(object)


@contextmanager
def table_lock(warehouse_dir: Root, table: str) -> Iterator[None]:
    """Exclusive lock on one table (a ``flock`` on ``<table>/.lock``; for an S3 root in the
    store's local folder, see :mod:`warehouse.storage`)."""
    with open_store(warehouse_dir).lock(f"{table}/.lock"):
        yield


def parquet_glob(warehouse_dir: Root, spec: Table) -> str:
    """Glob of a table's Parquet files (hidden temporary files excluded)."""
    depth = "/".join("*" for _ in spec.partition_by)
    return f"{table_dir(warehouse_dir, spec.name)}/{depth}/*.parquet"


def hive_read_sql(warehouse_dir: Root, spec: Table, select: str = "*", globs: list[str] | None = None) -> str:
    """SQL reading a table's files with hive partitioning (partition columns typed VARCHAR).

    ``globs`` restricts the read to some partition folders (default: the whole table).
    """
    paths = globs if globs is not None else [parquet_glob(warehouse_dir, spec)]
    listed = ", ".join("'" + g.replace("'", "''") + "'" for g in paths)
    hive_types = ", ".join(f"'{p}': VARCHAR" for p in spec.partition_by)
    return (
        f"SELECT {select} FROM read_parquet([{listed}], hive_partitioning = true, "
        f"union_by_name = true, hive_types = {{{hive_types}}})"
    )


def latest_version_sql(source: str, natural_key: tuple[str, ...]) -> str:
    """SELECT of the latest ``result_version`` per natural key of ``source`` (a view or subquery).

    Most keys only ever have version 1, so the window runs over the few rows with a later
    version and version-1 rows are kept by an anti join against those keys: a hash join with
    a small build side instead of a sort of the whole table (1M rows: ~40 ms instead of
    ~120 ms here). NULLs in a natural key (e.g. ``lesion_voi``) compare as equal.
    """
    keys = ", ".join(f'"{k}"' for k in natural_key)
    same = " AND ".join(f'h."{k}" IS NOT DISTINCT FROM n."{k}"' for k in natural_key)
    return (
        f"WITH newer AS (SELECT * FROM {source} WHERE result_version > 1 "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY result_version DESC) = 1) "
        f"(SELECT h.* FROM {source} h ANTI JOIN newer n ON {same} WHERE h.result_version = 1) "
        f"UNION ALL (SELECT * FROM newer)"
    )


def read_latest(warehouse_dir: Root, table: str, where: str | None = None, params: list | None = None) -> pd.DataFrame:
    """The latest result version of every row of ``table`` (empty frame when no files).

    ``where`` is an SQL condition on the table's columns, with ``?`` placeholders bound
    from ``params``. Reads the ``latest/`` files (:mod:`warehouse.latest`); when one of them
    is not current (a load crashed between its history and latest writes) the answer is
    computed from the history instead, without writing anything.
    """
    spec = _spec(table, None)
    warehouse_dir = open_store(warehouse_dir)
    files = latest.current_files(warehouse_dir, spec)
    if files == [] or (files is None and not has_files(warehouse_dir, spec)):
        return pd.DataFrame(columns=list(spec.column_names))
    if files is not None:
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        sql = f"SELECT * FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"
    else:
        sql = latest_version_sql(f"({hive_read_sql(warehouse_dir, spec)})", spec.natural_key)
    cols = ", ".join(f'"{c}"' for c in spec.column_names)
    sql = f"SELECT {cols} FROM ({sql})" + (f" WHERE {where}" if where else "")
    con = latest.cursor(warehouse_dir)
    try:
        return con.execute(sql, params or []).df()
    finally:
        con.close()


def has_files(warehouse_dir: Root, spec: Table) -> bool:
    """Whether the table has any published history file."""
    return bool(open_store(warehouse_dir).files_below(table_dir(warehouse_dir, spec.name), len(spec.partition_by)))


def _touched_partitions(spec: Table, typed: pa.Table) -> list[dict[str, str]]:
    """Partition values (column -> text) of the rows of ``typed``.

    Rows of one natural key always carry the same partition values (a subject, camera or
    study belongs to one site), so the previous versions of the rows can only be there.
    """
    parts = list(spec.partition_by)
    return [
        {p: str(v) for p, v in row.items()} for row in typed.select(parts).group_by(parts).aggregate([]).to_pylist()
    ]


def _previous_versions(warehouse_dir: Store, spec: Table, typed: pa.Table) -> pd.DataFrame:
    """Latest ``result_version`` and ``row_hash`` for each row of ``typed`` (nulls if new).

    Read from the partitions' latest files (made current first, under the table lock), so
    no window over the history is needed.
    """
    keys = list(spec.natural_key)
    new_keys = typed.select(keys).append_column("__row", pa.array(np.arange(typed.num_rows), pa.int64()))
    files = []
    for values in _touched_partitions(spec, typed):
        _make_current(warehouse_dir, spec, values)
        path = latest.latest_file(warehouse_dir, spec, values)
        if warehouse_dir.exists(path):
            files.append(path)
    if not files:
        return pd.DataFrame({"__row": np.arange(typed.num_rows), "result_version": pd.NA, "row_hash": None})
    qk = ", ".join(f'"{k}"' for k in keys)
    on = " AND ".join(f'n."{k}" IS NOT DISTINCT FROM l."{k}"' for k in keys)
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    sql = (
        f"WITH l AS (SELECT {qk}, result_version, row_hash FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false)) "
        f"SELECT n.__row, l.result_version, l.row_hash FROM new_keys n LEFT JOIN l ON {on} ORDER BY n.__row"
    )
    con = latest.cursor()
    try:
        con.register("new_keys", new_keys)
        return con.execute(sql).df()
    finally:
        con.close()


def _sweep_orphans(store: Store, folder: str, latest_folder: str | None = None) -> int:
    """Delete temporary files left by a crashed writer (call only while holding the table lock).

    Only a local root has any: an S3 object is published by one PUT, never renamed.
    """
    if not store.is_local:
        return 0
    folder = Path(folder)
    n = 0
    for tmp in folder.rglob(".part-*.parquet.*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    n += remove_stale_temps(folder, f".{latest.SCHEMA_FILE}.*.tmp")
    return n + remove_stale_temps(latest_folder) if latest_folder is not None else n


def write_parquet_atomic(
    table: pa.Table, folder: str | Path, *, store: Store | None = None, _before_rename=None
) -> str:
    """Write ``table`` as ``folder/part-<uuid>.parquet`` atomically.

    Parameters
    ----------
    table : pyarrow.Table
        Rows to write.
    folder : str or Path
        Destination partition folder (created if needed), a location of ``store``.
    store : Store, optional
        Where ``folder`` lives (default: the local filesystem).
    _before_rename : callable, optional
        Test hook called with the temporary path after fsync and before the rename (on S3:
        with the object's location before its PUT); used to simulate a crash.

    Returns
    -------
    str
        The final file's location.
    """
    store = store or open_store(Path(folder).parent)
    final = f"{str(folder).rstrip('/')}/part-{uuid.uuid4().hex}.parquet"
    store.write_parquet(final, table, before_rename=_before_rename)
    return final


def load_table(
    warehouse_dir: str | Path,
    table: str,
    df: pd.DataFrame,
    *,
    tables: dict[str, Table] | None = None,
    computed_at: datetime | None = None,
    _before_rename=None,
) -> LoadReport:
    """Validate ``df`` and upsert it into ``table`` of the warehouse.

    Parameters
    ----------
    warehouse_dir : str or Path
        Warehouse root (``paths.warehouse`` of the trial config): a folder or
        ``s3://bucket/prefix`` (:mod:`warehouse.storage`).
    table : str
        Table name from :data:`warehouse.schema.TABLES`.
    df : pandas.DataFrame
        Rows to load; columns are schema columns (bookkeeping columns optional:
        ``input_hash`` defaults to the content hash, ``computed_at`` to now).
    tables : dict, optional
        Schema registry to use instead of :data:`~warehouse.schema.TABLES` (schema evolution
        and tests).
    computed_at : datetime, optional
        Timestamp for rows without ``computed_at`` (UTC; default: now).

    Returns
    -------
    LoadReport

    Raises
    ------
    WarehouseError
        When the frame fails validation (nothing is written then).
    """
    warehouse_dir = open_store(warehouse_dir)
    spec = _spec(table, tables)
    typed = validate_frame(spec, df)
    n = typed.num_rows
    if n == 0:
        return LoadReport(0, 0, 0, 0, 0)
    typed = typed.drop_columns([c for c in ("result_version", "row_hash") if c in typed.column_names])
    if "input_hash" in typed.column_names and typed.column("input_hash").null_count == n:
        typed = typed.drop_columns(["input_hash"])
    elif "input_hash" in typed.column_names and typed.column("input_hash").null_count:
        raise WarehouseError(f"{spec.name}: column 'input_hash' is given for some rows but not all")
    row_hash = content_hash(spec, typed)
    if "input_hash" not in typed.column_names:
        typed = typed.append_column("input_hash", pa.array(row_hash, pa.string()))
    typed = typed.append_column("row_hash", pa.array(row_hash, pa.string()))
    if "computed_at" not in typed.column_names:
        stamp = computed_at or datetime.now(UTC)
        typed = typed.append_column("computed_at", pa.array([stamp] * n, pa.timestamp("us", tz="UTC")))

    with table_lock(warehouse_dir, spec.name):
        _sweep_orphans(
            warehouse_dir, table_dir(warehouse_dir, spec.name), latest.latest_table_dir(warehouse_dir, spec.name)
        )
        ensure_schema_files(warehouse_dir, spec)
        prev = _previous_versions(warehouse_dir, spec, typed)
        prev_version = pd.to_numeric(prev["result_version"], errors="coerce").to_numpy()
        prev_hash = prev["row_hash"].to_numpy(dtype=object)
        is_new = np.isnan(prev_version.astype(float))
        unchanged = ~is_new & (prev_hash == row_hash.to_numpy(dtype=object))
        changed = ~is_new & ~unchanged
        versions = np.where(is_new, 1, np.nan_to_num(prev_version.astype(float)) + 1).astype(np.int32)
        typed = typed.append_column("result_version", pa.array(versions, pa.int32()))
        out = typed.filter(pa.array(~unchanged))
        files = 0
        if out.num_rows:
            files = _write_partitions(warehouse_dir, spec, _conform(out, spec), _before_rename)
    return LoadReport(n, int(is_new.sum()), int(unchanged.sum()), int(changed.sum()), files)


def _conform(arrow: pa.Table, spec: Table) -> pa.Table:
    cols = []
    fields = []
    for col in spec.columns:
        if col.name in arrow.column_names:
            cols.append(arrow.column(col.name).cast(col.arrow_type))
        else:
            cols.append(pa.nulls(arrow.num_rows, type=col.arrow_type))
        fields.append(pa.field(col.name, col.arrow_type, nullable=col.nullable))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=spec.arrow_schema().metadata))


def _write_partitions(warehouse_dir: Store, spec: Table, arrow: pa.Table, before_rename) -> int:
    parts = list(spec.partition_by)
    for p in parts:
        if arrow.column(p).null_count:
            raise WarehouseError(f"{spec.name}: partition column {p!r} must not be null")
    groups = arrow.select(parts).to_pandas().astype(str)
    files = 0
    data_cols = [c for c in arrow.column_names if c not in parts]
    written: list[dict[str, str]] = []
    for values, idx in groups.groupby(parts, sort=True).indices.items():
        values = values if isinstance(values, tuple) else (values,)
        folder = warehouse_dir.loc(spec.name, *(f"{p}={v}" for p, v in zip(parts, values)))
        rows = arrow.take(pa.array(idx))
        write_parquet_atomic(rows.select(data_cols), folder, store=warehouse_dir, _before_rename=before_rename)
        latest.merge_partition(warehouse_dir, spec, dict(zip(parts, values)), rows)
        written.append(dict(zip(parts, values)))
        files += 1
    _materialise(warehouse_dir, spec, written)
    return files


def repair_latest(warehouse_dir: Root, tables: dict[str, Table] | None = None) -> int:
    """Recompute every ``latest/`` file that does not match its history; returns how many.

    Covers a load that crashed between its history and latest writes, and a warehouse
    written before the ``latest/`` layout existed. Takes each table's lock.
    """
    warehouse_dir = open_store(warehouse_dir)
    n = 0
    for spec in (TABLES if tables is None else tables).values():
        if not warehouse_dir.is_dir(table_dir(warehouse_dir, spec.name)):
            continue
        with table_lock(warehouse_dir, spec.name):
            for values in latest.history_partitions(warehouse_dir, spec):
                n += _make_current(warehouse_dir, spec, values)
    return n


#: Derived views materialised at load time, per source table (see :data:`warehouse.schema.DERIVED`):
#: the dose-effect views then aggregate per-subject rows instead of every cycle's dose.
MATERIALISED: dict[str, tuple[str, ...]] = {"voi_doses": ("voi_dose_cumulative", "dose_effect_targets")}


def ensure_schema_files(warehouse_dir: Root, spec: Table) -> None:
    """Write the table's (and its materialised views') zero-row schema files if outdated (under the lock)."""
    if not latest.schema_files_current(warehouse_dir, spec):
        latest.write_schema_files(warehouse_dir, spec)
    for name in MATERIALISED.get(spec.name, ()):
        path = latest.derived_schema_file(warehouse_dir, name)
        if not latest.schema_file_current(warehouse_dir, path, DERIVED[name]):
            latest.write_latest(warehouse_dir, path, latest.full_schema(DERIVED[name]).empty_table())


def schema_files_current(warehouse_dir: Root, spec: Table) -> bool:
    """Whether :func:`ensure_schema_files` has nothing to do."""
    return latest.schema_files_current(warehouse_dir, spec) and all(
        latest.schema_file_current(warehouse_dir, latest.derived_schema_file(warehouse_dir, name), DERIVED[name])
        for name in MATERIALISED.get(spec.name, ())
    )


def _materialise(warehouse_dir: Root, spec: Table, partitions: list[dict[str, str]]) -> None:
    """Recompute the derived tables of some partitions of ``spec`` (under its table lock)."""
    if not MATERIALISED.get(spec.name) or not partitions:
        return
    # The derived SQL is the catalog's own (one definition); the catalog imports this module.
    from rntflow.warehouse.catalog import DERIVED_VIEWS

    latest.materialise_partitions(
        warehouse_dir, spec, partitions, [DERIVED[n] for n in MATERIALISED[spec.name]], DERIVED_VIEWS
    )


def _make_current(warehouse_dir: Root, spec: Table, values: dict[str, str]) -> int:
    """Recompute a partition's latest and derived files if stale (under the lock); 1 if done."""
    stale = not latest.is_current(warehouse_dir, spec, values)
    if stale:
        latest.rebuild_partition(warehouse_dir, spec, values)
    if stale or any(
        not latest.derived_is_current(warehouse_dir, name, spec, values) for name in MATERIALISED.get(spec.name, ())
    ):
        _materialise(warehouse_dir, spec, [values])
        return 1
    return 0
