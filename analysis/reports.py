"""Self-contained HTML reports: one per subject (dosimetry) and one per trial (dose-effect).

Pure functions: pandas DataFrames in, one HTML string out. Nothing here reads or writes
files, opens the warehouse or knows Prefect; the caller queries the warehouse views and
stores the text.

The HTML is readable offline: no script, no external stylesheet, image or font. Plots are
drawn with matplotlib on :class:`matplotlib.figure.Figure` objects (no ``pyplot``, so no
global figure registry and any backend works) and embedded as inline ``<svg>`` elements.
Every text value taken from the data is HTML-escaped (:func:`html.escape`); text inside
the SVGs is escaped by matplotlib's SVG writer.

The output is deterministic: the same input gives the same string (the SVG ids are
salted with a fixed, per-figure string, the SVG carries no date or metadata and the
vertical jitter of the dose-effect plots comes from a seeded generator).

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

import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rntflow.physics.kinetic_models import model_activity_mbq

#: Name shown with the software version in every report.
SOFTWARE_NAME = "rntflow"

#: Kinetics methods in order of preference for a cycle's dose (first wins), as the
#: warehouse's ``voi_dose_cycle`` view.
METHOD_PREFERENCE = ("multi_time_point", "single_time_point_madsen", "single_time_point_hanscheid")

#: ``params_json`` keys of the fitted TAC models, in the parameter order of
#: :func:`dosimetry.kinetics.model_activity_mbq` (as written by ``dosimetry.cycle``).
TAC_PARAM_KEYS: Mapping[str, tuple[str, ...]] = {
    "mono_exp": ("a0_mbq", "lambda_per_h"),
    "bi_exp_uptake": ("a0_mbq", "lambda1_per_h", "lambda2_per_h"),
    "bi_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h"),
    "tri_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h", "lambda3_per_h"),
}

#: Single-time-point TAC models; ``params_json`` holds ``t_h``, ``activity_mbq``, ``t_eff_h``.
SINGLE_TIME_POINT_TAC_MODELS = ("hanscheid", "madsen")

#: Shown for a missing value in a table cell.
MISSING = "\u2013"
#: Shown for an empty section.
NONE_TEXT = "(none)"

_LN2 = math.log(2.0)
_QA_ORDER = {"fail": 0, "warn": 1, "pass": 2}
#: Colour-blind-safe qualitative palette (Okabe and Ito 2008).
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
#: Samples of a drawn curve.
_CURVE_POINTS = 241
#: Half-width of the vertical jitter of 0/1 outcomes in the dose-effect plots.
_JITTER = 0.04
_FONT = 8
_SVG_RC = {"svg.fonttype": "none", "svg.id": None}
_SVG_METADATA = {"Date": None, "Creator": None, "Type": None, "Format": None}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:80em;padding:0 1em;color:#222;line-height:1.35}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:1.6em}
h3{font-size:1.05em}h4{font-size:.95em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.85em}
th,td{border:1px solid #bbb;padding:.15em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fbdcd9}tr.warn td{background:#fff2cc}tr.unused td{color:#777}
.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}
figcaption{font-size:.8em;max-width:34em}svg{max-width:100%;height:auto}
.none{color:#777;font-style:italic}.small{font-size:.85em;color:#444}
table.header th{width:14em}
""".strip()


