"""Tasks for re-processing a trial under another policy (an analysis *arm*).

An arm is the same trial with one setting changed (e.g. cross-calibration off), whose
products and warehouse live in ``<warehouse>/../arms/<name>/`` (an S3 warehouse's arm: the
same layout in the bucket, :func:`arm_warehouse_url`); the spool (the
de-identified studies), the enrolment, the keys and the phantom fill log are shared.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from prefect import task

from rntflow.core.files import write_text_atomic
from rntflow.listener.handoff import StudyHandoff, handed_off_studies
from rntflow.tasks.common import trial_config
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.writer import load_table, read_latest

#: Columns the destination's writer computes itself; dropped when rows are copied.
_WRITER_COLUMNS = ("result_version", "row_hash")
#: Tables not copied: ``flow_runs`` belong to the runs that wrote them; ``marrow_doses`` are
#: recomputed for every subject by the arm's own close-out QA (from its ``voi_doses`` and the
#: copied ``blood_samples``), and a copy would alternate with that result as a new version
#: on every run.
_NOT_COPIED = ("flow_runs", "marrow_doses")


def arm_root(config_path: str | None, name: str) -> Path:
    """Folder of one arm: ``<warehouse>/../arms/<name>``."""
    return trial_config(config_path).arms_dir / name


def arm_warehouse_url(url: str, name: str) -> str:
    """S3 warehouse of one arm, beside the trial's as locally: ``s3://b/p/w`` -> ``s3://b/p/arms/<name>/warehouse``.

    A warehouse at the top of a bucket (``s3://b``) puts its arms at ``s3://b/arms/<name>/warehouse``,
    a prefix the trial's own tables never use.
    """
    head, _, _ = url.rstrip("/").removeprefix("s3://").rpartition("/")
    bucket_and_parent = head or url.rstrip("/").removeprefix("s3://")
    return f"s3://{bucket_and_parent}/arms/{name}/warehouse"


@task(name="arm-config")
def arm_config(config_path: str | None, name: str, calibration: dict) -> str:
    """Write the arm's trial config (absolute paths; ``calibration`` settings overridden).

    Returns the config file's path. Re-running with the same settings leaves the file
    untouched (the trial-config cache keys on its modification time).
    """
    config = trial_config(config_path)
    root = arm_root(config_path, name)
    raw = config.model_dump(mode="json", exclude={"config_dir"}, by_alias=True)
    raw["paths"] = {k: str(config.resolve(Path(v))) for k, v in raw["paths"].items()}
    raw["paths"].update(products=str(root / "products"), warehouse=str(root / "warehouse"))
    if config.warehouse_storage.url is not None:
        raw["warehouse_storage"]["url"] = arm_warehouse_url(config.warehouse_storage.url, name)
    raw["calibration"].update(calibration)
    text = yaml.safe_dump(raw, sort_keys=True)
    path = root / "trial.yaml"
    if not path.exists() or path.read_text() != text:
        write_text_atomic(path, text)
    return str(path)


@task(name="vendor-quantified-sites")
def vendor_quantified_sites(config_path: str | None) -> list[str]:
    """Sites whose calibrations are vendor Bq/mL scale factors (what cross-calibration corrects)."""
    config = trial_config(config_path)
    cal = read_latest(config.warehouse_root, "calibrations", "trial_id = ?", [config.trial_id])
    if cal.empty:
        return []
    return sorted(
        cal.loc[cal["bqml_scale_factor"].notna() & cal["sensitivity_cps_per_mbq"].isna(), "site_id"].unique().tolist()
    )


@task(name="spooled-studies")
def spooled_studies(config_path: str | None, site_ids: list[str]) -> list[StudyHandoff]:
    """The studies the listener handed off for ``site_ids`` (phantoms first per site)."""
    return handed_off_studies(trial_config(config_path).spool_dir, site_ids)


@task(name="copy-results")
def copy_results(from_config: str | None, to_config: str | None, exclude_sites: list[str]) -> dict[str, int]:
    """Copy every table's latest rows between warehouses, except the sites re-processed.

    Tables partitioned by site lose the rows of ``exclude_sites`` (the arm's own flows
    write those); trial-wide tables such as ``outcomes`` are copied whole: an arm changes
    how doses are computed, not what happened to the patients. Tables in :data:`_NOT_COPIED`
    are not copied. Idempotent: rows already there are
    left unchanged.
    """
    src, dst = trial_config(from_config), trial_config(to_config)
    copied = {}
    for name, spec in TABLES.items():
        if name in _NOT_COPIED:
            continue
        df = read_latest(src.warehouse_root, name, "trial_id = ?", [src.trial_id])
        if "site_id" in spec.partition_by and exclude_sites:
            df = df[~df["site_id"].isin(exclude_sites)]
        if df.empty:
            continue
        df = df[[c for c in spec.column_names if c in df.columns and c not in _WRITER_COLUMNS]]
        copied[name] = load_table(dst.warehouse_root, name, pd.DataFrame(df)).rows_new
    return copied
