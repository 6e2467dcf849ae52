"""DuckDB catalog: typed empty views, latest/history views and the dose_effect join."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rntflow.warehouse.catalog import catalog_path, connect, refresh_catalog
from rntflow.warehouse.columns import duckdb_type
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.writer import load_table

from .conftest import TRIAL, VOIS, voi_doses_frame


def test_empty_warehouse_has_typed_empty_views(wh_root):
    path = refresh_catalog(wh_root)
    assert path == catalog_path(wh_root) and path.exists()
    with connect(wh_root) as con:
        for name, spec in TABLES.items():
            for view in (name, name + "_history"):
                assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
                described = con.execute(f"DESCRIBE {view}").fetchall()
                got = [(r[0], r[1]) for r in described]
                want = [
                    (c.name, duckdb_type(c.arrow_type).replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"))
                    for c in spec.columns
                ]
                assert got == want, view
        assert con.execute("SELECT count(*) FROM dose_effect").fetchone() == (0,)


def test_connect_is_read_only(small_wh):
    with connect(small_wh) as con:
        with pytest.raises(Exception, match="read-only"):
            con.execute("CREATE TABLE x (a INTEGER)")


def test_dose_effect_maps_endpoints_to_cumulative_doses(small_wh):
    with connect(small_wh) as con:
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
    assert rows.loc["xerostomia", "cumulative_dose_gy"] == pytest.approx(
        two_cycles * (VOIS["Parotid_L"] + VOIS["Parotid_R"] + 2 * i) / 2
    )
    assert rows.loc["lesion_response", "cumulative_dose_gy"] == pytest.approx(two_cycles * (VOIS["Lesion_1"] + i))
    assert rows.loc["lesion_response", "effect"] == 0  # SD
    assert rows.loc["pfs", "target_voi"] == "Lesions_mean"
    assert rows.loc["pfs", "cumulative_dose_gy"] == pytest.approx(
        two_cycles * (VOIS["Lesion_1"] + VOIS["Lesion_2"] + 2 * i) / 2
    )
    # SD: quadrature over 2 cycles, then mean of two independent VOIs
    assert rows.loc["nephrotoxicity", "cumulative_dose_sd_gy"] == pytest.approx(math.sqrt(4 * 0.3**2) / 2)
    assert set(de.site_id) == {"SITE01", "SITE02", "SITE03"}


def test_whole_kidney_voi_takes_precedence_and_latest_version_is_used(small_wh):
    sid = "SITE01-S00"
    kidneys = pd.DataFrame(
        {
            "trial_id": TRIAL,
            "site_id": "SITE01",
            "subject_id": sid,
            "cycle": [1, 2],
            "voi": "Kidneys",
            "engine": "organ",
            "method": "multi_time_point",
            "dose_gy": [9.0, 11.0],
        }
    )
    load_table(small_wh, "voi_doses", kidneys)
    corrected = kidneys.assign(dose_gy=[10.0, 11.0])
    assert load_table(small_wh, "voi_doses", corrected).rows_new_version == 1
    refresh_catalog(small_wh)
    with connect(small_wh) as con:
        got = con.execute(
            "SELECT target_voi, cumulative_dose_gy, n_vois FROM dose_effect "
            "WHERE subject_id = ? AND endpoint = 'nephrotoxicity'",
            [sid],
        ).fetchall()
    assert got == [("Kidneys", 21.0, 1)]


def test_history_and_latest_views(small_wh):
    df = voi_doses_frame()
    load_table(small_wh, "voi_doses", df.assign(dose_gy=df.dose_gy * 1.1))
    refresh_catalog(small_wh)
    with connect(small_wh) as con:
        assert con.execute("SELECT count(*) FROM voi_doses_history").fetchone() == (288,)
        assert con.execute("SELECT count(*), min(result_version) FROM voi_doses").fetchone() == (144, 2)


def test_one_dose_per_cycle_and_cumulative_across_methods(small_wh):
    """Cycle 1 holds a provisional single-time-point result and the multi-time-point result
    that replaced it; cycle 2 only a single-time-point one: the cumulative dose is cycle 1's
    multi-time-point dose plus cycle 2's single-time-point dose, nothing counted twice."""
    sid = "SITE03-S01"
    rows = pd.DataFrame(
        {
            "trial_id": TRIAL,
            "site_id": "SITE03",
            "subject_id": sid,
            "voi": "Kidneys",
            "engine": "organ",
            "cycle": [1, 1, 1, 2, 2],
            "method": [
                "single_time_point_hanscheid",
                "single_time_point_madsen",
                "multi_time_point",
                "single_time_point_hanscheid",
                "single_time_point_madsen",
            ],
            "dose_gy": [7.0, 8.0, 9.0, 5.0, 6.0],
            "final": [False, False, True, False, True],
        }
    )
    load_table(small_wh, "voi_doses", rows)
    refresh_catalog(small_wh)
    with connect(small_wh) as con:
        per_cycle = con.execute(
            "SELECT cycle, method, dose_gy FROM voi_dose_cycle WHERE subject_id = ? AND voi = 'Kidneys' ORDER BY cycle",
            [sid],
        ).fetchall()
        cum = con.execute(
            "SELECT method, n_cycles, dose_gy, all_final FROM voi_dose_cumulative "
            "WHERE subject_id = ? AND voi = 'Kidneys'",
            [sid],
        ).fetchall()
        de = con.execute(
            "SELECT count(*), any_value(cumulative_dose_gy) FROM dose_effect "
            "WHERE subject_id = ? AND endpoint = 'nephrotoxicity'",
            [sid],
        ).fetchone()
    assert per_cycle == [(1, "multi_time_point", 9.0), (2, "single_time_point_madsen", 6.0)]
    assert cum == [("mixed", 2, 15.0, True)]
    assert de == (1, 15.0)


