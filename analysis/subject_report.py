"""The per-subject dosimetry report: one self-contained HTML page per subject (177Lu and alike).

After ICRU Report 96 (2021), "Dosimetry-guided radiopharmaceutical therapy", on what a
dosimetry report must state:

* identification: trial, site, subject pseudonym (nothing else about the patient),
  software and version, time of generation;
* absorbed dose per cycle and VOI with its standard uncertainty, BED, mass and TIA,
  final or provisional, and the cumulative dose over cycles;
* time-activity curves (measured points and fitted model) and dose-volume histograms;
* QA results, the calibration(s) used and a short methods section.

Pure: DataFrames in, one HTML string out; the page machinery (tables, figures, header,
QA and calibration tables, rendering with autoescape) is :mod:`rntflow.analysis.report_page`.
Units follow the warehouse column suffixes: Gy, MBq, MBq h (TIA), h, g, mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rntflow.analysis.figures import dvh_figure, tac_figure
from rntflow.analysis.methods_text import methods_facts
from rntflow.analysis.report_page import (
    CAL_FIELDS,
    QA_COLS,
    SOFTWARE_NAME,
    FigureView,
    Table,
    calibration_table,
    header_rows,
    qa_table,
    render_page,
)
from rntflow.analysis.report_values import (
    MISSING,
    as_float,
    as_floats,
    cycles_of,
    is_missing,
    is_true,
    latest_versions,
    method_order,
    normalise_keys,
    number,
    only_subject,
    text,
    with_columns,
)

__all__ = ["subject_report_html"]


@dataclass(frozen=True)
class CycleView:
    """What the subject report shows for one cycle."""

    cycle: int
    administered_activity_mbq: str | None
    doses: Table
    tac: FigureView | None
    fits: Table | None
    dvh: FigureView | None


_DOSE_COLS = (
    "site_id",
    "subject_id",
    "cycle",
    "voi",
    "engine",
    "method",
    "dose_gy",
    "dose_sd_gy",
    "bed_gy",
    "mass_g",
    "tia_mbq_h",
    "administered_activity_mbq",
    "calibration_id",
    "final",
)
_TP_COLS = (
    "subject_id",
    "cycle",
    "voi",
    "study_id",
    "t_h",
    "activity_mbq",
    "activity_sd_mbq",
    "volume_ml",
    "mass_g",
    "recovery_coefficient",
    "calibration_id",
)
_FIT_COLS = (
    "subject_id",
    "cycle",
    "voi",
    "model",
    "params_json",
    "n_timepoints",
    "aicc",
    "r2",
    "tia_mbq_h",
    "tia_sd_mbq_h",
    "effective_half_life_h",
    "fallback_reason",
)
_DVH_COLS = ("subject_id", "cycle", "voi", "engine", "dose_bin_gy", "volume_fraction")
_DOSE_HEADERS = (
    "VOI",
    "engine",
    "method",
    "dose (Gy)",
    "u (Gy)",
    "u (%)",
    "BED (Gy)",
    "mass (g)",
    "TIA (MBq h)",
    "status",
    "in cumulative",
)
_DOSE_NUMERIC = (False, False, False, True, True, True, True, True, True, False, False)
_FIT_HEADERS = ("VOI", "model", "points", "AICc", "R\u00b2", "TIA (MBq h)", "u TIA (MBq h)", "T_eff (h)", "note")
_CUMULATIVE_HEADERS = ("VOI", "engine", "cycles", "method", "dose (Gy)", "u (Gy)", "u (%)", "BED (Gy)", "status")
_CUMULATIVE_NUMERIC = (False,) * 4 + (True,) * 4 + (False,)


def _dose_table(doses: pd.DataFrame) -> Table:
    """Per-cycle dose table (rows of methods not used in the cumulative dose greyed)."""
    doses = doses.assign(_rank=doses["method"].map(method_order))
    doses = doses.sort_values(
        ["voi", "engine", "_rank"], key=lambda s: s.astype(str) if s.name != "_rank" else s, kind="stable"
    )
    rows, classes = [], []
    best = doses.groupby(["voi", "engine"], dropna=False)["_rank"].transform("min")
    for (_, r), used in zip(doses.iterrows(), doses["_rank"] == best):
        dose, sd = as_float(r["dose_gy"]), as_float(r["dose_sd_gy"])
        rel = 100.0 * sd / dose if math.isfinite(dose) and dose > 0 and math.isfinite(sd) else math.nan
        rows.append(
            [
                r["voi"],
                text(r["engine"]),
                text(r["method"]),
                number(dose, ".2f"),
                number(sd, ".2f"),
                number(rel, ".1f"),
                number(r["bed_gy"], ".2f"),
                number(r["mass_g"], ".1f"),
                number(r["tia_mbq_h"], ".1f"),
                "final" if is_true(r["final"]) else "provisional",
                "yes" if used else "no",
            ]
        )
        classes.append("" if used else "unused")
    return Table(_DOSE_HEADERS, rows, _DOSE_NUMERIC, tuple(classes))


def _fit_table(points: pd.DataFrame, fits: pd.DataFrame) -> Table:
    """One cycle's TAC fits (one row per VOI with a fit or points)."""
    rows = []
    for voi in sorted(set(points["voi"]) | set(fits["voi"])):
        fit_rows = fits[fits["voi"] == voi]
        n_points = int((points["voi"] == voi).sum())
        if fit_rows.empty:
            rows.append([voi, "no fit", str(n_points)] + [MISSING] * 6)
            continue
        f = fit_rows.iloc[-1].to_dict()
        rows.append(
            [
                voi,
                text(f.get("model")),
                text(f.get("n_timepoints")),
                number(f.get("aicc"), ".4g"),
                number(f.get("r2"), ".3f"),
                number(f.get("tia_mbq_h"), ".1f"),
                number(f.get("tia_sd_mbq_h"), ".1f"),
                number(f.get("effective_half_life_h"), ".1f"),
                text(f.get("fallback_reason")),
            ]
        )
    return Table(_FIT_HEADERS, rows, (False, False, True, True, True, True, True, True, False))


