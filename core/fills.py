"""The site physicists' phantom fill log (``phantom_fills.csv``).

One row per phantom study, keyed by the phantom's trial pseudonym (``subject_id`` in the
enrolment table)::

    subject_id,phantom_type,total_activity_mbq,reference_datetime,volume_ml,sphere_to_background_ratio
    SITE01-PH-CYL,uniform_cylinder,505.14,2026-01-19T12:00:00,6815.7,
    SITE01-PH-NEMA,nema_iec_body,252.2,2026-01-19T10:00:00,8908.9,5.0

Empty cells are ``None`` (the analysis turns a missing activity into a ``fail`` check);
a cell that is present but unreadable or physically impossible is an error naming the
row, since it is a typo the physicist must fix rather than missing information.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from rntflow.core.csvfiles import dict_reader
from rntflow.core.errors import CalibrationError

PhantomType = Literal["uniform_cylinder", "nema_iec_body"]


PHANTOM_TYPES: tuple[str, ...] = ("uniform_cylinder", "nema_iec_body")


@dataclass(frozen=True)
class PhantomFill:
    """One row of the site physicist's phantom fill log.

    Attributes
    ----------
    subject_id : str
        The phantom's trial pseudonym (enrolment table), e.g. ``SITE01-PH-CYL``.
    phantom_type : {"uniform_cylinder", "nema_iec_body"}
    total_activity_mbq : float or None
        Dose-calibrator activity put into the phantom (MBq) at ``reference_datetime``;
        for the NEMA phantom everything in it (background and spheres).
    reference_datetime : datetime or None
        Real (not date-shifted) time of the activity measurement; only checked for
        consistency with the header (see module docstring).
    volume_ml : float or None
        Cylinder: its inner volume (mL). NEMA: the background compartment volume (mL).
    sphere_to_background_ratio : float or None
        NEMA: sphere / background activity concentration; ``None`` for a cylinder.
    """

    subject_id: str
    phantom_type: PhantomType
    total_activity_mbq: float | None = None
    reference_datetime: datetime | None = None
    volume_ml: float | None = None
    sphere_to_background_ratio: float | None = None


FILL_COLUMNS: tuple[str, ...] = (
    "subject_id", "phantom_type", "total_activity_mbq", "reference_datetime", "volume_ml",
    "sphere_to_background_ratio",
)


def _cell(row: dict, column: str) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _positive(row: dict, column: str, where: str) -> float | None:
    text = _cell(row, column)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CalibrationError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise CalibrationError(f"{where}: {column} must be positive, got {text!r}")
    return value


def _datetime(row: dict, column: str, where: str) -> datetime | None:
    text = _cell(row, column)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CalibrationError(
            f"{where}: {column} {text!r} is not an ISO date-time (YYYY-MM-DDTHH:MM:SS)"
        ) from None
    # a UTC offset is dropped, as for DICOM times: all times of a site share its clock
    return value.replace(tzinfo=None)


def load_phantom_fills(path: str | Path) -> dict[str, PhantomFill]:
    """Read the phantom fill log.

    Parameters
    ----------
    path : str or Path
        CSV with the columns :data:`FILL_COLUMNS` (extra columns are ignored, a UTF-8 BOM
        is accepted, blank lines are skipped).

    Returns
    -------
    dict
        ``subject_id`` -> :class:`harmonization.phantom_study.PhantomFill`.
        ``total_activity_mbq`` (MBq), ``volume_ml`` (mL), ``sphere_to_background_ratio``
        and ``reference_datetime`` (naive) are ``None`` where the cell is empty.

    Raises
    ------
    CalibrationError
        File missing or unreadable, a column missing, or a row (named by its line
        number and subject) with no subject_id, an unknown phantom_type, a duplicate
        subject_id, an unreadable or non-positive number, or an unreadable date-time.
    """
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CalibrationError(f"phantom fill log {p}: cannot open ({exc.strerror or exc})") from exc
    out: dict[str, PhantomFill] = {}
    with fh:
        reader, missing = dict_reader(fh, FILL_COLUMNS)
        if missing:
            raise CalibrationError(f"phantom fill log {p}: missing column(s) {', '.join(missing)}")
        try:
            for row in reader:
                line = reader.line_num
                if not any((v or "").strip() for k, v in row.items() if k is not None):
                    continue
                subject_id = _cell(row, "subject_id")
                where = f"phantom fill log {p.name}, line {line}"
                if subject_id is None:
                    raise CalibrationError(f"{where}: subject_id is empty")
                where += f" ({subject_id})"
                kind = (_cell(row, "phantom_type") or "").lower()
                if kind not in PHANTOM_TYPES:
                    raise CalibrationError(
                        f"{where}: phantom_type {row.get('phantom_type')!r} is not one of {', '.join(PHANTOM_TYPES)}"
                    )
                if subject_id in out:
                    raise CalibrationError(f"{where}: subject_id {subject_id} appears twice")
                out[subject_id] = PhantomFill(
                    subject_id=subject_id,
                    phantom_type=kind,
                    total_activity_mbq=_positive(row, "total_activity_mbq", where),
                    reference_datetime=_datetime(row, "reference_datetime", where),
                    volume_ml=_positive(row, "volume_ml", where),
                    sphere_to_background_ratio=_positive(row, "sphere_to_background_ratio", where),
                )
        except csv.Error as exc:
            raise CalibrationError(f"phantom fill log {p}, line {reader.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise CalibrationError(f"phantom fill log {p}: not UTF-8 text ({exc.reason})") from exc
    return out