def test_event_grades_per_endpoint(small_wh):
    """Xerostomia counts from grade 1, nephrotoxicity from grade 2 (EVENT_MIN_GRADE)."""
    with connect(small_wh) as con:
        got = con.execute(
            "SELECT endpoint, grade, any_value(effect) FROM dose_effect WHERE endpoint IN "
            "('nephrotoxicity', 'xerostomia') GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert got == [
        ("nephrotoxicity", 0, 0),
        ("nephrotoxicity", 1, 0),
        ("nephrotoxicity", 2, 1),
        ("xerostomia", 0, 0),
        ("xerostomia", 1, 1),
    ]


# --- the analysts' catalog beside the pipeline (issue 16) -------------------------------

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow.compute as pc  # noqa: E402

from rntflow.warehouse.catalog import dose_effect_frame  # noqa: E402
from rntflow.warehouse.storage import is_remote  # noqa: E402

from .conftest import build_small_warehouse, outcomes_frame, wh_read  # noqa: E402

_SESSION = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])                     # read-write, DuckDB's default
    if len(sys.argv) > 2:                                 # an S3 root: register its filesystem
        from rntflow.warehouse.storage import open_store
        open_store(sys.argv[2]).register(con)
    con.execute("CREATE OR REPLACE TABLE analyst_notes AS SELECT 1 AS x")   # leaves a WAL
    print(con.execute("SELECT count(*) FROM voi_doses").fetchone()[0], flush=True)
    for line in sys.stdin:                                # one query per line, answer per line
        print(con.execute(line).fetchone()[0], flush=True)
""")


def _session(path: Path, root: str) -> subprocess.Popen:
    """An analyst's read-write DuckDB session on the catalog file ``path`` (of warehouse ``root``)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SESSION, str(path), *([root] if is_remote(root) else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


def test_session_opened_before_the_first_load_sees_rows_live(wh_root):
    root = wh_root
    with connect(root) as con:  # nothing loaded yet: the catalog is created, views are empty
        assert con.execute("SELECT count(*) FROM voi_doses").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM dose_effect").fetchone() == (0,)
        load_table(root, "voi_doses", voi_doses_frame())
        load_table(root, "outcomes", outcomes_frame())
        # no refresh, no reconnect: the views resolve their files at query time
        assert con.execute("SELECT count(*) FROM voi_doses").fetchone() == (144,)
        assert con.execute("SELECT count(*) FROM dose_effect").fetchone() == (48,)
        assert con.execute("SELECT count(*) FROM voi_doses_history").fetchone() == (144,)


