"""The storage layer: warehouse roots on a local folder or an S3-compatible endpoint."""

from __future__ import annotations

import pytest

from rntflow.core.config import WarehouseStorageSettings, load_config
from rntflow.core.errors import ConfigError, WarehouseError
from rntflow.warehouse.outcomes import warehouse_subjects
from rntflow.warehouse.storage import is_remote, open_store
from rntflow.warehouse.writer import load_table, read_latest

from .conftest import REPO_ROOT, subjects_frame, wh_files


def test_roots_parse(tmp_path, monkeypatch):
    monkeypatch.setenv("RNTFLOW_WAREHOUSE_CACHE", str(tmp_path / "cache"))
    local = open_store(tmp_path / "wh")
    assert local.is_local and local.uri == str((tmp_path / "wh").resolve()) and local.local_dir == tmp_path / "wh"
    remote = open_store("s3://trial-wh/run/1?endpoint_override=http://127.0.0.1:9&region=eu-west-1")
    assert not remote.is_local and remote.uri == "s3://trial-wh/run/1" and remote.local_dir == tmp_path / "cache"
    assert remote.loc("latest", "voi_doses") == "s3://trial-wh/run/1/latest/voi_doses"
    assert is_remote("s3://trial-wh") and not is_remote(tmp_path)
    with pytest.raises(WarehouseError, match="unknown option"):
        open_store("s3://trial-wh/p?endpoint=http://x")
    with pytest.raises(WarehouseError, match="only local folders and s3://"):
        open_store("gs://trial-wh/p")


def test_config_names_an_s3_root_without_credentials():
    config = load_config(REPO_ROOT / "deployments" / "trial.example.yaml")
    assert config.warehouse_root == str(config.warehouse_dir)  # default: the local folder
    s3 = config.model_copy(
        update={
            "warehouse_storage": WarehouseStorageSettings(
                url="s3://trial-wh/rntflow", endpoint_url="http://127.0.0.1:9000/", region="eu-west-1"
            )
        }
    )
    assert s3.warehouse_root == "s3://trial-wh/rntflow?endpoint_override=http://127.0.0.1:9000&region=eu-west-1"
    with pytest.raises(ValueError):
        WarehouseStorageSettings(url="https://trial-wh/rntflow")


def test_reads_and_subjects_on_both_stores(wh_root):
    """``read_latest`` and ``warehouse_subjects`` (the outcomes import) read the same rows."""
    assert read_latest(wh_root, "subjects").empty and warehouse_subjects(wh_root).empty  # nothing yet
    assert load_table(wh_root, "subjects", subjects_frame()).rows_new == 12
    assert len(read_latest(wh_root, "subjects", "site_id = ?", ["SITE02"])) == 4
    assert sorted(warehouse_subjects(wh_root).subject_id) == sorted(subjects_frame().subject_id)
    # one history file per site, one latest file per site, the schema files; nothing hidden left
    assert len(wh_files(wh_root, "subjects", pattern="part-*.parquet")) == 3
    assert len(wh_files(wh_root, "latest", "subjects")) == 4
    assert wh_files(wh_root, pattern=".*.tmp") == []


def test_a_url_in_paths_is_refused_with_the_setting_to_use(tmp_path):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(
        "trial_id: T-S3\npaths: {warehouse: 's3://bucket/wh'}\n"
        "sites:\n  - {id: SITE01, name: A, calling_ae_titles: [A1]}\n"
        "protocol:\n  photopeak_windows: [{name: Lu177_208, center_kev: 208.0, width_pct: 20.0}]\n"
        "  time_points: [{nominal_h: 24, earliest_h: 18, latest_h: 30}]\n"
    )
    with pytest.raises(ConfigError, match=r"paths\.warehouse: .*is a URL.*warehouse_storage\.url"):
        load_config(cfg)
    assert not (tmp_path / "s3:").exists()
