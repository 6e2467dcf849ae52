"""The per-trial dose-effect report: fitted dose-effect curves with the observed outcomes, as HTML.

One self-contained HTML page per trial: logistic NTCP/TCP fits per endpoint (tables as
given, e.g. from :func:`rntflow.analysis.site_effect.dose_response_by_site`) with a plot of
the fitted curves over the observed outcomes, population kinetics, notes and methods.

Pure: DataFrames in, one HTML string out; the page machinery (tables, figures, header,
rendering with autoescape) is :mod:`rntflow.analysis.report_page`. Doses in Gy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rntflow.analysis.figures import dose_effect_figure
from rntflow.analysis.methods_text import methods_facts
from rntflow.analysis.report_page import SOFTWARE_NAME, FigureView, Table, frame_table, header_rows, render_page
from rntflow.analysis.report_values import as_floats, is_missing, with_columns
from rntflow.warehouse.catalog import TARE_ENGINE

__all__ = ["trial_report_html"]


@dataclass(frozen=True)
class TrialSection:
    """One dose-effect section of the trial report: fits table and plot."""

    label: str
    fits: Table
    figure: FigureView


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
        elif col == "engine" and TARE_ENGINE in values:
            # radioembolisation doses are shown only under a label that names their engine
            data = data[data[col].map(lambda v: str(v) != TARE_ENGINE)]
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
    return TrialSection(label, frame_table(fits), FigureView.of(drawn, "; ".join(caption)))


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
        to the table of fits shown as is (e.g. :func:`rntflow.analysis.site_effect.dose_response_by_site`).
    curves : mapping of str to list of dict
        Same labels to the curves to draw: ``{"label": str, "d50_gy": float (Gy),
        "gamma50": float}`` (e.g. pooled and per site). Curves with a missing or
        non-positive D50 are listed, not drawn.
    population_kinetics : pandas.DataFrame
        Population kinetics table, shown as is (e.g. :func:`rntflow.analysis.population_kinetics.population_kinetics`).
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
    return render_page(
        "trial_report.html.j2",
        title=f"Dose-effect report \u2013 {trial_id}",
        header=header_rows([("Trial", trial_id)], software_version, generated_at) + [("Outcome rows", str(len(de)))],
        sections=sections,
        population_kinetics=frame_table(population_kinetics),
        notes=[str(n) for n in notes or ()],
        facts=methods_facts(),
    )
