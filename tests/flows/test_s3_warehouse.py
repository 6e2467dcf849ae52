"""The pipeline honours ``warehouse_storage.url``: results land in the bucket, reports stay local (issue 16).

A trial whose config names an ``s3://`` warehouse on a moto server (``moto_s3``, tests/conftest.py)
runs ``rntflow blood import`` (blood samples, the qa flow, blood-based marrow doses) and
``rntflow outcomes import`` (which re-runs the dose-effect flow), both through the CLI entry point
and the Prefect harness. Every Parquet file must then be in the bucket and none on the local
disk, no ``s3:`` folder may appear (``Path("s3://b/p")`` is the folder ``s3:/b/p``), the
analysts' ``connect`` and ``rntflow sql`` see the rows, the coordinator status reads them, and the
reports are written locally under ``paths.warehouse/reports``.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from rntflow.cli import main

TRIAL = "T-S3"
SITES = {"SUBJ-001": "SITE01", "SUBJ-002": "SITE02"}
ADMIN_MBQ = 7400.0
#: Image-based Bone_Marrow organ dose per cycle (Gy): 2 cycles, 1.8 Gy against a 2 Gy limit.
IMAGE_DOSE_GY = 0.9
#: Mono-exponential blood curve of SUBJ-001 (Bq/mL at t = 0, effective half-life h), 5x the
#: usual concentration so that its blood-based marrow dose exceeds the limit.
C0_BQ_PER_ML, T_EFF_H = 1_500_000.0, 30.0
TIMES_H = (0.5, 1.0, 2.0, 4.0, 24.0, 48.0, 96.0, 168.0)

CONFIG = """
trial_id: {trial}
paths: {{warehouse: wh, enrolment: enrolment.csv, products: products, prefect_home: prefect}}
warehouse_storage: {{url: "{url}", endpoint_url: "{endpoint}", region: {region}}}
sites:
  - {{id: SITE01, name: A, calling_ae_titles: [A1]}}
  - {{id: SITE02, name: B, calling_ae_titles: [B1]}}
protocol:
  photopeak_windows: [{{name: Lu177_208, center_kev: 208.0, width_pct: 20.0}}]
  time_points: [{{nominal_h: 24, earliest_h: 18, latest_h: 30}}]
dose_limits:
  Bone_Marrow: {{dose_gy: 2.0}}
