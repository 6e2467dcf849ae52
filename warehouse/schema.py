"""The warehouse schema, declared once.

Every table is a :class:`~rntflow.warehouse.columns.Table` of
:class:`~rntflow.warehouse.columns.Column` records (:mod:`rntflow.warehouse.columns`),
declared by domain in ``warehouse/tables_*.py`` and assembled here in catalog order into
:data:`TABLES` and :data:`DERIVED`. From this single declaration the rest of the warehouse
derives what it needs:

* the Arrow schema of the Parquet files (``Table.arrow_schema``),
* validation of a frame before it is written (:mod:`warehouse.writer`),
* the typed DuckDB views, including empty views for tables without files
  (:mod:`warehouse.catalog`),
* the column reference in ``docs/analyst.md`` (:func:`schema_markdown`).

Conventions
-----------
* Column names carry their unit as a suffix (``_gy``, ``_mbq``, ``_mbq_h``, ``_ml``, ``_g``,
  ``_h``, ``_cps_per_mbq``, ``_months``, ``_mm``, ``_pct``); the unit is also declared in
  :attr:`Column.unit` and a test checks that the two agree.
* Identifiers are trial pseudonyms (``subject_id``); no patient name, PatientID or birth
  date is ever a column (a test rejects such names).
* Every table carries ``trial_id`` and, where a site is meaningful, ``site_id``.
* Every table carries the bookkeeping columns ``result_version`` (1, 2, ... per natural
  key), ``input_hash`` (hash of the inputs the row was computed from; defaults to the row's
  content hash), ``row_hash`` (content hash used for idempotent upserts) and
  ``computed_at`` (UTC). Reference tables (sites, subjects ...) are versioned the same way,
  so a corrected site name is a new version rather than an overwrite.
"""

from __future__ import annotations

from rntflow.warehouse.columns import DerivedView, Table, duckdb_type
from rntflow.warehouse.tables_blood import BLOOD_TABLES
from rntflow.warehouse.tables_dosimetry import DOSE_VIEWS, DOSIMETRY_TABLES
from rntflow.warehouse.tables_tare import TARE_TABLES
from rntflow.warehouse.tables_trial import FLOW_RUNS, TRIAL_TABLES

#: Every table of the warehouse, in catalog order.
TABLES: dict[str, Table] = {
    t.name: t for t in (*TRIAL_TABLES, *DOSIMETRY_TABLES, *TARE_TABLES, FLOW_RUNS, *BLOOD_TABLES)
}

#: Derived views of the catalog, in the order they are defined.
DERIVED: dict[str, DerivedView] = {v.name: v for v in DOSE_VIEWS}


def schema_markdown(tables: dict[str, Table] | None = None) -> str:
    """Markdown reference of every table (generated into ``docs/analyst.md``)."""
    tables = TABLES if tables is None else tables
    out: list[str] = []
    for t in tables.values():
        out.append(
            f"### `{t.name}`\n\n{t.description} Natural key: "
            f"{', '.join(f'`{k}`' for k in t.natural_key)}; partitioned by "
            f"{', '.join(f'`{p}`' for p in t.partition_by)}.\n"
        )
        out.append("| column | type | unit | null | description |\n| --- | --- | --- | --- | --- |")
        for c in t.columns:
            desc = c.description + (f" One of {', '.join(c.allowed)}." if c.allowed else "")
            out.append(
                f"| `{c.name}` | {duckdb_type(c.arrow_type)} | {c.unit or ''} | "
                f"{'yes' if c.nullable else 'no'} | {desc} |"
            )
        out.append("")
    if tables is TABLES or tables is None:
        out.append("### Derived views\n\nComputed from the tables above (see *Derived views* earlier on this page).\n")
        for v in DERIVED.values():
            how = " Materialised at load time under `latest/" + v.name + "/`." if v.materialised else ""
            out.append(f"#### `{v.name}`\n\n{v.description}{how}\n")
            out.append("| column | type | unit | description |\n| --- | --- | --- | --- |")
            for c in v.columns:
                out.append(f"| `{c.name}` | {duckdb_type(c.arrow_type)} | {c.unit or ''} | {c.description} |")
            out.append("")
    return "\n".join(out)


SCHEMA_DOC_BEGIN = "<!-- schema:begin -->"
SCHEMA_DOC_END = "<!-- schema:end -->"


def render_docs(text: str, tables: dict[str, Table] | None = None) -> str:
    """``text`` with the section between the schema markers replaced by :func:`schema_markdown`."""
    head, _, rest = text.partition(SCHEMA_DOC_BEGIN)
    _, _, tail = rest.partition(SCHEMA_DOC_END)
    if not rest:
        raise ValueError(f"no {SCHEMA_DOC_BEGIN} marker")
    return f"{head}{SCHEMA_DOC_BEGIN}\n{schema_markdown(tables)}{SCHEMA_DOC_END}{tail}"


if __name__ == "__main__":  # python -m rntflow.warehouse.schema docs/analyst.md
    import sys
    from pathlib import Path

    doc = Path(sys.argv[1])
    doc.write_text(render_docs(doc.read_text()))
