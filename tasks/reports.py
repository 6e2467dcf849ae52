"""Tasks that write the offline HTML reports (thin wrappers of :mod:`rntflow.analysis.subject_report` and :mod:`rntflow.analysis.trial_report`).

Files: ``<warehouse>/reports/subjects/<site>/<subject>.html`` (one per subject: doses with
uncertainties, TACs with fits, DVHs, QA, calibrations, methods and software version, as
ICRU 96 asks) and ``<warehouse>/reports/dose_effect.html`` (the trial's dose-effect plots
and tables). Each file is written atomically (:mod:`rntflow.core.files`), so a reader never
sees half a report; re-running rewrites them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import task

from rntflow.analysis.subject_report import subject_report_html
from rntflow.analysis.tare_report import tare_subject_report_html
from rntflow.analysis.trial_report import trial_report_html
from rntflow.core.config import TrialConfig
from rntflow.core.files import write_text_atomic
from rntflow.core.version import RNTFLOW_VERSION as __version__
from rntflow.warehouse.writer import read_latest

#: Tables a subject report draws on.
SUBJECT_TABLES = ("voi_doses", "tac_fits", "voi_timepoints", "dvhs", "qa_checks", "calibrations")
#: Tables a radioembolisation subject report draws on (besides QA and calibrations).
TARE_TABLES = ("tare_plans", "tare_doses", "tare_predicted_delivered")


def reports_dir(warehouse_dir: str | Path) -> Path:
    return Path(warehouse_dir) / "reports"


def write_report(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`rntflow.core.files.write_text_atomic`)."""
    write_text_atomic(path, text)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


@task(name="subject-reports")
def subject_reports(config: TrialConfig) -> list[str]:
    """Write the HTML report of every subject with doses (177Lu or TARE); returns the paths."""
    wh = config.warehouse_root
    tables = {t: read_latest(wh, t, "trial_id = ?", [config.trial_id]) for t in SUBJECT_TABLES + TARE_TABLES}
    cal = tables["calibrations"]
    written = []
    for kind, table in (("lu", "voi_doses"), ("tare", "tare_plans"), ("tare", "tare_doses")):
        for (site_id, subject_id), _ in tables[table].groupby(["site_id", "subject_id"], sort=True):
            path = reports_dir(config.warehouse_dir) / "subjects" / site_id / f"{subject_id}.html"
            if str(path) in written:
                continue

            def mine(df: pd.DataFrame, subject_id: str = subject_id) -> pd.DataFrame:
                return df[df["subject_id"] == subject_id] if "subject_id" in df else df.iloc[0:0]

            common = {
                "trial_id": config.trial_id,
                "site_id": site_id,
                "subject_id": subject_id,
                "qa_checks": mine(tables["qa_checks"]),
                "calibrations": cal[cal["site_id"] == site_id],
                "software_version": __version__,
                "generated_at": _now(),
            }
            if kind == "lu":
                text = subject_report_html(
                    voi_doses=mine(tables["voi_doses"]),
                    tac_fits=mine(tables["tac_fits"]),
                    voi_timepoints=mine(tables["voi_timepoints"]),
                    dvhs=mine(tables["dvhs"]),
                    **common,
                )
            else:
                text = tare_subject_report_html(
                    plans=mine(tables["tare_plans"]),
                    doses=mine(tables["tare_doses"]),
                    predicted_delivered=mine(tables["tare_predicted_delivered"]),
                    **common,
                )
            write_report(path, text)
            written.append(str(path))
    return written


@task(name="trial-report")
def trial_report(
    config: TrialConfig,
    dose_effect: pd.DataFrame,
    fits: dict[str, pd.DataFrame],
    population_kinetics: pd.DataFrame,
    notes: list[str],
) -> str:
    """Write ``<warehouse>/reports/dose_effect.html``: plots of every fitted endpoint; returns its path."""
    curves = {
        label: [
            {"label": r["site_id"], "d50_gy": r["d50_gy"], "gamma50": r["gamma50"]}
            for r in table.to_dict("records")
            if r.get("converged")
        ]
        for label, table in fits.items()
    }
    text = trial_report_html(
        trial_id=config.trial_id,
        generated_at=_now(),
        software_version=__version__,
        dose_effect=dose_effect,
        fits=fits,
        curves=curves,
        population_kinetics=population_kinetics,
        notes=notes,
    )
    path = reports_dir(config.warehouse_dir) / "dose_effect.html"
    write_report(path, text)
    return str(path)
