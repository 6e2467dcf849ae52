"""The building blocks of the warehouse schema: columns with units, tables, derived views.

:class:`Column` and :class:`Table` (with the bookkeeping columns every table carries),
:class:`DerivedView`, the unit suffixes of column names, the names never allowed as
columns, the key columns the tables share and the DuckDB type of each Arrow type. The
tables themselves are declared in the ``warehouse/tables_*.py`` modules and assembled in
:mod:`rntflow.warehouse.schema`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pyarrow as pa

#: Bookkeeping columns appended to every table by :func:`table`.
BOOKKEEPING = ("result_version", "input_hash", "row_hash", "computed_at")

#: Unit suffixes and the unit each declares. Longest suffix first when matching.
UNIT_SUFFIXES: dict[str, str] = {
    "_cps_per_mbq": "cps/MBq",
    "_gy_per_gbq": "Gy/GBq",
    "_j_per_gbq": "J/GBq",
    "_gbq": "GBq",
    "_kg": "kg",
    "_fraction": "1",
    "_ratio": "1",
    "_mbq_h": "MBq h",
    "_months": "month",
    "_mbq": "MBq",
    "_gy": "Gy",
    "_ml": "mL",
    "_mm": "mm",
    "_pct": "%",
    "_h": "h",
    "_g": "g",
    "_s": "s",
}

#: Column names that would carry direct identifiers; never allowed in the warehouse.
FORBIDDEN_NAME_RE = re.compile(
    r"(patient_?name|patient_?id|birth|dob\b|^dob|mrn|accession|social_security|ssn|address|phone)",
    re.IGNORECASE,
)

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One warehouse column.

    Attributes
    ----------
    name : str
        Column name, with the unit suffix when the value has a unit.
    arrow_type : pyarrow.DataType
        Storage type in Parquet/Arrow.
    unit : str or None
        Physical unit (``None`` for identifiers, categories, counts and text).
    description : str
        One sentence for analysts.
    nullable : bool
        Whether a missing value is allowed.
    allowed : tuple of str, optional
        Closed vocabulary for categorical text columns (validated on load).
    """

    name: str
    arrow_type: pa.DataType
    unit: str | None
    description: str
    nullable: bool = True
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """One warehouse table.

    Attributes
    ----------
    name : str
        Table (and view) name; also the folder under the warehouse.
    description : str
        What one row is.
    columns : tuple of Column
        All columns, bookkeeping included.
    natural_key : tuple of str
        Columns identifying a row across result versions.
    partition_by : tuple of str
        Hive partition columns (``trial_id`` and, where present and not null, ``site_id``).
    is_result : bool
        ``True`` for computed results, ``False`` for reference data (both are versioned).
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    natural_key: tuple[str, ...]
    partition_by: tuple[str, ...]
    is_result: bool = True

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema of the full table (partition columns included)."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns],
            metadata={"rntflow.table": self.name},
        )

    def file_schema(self) -> pa.Schema:
        """Arrow schema of one Parquet file: partition columns live in the path."""
        full = self.arrow_schema()
        return pa.schema([f for f in full if f.name not in self.partition_by], metadata=full.metadata)

    @property
    def content_columns(self) -> tuple[str, ...]:
        """Columns whose values define a row's content (for the content hash)."""
        return tuple(
            n for n in self.column_names if n not in ("result_version", "row_hash", "computed_at", "input_hash")
        )

    def with_column(self, column: Column) -> Table:
        """A copy with one more column (schema evolution: old files stay readable)."""
        return replace(self, columns=self.columns + (column,))


def col(
    name: str,
    arrow_type: pa.DataType,
    description: str,
    unit: str | None = None,
    nullable: bool = True,
    allowed: tuple[str, ...] = (),
) -> Column:
    if unit is None:
        unit = unit_from_name(name)
    return Column(name, arrow_type, unit, description, nullable, allowed)


def unit_from_name(name: str) -> str | None:
    """The unit declared by a column name's suffix, or ``None``."""
    for suffix in sorted(UNIT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return UNIT_SUFFIXES[suffix]
    return None


TRIAL = col("trial_id", pa.string(), "Trial identifier (from the trial config).", nullable=False)
SITE = col("site_id", pa.string(), "Site identifier (from the trial config).", nullable=False)
SITE_OPT = col("site_id", pa.string(), "Site identifier, when the row belongs to one site.")
SUBJECT = col("subject_id", pa.string(), "Trial pseudonym of the subject (never a PatientID).", nullable=False)
CYCLE = col("cycle", pa.int16(), "Therapy cycle number, 1-based.", nullable=False)
VOI = col("voi", pa.string(), "VOI name, TG-263 for organs, Lesion_<n> for lesions.", nullable=False)
STUDY = col("study_id", pa.string(), "Pseudonymised StudyInstanceUID (as de-identified by the listener).")
RADIONUCLIDE = col("radionuclide", pa.string(), "Radionuclide, e.g. Lu-177.")


def _bookkeeping() -> tuple[Column, ...]:
    return (
        col(
            "result_version",
            pa.int32(),
            "Version of this row's natural key: 1, 2 ... (latest wins in the main view).",
            nullable=False,
        ),
        col(
            "input_hash",
            pa.string(),
            "Hash of the inputs the row was computed from (defaults to the content hash).",
            nullable=False,
        ),
        col("row_hash", pa.string(), "Content hash of the row's values (idempotent upsert).", nullable=False),
        col("computed_at", TIMESTAMP, "When the row was computed/loaded (UTC).", nullable=False),
    )


def table(
    name: str,
    description: str,
    columns: list[Column],
    key: tuple[str, ...],
    *,
    site_partitioned: bool = True,
    is_result: bool = True,
) -> Table:
    partition = ("trial_id", "site_id") if site_partitioned else ("trial_id",)
    return Table(name, description, tuple(columns) + _bookkeeping(), key, partition, is_result)


@dataclass(frozen=True)
class DerivedView:
    """A derived view of the catalog (defined in :mod:`warehouse.catalog`), for the dictionary.

    Attributes
    ----------
    name : str
        View name.
    description : str
        What one row is.
    columns : tuple of Column
        Its columns in order (a test checks them against the catalog's ``DESCRIBE``).
    materialised : bool
        ``True`` when the view reads a table materialised at load time under
        ``latest/<name>/`` (one file per trial and site) instead of computing it per query.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    materialised: bool = False

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema of the materialised files."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns],
            metadata={"rntflow.table": self.name},
        )


_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    TIMESTAMP: "TIMESTAMPTZ",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    """DuckDB SQL type for an Arrow type used in the schema."""
    try:
        return _DUCKDB_TYPES[arrow_type]
    except KeyError as exc:  # pragma: no cover - guarded by a schema test
        raise ValueError(f"no DuckDB type for {arrow_type}") from exc
