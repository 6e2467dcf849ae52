"""The shared machinery of the HTML reports: tables, figures, header and rendering of a page.

Used by every report (:mod:`rntflow.analysis.subject_report`,
:mod:`rntflow.analysis.trial_report`, :mod:`rntflow.analysis.tare_report`). Pure
functions: pandas DataFrames in, view objects or one HTML string out. Nothing here reads
or writes files, opens the warehouse or knows Prefect; the caller queries the warehouse
views and stores the text.

The reports assemble what they show (tables as plain text, figures from
:mod:`rntflow.analysis.figures`, the methods facts from :mod:`rntflow.analysis.methods_text`)
and :func:`render_page` renders the Jinja2 templates in ``analysis/templates`` with
autoescape on: every text value taken from the data is escaped by the template engine; the
only markup passed in is the figures' SVG (its text escaped by matplotlib's SVG writer).

The HTML is readable offline: no script, no external stylesheet, image or font. The output
is deterministic: the same input gives the same string (see :mod:`rntflow.analysis.figures`).
The QA and calibration tables are shared by the reports, as is the header (identification,
software and version, time of generation).

Units follow the warehouse column suffixes: Gy, MBq, MBq h (TIA), h, g, mm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jinja2
import pandas as pd
from markupsafe import Markup

from rntflow.analysis.figures import DrawnFigure
from rntflow.analysis.report_values import NONE_TEXT, general, is_missing, number, text

__all__ = [
    "CAL_FIELDS",
    "QA_COLS",
    "SOFTWARE_NAME",
    "FigureView",
    "Table",
    "calibration_table",
    "frame_table",
    "header_rows",
    "qa_table",
    "render_page",
]


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


def render_page(template: str, **context: object) -> str:
    """Render one report template of ``analysis/templates`` (autoescape on) to HTML.

    Parameters
    ----------
    template : str
        Template file name, e.g. ``"subject_report.html.j2"``.
    **context : object
        The template's variables; undefined ones raise (``StrictUndefined``).

    Returns
    -------
    str
        The HTML document.
    """
    return _ENV.get_template(template).render(**context)


def header_rows(rows: Sequence[tuple[str, object]], software_version: object, generated_at: object) -> list:
    """Header of a report: ``rows`` then the software with its version and the generation time.

    Parameters
    ----------
    rows : sequence of (str, object)
        Identification rows (name, value); values shown as text (missing as "\u2013").
    software_version : object
        Version of the software, shown after :data:`SOFTWARE_NAME`.
    generated_at : object
        Time of generation as the caller wants it shown.

    Returns
    -------
    list of (str, str)
        (name, text) pairs, in order.
    """
    return [(name, text(value)) for name, value in rows] + [
        ("Software", f"{SOFTWARE_NAME} {text(software_version)}"),
        ("Generated at", text(generated_at)),
    ]


def frame_table(df: pd.DataFrame | Sequence[Mapping[str, object]] | None) -> Table:
    """Every column of ``df`` (or of a list of records), 4 significant digits."""
    if df is not None and not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(list(df))
    if df is None or df.empty or len(df.columns) == 0:
        return Table((), [], ())
    numeric = tuple(pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns)
    rows = [[general(v) for v in rec] for rec in df.itertuples(index=False, name=None)]
    return Table(tuple(str(c) for c in df.columns), rows, numeric)


#: Columns of the warehouse ``qa_checks`` rows that the QA table of a report reads.
QA_COLS = (
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
CAL_FIELDS = (
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
_QA_HEADERS = ("status", "check", "scope", "value found", "value expected", "message")


def qa_table(qa: pd.DataFrame) -> tuple[Table, str]:
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


def calibration_table(calibrations: pd.DataFrame, used: list[str]) -> tuple[Table, list[str]]:
    """The calibrations whose id is in ``used``, and the used ids not found."""
    headers, numeric = tuple(h for _, h, _ in CAL_FIELDS), tuple(f is not None for _, _, f in CAL_FIELDS)
    if not used:
        return Table(headers, [], numeric), []
    cal = calibrations[calibrations["calibration_id"].map(lambda v: not is_missing(v) and str(v) in used)]
    cal = cal.assign(_id=cal["calibration_id"].astype(str)).sort_values("_id", kind="stable")
    rows = [
        [text(r[col]) if fmt is None else number(r[col], fmt) for col, _, fmt in CAL_FIELDS] for _, r in cal.iterrows()
    ]
    return Table(headers, rows, numeric), [c for c in used if c not in set(cal["_id"])]
