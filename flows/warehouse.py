"""The ``dose-effect`` flow: refresh the analysts' catalog and the dose-effect results.

It re-creates the DuckDB views over the Parquet tables, fits the logistic dose-response
(NTCP for toxicity, response for lesions) pooled and per site, tests for a site effect,
relates progression-free survival to lesion dose, summarises population kinetics, and
leaves the reports in ``<warehouse>/reports/``: ``dose_effect.md`` (also a Prefect
artifact), ``dose_effect.html`` (plots) and one HTML dosimetry report per subject.
"""

from __future__ import annotations

import pandas as pd
from lifelines.exceptions import ConvergenceError
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from rntflow.analysis.population_kinetics import population_kinetics
from rntflow.analysis.site_effect import dose_response_by_site, site_effect_test
from rntflow.analysis.survival import pfs_vs_dose
from rntflow.tasks.common import trial_config
from rntflow.tasks.reports import reports_dir, subject_reports, trial_report, write_report
from rntflow.tasks.warehouse import read_table, refresh
from rntflow.warehouse.catalog import TARE_ENGINE, dose_effect_frame

#: (endpoint, dose column) pairs fitted by the dose-effect report. Kidney toxicity is
#: analysed on BED as well as on dose (LQ repair over the dose-rate decay).
DOSE_EFFECT_ANALYSES = (
    ("nephrotoxicity", "cumulative_dose_gy"),
    ("nephrotoxicity", "cumulative_bed_gy"),
    ("xerostomia", "cumulative_dose_gy"),
    ("lesion_response", "cumulative_dose_gy"),
)


#: Radioembolisation endpoints (engine local_deposition): tumour response against the lesion's
#: mean delivered dose, liver toxicity against the non-tumour perfused liver's.
TARE_DOSE_EFFECT_ANALYSES = (
    ("lesion_response", "cumulative_dose_gy"),
    ("liver_toxicity", "cumulative_dose_gy"),
)


def _logistic_section(
    part: pd.DataFrame,
    label: str,
    dose_col: str,
    sections: list[str],
    fits: dict[str, dict],
    tables: dict[str, pd.DataFrame],
    notes: list[str],
) -> None:
    """Fit one endpoint's logistic dose-response (pooled and per site) and add its report section."""
    sections += [f"## {label}", "", f"{len(part)} outcome(s) with a value."]
    if len(part) < 4 or part["effect"].nunique() < 2:
        sections += ["Too few outcomes (or only one kind) for a logistic fit.", ""]
        return
    try:
        table = dose_response_by_site(part, dose_col=dose_col)
        fits[label] = table.to_dict("records")
        tables[label] = table
        sections += ["", markdown_table(table), ""]
        se = site_effect_test(part, dose_col=dose_col)
        note = (
            f"{label}: site effect LR = {se.lr_statistic:.2f}, dof {se.dof}, p = {se.p_value:.3f}; per-site "
            f"dose scale {', '.join(f'{k} {v:.2f}' for k, v in se.site_dose_scale.items())}"
        )
        notes.append(note)
        sections += [note, ""]
    except (ValueError, ZeroDivisionError) as exc:
        sections += [f"No fit: {exc}", ""]


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    """A DataFrame as a Markdown table (floats to ``floatfmt``; ``(none)`` when empty)."""
    if df.empty:
        return "(none)"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join(format(v, floatfmt) if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


@flow(name="dose-effect", flow_run_name="dose-effect")
def dose_effect_flow(config_path: str | None) -> dict:
    """Refresh the catalog and the dose-effect report."""
    config = trial_config(config_path)
    wh = config.warehouse_root
    refresh(wh)
    log = get_run_logger()
    de = dose_effect_frame(wh)
    sections = [f"# Dose-effect report: {config.trial_id}", ""]
    fits: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for endpoint, dose_col in DOSE_EFFECT_ANALYSES:
        part = de[(de["endpoint"] == endpoint) & de[dose_col].notna()]
        _logistic_section(
            part, f"{endpoint} vs {dose_col.removeprefix('cumulative_')}", dose_col, sections, fits, tables, notes
        )
    tare = dose_effect_frame(wh, engines=(TARE_ENGINE,))
    if not tare.empty:
        sections += ["# Radioembolisation (local-deposition doses, summed over treatments)", ""]
        for endpoint, dose_col in TARE_DOSE_EFFECT_ANALYSES:
            part = tare[(tare["endpoint"] == endpoint) & tare[dose_col].notna()]
            label = f"TARE {endpoint} {TARE_ENGINE} vs {dose_col.removeprefix('cumulative_')}"
            _logistic_section(part, label, dose_col, sections, fits, tables, notes)
    pfs = de[(de["endpoint"] == "pfs") & de["cumulative_dose_gy"].notna()]
    sections += ["## Progression-free survival vs mean lesion dose", "", f"{len(pfs)} subject(s) with a value."]
    try:
        res = pfs_vs_dose(pfs)
        cox = (
            f"Cox hazard ratio per 10 Gy {res.cox_hr_per_10gy:.2f} [{res.cox_hr_ci_per_10gy[0]:.2f}, "
            f"{res.cox_hr_ci_per_10gy[1]:.2f}], p = {res.cox_p:.3f}"
            if res.cox_converged
            else "Cox model not estimable (did not converge: events separated by dose)"
        )
        note = f"PFS vs mean lesion dose: split at {res.split_dose_gy:.1f} Gy; log-rank p = {res.logrank_p:.3f}; {cox}"
        notes.append(note)
        sections += ["", markdown_table(res.groups), "", note, ""]
        fits["pfs vs dose_gy"] = {
            "groups": res.groups.to_dict("records"),
            "cox_hr_per_10gy": res.cox_hr_per_10gy,
            "logrank_p": res.logrank_p,
        }
    except (ValueError, ArithmeticError, ConvergenceError) as exc:
        sections += [f"No analysis: {exc}", ""]
    tac = read_table(wh, "tac_fits", "trial_id = ?", [config.trial_id])
    pk = population_kinetics(tac) if not tac.empty else pd.DataFrame()
    sections += ["## Population kinetics (effective half-life, h)", "", markdown_table(pk), ""]
    text = "\n".join(sections)
    report = reports_dir(config.warehouse_dir) / "dose_effect.md"
    write_report(report, text)
    create_markdown_artifact(text, key="dose-effect", description=f"{config.trial_id} dose-effect report")
    html_report = trial_report(config, pd.concat([de, tare]) if not tare.empty else de, tables, pk, notes)
    subjects = subject_reports(config)
    log.info(
        "dose-effect report: %s and %s (%d outcome rows); %d subject reports",
        report,
        html_report,
        len(de),
        len(subjects),
    )
    return {
        "report": str(report),
        "html_report": html_report,
        "subject_reports": subjects,
        "fits": fits,
        "n_outcome_rows": int(len(de)),
        "population_kinetics": pk.to_dict("records"),
    }
