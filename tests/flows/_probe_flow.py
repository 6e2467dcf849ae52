"""A throwaway stand-in for ``flows/process_study.py:process_study`` (same name and signature).

Used by ``test_server_path.py`` only while the real flow is missing: it checks that the
hand-off points at a de-identified study folder holding the announced number of instances.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger


@flow(name="process-study")
def process_study(
    site_id: str,
    subject_id: str,
    kind: str,
    study_key: str,
    study_dir: str,
    n_instances: int,
    handoff_version: int,
    config_path: str | None = None,
) -> dict:
    files = [p for p in Path(study_dir).rglob("*") if p.is_file()]
    if len(files) < n_instances:
        raise RuntimeError(f"{study_dir}: {len(files)} files, hand-off announced {n_instances}")
    get_run_logger().info("probe: %s %s %s: %d files", site_id, subject_id, kind, len(files))
    return {"site_id": site_id, "subject_id": subject_id, "kind": kind, "n_files": len(files)}