def test_pipeline_runs_beside_read_write_and_killed_analyst_sessions(wh_root):
    root = wh_root
    build_small_warehouse(root)
    path = catalog_path(root)
    killed = _session(path, root)
    assert killed.stdout.readline().strip() == "144"
    killed.send_signal(signal.SIGKILL)  # crashed mid-session: its WAL and lock stay behind
    killed.wait(timeout=30)
    assert Path(str(path) + ".wal").exists()
    live = _session(path, root)  # a second read-write session, holding DuckDB's file lock
    try:
        assert live.stdout.readline().strip() == "144"
        # the pipeline: a new version of every dose, catalog refresh, dose-effect
        df = voi_doses_frame()
        assert load_table(root, "voi_doses", df.assign(dose_gy=df.dose_gy + 1.0)).rows_new_version == 144
        refresh_catalog(root)
        de = dose_effect_frame(root, engines=("organ",))
        assert len(de) == 48 and de["cumulative_dose_gy"].notna().all()
        # the live session sees the new versions without reconnecting
        live.stdin.write("SELECT count(*) FROM voi_doses WHERE result_version = 2\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "144"
        live.stdin.write("SELECT count(*) FROM voi_doses_history\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "288"
    finally:
        live.stdin.close()
        live.wait(timeout=30)
    assert live.returncode == 0, live.stderr.read()
    with connect(root) as con:  # after both: a new read-only session opens and is current
        assert con.execute("SELECT count(*), min(result_version) FROM voi_doses").fetchone() == (144, 2)


def test_rebuild_moves_a_stale_wal_aside(wh_root):
    root = wh_root
    build_small_warehouse(root)
    path = catalog_path(root)
    killed = _session(path, root)
    assert killed.stdout.readline().strip() == "144"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    (path.parent / ".rntflow.duckdb.digest").write_text("outdated\n")  # as after an upgrade
    refresh_catalog(root)
    assert not Path(str(path) + ".wal").exists() and list(path.parent.glob(".rntflow.duckdb.wal.*.stale"))
    with connect(root) as con:
        assert con.execute("SELECT count(*) FROM voi_doses").fetchone() == (144,)


def test_plain_pyarrow_on_latest_matches_the_view(small_wh):
    df = voi_doses_frame()
    load_table(small_wh, "voi_doses", df.assign(dose_gy=df.dose_gy * 2)[df.site_id == "SITE02"])
    key = [(k, "ascending") for k in ("subject_id", "cycle", "voi", "engine", "method")]
    plain = wh_read(small_wh, "latest", "voi_doses")
    with connect(small_wh) as con:
        view = con.sql("SELECT * FROM voi_doses").to_arrow_table()
    assert plain.num_rows == view.num_rows == 144
    assert plain.filter(pc.equal(plain["result_version"], 2)).num_rows == 48
    assert plain.select(view.column_names).sort_by(key).to_pylist() == view.sort_by(key).to_pylist()
    # the history keeps both versions, hive-partitioned
    assert wh_read(small_wh, "voi_doses").num_rows == 192


def test_materialised_cumulative_equals_the_live_definition(small_wh):
    from rntflow.warehouse.catalog import DERIVED_VIEWS

    sid = "SITE03-S01"
    rows = pd.DataFrame(
        {
            "trial_id": TRIAL,
            "site_id": "SITE03",
            "subject_id": sid,
            "voi": "Kidneys",
            "engine": "organ",
            "cycle": [1, 1, 2],
            "method": ["single_time_point_madsen", "multi_time_point", "single_time_point_madsen"],
            "dose_gy": [8.0, 9.0, 6.0],
        }
    )
    load_table(small_wh, "voi_doses", rows)
    with connect(small_wh) as con:
        mat = con.execute("SELECT * FROM voi_dose_cumulative ORDER BY ALL").fetchall()
        live = con.execute(f"SELECT * FROM ({DERIVED_VIEWS['voi_dose_cumulative']}) ORDER BY ALL").fetchall()
    assert mat == live and ("T-TEST", "SITE03", sid, "Kidneys", "organ", "mixed", 2, 15.0, None, None, False) in mat


def test_catalog_opens_in_the_oldest_declared_storage_format(small_warehouse):
    """The catalog file declares DuckDB v1.0.0 storage, so older CLIs (e.g. duckdb-cli) open it.

    Local only: a plain DuckDB CLI reads ``s3://`` through its httpfs extension, a download
    (docs/analyst.md); over S3 the catalog is opened through :func:`connect` (tests above).
    """
    cli = Path(sys.executable).parent / "duckdb"
    if not cli.exists():
        pytest.skip("no DuckDB CLI in the virtualenv (pip install duckdb-cli)")
    out = subprocess.run(
        [
            str(cli),
            "-readonly",
            "-csv",
            "-noheader",
            str(catalog_path(small_warehouse)),
            "-c",
            "SELECT count(*) FROM dose_effect",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "48"
