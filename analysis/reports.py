"""Self-contained HTML reports: one per subject (dosimetry) and one per trial (dose-effect).

Pure functions: pandas DataFrames in, one HTML string out. Nothing here reads or writes
files, opens the warehouse or knows Prefect; the caller queries the warehouse views and
stores the text.

This module assembles what a report shows (tables as plain text, figures from
:mod:`rntflow.analysis.figures`, the methods facts from :mod:`rntflow.analysis.methods_text`)
and renders the Jinja2 templates in ``analysis/templates`` with autoescape on: every text
value taken from the data is escaped by the template engine; the only markup passed in is
the figures' SVG (its text escaped by matplotlib's SVG writer).

The HTML is readable offline: no script, no external stylesheet, image or font. The output
is deterministic: the same input gives the same string (see :mod:`rntflow.analysis.figures`).

Subject report (:func:`subject_report_html`), after ICRU Report 96 (2021), "Dosimetry-guided
radiopharmaceutical therapy", on what a dosimetry report must state:

* identification: trial, site, subject pseudonym (nothing else about the patient),
  software and version, time of generation;
* absorbed dose per cycle and VOI with its standard uncertainty, BED, mass and TIA,
  final or provisional, and the cumulative dose over cycles;
* time-activity curves (measured points and fitted model) and dose-volume histograms;
* QA results, the calibration(s) used and a short methods section.

Trial report (:func:`trial_report_html`): logistic NTCP/TCP fits per endpoint with the
observed outcomes, population kinetics, notes and methods.

Units follow the warehouse column suffixes: Gy, MBq, MBq h (TIA), h, g, mm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from rntflow.analysis.figures import DrawnFigure, dose_effect_figure, dvh_figure, tac_figure
from rntflow.analysis.methods_text import methods_facts
from rntflow.analysis.report_values import (
    MISSING,
    NONE_TEXT,
    as_float,
    as_floats,
    cycles_of,
    general,
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

__all__ = ["NONE_TEXT", "SOFTWARE_NAME", "subject_report_html", "trial_report_html"]

#: Name shown with the software version in every report.
SOFTWARE_NAME = "rntflow"

_QA_ORDER = {"fail": 0, "warn": 1, "pass": 2}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("rntflow.analysis", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
_ENV.globals["none_text"] = NONE_TEXT


@dataclass(frozen=True)
class Table:
    """A table to render: plain-text headers and cells (escaped by the template).

    Attributes
    ----------
    headers : tuple of str
        Column headers.
    rows : list of list of str
        Cell texts, one list per row.
    numeric : tuple of bool
        Right-align the column (numbers).
    row_classes : tuple of str
        CSS class per row (``fail``, ``warn``, ``unused`` or ``""``); empty for none.
    """

    headers: tuple[str, ...]
    rows: list[list[str]]
    numeric: tuple[bool, ...]
    row_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FigureView:
    """A figure to render: trusted SVG markup and a plain-text caption."""

    svg: Markup
    caption: str

    @classmethod
    def of(cls, drawn: DrawnFigure, caption: str | None = None) -> FigureView:
        """View of a :class:`~rntflow.analysis.figures.DrawnFigure`.

        matplotlib wrote the SVG and escaped the text in it, so it is marked safe here,
        the one place report markup is not escaped by the template.
        """
        return cls(Markup(drawn.svg), drawn.caption if caption is None else caption)


@dataclass(frozen=True)
class CycleView:
    """What the subject report shows for one cycle."""

    cycle: int
    administered_activity_mbq: str | None
    doses: Table
    tac: FigureView | None
    fits: Table | None
    dvh: FigureView | None


@dataclass(frozen=True)
class TrialSection:
    """One dose-effect section of the trial report: fits table and plot."""

    label: str
    fits: Table
    figure: FigureView


def _render(template: str, **context: object) -> str:
    return _ENV.get_template(template).render(**context)


def _header(rows: Sequence[tuple[str, object]], software_version: object, generated_at: object) -> list:
    return [(name, text(value)) for name, value in rows] + [
        ("Software", f"{SOFTWARE_NAME} {text(software_version)}"),
        ("Generated at", text(generated_at)),
    ]


def _frame_table(df: pd.DataFrame | Sequence[Mapping[str, object]] | None) -> Table:
    """Every column of ``df`` (or of a list of records), 4 significant digits."""
    if df is not None and not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(list(df))
    if df is None or df.empty or len(df.columns) == 0:
        return Table((), [], ())
    numeric = tuple(pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns)
    rows = [[general(v) for v in rec] for rec in df.itertuples(index=False, name=None)]
    return Table(tuple(str(c) for c in df.columns), rows, numeric)


# ----------------------------------------------------------------------------- subject report
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
_QA_COLS = (
    "check_name",
    "scope",
    "scope_id",
    "status",
    "value_found",
    "value_expected",
    "message",
    "subject_id",
    "cycle",
)
#: (column, header, format or None for text) of the calibration table, names as in the
#: warehouse ``calibrations`` table.
_CAL_FIELDS = (
    ("calibration_id", "calibration", None),
    ("site_id", "site", None),
    ("camera_id", "camera", None),
    ("radionuclide", "radionuclide", None),
    ("protocol", "protocol", None),
    ("valid_from", "valid from", None),
    ("valid_until", "valid until", None),
    ("sensitivity_cps_per_mbq", "sensitivity (cps/MBq)", ".4g"),
    ("sensitivity_sd_cps_per_mbq", "u(sensitivity) (cps/MBq)", ".2g"),
    ("bqml_scale_factor", "Bq/mL scale factor", ".4g"),
    ("harmonising_filter_fwhm_mm", "harmonising filter FWHM (mm)", ".3g"),
    ("rc_fwhm_mm", "recovery-curve FWHM (mm)", ".3g"),
    ("drift_pct", "drift (%)", ".2f"),
    ("superseded_by", "superseded by", None),
)
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
_QA_HEADERS = ("status", "check", "scope", "value found", "value expected", "message")


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


def _qa_table(qa: pd.DataFrame) -> tuple[Table, str]:
    """QA results, failures first, then warnings, then passes; and the counts."""
    if qa.empty:
        return Table(_QA_HEADERS, [], (False,) * 6), ""
    status = qa["status"].map(lambda v: "" if is_missing(v) else str(v).lower())
    qa = qa.assign(
        _order=status.map(lambda s: _QA_ORDER.get(s, 3)),
        _status=status,
        _name=qa["check_name"].map(lambda v: "" if is_missing(v) else str(v)),
        _scope=qa["scope_id"].map(lambda v: "" if is_missing(v) else str(v)),
    )
    qa = qa.sort_values(["_order", "_name", "_scope"], kind="stable")
    counts = qa["_status"].value_counts()
    summary = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("fail", "warn", "pass"))
    rows = [
        [text(r[c]) for c in ("status", "check_name", "scope_id", "value_found", "value_expected", "message")]
        for _, r in qa.iterrows()
    ]
    classes = tuple(s if s in ("fail", "warn") else "" for s in qa["_status"])
    return Table(_QA_HEADERS, rows, (False,) * 6, classes), summary


def _calibration_table(calibrations: pd.DataFrame, used: list[str]) -> tuple[Table, list[str]]:
    """The calibrations whose id is in ``used``, and the used ids not found."""
    headers, numeric = tuple(h for _, h, _ in _CAL_FIELDS), tuple(f is not None for _, _, f in _CAL_FIELDS)
    if not used:
        return Table(headers, [], numeric), []
    cal = calibrations[calibrations["calibration_id"].map(lambda v: not is_missing(v) and str(v) in used)]
    cal = cal.assign(_id=cal["calibration_id"].astype(str)).sort_values("_id", kind="stable")
    rows = [
        [text(r[col]) if fmt is None else number(r[col], fmt) for col, _, fmt in _CAL_FIELDS] for _, r in cal.iterrows()
    ]
    return Table(headers, rows, numeric), [c for c in used if c not in set(cal["_id"])]


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
    qa = only_subject(with_columns(qa_checks, _QA_COLS), subject_id)
    cals = latest_versions(with_columns(calibrations, [c for c, _, _ in _CAL_FIELDS]), ("calibration_id",))

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
    qa_table, qa_summary = _qa_table(qa)
    used = sorted({str(v) for v in pd.concat([doses["calibration_id"], points["calibration_id"]]) if not is_missing(v)})
    cal_table, not_found = _calibration_table(cals, used)
    return _render(
        "subject_report.html.j2",
        title=f"Dosimetry report \u2013 {trial_id} \u2013 {subject_id}",
        header=_header(
            [("Trial", trial_id), ("Site", site_id), ("Subject (pseudonym)", subject_id)],
            software_version,
            generated_at,
        ),
        cycles=cycles,
        cumulative=_cumulative_table(doses),
        qa=qa_table,
        qa_summary=qa_summary,
        calibrations_used=used,
        calibrations=cal_table,
        calibrations_not_found=not_found,
        facts=methods_facts(),
    )


# ----------------------------------------------------------------------------- trial report
_DE_COLS = (
    "site_id",
    "subject_id",
    "endpoint",
    "target_voi",
    "engine",
    "method",
    "cumulative_dose_gy",
    "cumulative_bed_gy",
    "effect",
)


def _dose_column(label: str) -> str | None:
    """Dose column of a section label ``'<endpoint> vs <dose>'`` (``cumulative_`` prefixed)."""
    if " vs " not in label:
        return None
    match = re.match(r"\s*([A-Za-z0-9_]+)", label.rsplit(" vs ", 1)[1])
    if match is None:
        return None
    col = match.group(1)
    return col if col.startswith("cumulative_") else f"cumulative_{col}"


def _observed(dose_effect: pd.DataFrame, label: str, dose_col: str | None) -> tuple[pd.DataFrame, list[str]]:
    """Rows of ``dose_effect`` that belong to ``label`` and notes on the selection.

    The endpoint (and, when named, the engine and method) are the words of the label
    before ``' vs '`` that match values of those columns.
    """
    notes: list[str] = []
    empty = dose_effect.iloc[0:0].assign(_dose=pd.Series(dtype=float), _effect=pd.Series(dtype=float))
    if dose_col is None:
        return empty, ["no dose column in the label (expected '<endpoint> vs <dose>')"]
    if dose_col not in dose_effect.columns:
        return empty, [f"column {dose_col} not in the data"]
    tokens = set(re.findall(r"[A-Za-z0-9_]+", label.rsplit(" vs ", 1)[0]))
    data = dose_effect
    for col in ("endpoint", "engine", "method"):
        values = {str(v) for v in data[col] if not is_missing(v)}
        hit = values & tokens
        if hit:
            data = data[data[col].map(lambda v, hit=hit: not is_missing(v) and str(v) in hit)]
        elif col == "endpoint" and values:
            return empty, ["no outcome of the label's endpoint in the data: outcomes not shown"]
    data = data.assign(_dose=as_floats(data[dose_col]), _effect=as_floats(data["effect"]))
    data = data[np.isfinite(data["_dose"]) & np.isfinite(data["_effect"])]
    for col in ("engine", "method"):
        values = sorted({str(v) for v in data[col] if not is_missing(v)})
        if values:
            notes.append(f"{col}: {', '.join(values)}")
    return data, notes


def _trial_section(
    i: int, label: str, de: pd.DataFrame, fits: pd.DataFrame | None, curves: Sequence[Mapping[str, object]]
) -> TrialSection:
    """Fits table and dose-effect plot of section ``i`` (1-based)."""
    dose_col = _dose_column(label)
    data, sel_notes = _observed(de, label, dose_col)
    drawn = dose_effect_figure(label, data, dose_col, curves, f"{SOFTWARE_NAME}-de-{i}")
    n_effect = int((data["_effect"] > 0.5).sum()) if not data.empty else 0
    caption = [f"{len(data)} observed outcome(s), {n_effect} with effect", *sel_notes, *drawn.notes]
    return TrialSection(label, _frame_table(fits), FigureView.of(drawn, "; ".join(caption)))


def trial_report_html(
    *,
    trial_id: str,
    generated_at: str,
    software_version: str,
    dose_effect: pd.DataFrame,
    fits: Mapping[str, pd.DataFrame],
    curves: Mapping[str, Sequence[Mapping[str, object]]],
    population_kinetics: pd.DataFrame,
    notes: Sequence[str] | None = None,
) -> str:
    """Per-trial dose-effect report as one self-contained HTML page.

    Parameters
    ----------
    trial_id : str
        Trial shown in the header.
    generated_at : str
        Time of generation as the caller wants it shown.
    software_version : str
        Version of the software.
    dose_effect : pandas.DataFrame
        Rows of the warehouse ``dose_effect`` view: ``site_id, subject_id, endpoint,
        target_voi, engine, method, cumulative_dose_gy, cumulative_bed_gy`` (Gy) and
        ``effect`` (0/1).
    fits : mapping of str to pandas.DataFrame
        Section label (``'<endpoint> vs <dose>'``, e.g. ``'nephrotoxicity vs dose_gy'``)
        to the table of fits shown as is (e.g. :func:`rntflow.analysis.dose_effect.dose_response_by_site`).
    curves : mapping of str to list of dict
        Same labels to the curves to draw: ``{"label": str, "d50_gy": float (Gy),
        "gamma50": float}`` (e.g. pooled and per site). Curves with a missing or
        non-positive D50 are listed, not drawn.
    population_kinetics : pandas.DataFrame
        Population kinetics table, shown as is (e.g. :func:`rntflow.analysis.dose_effect.population_kinetics`).
    notes : list of str, optional
        Paragraphs shown (escaped) after the sections.

    Returns
    -------
    str
        The HTML document.

    Notes
    -----
    Sections are the labels of ``fits`` followed by the labels only in ``curves``. The
    plot of a section shows the outcomes of ``dose_effect`` whose ``endpoint`` is a word of
    the label before ``' vs '`` (and, if the label names them, that engine and method) on
    the dose column named after ``' vs '`` with ``cumulative_`` prefixed. ``dose_effect``
    holds one row per outcome *and engine*: filter it to one engine per target (or name
    the engine in the label), or the points repeat; the engines and methods shown are
    listed under each plot.
    """
    de = with_columns(dose_effect, _DE_COLS)
    fits = dict(fits or {})
    curves = dict(curves or {})
    labels = list(fits) + [label for label in curves if label not in fits]
    sections = [
        _trial_section(i + 1, str(label), de, fits.get(label), list(curves.get(label) or []))
        for i, label in enumerate(labels)
    ]
    return _render(
        "trial_report.html.j2",
        title=f"Dose-effect report \u2013 {trial_id}",
        header=_header([("Trial", trial_id)], software_version, generated_at) + [("Outcome rows", str(len(de)))],
        sections=sections,
        population_kinetics=_frame_table(population_kinetics),
        notes=[str(n) for n in notes or ()],
        facts=methods_facts(),
    )
