"""The schema is declared once, carries units in names, and holds no direct identifiers."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rntflow.warehouse.columns import BOOKKEEPING, FORBIDDEN_NAME_RE, duckdb_type, unit_from_name
from rntflow.warehouse.schema import TABLES, schema_markdown

REQUIRED_TABLES = {
    "sites",
    "cameras",
    "calibrations",
    "phantom_results",
    "subjects",
    "administrations",
    "studies",
    "qa_checks",
    "voi_timepoints",
    "tac_fits",
    "voi_doses",
    "dvhs",
    "outcomes",
    "flow_runs",
}

#: Float columns that are legitimately dimensionless (ratios, fractions, statistics).
DIMENSIONLESS = {
    "recovery_coefficient",
    "recovery_coefficient_harmonised",
    "bqml_scale_factor",
    "aicc",
    "r2",
    "volume_fraction",
}


def test_all_tables_declared_with_bookkeeping_and_trial_id():
    assert REQUIRED_TABLES <= set(TABLES)
    for t in TABLES.values():
        names = t.column_names
        assert len(names) == len(set(names)), t.name
        assert names[0] == "trial_id"
        assert set(BOOKKEEPING) <= set(names), t.name
        assert set(t.natural_key) <= set(names) and set(t.partition_by) <= set(names)
        assert t.partition_by[0] == "trial_id"
        # partition columns are never nullable, so every row has a folder
        for p in t.partition_by:
            assert not t.column(p).nullable, (t.name, p)


@pytest.mark.parametrize(
    "bad", ["patient_name", "PatientName", "patient_id", "PatientID", "birth_date", "date_of_birth", "dob"]
)
def test_privacy_pattern_catches_identifiers(bad):
    assert FORBIDDEN_NAME_RE.search(bad)


def test_no_identifier_columns_in_schema():
    offending = [(t.name, c) for t in TABLES.values() for c in t.column_names if FORBIDDEN_NAME_RE.search(c)]
    assert offending == []


def test_every_float_column_has_a_unit_or_is_declared_dimensionless():
    missing = [
        (t.name, c.name)
        for t in TABLES.values()
        for c in t.columns
        if pa.types.is_floating(c.arrow_type) and c.unit is None and c.name not in DIMENSIONLESS
    ]
    assert missing == []


def test_declared_unit_matches_name_suffix():
    for t in TABLES.values():
        for c in t.columns:
            assert c.unit == unit_from_name(c.name), (t.name, c.name)


def test_required_unit_columns_exist():
    assert TABLES["voi_doses"].column("dose_gy").unit == "Gy"
    assert TABLES["administrations"].column("administered_activity_mbq").unit == "MBq"
    assert TABLES["tac_fits"].column("tia_mbq_h").unit == "MBq h"
    assert TABLES["voi_timepoints"].column("volume_ml").unit == "mL"
    assert TABLES["voi_timepoints"].column("mass_g").unit == "g"
    assert TABLES["calibrations"].column("sensitivity_cps_per_mbq").unit == "cps/MBq"


def test_arrow_schema_and_docs_derive_from_declaration():
    t = TABLES["voi_doses"]
    schema = t.arrow_schema()
    assert schema.names == list(t.column_names)
    assert schema.field("dose_gy").type == pa.float64() and not schema.field("dose_gy").nullable
    assert "site_id" not in t.file_schema().names
    md = schema_markdown()
    for name in TABLES:
        assert f"### `{name}`" in md
    assert "| `dose_gy` | DOUBLE | Gy | no |" in md
    for t in TABLES.values():
        for c in t.columns:
            duckdb_type(c.arrow_type)  # every type maps


def test_derived_views_are_declared_as_the_catalog_builds_them(tmp_path):
    """The data dictionary's derived views match the catalog's DESCRIBE, column by column."""
    from rntflow.warehouse.catalog import connect
    from rntflow.warehouse.schema import DERIVED

    with connect(tmp_path) as con:
        for name, view in DERIVED.items():
            got = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {name}").fetchall()]
            want = [
                (c.name, duckdb_type(c.arrow_type).replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"))
                for c in view.columns
            ]
            assert got == want, name
            for c in view.columns:
                assert c.unit == unit_from_name(c.name), (name, c.name)
    md = schema_markdown()
    for name in DERIVED:
        assert f"#### `{name}`" in md
