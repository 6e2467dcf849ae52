"""Warehouse values and frames made fit for a report: missing values, number formats, subsets.

The report frames come from the warehouse as the caller queried them: columns may be
missing, values null, numbers stored as text, several result versions per natural key and
rows of other subjects. These helpers make them uniform before the figures and tables are
built. Everything returns plain text or frames; HTML escaping is the templates' job
(``analysis/templates``, Jinja2 with autoescape).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from rntflow.core.methods import method_rank

#: Shown for a missing value in a table cell.
MISSING = "\u2013"
#: Shown for an empty section.
NONE_TEXT = "(none)"


# ----------------------------------------------------------------------------- values
def is_missing(value: object) -> bool:
    """True for None, NaN, NaT and pandas' NA (never for arrays)."""
    if value is None:
        return True
    try:
        result = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return bool(result) if np.ndim(result) == 0 else False


def as_float(value: object) -> float:
    """``value`` as a float; nan when missing or not a number."""
    if is_missing(value) or isinstance(value, (str, bytes)):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def as_floats(values: pd.Series) -> pd.Series:
    """``values`` as a float Series (nan when missing or not a number)."""
    return values.map(as_float).astype(float)


def is_true(value: object) -> bool:
    """Truth of a nullable flag (missing is False)."""
    if is_missing(value):
        return False
    try:
        return bool(value)
    except (TypeError, ValueError):
        return False


def text(value: object) -> str:
    """Text of a data value; :data:`MISSING` when missing."""
    return MISSING if is_missing(value) else str(value)


def number(value: object, fmt: str) -> str:
    """Number formatted with ``fmt`` (e.g. ``'.2f'``); :data:`MISSING` when missing/not finite."""
    x = as_float(value)
    return format(x, fmt) if math.isfinite(x) else MISSING


def general(value: object) -> str:
    """A table cell of unknown type: numbers with 4 significant digits, bools yes/no."""
    if is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".4g")
    return str(value)


# ----------------------------------------------------------------------------- frames
def with_columns(df: pd.DataFrame | None, columns: Iterable[str]) -> pd.DataFrame:
    """A copy of ``df`` with every column of ``columns`` (missing ones all null)."""
    out = pd.DataFrame() if df is None else df.copy()
    out = out.reset_index(drop=True)
    for col in columns:
        if col not in out.columns:
            out[col] = pd.Series([None] * len(out), dtype=object)
    return out


def only_subject(df: pd.DataFrame, subject_id: str) -> pd.DataFrame:
    """Rows of ``subject_id`` (or without a subject): never show another subject's data."""
    keep = df["subject_id"].map(lambda v: is_missing(v) or str(v) == subject_id)
    return df[keep.astype(bool)]


def latest_versions(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Keep the highest ``result_version`` per natural key when the frame has versions."""
    if "result_version" not in df.columns or df.empty:
        return df
    order = pd.to_numeric(df["result_version"], errors="coerce").fillna(-1)
    ranked = df.assign(_rv=order.to_numpy()).sort_values("_rv", kind="stable")
    return ranked.drop_duplicates(list(keys), keep="last").drop(columns="_rv").sort_index()


def normalise_keys(df: pd.DataFrame) -> pd.DataFrame:
    """``cycle`` as float (nan when missing) and ``voi`` as text."""
    df = df.copy()
    df["cycle"] = pd.to_numeric(df["cycle"], errors="coerce").astype(float)
    df["voi"] = df["voi"].map(lambda v: "(unnamed)" if is_missing(v) else str(v)).astype(object)
    return df


def cycles_of(*frames: pd.DataFrame) -> list[int]:
    """Sorted cycle numbers present in any of ``frames``."""
    found: set[int] = set()
    for df in frames:
        found.update(int(c) for c in df["cycle"].dropna().unique())
    return sorted(found)


def method_order(method: object) -> int:
    """Sort order of a dose method, best first (:func:`rntflow.core.methods.method_rank`)."""
    return -method_rank(None if is_missing(method) else str(method))
