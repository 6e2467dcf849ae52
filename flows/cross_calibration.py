"""The ``cross-calibration-effect`` flow: what the trial's cross-calibration removes.

It re-processes the trial with cross-calibration switched off (vendor Bq/mL taken at face
value) in an analysis arm of its own (``<warehouse>/../arms/no_cross_calibration/``), then
fits every dose-effect endpoint on the same outcomes with the doses of both arms and
reports the pooled D50s, the per-site dose ratios and the site-effect tests, in
``<warehouse>/reports/cross_calibration.md`` and as a Prefect artifact.

Only the sites with vendor-quantified reconstructions are re-processed from the spooled
studies (phantoms first): for counts reconstructions the switch changes nothing (they
always need the phantom sensitivity), so the other sites' rows are copied unchanged
before the re-run (the single-time-point method's population half-lives need them).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from rntflow.analysis.arm_comparison import compare_arms
from rntflow.flows.process_study import process_study
from rntflow.flows.qa import qa_flow
from rntflow.flows.warehouse import DOSE_EFFECT_ANALYSES, markdown_table
from rntflow.tasks.arms import arm_config, copy_results, spooled_studies, vendor_quantified_sites
from rntflow.tasks.common import trial_config
from rntflow.tasks.reports import reports_dir, write_report
from rntflow.tasks.warehouse import refresh
from rntflow.warehouse.catalog import dose_effect_frame

ARM = "no_cross_calibration"


@flow(name="cross-calibration-effect", flow_run_name="cross-calibration-effect")
def cross_calibration_effect_flow(config_path: str | None) -> dict:
    """Re-process without cross-calibration and compare the dose-effect fits (module docstring)."""
    log = get_run_logger()
    config = trial_config(config_path)
    off_path = arm_config(config_path, ARM, {"cross_calibration": False})
    rerun = vendor_quantified_sites(config_path)
    copied = copy_results(config_path, off_path, rerun)
    studies = spooled_studies(config_path, rerun)
    log.info("arm %s: re-processing %d studies of %s; copied %s", ARM, len(studies), rerun, copied)
    failed = 0
    for h in studies:
        state = process_study(**h.parameters(off_path), return_state=True)
        failed += int(not state.is_completed())
    qa_flow(off_path, close_out=True)
    on_wh, off_wh = config.warehouse_root, trial_config(off_path).warehouse_root
    refresh(on_wh)
    refresh(off_wh)
    on, off = dose_effect_frame(on_wh), dose_effect_frame(off_wh)

    lines = [
        f"# Cross-calibration effect: {config.trial_id}",
        "",
        f"Arm `{ARM}`: vendor Bq/mL taken at face value at {', '.join(rerun) or 'no site'} "
        f"({len(studies)} studies re-processed, {failed} failed); other sites' results unchanged.",
        "",
    ]
    results = {}
    for endpoint, dose_col in DOSE_EFFECT_ANALYSES:
        label = f"{endpoint} vs {dose_col.removeprefix('cumulative_')}"
        a, b = (df[df["endpoint"] == endpoint] for df in (on, off))
        lines += [f"## {label}", ""]
        if a[dose_col].notna().sum() < 4 or a["effect"].nunique() < 2:
            lines += ["Too few outcomes (or only one kind) for a logistic fit.", ""]
            continue
        try:
            cmp = compare_arms(a, b, dose_col=dose_col)
        except ValueError as exc:
            lines += [f"No comparison: {exc}", ""]
            continue
        results[label] = {
            "fits": cmp.fits.to_dict("records"),
            "site_dose_ratio": cmp.site_dose_ratio.to_dict("records"),
            "d50_ratio": cmp.d50_ratio,
        }
        lines += [
            markdown_table(cmp.fits),
            "",
            markdown_table(cmp.site_dose_ratio),
            "",
            f"Pooled D50 without / with cross-calibration: {cmp.d50_ratio:.3f}",
            "",
        ]
    text = "\n".join(lines)
    report = reports_dir(config.warehouse_dir) / "cross_calibration.md"
    write_report(report, text)
    create_markdown_artifact(
        text,
        key="cross-calibration-effect",
        description=f"{config.trial_id}: dose-effect with and without cross-calibration",
    )
    return {
        "report": str(report),
        "arm_config": off_path,
        "rerun_sites": rerun,
        "n_studies": len(studies),
        "n_failed": failed,
        "comparisons": results,
    }
