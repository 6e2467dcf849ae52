"""Every SQL and Python example in docs/analyst.md runs against a small warehouse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rntflow.warehouse.catalog import connect
from rntflow.warehouse.schema import render_docs

from .conftest import build_small_warehouse

DOC = Path(__file__).resolve().parents[2] / "docs" / "analyst.md"
TEXT = DOC.read_text()
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", TEXT, flags=re.DOTALL)
PY_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A folder laid out like the demo: ``data/warehouse`` under the working directory."""
    root = tmp_path_factory.mktemp("analyst")
    build_small_warehouse(root / "data" / "warehouse")
    return root


def test_docs_have_examples():
    assert len(SQL_BLOCKS) >= 8 and len(PY_BLOCKS) >= 2


@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[f"sql{i}" for i in range(len(SQL_BLOCKS))])
def test_sql_example_runs_and_returns_rows(sql, demo_dir, monkeypatch):
    monkeypatch.chdir(demo_dir)
    with connect("data/warehouse") as con:
        rows = con.execute(sql).fetchall()
    assert rows, "an example that returns nothing on the test warehouse demonstrates nothing"


@pytest.mark.parametrize("code", PY_BLOCKS, ids=[f"py{i}" for i in range(len(PY_BLOCKS))])
def test_python_example_runs(code, demo_dir, monkeypatch):
    monkeypatch.chdir(demo_dir)
    exec(compile(code, str(DOC), "exec"), {})


def test_column_reference_is_current():
    assert render_docs(TEXT) == TEXT, "run: python -m rntflow.warehouse.schema docs/analyst.md"


_CONFIG = """
trial_id: T-TEST
paths: {warehouse: data/warehouse, enrolment: enrolment.csv}
sites:
  - {id: SITE01, name: A, calling_ae_titles: [A1]}
protocol:
  photopeak_windows: [{name: Lu177_208, center_kev: 208.0, width_pct: 20.0}]
  time_points: [{nominal_h: 24, earliest_h: 18, latest_h: 30}]
"""


def test_rntflow_sql_runs_statements_read_only(demo_dir, capsys):
    from rntflow.cli import main

    (demo_dir / "trial.yaml").write_text(_CONFIG)
    (demo_dir / "enrolment.csv").write_text("site_id,patient_id,subject_id,kind\nSITE01,P1,SITE01-S00,patient\n")
    cfg = str(demo_dir / "trial.yaml")
    assert (
        main(
            [
                "sql",
                "--config",
                cfg,
                "--csv",
                "-c",
                "SELECT count(*) AS n FROM dose_effect; SELECT count(*) AS n FROM voi_doses",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.split() == ["n", "48", "n", "144"]
    with pytest.raises(Exception, match="read-only"):
        main(["sql", "--config", cfg, "-c", "CREATE TABLE x AS SELECT 1"])
