"""Atomic, idempotent, versioned Parquet writes and schema evolution."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from rntflow.core.errors import WarehouseError
from rntflow.warehouse.catalog import connect, refresh_catalog
from rntflow.warehouse.columns import Column
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.storage import is_remote, open_store
from rntflow.warehouse.writer import LoadReport, load_table

from .conftest import TRIAL, voi_doses_frame, wh_files, wh_mtimes

REPO = Path(__file__).resolve().parents[2]


def _visible_parquet(root: str | Path, table: str) -> list[str]:
    """Published history files (the zero-row ``_schema.parquet`` is not one), relative to the table."""
    return wh_files(str(root), table, pattern="part-*.parquet")


def _count(root: str | Path, view: str) -> int:
    refresh_catalog(root)
    with connect(root) as con:
        return con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]


def test_layout_is_hive_partitioned(wh_root):
    report = load_table(wh_root, "voi_doses", voi_doses_frame())
    assert report == LoadReport(rows_in=144, rows_new=144, rows_unchanged=0, rows_new_version=0, files_written=3)
    files = _visible_parquet(wh_root, "voi_doses")
    assert len(files) == 3
    store = open_store(wh_root)
    for f in files:
        rel = f.split("/")
        assert rel[0] == f"trial_id={TRIAL}" and rel[1].startswith("site_id=SITE0") and rel[2].startswith("part-")
        # partition columns live in the path, not the file
        names = store.read_schema(store.loc("voi_doses", f)).names
        assert "site_id" not in names and "trial_id" not in names and "dose_gy" in names


def test_loading_same_frame_twice_adds_no_rows(wh_root):
    df = voi_doses_frame()
    load_table(wh_root, "voi_doses", df)
    n_files = len(_visible_parquet(wh_root, "voi_doses"))
    again = load_table(wh_root, "voi_doses", df.sample(frac=1.0, random_state=1))  # order must not matter
    assert again == LoadReport(144, 0, 144, 0, 0)
    assert len(_visible_parquet(wh_root, "voi_doses")) == n_files
    assert _count(wh_root, "voi_doses_history") == 144


def test_changed_value_adds_a_version_and_keeps_the_old(wh_root):
    df = voi_doses_frame()
    load_table(wh_root, "voi_doses", df)
    changed = df.copy()
    changed.loc[0, "dose_gy"] = 12.5
    report = load_table(wh_root, "voi_doses", changed)
    assert (report.rows_new, report.rows_unchanged, report.rows_new_version, report.files_written) == (0, 143, 1, 1)
    assert _count(wh_root, "voi_doses_history") == 145
    assert _count(wh_root, "voi_doses") == 144
    key = df.iloc[0]
    with connect(wh_root) as con:
        sql = (
            "SELECT result_version, dose_gy FROM {} WHERE subject_id = ? AND voi = ? AND cycle = ? "
            "ORDER BY result_version"
        )
        args = [key.subject_id, key.voi, int(key.cycle)]
        assert con.execute(sql.format("voi_doses_history"), args).fetchall() == [(1, key.dose_gy), (2, 12.5)]
        assert con.execute(sql.format("voi_doses"), args).fetchall() == [(2, 12.5)]
    # a third load of the changed frame is idempotent again; reverting is version 3
    assert load_table(wh_root, "voi_doses", changed).rows_unchanged == 144
    assert load_table(wh_root, "voi_doses", df).rows_new_version == 1


def test_new_input_hash_with_same_values_is_a_new_version(wh_root):
    df = voi_doses_frame().head(4).assign(input_hash="calib-v1")
    load_table(wh_root, "voi_doses", df)
    assert load_table(wh_root, "voi_doses", df).rows_unchanged == 4
    assert load_table(wh_root, "voi_doses", df.assign(input_hash="calib-v2")).rows_new_version == 4


def test_missing_not_null_key_names_the_column(tmp_path):
    df = voi_doses_frame().drop(columns=["voi"])
    with pytest.raises(WarehouseError, match="'voi'"):
        load_table(tmp_path, "voi_doses", df)
    df = voi_doses_frame()
    df.loc[3, "subject_id"] = None
    with pytest.raises(WarehouseError, match="'subject_id' must not be null"):
        load_table(tmp_path, "voi_doses", df)
    assert not (tmp_path / "voi_doses").exists() or _visible_parquet(tmp_path, "voi_doses") == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.assign(patient_name="x"), "not in the schema"),
        (lambda d: d.assign(engine="monte_carlo"), "not in"),
        (lambda d: d.assign(dose_gy="a lot"), "dose_gy"),
        (lambda d: pd.concat([d, d.head(1)]), "natural key"),
        (lambda d: d.assign(site_id="../etc"), "partition"),
    ],
)
def test_invalid_frames_are_rejected(tmp_path, mutate, message):
    with pytest.raises(WarehouseError, match=message):
        load_table(tmp_path, "voi_doses", mutate(voi_doses_frame()))
    assert _visible_parquet(tmp_path, "voi_doses") == [] if (tmp_path / "voi_doses").exists() else True


class _Crash(RuntimeError):
    pass


def test_exception_between_write_and_rename_leaves_no_file(wh_root):
    df = voi_doses_frame()
    load_table(wh_root, "voi_doses", df[df.site_id == "SITE01"])
    before = _visible_parquet(wh_root, "voi_doses")

    def crash(tmp) -> None:
        if not is_remote(wh_root):
            assert tmp.exists() and tmp.stat().st_size > 0  # the data was fully written ...
        raise _Crash()  # ... but never renamed (on S3: never sent)

    with pytest.raises(_Crash):
        load_table(wh_root, "voi_doses", df[df.site_id == "SITE02"], _before_rename=crash)
    assert _visible_parquet(wh_root, "voi_doses") == before
    assert wh_files(wh_root, "voi_doses", pattern=".*.tmp") == []  # cleaned up on exception
    assert _count(wh_root, "voi_doses") == 48
    # the retried load completes it, without duplicates
    assert load_table(wh_root, "voi_doses", df).rows_new == 96
    assert _count(wh_root, "voi_doses_history") == 144


def test_killed_process_between_write_and_rename_leaves_no_visible_file(tmp_path, wh_root):
    df = voi_doses_frame()
    df.to_parquet(tmp_path / "input.parquet")
    script = textwrap.dedent(f"""
        import os, pandas as pd
        from rntflow.warehouse.writer import load_table
        df = pd.read_parquet({str(tmp_path / "input.parquet")!r})
        load_table({wh_root!r}, "voi_doses", df, _before_rename=lambda tmp: os._exit(9))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    root = wh_root
    # the half-finished load: a hidden temporary file locally; on S3 nothing (one PUT, never sent)
    temps = wh_files(root, "voi_doses", pattern=".part-*.parquet.*.tmp")
    assert len(temps) == (0 if is_remote(root) else 1)
    assert _visible_parquet(root, "voi_doses") == []
    assert _count(root, "voi_doses") == 0
    assert load_table(root, "voi_doses", df).rows_new == 144
    assert _count(root, "voi_doses") == 144
    assert wh_files(root, "voi_doses", pattern="*.tmp") == []  # the orphan was swept under the lock


