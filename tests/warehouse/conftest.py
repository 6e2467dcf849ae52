"""Shared fixtures: a small synthetic warehouse (3 sites, 12 subjects, 2 cycles)."""

from __future__ import annotations

import fnmatch
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rntflow.warehouse.catalog import refresh_catalog
from rntflow.warehouse.storage import open_store
from rntflow.warehouse.writer import load_table

REPO_ROOT = Path(__file__).resolve().parents[2]
TRIAL = "T-TEST"
SITES = ("SITE01", "SITE02", "SITE03")
VOIS = {"Kidney_L": 4.0, "Kidney_R": 6.0, "Parotid_L": 3.0, "Parotid_R": 5.0, "Lesion_1": 30.0, "Lesion_2": 50.0}


def subjects_frame() -> pd.DataFrame:
    rows = [{"trial_id": TRIAL, "site_id": s, "subject_id": f"{s}-S{i:02d}"} for s in SITES for i in range(4)]
    return pd.DataFrame(rows)


def voi_doses_frame() -> pd.DataFrame:
    """Per-cycle doses: dose = base + subject index (deterministic, easy to sum by hand)."""
    rows = []
    for s in SITES:
        for i in range(4):
            for cycle in (1, 2):
                for voi, base in VOIS.items():
                    rows.append(
                        {
                            "trial_id": TRIAL,
                            "site_id": s,
                            "subject_id": f"{s}-S{i:02d}",
                            "cycle": cycle,
                            "voi": voi,
                            "engine": "organ",
                            "method": "multi_time_point",
                            "dose_gy": base + i,
                            "dose_sd_gy": 0.3,
                            "bed_gy": 1.2 * (base + i),
                            "mass_g": 150.0,
                        }
                    )
    return pd.DataFrame(rows)


def outcomes_frame() -> pd.DataFrame:
    rows = []
    for s in SITES:
        for i in range(4):
            sid = f"{s}-S{i:02d}"
            rows += [
                {"trial_id": TRIAL, "site_id": s, "subject_id": sid, "endpoint": "nephrotoxicity", "grade": i % 3},
                {"trial_id": TRIAL, "site_id": s, "subject_id": sid, "endpoint": "xerostomia", "grade": (i + 1) % 2},
                {
                    "trial_id": TRIAL,
                    "site_id": s,
                    "subject_id": sid,
                    "endpoint": "lesion_response",
                    "lesion_voi": "Lesion_1",
                    "response": ("CR", "PR", "SD", "PD")[i],
                },
                {
                    "trial_id": TRIAL,
                    "site_id": s,
                    "subject_id": sid,
                    "endpoint": "pfs",
                    "event": i % 2,
                    "time_to_event_months": 6.0 + 3 * i,
                },
            ]
    frame = pd.DataFrame(rows)
    frame["grade"] = frame["grade"].astype("Int8")
    frame["event"] = frame["event"].astype("Int8")
    return frame


def build_small_warehouse(root: str | Path) -> str | Path:
    """Load every reference table the docs use and refresh the catalog."""
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    load_table(
        root,
        "sites",
        pd.DataFrame({"trial_id": TRIAL, "site_id": list(SITES), "site_name": ["Amsterdam", "Krakow", "Wuerzburg"]}),
    )
    load_table(root, "subjects", subjects_frame())
    adm = subjects_frame().merge(pd.DataFrame({"cycle": [1, 2]}), how="cross")
    adm["radionuclide"] = "Lu-177"
    adm["administered_activity_mbq"] = 7400.0
    adm["administration_datetime"] = [t0 + timedelta(weeks=8 * (c - 1)) for c in adm["cycle"]]
    load_table(root, "administrations", adm)
    load_table(root, "voi_doses", voi_doses_frame())
    load_table(root, "outcomes", outcomes_frame())
    tac = voi_doses_frame()[["trial_id", "site_id", "subject_id", "cycle", "voi"]].copy()
    rng = np.random.default_rng(3)
    tac["model"] = "bi_exp"
    tac["tia_mbq_h"] = 1000.0
    tac["effective_half_life_h"] = rng.normal(50.0, 5.0, len(tac))
    load_table(root, "tac_fits", tac)
    qa = pd.DataFrame(
        {
            "trial_id": TRIAL,
            "site_id": ["SITE01", "SITE02"],
            "check_name": ["energy_window", "calibration_age"],
            "scope": ["study", "calibration"],
            "scope_id": ["ST1", "CAL7"],
            "status": ["pass", "fail"],
            "value_found": ["208 keV", "212 d"],
            "value_expected": ["208 keV +/- 2%", "<= 180 d"],
            "message": ["ok", "calibration expired"],
        }
    )
    load_table(root, "qa_checks", qa)
    refresh_catalog(root)
    return root


@pytest.fixture()
def small_warehouse(tmp_path: Path) -> Path:
    return build_small_warehouse(tmp_path / "wh")


# --- the same tests on a local folder and on an S3-compatible endpoint --------------------
#
# ``wh_root`` is a warehouse root: a local folder, or ``s3://<bucket>/<test>?endpoint_override=...``
# on a moto server (``moto[server]``, the ``test`` extra) started once per session on a free
# port of 127.0.0.1. The S3 root's catalog and lock files go to a per-test local folder
# (``RNTFLOW_WAREHOUSE_CACHE``). Nothing is mocked: the warehouse talks HTTP to the server.


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def wh_root(request, tmp_path: Path, monkeypatch) -> str:
    """A fresh, not yet created warehouse root: a local folder, or a prefix of the S3 bucket.

    The S3 variants are in the slow tier (``make test``): each talks HTTP to the moto server,
    hundreds of requests per warehouse, for the same code paths the local variants take.
    """
    if request.param == "local":
        return str(tmp_path / "wh")
    s3 = request.getfixturevalue("moto_s3")  # the session's server (tests/conftest.py)
    for key, value in s3.keys:
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RNTFLOW_WAREHOUSE_CACHE", str(tmp_path / "cache"))
    prefix = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    return f"s3://{s3.bucket}/{prefix}-{uuid.uuid4().hex[:8]}?endpoint_override={s3.endpoint}&region={s3.region}"


@pytest.fixture()
def small_wh(wh_root: str) -> str:
    """:func:`build_small_warehouse` at ``wh_root`` (local and S3)."""
    build_small_warehouse(wh_root)
    return wh_root


def wh_files(root: str, *parts: str, pattern: str = "*.parquet") -> list[str]:
    """Files (relative paths) below ``root/parts`` whose name matches ``pattern``, sorted."""
    import pyarrow.fs as pafs

    store = open_store(root)
    base = store.loc(*parts)
    infos = store.fs.get_file_info(pafs.FileSelector(store._p(base), recursive=True, allow_not_found=True))
    prefix = store._p(base).rstrip("/") + "/"
    return sorted(
        i.path[len(prefix) :]
        for i in infos
        if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path.rsplit("/", 1)[-1], pattern)
    )


def wh_read(root: str, *parts: str):
    """``pyarrow.parquet.read_table`` of ``root/parts`` (a file or a folder), as a plain reader would."""
    import pyarrow.parquet as pq

    store = open_store(root)
    return pq.read_table(store._p(store.loc(*parts)), filesystem=store.fs)


def wh_mtimes(root: str, *parts: str) -> dict[str, int]:
    """Modification time (ns) of each published history file below ``root/parts``."""
    store = open_store(root)
    base = store.loc(*parts)
    files = wh_files(root, *parts, pattern="part-*.parquet")
    return {f: store.fs.get_file_info(store._p(f"{base}/{f}")).mtime_ns for f in files}
