"""DuckDB catalog: typed empty views, latest/history views and the dose_effect join."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rntflow.warehouse.catalog import catalog_path, connect, refresh_catalog
from rntflow.warehouse.schema import TABLES, duckdb_type
from rntflow.warehouse.writer import load_table

from .conftest import TRIAL, VOIS, voi_doses_frame


def test_empty_warehouse_has_typed_empty_views(tmp_path):
    path = refresh_catalog(tmp_path)
    assert path == catalog_path(tmp_path) and path.exists()
    with connect(tmp_path) as con:
        for name, spec in TABLES.items():
            for view in (name, name + "_history"):
                assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
                described = con.execute(f"DESCRIBE {view}").fetchall()
                got = [(r[0], r[1]) for r in described]
                want = [(c.name, duckdb_type(c.arrow_type).replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"))
                        for c in spec.columns]
                assert got == want, view
        assert con.execute("SELECT count(*) FROM dose_effect").fetchone() == (0,)


def test_connect_is_read_only(small_warehouse):
    with connect(small_warehouse) as con:
        with pytest.raises(Exception, match="read-only"):
            con.execute("CREATE TABLE x (a INTEGER)")


def test_dose_effect_maps_endpoints_to_cumulative_doses(small_warehouse):
    with connect(small_warehouse) as con:
        de = con.execute("SELECT * FROM dose_effect").df()
    # 12 subjects x 4 endpoints, one engine/method
    assert len(de) == 48
    i = 2  # subject index 2 at SITE02
    rows = de[de.subject_id == f"SITE02-S{i:02d}"].set_index("endpoint")
    two_cycles = 2
    kid = two_cycles * ((VOIS["Kidney_L"] + i) + (VOIS["Kidney_R"] + i)) / 2
    assert rows.loc["nephrotoxicity", "target_voi"] == "Kidneys"
    assert rows.loc["nephrotoxicity", "cumulative_dose_gy"] == pytest.approx(kid)
    assert rows.loc["nephrotoxicity", "cumulative_bed_gy"] == pytest.approx(1.2 * kid)
    assert rows.loc["nephrotoxicity", "effect"] == 1  # grade 2
    assert rows.loc["xerostomia", "cumulative_dose_gy"] == pytest.approx(two_cycles * (VOIS["Parotid_L"] + VOIS["Parotid_R"] + 2 * i) / 2)
    assert rows.loc["lesion_response", "cumulative_dose_gy"] == pytest.approx(two_cycles * (VOIS["Lesion_1"] + i))
    assert rows.loc["lesion_response", "effect"] == 0  # SD
    assert rows.loc["pfs", "target_voi"] == "Lesions_mean"
    assert rows.loc["pfs", "cumulative_dose_gy"] == pytest.approx(two_cycles * (VOIS["Lesion_1"] + VOIS["Lesion_2"] + 2 * i) / 2)
    # SD: quadrature over 2 cycles, then mean of two independent VOIs
    assert rows.loc["nephrotoxicity", "cumulative_dose_sd_gy"] == pytest.approx(math.sqrt(4 * 0.3**2) / 2)
    assert set(de.site_id) == {"SITE01", "SITE02", "SITE03"}


def test_whole_kidney_voi_takes_precedence_and_latest_version_is_used(small_warehouse):
    sid = "SITE01-S00"
    kidneys = pd.DataFrame({"trial_id": TRIAL, "site_id": "SITE01", "subject_id": sid, "cycle": [1, 2],
                            "voi": "Kidneys", "engine": "organ", "method": "multi_time_point", "dose_gy": [9.0, 11.0]})
    load_table(small_warehouse, "voi_doses", kidneys)
    corrected = kidneys.assign(dose_gy=[10.0, 11.0])
    assert load_table(small_warehouse, "voi_doses", corrected).rows_new_version == 1
    refresh_catalog(small_warehouse)
    with connect(small_warehouse) as con:
        got = con.execute("SELECT target_voi, cumulative_dose_gy, n_vois FROM dose_effect "
                          "WHERE subject_id = ? AND endpoint = 'nephrotoxicity'", [sid]).fetchall()
    assert got == [("Kidneys", 21.0, 1)]


def test_history_and_latest_views(small_warehouse):
    df = voi_doses_frame()
    load_table(small_warehouse, "voi_doses", df.assign(dose_gy=df.dose_gy * 1.1))
    refresh_catalog(small_warehouse)
    with connect(small_warehouse) as con:
        assert con.execute("SELECT count(*) FROM voi_doses_history").fetchone() == (288,)
        assert con.execute("SELECT count(*), min(result_version) FROM voi_doses").fetchone() == (144, 2)


def test_one_dose_per_cycle_and_cumulative_across_methods(small_warehouse):
    """Cycle 1 holds a provisional single-time-point result and the multi-time-point result
    that replaced it; cycle 2 only a single-time-point one: the cumulative dose is cycle 1's
    multi-time-point dose plus cycle 2's single-time-point dose, nothing counted twice."""
    sid = "SITE03-S01"
    rows = pd.DataFrame({"trial_id": TRIAL, "site_id": "SITE03", "subject_id": sid, "voi": "Kidneys",
                         "engine": "organ", "cycle": [1, 1, 1, 2, 2],
                         "method": ["single_time_point_hanscheid", "single_time_point_madsen", "multi_time_point",
                                    "single_time_point_hanscheid", "single_time_point_madsen"],
                         "dose_gy": [7.0, 8.0, 9.0, 5.0, 6.0], "final": [False, False, True, False, True]})
    load_table(small_warehouse, "voi_doses", rows)
    refresh_catalog(small_warehouse)
    with connect(small_warehouse) as con:
        per_cycle = con.execute("SELECT cycle, method, dose_gy FROM voi_dose_cycle WHERE subject_id = ? "
                                "AND voi = 'Kidneys' ORDER BY cycle", [sid]).fetchall()
        cum = con.execute("SELECT method, n_cycles, dose_gy, all_final FROM voi_dose_cumulative "
                          "WHERE subject_id = ? AND voi = 'Kidneys'", [sid]).fetchall()
        de = con.execute("SELECT count(*), any_value(cumulative_dose_gy) FROM dose_effect "
                         "WHERE subject_id = ? AND endpoint = 'nephrotoxicity'", [sid]).fetchone()
    assert per_cycle == [(1, "multi_time_point", 9.0), (2, "single_time_point_madsen", 6.0)]
    assert cum == [("mixed", 2, 15.0, True)]
    assert de == (1, 15.0)


def test_event_grades_per_endpoint(small_warehouse):
    """Xerostomia counts from grade 1, nephrotoxicity from grade 2 (EVENT_MIN_GRADE)."""
    with connect(small_warehouse) as con:
        got = con.execute("SELECT endpoint, grade, any_value(effect) FROM dose_effect WHERE endpoint IN "
                          "('nephrotoxicity', 'xerostomia') GROUP BY ALL ORDER BY ALL").fetchall()
    assert got == [("nephrotoxicity", 0, 0), ("nephrotoxicity", 1, 0), ("nephrotoxicity", 2, 1),
                   ("xerostomia", 0, 0), ("xerostomia", 1, 1)]