def test_open_reader_sees_new_versions_live_and_refresh_does_not_disturb_it(small_wh):
    with connect(small_wh) as reader:
        assert reader.execute("SELECT count(*), max(result_version) FROM voi_doses").fetchone() == (144, 1)
        load_table(small_wh, "voi_doses", voi_doses_frame().assign(dose_gy=1.0))
        refresh_catalog(small_wh)  # must not fail on the reader's open file
        # the views resolve their files at query time: no reconnect needed
        assert reader.execute("SELECT count(*), max(result_version), max(dose_gy) FROM voi_doses").fetchone() == (
            144,
            2,
            1.0,
        )
    with connect(small_wh) as con:
        assert con.execute("SELECT count(*), max(result_version) FROM voi_doses").fetchone() == (144, 2)


def test_crash_between_history_and_latest_is_repaired(wh_root, monkeypatch):
    """A load that dies after publishing its history file but before its latest file leaves
    a stale latest file; reads fall back to the history and the next load repairs it."""
    from rntflow.warehouse import latest

    df = voi_doses_frame()
    load_table(wh_root, "voi_doses", df)

    def crash(*args, **kwargs):
        raise _Crash()

    with monkeypatch.context() as m:
        m.setattr(latest, "merge_partition", crash)
        with pytest.raises(_Crash):
            load_table(wh_root, "voi_doses", df.assign(dose_gy=df.dose_gy + 1)[df.site_id == "SITE01"])
    from rntflow.warehouse.writer import read_latest

    got = read_latest(wh_root, "voi_doses", "site_id = 'SITE01'")
    assert len(got) == 48 and (got.result_version == 2).all()  # from the history, nothing written
    # the retried load finds the rows unchanged (no third version) and repairs latest/
    assert load_table(wh_root, "voi_doses", df.assign(dose_gy=df.dose_gy + 1)).rows_unchanged == 48
    with connect(wh_root) as con:
        assert con.execute("SELECT count(*) FROM voi_doses WHERE result_version = 2").fetchone() == (144,)
        assert con.execute("SELECT max(result_version) FROM voi_doses_history").fetchone() == (2,)