def _cumulative_table(doses: pd.DataFrame) -> Table:
    """Cumulative dose per VOI and engine: one method per cycle (:mod:`rntflow.core.methods`)."""
    d = doses[doses["cycle"].notna()].assign(_rank=doses["method"].map(method_order))
    rows: list[list[str]] = []
    if d.empty:
        return Table(_CUMULATIVE_HEADERS, rows, _CUMULATIVE_NUMERIC)
    d = d.sort_values("_rank", kind="stable").drop_duplicates(["voi", "engine", "cycle"], keep="first")
    d = d.assign(engine=d["engine"].map(text))
    for (voi, engine), part in sorted(d.groupby(["voi", "engine"]), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        part = part.sort_values("cycle")
        dose, sd, bed = (as_floats(part[c]).to_numpy() for c in ("dose_gy", "dose_sd_gy", "bed_gy"))
        total = float(dose.sum())
        total_sd = float(math.sqrt(np.sum(sd**2)))
        rel = 100.0 * total_sd / total if math.isfinite(total) and total > 0 and math.isfinite(total_sd) else math.nan
        methods = sorted({str(m) for m in part["method"] if not is_missing(m)})
        method = methods[0] if len(methods) == 1 else ("mixed" if methods else MISSING)
        final = all(is_true(v) for v in part["final"])
        rows.append(
            [
                str(voi),
                str(engine),
                ", ".join(str(int(c)) for c in part["cycle"]),
                method,
                number(total, ".2f"),
                number(total_sd, ".2f"),
                number(rel, ".1f"),
                number(float(bed.sum()), ".2f"),
                "final" if final else "provisional",
            ]
        )
    return Table(_CUMULATIVE_HEADERS, rows, _CUMULATIVE_NUMERIC)


def _cycle_view(
    cycle: int, doses: pd.DataFrame, points: pd.DataFrame, fits: pd.DataFrame, dvh: pd.DataFrame
) -> CycleView:
    """Tables and figures of one cycle (frames already restricted to it)."""
    activity = [a for a in doses["administered_activity_mbq"].map(as_float) if math.isfinite(a)]
    tac = fit_table = dvh_view = None
    if not (points.empty and fits.empty):
        tac = FigureView.of(tac_figure(points, fits, f"{SOFTWARE_NAME}-tac-{cycle}"))
        fit_table = _fit_table(points, fits)
    if not dvh.empty:
        dvh_view = FigureView.of(dvh_figure(dvh, f"{SOFTWARE_NAME}-dvh-{cycle}"))
    return CycleView(cycle, f"{activity[0]:.0f}" if activity else None, _dose_table(doses), tac, fit_table, dvh_view)


def subject_report_html(
    *,
    trial_id: str,
    site_id: str,
    subject_id: str,
    voi_doses: pd.DataFrame,
    tac_fits: pd.DataFrame,
    voi_timepoints: pd.DataFrame,
    dvhs: pd.DataFrame,
    qa_checks: pd.DataFrame,
    calibrations: pd.DataFrame,
    software_version: str,
    generated_at: str,
) -> str:
    """Per-subject dosimetry report (ICRU Report 96 contents) as one self-contained HTML page.

    Parameters
    ----------
    trial_id, site_id, subject_id : str
        Identification; ``subject_id`` is the trial pseudonym, the only subject data shown
        besides the dosimetry.
    voi_doses : pandas.DataFrame
        Rows of the warehouse ``voi_doses`` table (dose, uncertainty and BED in Gy, mass in
        g, TIA in MBq h, administered activity in MBq).
    tac_fits : pandas.DataFrame
        Rows of ``tac_fits`` (one fit per cycle and VOI; ``params_json`` see
        :func:`rntflow.analysis.tac_curves.tac_curve`).
    voi_timepoints : pandas.DataFrame
        Rows of ``voi_timepoints`` (``t_h`` in h, ``activity_mbq``/``activity_sd_mbq`` in MBq).
    dvhs : pandas.DataFrame
        Rows of ``dvhs`` (``dose_bin_gy`` in Gy, ``volume_fraction`` 0-1).
    qa_checks : pandas.DataFrame
        QA results to list (failures first, then warnings, then passes).
    calibrations : pandas.DataFrame
        Rows of ``calibrations``; those whose ``calibration_id`` appears in ``voi_doses`` or
        ``voi_timepoints`` are listed.
    software_version : str
        Version of the software that computed the results.
    generated_at : str
        Time of generation as the caller wants it shown (e.g. ISO 8601 UTC).

    Returns
    -------
    str
        The HTML document.

    Notes
    -----
    Rows whose ``subject_id`` is another subject's are ignored (rows without a subject,
    e.g. site-level QA checks, are kept). When a frame holds several ``result_version`` rows
    per natural key only the latest is used. Missing optional columns and nulls are shown
    as "\u2013"; empty sections as "(none)". Per cycle: one TAC figure (organs and lesions
    panels, every VOI with a fit or measured points) with a table of the fits, and one DVH
    figure (every VOI with DVH rows).
    """
    doses = normalise_keys(only_subject(with_columns(voi_doses, _DOSE_COLS), subject_id))
    doses = latest_versions(doses, ("subject_id", "cycle", "voi", "engine", "method"))
    points = normalise_keys(only_subject(with_columns(voi_timepoints, _TP_COLS), subject_id))
    points = latest_versions(points, ("subject_id", "cycle", "voi", "t_h"))
    fits = normalise_keys(only_subject(with_columns(tac_fits, _FIT_COLS), subject_id))
    fits = latest_versions(fits, ("subject_id", "cycle", "voi"))
    dvh = normalise_keys(only_subject(with_columns(dvhs, _DVH_COLS), subject_id))
    dvh = latest_versions(
        dvh, ("subject_id", "cycle", "voi", "engine", "bin_index" if "bin_index" in dvh else "dose_bin_gy")
    )
    qa = only_subject(with_columns(qa_checks, QA_COLS), subject_id)
    cals = latest_versions(with_columns(calibrations, [c for c, _, _ in CAL_FIELDS]), ("calibration_id",))

    cycles = [
        _cycle_view(
            c,
            doses[doses["cycle"] == c],
            points[points["cycle"] == c],
            fits[fits["cycle"] == c],
            dvh[dvh["cycle"] == c],
        )
        for c in cycles_of(doses, points, fits, dvh)
    ]
    qa_view, qa_summary = qa_table(qa)
    used = sorted({str(v) for v in pd.concat([doses["calibration_id"], points["calibration_id"]]) if not is_missing(v)})
    cal_table, not_found = calibration_table(cals, used)
    return render_page(
        "subject_report.html.j2",
        title=f"Dosimetry report \u2013 {trial_id} \u2013 {subject_id}",
        header=header_rows(
            [("Trial", trial_id), ("Site", site_id), ("Subject (pseudonym)", subject_id)],
            software_version,
            generated_at,
        ),
        cycles=cycles,
        cumulative=_cumulative_table(doses),
        qa=qa_view,
        qa_summary=qa_summary,
        calibrations_used=used,
        calibrations=cal_table,
        calibrations_not_found=not_found,
        facts=methods_facts(),
    )