"""


def _write_trial(tmp_path: Path, url: str, moto_s3) -> Path:
    """Config, enrolment and the (local) product metadata of two subjects, two cycles each."""
    from rntflow.tasks.products import TimePointMeta

    config = tmp_path / "trial.yaml"
    config.write_text(CONFIG.format(trial=TRIAL, url=url, endpoint=moto_s3.endpoint, region=moto_s3.region))
    (tmp_path / "enrolment.csv").write_text(
        "site_id,patient_id,subject_id,kind\n"
        + "".join(f"{s},P{i},{p},patient\n" for i, (p, s) in enumerate(SITES.items()))
    )
    for subject, site in SITES.items():
        for c in (1, 2):
            meta = TimePointMeta(
                site, subject, f"ST-{subject}-{c}", "CAM1", datetime(2026, 1, 6), datetime(2026, 1, 5),
                ADMIN_MBQ, "Lu-177", 24.0, c, None, "valid", 0.02, None, True,
            )  # fmt: skip
            folder = tmp_path / "products" / site / subject / meta.study_id
            folder.mkdir(parents=True)
            (folder / "meta.json").write_text(meta.to_json())
    return config


def _seed(root: str) -> None:
    """What earlier pipeline runs left in the (S3) warehouse: subjects, administrations, doses, fits."""
    from rntflow.warehouse.writer import load_table

    admin, doses, fits = [], [], []
    for p, s in SITES.items():
        for c in (1, 2):
            base = {"trial_id": TRIAL, "site_id": s, "subject_id": p, "cycle": c}
            when = datetime(2026, 1, 5, 9, tzinfo=UTC) + pd.Timedelta(weeks=6 * (c - 1))
            admin.append({**base, "radionuclide": "Lu-177", "administered_activity_mbq": ADMIN_MBQ,
                          "administration_datetime": when})  # fmt: skip
            for voi, dose_gy, tia in (("Bone_Marrow", IMAGE_DOSE_GY, 2000.0), ("Kidney_L", 3.0 + c, 9000.0)):
                doses.append({**base, "voi": voi, "engine": "organ", "method": "multi_time_point",
                              "dose_gy": dose_gy, "tia_mbq_h": tia, "mass_g": 300.0, "final": True})  # fmt: skip
                fits.append({**base, "voi": voi, "model": "mono_exp", "tia_mbq_h": tia})
    load_table(
        root, "subjects", pd.DataFrame([{"trial_id": TRIAL, "site_id": s, "subject_id": p} for p, s in SITES.items()])
    )
    load_table(root, "administrations", pd.DataFrame(admin))
    load_table(root, "voi_doses", pd.DataFrame(doses))
    load_table(root, "tac_fits", pd.DataFrame(fits))


def _bucket_tables(moto_s3, prefix: str) -> dict[str, int]:
    """Parquet objects per top-level folder (table or ``latest``) below ``prefix``, as S3 lists them."""
    fs = moto_s3.filesystem()
    base = f"{moto_s3.bucket}/{prefix}"
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    out: dict[str, int] = {}
    for info in infos:
        if info.type == pafs.FileType.File and info.path.endswith(".parquet"):
            top = info.path[len(base) + 1 :].split("/", 1)[0]
            out[top] = out.get(top, 0) + 1
    return out


@pytest.mark.slow
def test_pipeline_writes_the_s3_warehouse_and_keeps_reports_local(
    tmp_path, prefect_harness, moto_s3, monkeypatch, capsys
):
    for key, value in moto_s3.keys:
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RNTFLOW_WAREHOUSE_CACHE", str(tmp_path / "cache"))  # the S3 root's catalog and locks
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.chdir(tmp_path)  # a relative "s3:" folder would appear here
    prefix = f"flows-{uuid.uuid4().hex[:8]}/wh"
    config_path = _write_trial(tmp_path, f"s3://{moto_s3.bucket}/{prefix}", moto_s3)

    from rntflow.core.config import load_config
    from rntflow.status.model import coordinator_status
    from rntflow.warehouse.catalog import connect

    config = load_config(config_path)
    root = config.warehouse_root
    assert root.startswith(f"s3://{moto_s3.bucket}/{prefix}?") and "endpoint_override=http://127.0.0.1:" in root
    _seed(root)

    lam = math.log(2) / T_EFF_H
    blood = tmp_path / "blood.csv"
    blood.write_text(
        "subject_id,cycle,t_h,activity_concentration_bq_per_ml\n"
        + "".join(f"SUBJ-001,{c},{t:g},{C0_BQ_PER_ML * math.exp(-lam * t):.1f}\n" for c in (1, 2) for t in TIMES_H)
    )
    assert main(["blood", "import", str(blood), "--config", str(config_path)]) == 0  # runs the qa flow
    assert "16 new" in capsys.readouterr().out

    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text(
        "subject_id,endpoint,lesion_voi,grade,response,event,time_to_event_months,assessed_months\n"
        "SUBJ-001,nephrotoxicity,,2,,,,12\nSUBJ-002,nephrotoxicity,,0,,,,12\n"
    )
    assert main(["outcomes", "import", str(outcomes), "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "2 new" in out and "dose-effect re-run" in out and f"written to s3://{moto_s3.bucket}/{prefix}" in out

    # every table the pipeline wrote is in the bucket; nothing went to the local disk
    in_bucket = _bucket_tables(moto_s3, prefix)
    for table in ("subjects", "voi_doses", "blood_samples", "marrow_doses", "qa_checks", "outcomes", "latest"):
        assert in_bucket.get(table, 0) > 0, (table, in_bucket)
    assert not list(tmp_path.rglob("*.parquet"))
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("s3:")]
    assert not Path("s3:").exists()

    # analysts (connect, rntflow sql) see the rows the flows wrote
    with connect(root) as con:
        marrow = con.execute(
            "SELECT subject_id, cycle FROM marrow_doses WHERE method = 'blood' ORDER BY cycle"
        ).fetchall()
        limit = con.execute(
            "SELECT status, message FROM qa_checks WHERE check_name = 'limit_dose_gy' AND scope_id = ?",
            ["SUBJ-001/Bone_Marrow"],
        ).fetchall()
        n_outcomes = con.execute("SELECT count(*) FROM outcomes").fetchone()[0]
    assert marrow == [("SUBJ-001", 1), ("SUBJ-001", 2)]
    assert len(limit) == 1 and limit[0][0] == "fail" and "blood-based red-marrow dose" in limit[0][1]
    assert n_outcomes == 2
    assert main(["sql", "--config", str(config_path), "--csv", "-c", "SELECT count(*) AS n FROM voi_doses"]) == 0
    assert capsys.readouterr().out.split() == ["n", "8"]

    # the coordinator status reads the same warehouse
    source = coordinator_status(config)["sources"]["warehouse"]
    assert (
        source["error"] is None
        and source["path"] == root
        and source["rows"]["administrations"] == 4
        and source["rows"]["dose_cycles"] > 0
    )

    # reports are local, under paths.warehouse/reports, built from the rows in the bucket
    reports = tmp_path / "wh" / "reports"
    assert TRIAL in (reports / "dose_effect.md").read_text()
    assert (reports / "dose_effect.html").stat().st_size > 0
    assert (reports / "subjects" / "SITE01" / "SUBJ-001.html").exists()
    assert (reports / "subjects" / "SITE02" / "SUBJ-002.html").exists()