def test_schema_evolution_new_column_old_files_readable(wh_root):
    df = voi_doses_frame()
    load_table(wh_root, "voi_doses", df[df.site_id == "SITE01"])
    old_files = wh_mtimes(wh_root, "voi_doses")
    evolved = dict(TABLES)
    evolved["voi_doses"] = TABLES["voi_doses"].with_column(
        Column("dose_rate_max_gy_per_h", pa.float64(), "Gy/h", "Peak dose rate.", True)
    )
    # the catalog of the evolved schema shows the column even before any file holds it
    refresh_catalog(wh_root, tables=evolved)
    with connect(wh_root, tables=evolved) as con:
        assert con.execute("SELECT count(*), count(dose_rate_max_gy_per_h) FROM voi_doses").fetchone() == (48, 0)
    new = df[df.site_id == "SITE02"].assign(dose_rate_max_gy_per_h=0.5)
    assert load_table(wh_root, "voi_doses", new, tables=evolved).rows_new == 48
    # old rows are unchanged by the new schema (no spurious new versions, no rewrite)
    assert load_table(wh_root, "voi_doses", df[df.site_id == "SITE01"], tables=evolved).rows_unchanged == 48
    assert {f: m for f, m in wh_mtimes(wh_root, "voi_doses").items() if f in old_files} == old_files
    refresh_catalog(wh_root, tables=evolved)
    with connect(wh_root, tables=evolved) as con:
        rows = con.execute(
            "SELECT site_id, count(*), count(dose_rate_max_gy_per_h), max(dose_rate_max_gy_per_h) "
            "FROM voi_doses GROUP BY site_id ORDER BY site_id"
        ).fetchall()
    assert rows == [("SITE01", 48, 0, None), ("SITE02", 48, 48, 0.5)]


def test_concurrent_loads_do_not_duplicate(wh_root):
    df = voi_doses_frame()
    reports: list[LoadReport] = []
    threads = [threading.Thread(target=lambda: reports.append(load_table(wh_root, "voi_doses", df))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.rows_new for r in reports) == [0, 0, 0, 144]
    assert _count(wh_root, "voi_doses_history") == 144


def test_unknown_table(tmp_path):
    with pytest.raises(WarehouseError, match="unknown warehouse table"):
        load_table(tmp_path, "doses", voi_doses_frame())
