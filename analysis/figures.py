"""The report figures, drawn with matplotlib and returned as inline SVG text.

Figures are :class:`matplotlib.figure.Figure` objects (no ``pyplot``: no global figure
registry, any backend works) rendered to SVG without XML prolog, doctype or metadata, so
they can sit inside an HTML page. Text in an SVG is escaped by matplotlib's SVG writer;
data text is also protected from mathtext parsing (``$`` escaped).

The output is deterministic: the SVG ids are salted with a fixed per-figure string, the
SVG carries no date and the vertical jitter of the dose-effect plots comes from a seeded
generator.

Units: time in h, activity in MBq, dose in Gy, volume in % of the VOI.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rntflow.analysis.report_values import MISSING, as_float, as_floats, is_missing
from rntflow.analysis.tac_curves import SINGLE_TIME_POINT_TAC_MODELS, tac_curve
from rntflow.physics.ntcp import logistic_ntcp as ntcp_logistic

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: it costs ~0.5 s to import
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colour-blind-safe qualitative palette (Okabe and Ito 2008).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
#: Half-width of the vertical jitter of 0/1 outcomes in the dose-effect plots.
JITTER = 0.04
#: Samples of a drawn curve.
_CURVE_POINTS = 241
_FONT = 8
_SVG_RC = {"svg.fonttype": "none", "svg.id": None}
_SVG_METADATA = {"Date": None, "Creator": None, "Type": None, "Format": None}
_TAC_CAPTION = (
    "Points: measured activity (error bars: standard uncertainty); lines: fitted model "
    "(dashed: single-time-point). Fit details in the table below."
)


@dataclass(frozen=True)
class DrawnFigure:
    """One drawn figure.

    Attributes
    ----------
    svg : str
        ``<svg ...>...</svg>`` (see :func:`svg_figure`).
    caption : str
        Plain-text caption (escaped by the template).
    notes : tuple of str
        What could not be drawn as asked (plain text), for the caption.
    """

    svg: str
    caption: str = ""
    notes: tuple[str, ...] = ()


def svg_figure(fig: Figure, *, salt: str = "rntflow") -> str:
    """Render a matplotlib figure as an inline ``<svg>`` element.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (any backend; created without ``pyplot``).
    salt : str, optional
        Salt of the SVG element ids. Give every figure of one HTML page its own salt so
        that ids stay unique in the page; the same salt gives the same ids (determinism).

    Returns
    -------
    str
        ``<svg ...>...</svg>`` without the XML prolog, doctype or metadata. Text is kept as
        ``<text>`` elements (``svg.fonttype = 'none'``), escaped by matplotlib.

    Notes
    -----
    The SVG rc settings (``svg.hashsalt``, ``svg.fonttype``) are set only for the duration
    of the call with :func:`matplotlib.rc_context`, which restores them afterwards.
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({**_SVG_RC, "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata=dict(_SVG_METADATA))
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return text.strip()


# ----------------------------------------------------------------------------- helpers
def _plot_text(text: object) -> str:
    """Data text for a plot: ``$`` escaped so matplotlib does not parse it as mathtext."""
    return str(text).replace("$", r"\$")


def _legend_label(text: str) -> str:
    """matplotlib hides legend labels starting with ``_``; keep them visible."""
    return " " + text if text.startswith("_") else text


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _linestyle(i: int) -> str:
    return ("-", "--", ":", "-.")[(i // len(PALETTE)) % 4]


def _new_axes(width_in: float, height_in: float) -> tuple[Figure, Axes]:
    """A figure of ``width_in`` x ``height_in`` inches with one styled axes."""
    from matplotlib.figure import Figure

    # fixed margins: a layout engine would cost more than the drawing (~4x per figure)
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.17, right=0.97, bottom=0.16, top=0.9)
    ax.tick_params(labelsize=_FONT - 1)
    ax.grid(True, color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    return fig, ax


def _panel_figure(n_panels: int) -> Figure:
    """A figure for ``n_panels`` side-by-side panels (organs, lesions)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(n_panels, 1), 3.4), dpi=100)
    fig.subplots_adjust(left=0.09 if n_panels > 1 else 0.16, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    return fig


def _style_panel(ax: Axes, name: str, xlabel: str, ylabel: str) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.5)
    ax.tick_params(labelsize=_FONT - 1)
    ax.set_xlabel(xlabel, fontsize=_FONT)
    ax.set_ylabel(ylabel, fontsize=_FONT)
    ax.set_title(name, fontsize=_FONT + 1)


def panels(vois: Sequence[str]) -> list[tuple[str, list[str]]]:
    """VOIs split into an organ panel and a lesion panel (lesions are far hotter)."""
    lesions = [v for v in vois if v.startswith("Lesion")]
    organs = [v for v in vois if v not in lesions]
    return [(name, group) for name, group in (("Organs", organs), ("Lesions", lesions)) if group]


# ----------------------------------------------------------------------------- TACs
def _tac_limits(points: pd.DataFrame, fit: Mapping[str, object] | None) -> float:
    """Last time (h) to base the TAC time axis on."""
    if not points.empty:
        t_last = float(points["t_h"].max())
        if t_last > 0:
            return t_last
    if fit is not None:
        params_json = fit.get("params_json")
        if isinstance(params_json, str):
            try:
                t0 = as_float(json.loads(params_json).get("t_h"))
            except (ValueError, AttributeError):
                t0 = math.nan
            if math.isfinite(t0) and t0 > 0:
                return t0
        t_eff = as_float(fit.get("effective_half_life_h"))
        if math.isfinite(t_eff) and t_eff > 0:
            return 3.0 * t_eff
    return 168.0


def _draw_tac(ax: Axes, voi: str, points: pd.DataFrame, fit: Mapping[str, object] | None, i: int) -> list[str]:
    """Measured points and fitted curve of one VOI on ``ax``; returns notes for the caption."""
    points = points.assign(**{c: as_floats(points[c]) for c in ("t_h", "activity_mbq", "activity_sd_mbq")})
    points = points[np.isfinite(points["t_h"]) & np.isfinite(points["activity_mbq"])].sort_values("t_h")
    colour, notes, curve_drawn = _colour(i), [], False
    model = None if fit is None or is_missing(fit.get("model")) else str(fit.get("model"))
    if fit is not None:
        t_grid = np.linspace(0.0, 1.5 * _tac_limits(points, fit), _CURVE_POINTS)
        params = fit.get("params_json")
        try:
            if model is None or is_missing(params):
                raise ValueError("no model parameters")
            values = tac_curve(model, params, t_grid)  # type: ignore[arg-type]
        except ValueError:
            notes.append(
                f"{voi}: "
                + (
                    "trapezoid TIA: no closed form, straight segments through the points"
                    if model == "trapezoid"
                    else f"model {model or '(unknown)'} not drawable, straight segments"
                )
            )
        else:
            style = "--" if model in SINGLE_TIME_POINT_TAC_MODELS else _linestyle(i)
            ax.plot(t_grid, values, style, color=colour, linewidth=1.0, label=_legend_label(_plot_text(voi)))
            curve_drawn = True
    if not points.empty:
        t = points["t_h"].to_numpy(dtype=float)
        a = points["activity_mbq"].to_numpy(dtype=float)
        sd = points["activity_sd_mbq"].to_numpy(dtype=float)
        yerr = np.where(np.isfinite(sd) & (sd > 0), sd, 0.0) if np.any(np.isfinite(sd) & (sd > 0)) else None
        label = None if curve_drawn else _legend_label(_plot_text(voi))
        if not curve_drawn and len(t) > 1:
            ax.plot(t, a, _linestyle(i), color=colour, linewidth=0.8)
        ax.errorbar(t, a, yerr=yerr, fmt="o", markersize=3, capsize=1.5, color=colour, linewidth=0.7, label=label)
    return notes


def tac_figure(points: pd.DataFrame, fits: pd.DataFrame, salt: str) -> DrawnFigure:
    """One cycle's time-activity curves: measured points and fits, organs and lesions panels.

    Parameters
    ----------
    points : pandas.DataFrame
        ``voi_timepoints`` rows of one cycle (``voi``, ``t_h`` in h, ``activity_mbq`` and
        ``activity_sd_mbq`` in MBq).
    fits : pandas.DataFrame
        ``tac_fits`` rows of the same cycle (``voi``, ``model``, ``params_json``,
        ``effective_half_life_h`` in h); the last row per VOI is drawn.
    salt : str
        SVG id salt, unique in the page.

    Returns
    -------
    DrawnFigure
        The SVG and its caption (with a note per fit that could not be drawn).
    """
    vois = sorted(set(points["voi"]) | set(fits["voi"]))
    groups = panels(vois)
    fig = _panel_figure(len(groups))
    notes: list[str] = []
    for k, (name, group) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), k + 1)
        for i, voi in enumerate(group):
            fit_rows = fits[fits["voi"] == voi]
            fit = fit_rows.iloc[-1].to_dict() if not fit_rows.empty else None
            notes += _draw_tac(ax, voi, points[points["voi"] == voi], fit, i)
        ax.set_yscale("log")
        ax.set_xlim(left=0.0)
        _style_panel(ax, name, "Time after administration (h)", "Activity (MBq)")
        ax.legend(fontsize=_FONT - 2, frameon=False, loc="best", ncols=2)
    return DrawnFigure(svg_figure(fig, salt=salt), "; ".join([_TAC_CAPTION, *notes]), tuple(notes))


# ----------------------------------------------------------------------------- DVHs
def dvh_figure(dvh: pd.DataFrame, salt: str) -> DrawnFigure:
    """One cycle's cumulative DVHs: one line per VOI (line style per engine), organs and lesions panels.

    Parameters
    ----------
    dvh : pandas.DataFrame
        ``dvhs`` rows of one cycle (``voi``, ``engine``, ``dose_bin_gy`` in Gy,
        ``volume_fraction`` 0-1).
    salt : str
        SVG id salt, unique in the page.

    Returns
    -------
    DrawnFigure
        The SVG and its caption (the engines drawn).
    """
    dvh = dvh.assign(
        dose_bin_gy=as_floats(dvh["dose_bin_gy"]),
        volume_fraction=as_floats(dvh["volume_fraction"]),
        engine=dvh["engine"].map(lambda v: "(unknown)" if is_missing(v) else str(v)),
    )
    dvh = dvh[np.isfinite(dvh["dose_bin_gy"]) & np.isfinite(dvh["volume_fraction"])]
    engines = sorted(dvh["engine"].unique())
    groups = panels(sorted(dvh["voi"].unique()))
    fig = _panel_figure(len(groups))
    for k, (name, group) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), k + 1)
        for i, voi in enumerate(group):
            for j, engine in enumerate(engines):
                part = dvh[(dvh["voi"] == voi) & (dvh["engine"] == engine)].sort_values("dose_bin_gy")
                if part.empty:
                    continue
                label = _legend_label(_plot_text(voi if len(engines) == 1 else f"{voi} {engine}"))
                ax.plot(
                    part["dose_bin_gy"].to_numpy(),
                    100.0 * part["volume_fraction"].to_numpy(),
                    ("-", "--", ":", "-.")[j % 4],
                    color=_colour(i),
                    linewidth=1.0,
                    label=label,
                )
        ax.set_xlim(left=0.0)
        ax.set_ylim(0.0, 105.0)
        _style_panel(ax, name, "Dose (Gy)", "Volume (%)")
        ax.legend(fontsize=_FONT - 2, frameon=False, loc="upper right", ncols=2)
    return DrawnFigure(svg_figure(fig, salt=salt), f"Cumulative DVHs, engine(s) {', '.join(engines) or MISSING}")


# ----------------------------------------------------------------------------- dose-effect
def _valid_curves(curves: Sequence[Mapping[str, object]]) -> tuple[list[tuple[str, float, float]], list[str]]:
    """Curves with a finite positive D50 (Gy) and a finite gamma50, and notes on the others."""
    valid, notes = [], []
    for curve in curves:
        name = str(curve.get("label", ""))
        d50, gamma = as_float(curve.get("d50_gy")), as_float(curve.get("gamma50"))
        if math.isfinite(d50) and d50 > 0 and math.isfinite(gamma):
            valid.append((name, d50, gamma))
        else:
            notes.append(f"curve {name or '(unnamed)'} not drawn: D50 = {d50} Gy, gamma50 = {gamma}")
    return valid, notes


def dose_effect_figure(
    label: str, data: pd.DataFrame, dose_col: str | None, curves: Sequence[Mapping[str, object]], salt: str
) -> DrawnFigure:
    """Observed outcomes (jittered by +/- :data:`JITTER`) and logistic curves of one section.

    Parameters
    ----------
    label : str
        Section label, the plot title.
    data : pandas.DataFrame
        Outcomes to plot: ``site_id``, ``_dose`` (Gy) and ``_effect`` (0/1).
    dose_col : str or None
        Dose column the doses came from (x-axis label).
    curves : sequence of mapping
        ``{"label": str, "d50_gy": float (Gy), "gamma50": float}``; ``label == "pooled"``
        is drawn black and thicker.
    salt : str
        SVG id salt, unique in the page.

    Returns
    -------
    DrawnFigure
        The SVG and notes on the curves not drawn (missing or non-positive D50).
    """
    fig, ax = _new_axes(6.4, 3.8)
    sites = sorted({"(no site)" if is_missing(s) else str(s) for s in data["site_id"]})
    site_of = data["site_id"].map(lambda s: "(no site)" if is_missing(s) else str(s))
    rng = np.random.default_rng(20240101)
    jitter = rng.uniform(-JITTER, JITTER, len(data))
    for i, site in enumerate(sites):
        mask = (site_of == site).to_numpy()
        ax.scatter(
            data["_dose"].to_numpy()[mask],
            data["_effect"].to_numpy()[mask] + jitter[mask],
            s=16,
            color=_colour(i),
            alpha=0.75,
            edgecolors="none",
            label=_legend_label(_plot_text(f"site {site}")),
        )
    valid, notes = _valid_curves(curves)
    x_top = max([float(data["_dose"].max()) if not data.empty else 0.0] + [2.0 * d50 for _, d50, _ in valid])
    x_top = 1.05 * x_top if x_top > 0 else 1.0
    dose = np.linspace(x_top / 500.0, x_top, _CURVE_POINTS)
    styles = ("-", "--", "-.", ":")
    for i, (name, d50, gamma) in enumerate(valid):
        ax.plot(
            dose,
            ntcp_logistic(dose, d50, gamma),
            styles[(i // len(PALETTE)) % len(styles)],
            color=_colour(len(sites) + i) if name != "pooled" else "#000000",
            linewidth=1.8 if name == "pooled" else 1.1,
            label=_legend_label(_plot_text(f"{name}: D50 = {d50:.3g} Gy, \u03b350 = {gamma:.3g}")),
        )
    if data.empty and not valid:
        ax.text(0.5, 0.5, "no data to draw", transform=ax.transAxes, ha="center", fontsize=_FONT)
    ax.set_xlim(0.0, x_top)
    ax.set_ylim(-0.1, 1.1)
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel(_plot_text(f"{dose_col or 'dose'} (Gy)"), fontsize=_FONT)
    ax.set_ylabel("Effect (0/1), probability", fontsize=_FONT)
    ax.set_title(_plot_text(label), fontsize=_FONT + 1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=_FONT - 1, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return DrawnFigure(svg_figure(fig, salt=salt), notes=tuple(notes))