# ----------------------------------------------------------------------------- public helpers
def svg_figure(fig: Figure, *, salt: str = SOFTWARE_NAME) -> str:
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
    buf = io.StringIO()
    with matplotlib.rc_context({**_SVG_RC, "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata=dict(_SVG_METADATA))
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return text.strip()


def tac_curve(model: str, params_json: str | Mapping[str, float], t_h: np.ndarray | float) -> np.ndarray:
    """Activity (MBq) of a stored TAC fit at times ``t_h`` (h after administration).

    Parameters
    ----------
    model : str
        ``tac_fits.model``: one of :data:`TAC_PARAM_KEYS` (fitted models, evaluated with
        :func:`dosimetry.kinetics.model_activity_mbq`) or ``hanscheid``/``madsen``
        (single time point: ``A(t) = activity_mbq * exp(-ln2 (t - t_h) / t_eff_h)``).
    params_json : str or mapping
        ``tac_fits.params_json`` (JSON text) or the decoded mapping; activities in MBq,
        decay constants in 1/h, times in h.
    t_h : array_like
        Times (h).

    Returns
    -------
    numpy.ndarray
        Activity (MBq), same shape as ``t_h``.

    Raises
    ------
    ValueError
        Unknown or undrawable model (e.g. ``trapezoid``, which has no closed form),
        malformed JSON, or missing/invalid parameters.
    """
    if isinstance(params_json, str):
        params = json.loads(params_json)
    elif isinstance(params_json, Mapping):
        params = dict(params_json)
    else:
        raise ValueError(f"params_json must be JSON text or a mapping, not {type(params_json).__name__}")
    if not isinstance(params, dict):
        raise ValueError("params_json must decode to an object")
    t = np.asarray(t_h, dtype=float)
    try:
        if model in TAC_PARAM_KEYS:
            values = [float(params[k]) for k in TAC_PARAM_KEYS[model]]
            return np.asarray(model_activity_mbq(model, values, t), dtype=float)
        if model in SINGLE_TIME_POINT_TAC_MODELS:
            t0, a0, t_eff = (float(params[k]) for k in ("t_h", "activity_mbq", "t_eff_h"))
            if not (math.isfinite(t_eff) and t_eff > 0):
                raise ValueError(f"{model}: t_eff_h must be > 0 h, got {t_eff}")
            return a0 * np.exp(-_LN2 * (t - t0) / t_eff)
    except KeyError as exc:
        raise ValueError(f"{model}: parameter {exc.args[0]!r} missing in params_json") from None
    except TypeError as exc:
        raise ValueError(f"{model}: invalid parameter ({exc})") from None
    raise ValueError(f"TAC model {model!r} has no closed form to draw")


def ntcp_logistic(dose_gy: np.ndarray | float, d50_gy: float, gamma50: float) -> np.ndarray:
    """Logistic dose-effect probability ``P = 1 / (1 + (D50/D)^(4 gamma50))``.

    Parameters
    ----------
    dose_gy : array_like
        Dose (Gy), > 0.
    d50_gy : float
        Dose (Gy) with 50 % effect probability, > 0.
    gamma50 : float
        Normalised slope at D50 (dimensionless).

    Returns
    -------
    numpy.ndarray
        Probability (0-1), same shape as ``dose_gy``.
    """
    d = np.asarray(dose_gy, dtype=float)
    with np.errstate(divide="ignore", over="ignore"):
        return 1.0 / (1.0 + np.exp(4.0 * gamma50 * (math.log(d50_gy) - np.log(d))))


# ----------------------------------------------------------------------------- value helpers
def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        result = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return bool(result) if np.ndim(result) == 0 else False


def _float(value: object) -> float:
    """``value`` as a float; nan when missing or not a number."""
    if _missing(value) or isinstance(value, (str, bytes)):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _floats(values: pd.Series) -> pd.Series:
    """``values`` as a float Series (nan when missing or not a number)."""
    return values.map(_float).astype(float)


def _is_true(value: object) -> bool:
    if _missing(value):
        return False
    try:
        return bool(value)
    except (TypeError, ValueError):
        return False


def _esc(value: object) -> str:
    """Escaped text of a data value; :data:`MISSING` when missing."""
    return MISSING if _missing(value) else html.escape(str(value))


def _num(value: object, fmt: str) -> str:
    """Number formatted with ``fmt`` (e.g. ``'.2f'``); :data:`MISSING` when missing/not finite."""
    x = _float(value)
    return format(x, fmt) if math.isfinite(x) else MISSING


def _general(value: object) -> str:
    """A table cell of unknown type: numbers with 4 significant digits, bools yes/no."""
    if _missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".4g")
    return html.escape(str(value))


def _plot_text(text: object) -> str:
    """Data text for a plot: ``$`` escaped so matplotlib does not parse it as mathtext."""
    return str(text).replace("$", r"\$")


def _legend_label(text: str) -> str:
    """matplotlib hides legend labels starting with ``_``; keep them visible."""
    return " " + text if text.startswith("_") else text


# ----------------------------------------------------------------------------- frame helpers
def _frame(df: pd.DataFrame | None, columns: Iterable[str]) -> pd.DataFrame:
    """A copy of ``df`` with every column of ``columns`` (missing ones all null)."""
    out = pd.DataFrame() if df is None else df.copy()
    out = out.reset_index(drop=True)
    for col in columns:
        if col not in out.columns:
            out[col] = pd.Series([None] * len(out), dtype=object)
    return out


def _only_subject(df: pd.DataFrame, subject_id: str) -> pd.DataFrame:
    """Rows of ``subject_id`` (or without a subject): never show another subject's data."""
    keep = df["subject_id"].map(lambda v: _missing(v) or str(v) == subject_id)
    return df[keep.astype(bool)]


def _latest(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Keep the highest ``result_version`` per natural key when the frame has versions."""
    if "result_version" not in df.columns or df.empty:
        return df
    order = pd.to_numeric(df["result_version"], errors="coerce").fillna(-1)
    ranked = df.assign(_rv=order.to_numpy()).sort_values("_rv", kind="stable")
    return ranked.drop_duplicates(list(keys), keep="last").drop(columns="_rv").sort_index()


def _normalise_keys(df: pd.DataFrame) -> pd.DataFrame:
    """``cycle`` as float (nan when missing) and ``voi`` as text."""
    df = df.copy()
    df["cycle"] = pd.to_numeric(df["cycle"], errors="coerce").astype(float)
    df["voi"] = df["voi"].map(lambda v: "(unnamed)" if _missing(v) else str(v)).astype(object)
    return df


def _cycles(*frames: pd.DataFrame) -> list[int]:
    found: set[int] = set()
    for df in frames:
        found.update(int(c) for c in df["cycle"].dropna().unique())
    return sorted(found)


def _method_rank(method: object) -> int:
    text = "" if _missing(method) else str(method)
    return METHOD_PREFERENCE.index(text) if text in METHOD_PREFERENCE else len(METHOD_PREFERENCE)


# ----------------------------------------------------------------------------- HTML helpers
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[bool] | None = None,
           row_classes: Sequence[str] | None = None) -> str:
    """HTML table; ``headers`` are plain text (escaped here), cells already HTML."""
    if not rows:
        return _none()
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{c}</td>' if n else f"<td>{c}</td>" for c, n in zip(row, numeric))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _frame_table(df: pd.DataFrame | Sequence[Mapping[str, object]] | None) -> str:
    """Every column of ``df`` (or of a list of records) as an HTML table (4 significant digits)."""
    if df is not None and not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(list(df))
    if df is None or df.empty or len(df.columns) == 0:
        return _none()
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    rows = [[_general(v) for v in rec] for rec in df.itertuples(index=False, name=None)]
    return _table([str(c) for c in df.columns], rows, numeric=numeric)


def _none() -> str:
    """Placeholder of an empty section."""
    return f'<p class="none">{NONE_TEXT}</p>'


def _page(title: str, body: Sequence[str]) -> str:
    """The HTML document: ``title`` (plain text) and ``body`` (HTML fragments)."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def _figure_html(svg: str, caption: str) -> str:
    """``<figure>`` with an inline SVG and an (already escaped) caption."""
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _new_axes(width_in: float, height_in: float) -> tuple[Figure, Axes]:
    """A figure of ``width_in`` x ``height_in`` inches with one styled axes."""
    # fixed margins: a layout engine would cost more than the drawing (~4x per figure)
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.17, right=0.97, bottom=0.16, top=0.9)
    ax.tick_params(labelsize=_FONT - 1)
    ax.grid(True, color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    return fig, ax


# ----------------------------------------------------------------------------- subject report
_DOSE_COLS = ("site_id", "subject_id", "cycle", "voi", "engine", "method", "dose_gy", "dose_sd_gy", "bed_gy",
              "mass_g", "tia_mbq_h", "administered_activity_mbq", "calibration_id", "final")
_TP_COLS = ("subject_id", "cycle", "voi", "study_id", "t_h", "activity_mbq", "activity_sd_mbq", "volume_ml",
            "mass_g", "recovery_coefficient", "calibration_id")
_FIT_COLS = ("subject_id", "cycle", "voi", "model", "params_json", "n_timepoints", "aicc", "r2", "tia_mbq_h",
             "tia_sd_mbq_h", "effective_half_life_h", "fallback_reason")
_DVH_COLS = ("subject_id", "cycle", "voi", "engine", "dose_bin_gy", "volume_fraction")
_QA_COLS = ("check_name", "scope", "scope_id", "status", "value_found", "value_expected", "message", "subject_id",
            "cycle")
#: (column, header, format or None for text) of the calibration table, names as in the
#: warehouse ``calibrations`` table.
_CAL_FIELDS = (
    ("calibration_id", "calibration", None), ("site_id", "site", None), ("camera_id", "camera", None),
    ("radionuclide", "radionuclide", None), ("protocol", "protocol", None),
    ("valid_from", "valid from", None), ("valid_until", "valid until", None),
    ("sensitivity_cps_per_mbq", "sensitivity (cps/MBq)", ".4g"),
    ("sensitivity_sd_cps_per_mbq", "u(sensitivity) (cps/MBq)", ".2g"),
    ("bqml_scale_factor", "Bq/mL scale factor", ".4g"),
    ("harmonising_filter_fwhm_mm", "harmonising filter FWHM (mm)", ".3g"),
    ("rc_fwhm_mm", "recovery-curve FWHM (mm)", ".3g"),
    ("drift_pct", "drift (%)", ".2f"),
    ("superseded_by", "superseded by", None),
)

_SUBJECT_METHODS = """
<h3>Quantification</h3>
<p>Activity in each volume of interest (VOI) was obtained from quantitative SPECT/CT with a
camera-specific calibration: system sensitivity (cps/MBq) or, for vendor Bq/mL
reconstructions, a scale factor from a phantom-based cross-calibration against the trial
reference. Partial-volume effects were corrected with recovery coefficients from the site's
NEMA IEC phantom recovery curve, background-aware: spill-in from the surrounding activity
(median concentration in a shell around the VOI) is removed before dividing by the
recovery coefficient.</p>
<h3>Kinetics</h3>
<p>With two or more time points, time-activity curves were fitted by weighted least
squares with mono-, bi- and tri-exponential models and the model chosen by the corrected
Akaike information criterion (AICc); when no model was acceptable the TIA came from the
trapezoid over the points with an extrapolated tail. With a single scan, the TIA was
estimated by the single-time-point method of Madsen et al. (2018) with a population
effective half-life, or of Hänscheid et al. (2018) when none was available.</p>
<h3>Absorbed dose</h3>
<p>Organ engine: MIRD self-dose with S values scaled to the CT-derived organ mass. Sphere
engine: unit-density sphere model for lesions. Voxel engines: convolution of the voxel
TIA map with a dose-point kernel (DPK) or local energy deposition (LED), averaged over the
VOI. Doses are mean absorbed doses per cycle; cumulative doses are sums over cycles
using one kinetics method per cycle (multi-time-point preferred over Madsen over
Hänscheid).</p>
<h3>Biologically effective dose</h3>
<p>BED from the linear-quadratic model with incomplete repair during a mono-exponentially
decaying dose rate: BED = D [1 + D/(&alpha;/&beta;) &middot; T<sub>rep</sub>/(T<sub>rep</sub>
+ T<sub>eff</sub>)], with T<sub>rep</sub> the repair half-time and T<sub>eff</sub> the
effective half-life; cycles are assumed fully repaired in between, so their BEDs add.</p>
<h3>Uncertainty</h3>
<p>Standard uncertainties (k = 1) were propagated following the EANM guidance (Gear et al.
2018): calibration, recovery coefficient, VOI volume and activity, and the fit covariance of
the TIA. The uncertainty of a cumulative dose combines the cycles in quadrature (cycles
assumed independent).</p>
""".strip()


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
                t0 = _float(json.loads(params_json).get("t_h"))
            except (ValueError, AttributeError):
                t0 = math.nan
            if math.isfinite(t0) and t0 > 0:
                return t0
        t_eff = _float(fit.get("effective_half_life_h"))
        if math.isfinite(t_eff) and t_eff > 0:
            return 3.0 * t_eff
    return 168.0


def _panels(vois: Sequence[str]) -> list[tuple[str, list[str]]]:
    """VOIs split into an organ panel and a lesion panel (lesions are far hotter)."""
    lesions = [v for v in vois if v.startswith("Lesion")]
    organs = [v for v in vois if v not in lesions]
    return [(name, group) for name, group in (("Organs", organs), ("Lesions", lesions)) if group]


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _linestyle(i: int) -> str:
    return ("-", "--", ":", "-.")[(i // len(_PALETTE)) % 4]


def _draw_tac(ax: Axes, voi: str, points: pd.DataFrame, fit: Mapping[str, object] | None, i: int) -> list[str]:
    """Measured points and fitted curve of one VOI on ``ax``; returns notes for the caption."""
    points = points.assign(**{c: _floats(points[c]) for c in ("t_h", "activity_mbq", "activity_sd_mbq")})
    points = points[np.isfinite(points["t_h"]) & np.isfinite(points["activity_mbq"])].sort_values("t_h")
    colour, notes, curve_drawn = _colour(i), [], False
    model = None if fit is None or _missing(fit.get("model")) else str(fit.get("model"))
    if fit is not None:
        t_grid = np.linspace(0.0, 1.5 * _tac_limits(points, fit), _CURVE_POINTS)
        params = fit.get("params_json")
        try:
            if model is None or _missing(params):
                raise ValueError("no model parameters")
            values = tac_curve(model, params, t_grid)  # type: ignore[arg-type]
        except ValueError:
            notes.append(f"{voi}: " + ("trapezoid TIA: no closed form, straight segments through the points"
                                       if model == "trapezoid" else
                                       f"model {model or '(unknown)'} not drawable, straight segments"))
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


def _tac_figure(points: pd.DataFrame, fits: pd.DataFrame, salt: str) -> str:
    """One cycle's time-activity curves: measured points and fits, organs and lesions panels."""
    vois = sorted(set(points["voi"]) | set(fits["voi"]))
    panels = _panels(vois)
    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=100)
    fig.subplots_adjust(left=0.09 if len(panels) > 1 else 0.16, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    notes: list[str] = []
    for k, (name, group) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for i, voi in enumerate(group):
            fit_rows = fits[fits["voi"] == voi]
            fit = fit_rows.iloc[-1].to_dict() if not fit_rows.empty else None
            notes += _draw_tac(ax, voi, points[points["voi"] == voi], fit, i)
        ax.set_yscale("log")
        ax.set_xlim(left=0.0)
        ax.grid(True, color="#dddddd", linewidth=0.5)
        ax.tick_params(labelsize=_FONT - 1)
        ax.set_xlabel("Time after administration (h)", fontsize=_FONT)
        ax.set_ylabel("Activity (MBq)", fontsize=_FONT)
        ax.set_title(name, fontsize=_FONT + 1)
        ax.legend(fontsize=_FONT - 2, frameon=False, loc="best", ncols=2)
    caption = ("Points: measured activity (error bars: standard uncertainty); lines: fitted model "
               "(dashed: single-time-point). Fit details in the table below.")
    return _figure_html(svg_figure(fig, salt=salt), "; ".join([caption] + [html.escape(n) for n in notes]))


_FIT_HEADERS = ("VOI", "model", "points", "AICc", "R\u00b2", "TIA (MBq h)", "u TIA (MBq h)", "T_eff (h)", "note")


def _fit_table(points: pd.DataFrame, fits: pd.DataFrame) -> str:
    """One cycle's TAC fits as a table (one row per VOI with a fit or points)."""
    rows = []
    for voi in sorted(set(points["voi"]) | set(fits["voi"])):
        fit_rows = fits[fits["voi"] == voi]
        n_points = int((points["voi"] == voi).sum())
        if fit_rows.empty:
            rows.append([html.escape(voi), "no fit", str(n_points)] + [MISSING] * 6)
            continue
        f = fit_rows.iloc[-1].to_dict()
        rows.append([html.escape(voi), _esc(f.get("model")), _esc(f.get("n_timepoints")), _num(f.get("aicc"), ".4g"),
                     _num(f.get("r2"), ".3f"), _num(f.get("tia_mbq_h"), ".1f"), _num(f.get("tia_sd_mbq_h"), ".1f"),
                     _num(f.get("effective_half_life_h"), ".1f"),
                     MISSING if _missing(f.get("fallback_reason")) else _esc(f.get("fallback_reason"))])
    return _table(_FIT_HEADERS, rows,
                  numeric=(False, False, True, True, True, True, True, True, False))


def _dvh_figure(dvh: pd.DataFrame, salt: str) -> str:
    """One cycle's cumulative DVHs: one line per VOI (line style per engine), organs and lesions panels."""
    dvh = dvh.assign(dose_bin_gy=_floats(dvh["dose_bin_gy"]), volume_fraction=_floats(dvh["volume_fraction"]),
                     engine=dvh["engine"].map(lambda v: "(unknown)" if _missing(v) else str(v)))
    dvh = dvh[np.isfinite(dvh["dose_bin_gy"]) & np.isfinite(dvh["volume_fraction"])]
    engines = sorted(dvh["engine"].unique())
    panels = _panels(sorted(dvh["voi"].unique()))
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.4), dpi=100)
    fig.subplots_adjust(left=0.09 if len(panels) > 1 else 0.16, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    for k, (name, group) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for i, voi in enumerate(group):
            for j, engine in enumerate(engines):
                part = dvh[(dvh["voi"] == voi) & (dvh["engine"] == engine)].sort_values("dose_bin_gy")
                if part.empty:
                    continue
                label = _legend_label(_plot_text(voi if len(engines) == 1 else f"{voi} {engine}"))
                ax.plot(part["dose_bin_gy"].to_numpy(), 100.0 * part["volume_fraction"].to_numpy(),
                        ("-", "--", ":", "-.")[j % 4], color=_colour(i), linewidth=1.0, label=label)
        ax.set_xlim(left=0.0)
        ax.set_ylim(0.0, 105.0)
        ax.grid(True, color="#dddddd", linewidth=0.5)
        ax.tick_params(labelsize=_FONT - 1)
        ax.set_xlabel("Dose (Gy)", fontsize=_FONT)
        ax.set_ylabel("Volume (%)", fontsize=_FONT)
        ax.set_title(name, fontsize=_FONT + 1)
        ax.legend(fontsize=_FONT - 2, frameon=False, loc="upper right", ncols=2)
    caption = f"Cumulative DVHs, engine(s) {html.escape(', '.join(engines)) or MISSING}"
    return _figure_html(svg_figure(fig, salt=salt), caption)


def _dose_rows(doses: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    """Per-cycle dose table rows and row classes (methods not used in the sum greyed)."""
    doses = doses.assign(_rank=doses["method"].map(_method_rank))
    doses = doses.sort_values(["voi", "engine", "_rank"], key=lambda s: s.astype(str) if s.name != "_rank" else s,
                              kind="stable")
    rows, classes = [], []
    best = doses.groupby(["voi", "engine"], dropna=False)["_rank"].transform("min")
    for (_, r), used in zip(doses.iterrows(), doses["_rank"] == best):
        dose, sd = _float(r["dose_gy"]), _float(r["dose_sd_gy"])
        rel = 100.0 * sd / dose if math.isfinite(dose) and dose > 0 and math.isfinite(sd) else math.nan
        rows.append([html.escape(r["voi"]), _esc(r["engine"]), _esc(r["method"]), _num(dose, ".2f"),
                     _num(sd, ".2f"), _num(rel, ".1f"), _num(r["bed_gy"], ".2f"), _num(r["mass_g"], ".1f"),
                     _num(r["tia_mbq_h"], ".1f"), "final" if _is_true(r["final"]) else "provisional",
                     "yes" if used else "no"])
        classes.append("" if used else "unused")
    return rows, classes


_DOSE_HEADERS = ("VOI", "engine", "method", "dose (Gy)", "u (Gy)", "u (%)", "BED (Gy)", "mass (g)", "TIA (MBq h)",
                 "status", "in cumulative")
_DOSE_NUMERIC = (False, False, False, True, True, True, True, True, True, False, False)


def _cumulative_rows(doses: pd.DataFrame) -> list[list[str]]:
    """Cumulative dose per VOI and engine: one method per cycle (see METHOD_PREFERENCE)."""
    d = doses[doses["cycle"].notna()].assign(_rank=doses["method"].map(_method_rank))
    if d.empty:
        return []
    d = d.sort_values("_rank", kind="stable").drop_duplicates(["voi", "engine", "cycle"], keep="first")
    d = d.assign(engine=d["engine"].map(lambda v: MISSING if _missing(v) else str(v)))
    rows = []
    for (voi, engine), part in sorted(d.groupby(["voi", "engine"]), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        part = part.sort_values("cycle")
        dose, sd, bed = (_floats(part[c]).to_numpy() for c in ("dose_gy", "dose_sd_gy", "bed_gy"))
        total = float(dose.sum())
        total_sd = float(math.sqrt(np.sum(sd**2)))
        rel = 100.0 * total_sd / total if math.isfinite(total) and total > 0 and math.isfinite(total_sd) else math.nan
        methods = sorted({str(m) for m in part["method"] if not _missing(m)})
        method = methods[0] if len(methods) == 1 else ("mixed" if methods else MISSING)
        final = all(_is_true(v) for v in part["final"])
        rows.append([html.escape(str(voi)), html.escape(str(engine)),
                     html.escape(", ".join(str(int(c)) for c in part["cycle"])), html.escape(method),
                     _num(total, ".2f"), _num(total_sd, ".2f"), _num(rel, ".1f"), _num(float(bed.sum()), ".2f"),
                     "final" if final else "provisional"])
    return rows


def _qa_section(qa: pd.DataFrame) -> str:
    if qa.empty:
        return _none()
    status = qa["status"].map(lambda v: "" if _missing(v) else str(v).lower())
    qa = qa.assign(_order=status.map(lambda s: _QA_ORDER.get(s, 3)), _status=status,
                   _name=qa["check_name"].map(lambda v: "" if _missing(v) else str(v)),
                   _scope=qa["scope_id"].map(lambda v: "" if _missing(v) else str(v)))
    qa = qa.sort_values(["_order", "_name", "_scope"], kind="stable")
    counts = qa["_status"].value_counts()
    summary = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("fail", "warn", "pass"))
    rows = [[_esc(r["status"]), _esc(r["check_name"]), _esc(r["scope_id"]), _esc(r["value_found"]),
             _esc(r["value_expected"]), _esc(r["message"])] for _, r in qa.iterrows()]
    classes = [s if s in ("fail", "warn") else "" for s in qa["_status"]]
    table = _table(("status", "check", "scope", "value found", "value expected", "message"), rows,
                   row_classes=classes)
    return f'<p class="small">{summary}</p>{table}'


def _calibration_section(calibrations: pd.DataFrame, used: list[str]) -> str:
    if not used:
        return _none()
    cal = calibrations[calibrations["calibration_id"].map(lambda v: not _missing(v) and str(v) in used)]
    cal = cal.assign(_id=cal["calibration_id"].astype(str)).sort_values("_id", kind="stable")
    rows = [[_esc(r[col]) if fmt is None else _num(r[col], fmt) for col, _, fmt in _CAL_FIELDS]
            for _, r in cal.iterrows()]
    parts = [_table([h for _, h, _ in _CAL_FIELDS], rows, numeric=[f is not None for _, _, f in _CAL_FIELDS])]
    missing = [c for c in used if c not in set(cal["_id"])]
    if missing:
        parts.append(f'<p class="small">Used but not found in the calibrations table: '
                     f"{html.escape(', '.join(missing))}</p>")
    return "".join(parts)


def subject_report_html(*, trial_id: str, site_id: str, subject_id: str, voi_doses: pd.DataFrame,
                        tac_fits: pd.DataFrame, voi_timepoints: pd.DataFrame, dvhs: pd.DataFrame,
                        qa_checks: pd.DataFrame, calibrations: pd.DataFrame, software_version: str,
                        generated_at: str) -> str:
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
        Rows of ``tac_fits`` (one fit per cycle and VOI; ``params_json`` see :func:`tac_curve`).
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
    doses = _normalise_keys(_only_subject(_frame(voi_doses, _DOSE_COLS), subject_id))
    doses = _latest(doses, ("subject_id", "cycle", "voi", "engine", "method"))
    points = _normalise_keys(_only_subject(_frame(voi_timepoints, _TP_COLS), subject_id))
    points = _latest(points, ("subject_id", "cycle", "voi", "t_h"))
    fits = _normalise_keys(_only_subject(_frame(tac_fits, _FIT_COLS), subject_id))
    fits = _latest(fits, ("subject_id", "cycle", "voi"))
    dvh = _normalise_keys(_only_subject(_frame(dvhs, _DVH_COLS), subject_id))
    dvh = _latest(dvh, ("subject_id", "cycle", "voi", "engine", "bin_index" if "bin_index" in dvh else "dose_bin_gy"))
    qa = _only_subject(_frame(qa_checks, _QA_COLS), subject_id)
    cals = _frame(calibrations, [c for c, _, _ in _CAL_FIELDS])
    cals = _latest(cals, ("calibration_id",))

    title = f"Dosimetry report \u2013 {trial_id} \u2013 {subject_id}"
    body = [f"<h1>{html.escape(title)}</h1>",
            '<table class="header"><tbody>',
            f"<tr><th>Trial</th><td>{_esc(trial_id)}</td></tr>",
            f"<tr><th>Site</th><td>{_esc(site_id)}</td></tr>",
            f"<tr><th>Subject (pseudonym)</th><td>{_esc(subject_id)}</td></tr>",
            f"<tr><th>Software</th><td>{html.escape(SOFTWARE_NAME)} {_esc(software_version)}</td></tr>",
            f"<tr><th>Generated at</th><td>{_esc(generated_at)}</td></tr>",
            "</tbody></table>"]

    cycles = _cycles(doses, points, fits, dvh)
    body.append("<h2>Absorbed doses, time-activity curves and DVHs per cycle</h2>")
    if not cycles:
        body.append(_none())
    for cycle in cycles:
        c_doses = doses[doses["cycle"] == cycle]
        activity = [a for a in c_doses["administered_activity_mbq"].map(_float) if math.isfinite(a)]
        admin = f" (administered activity {activity[0]:.0f} MBq)" if activity else ""
        body.append(f"<h3>Cycle {cycle}{admin}</h3>")
        body.append("<h4>Mean absorbed dose per VOI</h4>")
        rows, classes = _dose_rows(c_doses)
        body.append(_table(_DOSE_HEADERS, rows, numeric=_DOSE_NUMERIC, row_classes=classes))
        body.append('<p class="small">u: standard uncertainty (k = 1). Rows not used in the cumulative dose '
                    "(a preferred kinetics method exists for the VOI and engine) are grey.</p>")

        body.append("<h4>Time-activity curves</h4>")
        c_points, c_fits = points[points["cycle"] == cycle], fits[fits["cycle"] == cycle]
        if c_points.empty and c_fits.empty:
            body.append(_none())
        else:
            body.append(_tac_figure(c_points, c_fits, f"{SOFTWARE_NAME}-tac-{cycle}"))
            body.append(_fit_table(c_points, c_fits))

        body.append("<h4>Dose-volume histograms</h4>")
        c_dvh = dvh[dvh["cycle"] == cycle]
        body.append(_dvh_figure(c_dvh, f"{SOFTWARE_NAME}-dvh-{cycle}") if not c_dvh.empty else _none())

    body.append("<h2>Cumulative absorbed dose over cycles</h2>")
    body.append(_table(("VOI", "engine", "cycles", "method", "dose (Gy)", "u (Gy)", "u (%)", "BED (Gy)", "status"),
                       _cumulative_rows(doses), numeric=(False,) * 4 + (True,) * 4 + (False,)))
    body.append('<p class="small">Sum over cycles of one dose per cycle (multi-time-point preferred over '
                "single-time-point Madsen over Hänscheid); u combines the cycles in quadrature (independent "
                "cycles); BED is shown only when every cycle has one. Final only when every cycle is final.</p>")

    body.append("<h2>Quality assurance</h2>")
    body.append(_qa_section(qa))

    used = sorted({str(v) for v in pd.concat([doses["calibration_id"], points["calibration_id"]]) if not _missing(v)})
    body.append("<h2>Calibrations used</h2>")
    body.append(_calibration_section(cals, used))

    body.append("<h2>Methods</h2>")
    body.append(_SUBJECT_METHODS)
    return _page(title, body)


# ----------------------------------------------------------------------------- trial report
_TRIAL_METHODS = """
<p>Dose-effect relations were modelled with the logistic NTCP/TCP model
P(D) = 1 / (1 + (D<sub>50</sub>/D)<sup>4&gamma;<sub>50</sub></sup>), fitted by maximum
likelihood (a logistic regression in ln D) pooled over sites and per site. 95 % confidence
intervals are profile-likelihood intervals (twice the drop of the profile log-likelihood
equal to the &chi;<sup>2</sup>(1) 95 % quantile, 3.84). A site effect was tested with a
likelihood-ratio test of site-specific D<sub>50</sub> (common &gamma;<sub>50</sub>) against
the pooled model. Doses are cumulative over cycles (one kinetics method per cycle). In the
plots the observed outcomes (0 = no effect, 1 = effect) are jittered vertically by up to
&plusmn;0.04 for visibility.</p>
""".strip()

_DE_COLS = ("site_id", "subject_id", "endpoint", "target_voi", "engine", "method", "cumulative_dose_gy",
            "cumulative_bed_gy", "effect")


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
        values = {str(v) for v in data[col] if not _missing(v)}
        hit = values & tokens
        if hit:
            data = data[data[col].map(lambda v, hit=hit: not _missing(v) and str(v) in hit)]
        elif col == "endpoint" and values:
            return empty, ["no outcome of the label's endpoint in the data: outcomes not shown"]
    data = data.assign(_dose=_floats(data[dose_col]), _effect=_floats(data["effect"]))
    data = data[np.isfinite(data["_dose"]) & np.isfinite(data["_effect"])]
    for col in ("engine", "method"):
        values = sorted({str(v) for v in data[col] if not _missing(v)})
        if values:
            notes.append(f"{col}: {', '.join(values)}")
    return data, notes


def _dose_effect_plot(label: str, data: pd.DataFrame, dose_col: str | None, curves: Sequence[Mapping[str, object]],
                      salt: str) -> tuple[str, list[str]]:
    """Observed outcomes and logistic curves of one section; returns (svg, notes)."""
    notes: list[str] = []
    fig, ax = _new_axes(6.4, 3.8)
    sites = sorted({"(no site)" if _missing(s) else str(s) for s in data["site_id"]})
    site_of = data["site_id"].map(lambda s: "(no site)" if _missing(s) else str(s))
    rng = np.random.default_rng(20240101)
    jitter = rng.uniform(-_JITTER, _JITTER, len(data))
    for i, site in enumerate(sites):
        mask = (site_of == site).to_numpy()
        ax.scatter(data["_dose"].to_numpy()[mask], data["_effect"].to_numpy()[mask] + jitter[mask], s=16,
                   color=_PALETTE[i % len(_PALETTE)], alpha=0.75, edgecolors="none",
                   label=_legend_label(_plot_text(f"site {site}")))
    valid = []
    for curve in curves:
        name = str(curve.get("label", ""))
        d50, gamma = _float(curve.get("d50_gy")), _float(curve.get("gamma50"))
        if math.isfinite(d50) and d50 > 0 and math.isfinite(gamma):
            valid.append((name, d50, gamma))
        else:
            notes.append(f"curve {name or '(unnamed)'} not drawn: D50 = {d50} Gy, gamma50 = {gamma}")
    x_top = max([float(data["_dose"].max()) if not data.empty else 0.0] + [2.0 * d50 for _, d50, _ in valid])
    x_top = 1.05 * x_top if x_top > 0 else 1.0
    dose = np.linspace(x_top / 500.0, x_top, _CURVE_POINTS)
    styles = ("-", "--", "-.", ":")
    for i, (name, d50, gamma) in enumerate(valid):
        ax.plot(dose, ntcp_logistic(dose, d50, gamma), styles[(i // len(_PALETTE)) % len(styles)],
                color=_PALETTE[(len(sites) + i) % len(_PALETTE)] if name != "pooled" else "#000000",
                linewidth=1.8 if name == "pooled" else 1.1,
                label=_legend_label(_plot_text(f"{name}: D50 = {d50:.3g} Gy, \u03b350 = {gamma:.3g}")))
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
    return svg_figure(fig, salt=salt), notes


def trial_report_html(*, trial_id: str, generated_at: str, software_version: str, dose_effect: pd.DataFrame,
                      fits: Mapping[str, pd.DataFrame], curves: Mapping[str, Sequence[Mapping[str, object]]],
                      population_kinetics: pd.DataFrame, notes: Sequence[str] | None = None) -> str:
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
    de = _frame(dose_effect, _DE_COLS)
    title = f"Dose-effect report \u2013 {trial_id}"
    body = [f"<h1>{html.escape(title)}</h1>",
            '<table class="header"><tbody>',
            f"<tr><th>Trial</th><td>{_esc(trial_id)}</td></tr>",
            f"<tr><th>Software</th><td>{html.escape(SOFTWARE_NAME)} {_esc(software_version)}</td></tr>",
            f"<tr><th>Generated at</th><td>{_esc(generated_at)}</td></tr>",
            f"<tr><th>Outcome rows</th><td>{len(de)}</td></tr>",
            "</tbody></table>",
            "<h2>Dose-effect fits</h2>"]
    fits = dict(fits or {})
    curves = dict(curves or {})
    labels = list(fits) + [label for label in curves if label not in fits]
    if not labels:
        body.append(_none())
    for i, label in enumerate(labels):
        body.append(f"<h3>{html.escape(str(label))}</h3>")
        body.append(_frame_table(fits.get(label)))
        dose_col = _dose_column(str(label))
        data, sel_notes = _observed(de, str(label), dose_col)
        svg, plot_notes = _dose_effect_plot(str(label), data, dose_col, list(curves.get(label) or []),
                                            f"{SOFTWARE_NAME}-de-{i + 1}")
        caption = [f"{len(data)} observed outcome(s), {int((data['_effect'] > 0.5).sum()) if not data.empty else 0} "
                   "with effect"] + sel_notes + plot_notes
        body.append(_figure_html(svg, html.escape("; ".join(caption))))

    body.append("<h2>Population kinetics</h2>")
    body.append(_frame_table(population_kinetics))
    if notes:
        body.append("<h2>Notes</h2>")
        body.extend(f"<p>{html.escape(str(n))}</p>" for n in notes)
    body.append("<h2>Methods</h2>")
    body.append(_TRIAL_METHODS)
    return _page(title, body)
