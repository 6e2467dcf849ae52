"""The ``calibration`` flow: a phantom scan becomes (part of) its camera's calibration.

A uniform cylinder gives the sensitivity (or the vendor Bq/mL scale error) and registers a
new calibration, superseding the previous one and flagging drift; a NEMA IEC body phantom
gives the recovery curve and the harmonising filter, added to the camera's calibration.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from rntflow.tasks.calibration import PhantomResult, calibrate_phantom
from rntflow.tasks.common import Context, artifact_key, trial_config
from rntflow.tasks.warehouse import load_rows


@flow(name="calibration", flow_run_name="calibration {site_id} {subject_id}")
def calibration_flow(
    config_path: str | None, site_id: str, subject_id: str, study_id: str, study_dir: str
) -> PhantomResult:
    """Analyse the phantom, update the calibration registry, report to the site physicist."""
    config = trial_config(config_path)
    wh = config.warehouse_root
    site = Context(config.trial_id, site_id)
    res = calibrate_phantom(config, site_id, subject_id, study_id, study_dir)
    load_rows(wh, "studies", [res.study], site.cols())
    load_rows(wh, "calibrations", res.calibrations, site.cols())
    load_rows(wh, "phantom_results", res.phantom_results, site.cols())
    load_rows(wh, "qa_checks", res.checks, site.cols())
    if res.camera:
        load_rows(wh, "cameras", [res.camera], site.cols())
    lines = [
        f"# Calibration of {site_id}: {res.phantom_type}",
        "",
        "| check | status | found | expected |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {c['check_name']} | {c['status']} | {c['value_found']} | {c['value_expected']} |" for c in res.checks]
    if res.phantom_results:
        lines += ["", "| sphere (mm) | RC | RC harmonised | in band |", "| ---: | ---: | ---: | --- |"]
        lines += [
            f"| {r['sphere_diameter_mm']:g} | {r['recovery_coefficient']:.3f} | "
            f"{(r.get('recovery_coefficient_harmonised') or float('nan')):.3f} | {r.get('in_reference_band')} |"
            for r in res.phantom_results
        ]
    create_markdown_artifact(
        "\n".join(lines),
        key=f"calibration-{artifact_key(site_id)}",
        description=f"{site_id} phantom {res.phantom_type}",
    )
    get_run_logger().info(
        "%s %s: %s", site_id, res.phantom_type, "; ".join(f"{c['check_name']}={c['status']}" for c in res.checks)
    )
    return res
