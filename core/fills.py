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

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, field_validator

from rntflow.core.csvfiles import CsvRecords, read_csv_records
from rntflow.core.errors import CalibrationError

PhantomType = Literal["uniform_cylinder", "nema_iec_body"]
PHANTOM_TYPES: tuple[str, ...] = ("uniform_cylinder", "nema_iec_body")

FILL_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "phantom_type",
    "total_activity_mbq",
    "reference_datetime",
    "volume_ml",
    "sphere_to_background_ratio",
)


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
        consistency with the header.
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


class FillRow(BaseModel):
    """The fill log's row model: cells as the CSV holds them, checked."""

    subject_id: str
    phantom_type: str
    total_activity_mbq: str | None = None
    reference_datetime: str | None = None
    volume_ml: str | None = None
    sphere_to_background_ratio: str | None = None

    @field_validator("phantom_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        kind = value.lower()
        if kind not in PHANTOM_TYPES:
            raise ValueError(f"{value!r} is not one of {', '.join(PHANTOM_TYPES)}")
        return kind

    @field_validator("total_activity_mbq", "volume_ml", "sphere_to_background_ratio")
    @classmethod
    def _positive_number(cls, text: str | None) -> str | None:
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"must be positive, got {text!r}")
        return text

    @field_validator("reference_datetime")
    @classmethod
    def _iso_datetime(cls, text: str | None) -> str | None:
        if text is not None:
            try:
                datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an ISO date-time (YYYY-MM-DDTHH:MM:SS)") from None
        return text

    @staticmethod
    def _num(text: str | None) -> float | None:
        return None if text is None else float(text)

    def to_fill(self) -> PhantomFill:
        """The typed record (a UTC offset is dropped, as for DICOM times: a site shares one clock)."""
        ref = datetime.fromisoformat(self.reference_datetime).replace(tzinfo=None) if self.reference_datetime else None
        return PhantomFill(
            self.subject_id,
            self.phantom_type,
            self._num(self.total_activity_mbq),
            ref,  # type: ignore[arg-type]
            self._num(self.volume_ml),
            self._num(self.sphere_to_background_ratio),
        )


def _read(path: str | Path) -> CsvRecords[FillRow]:
    p = Path(path)
    return read_csv_records(
        p,
        FillRow,
        error=CalibrationError,
        what=f"phantom fill log {p.name}",
        columns=FILL_COLUMNS,
        unique=[("subject_id",)],
    )


def load_phantom_fills(path: str | Path) -> dict[str, PhantomFill]:
    """Read the whole phantom fill log, strictly.

    Parameters
    ----------
    path : str or Path
        CSV with the columns :data:`FILL_COLUMNS` (extra columns are ignored, a UTF-8 BOM
        is accepted, blank lines are skipped).

    Returns
    -------
    dict
        ``subject_id`` -> :class:`PhantomFill`; ``total_activity_mbq`` (MBq), ``volume_ml``
        (mL), ``sphere_to_background_ratio`` and ``reference_datetime`` (naive) are ``None``
        where the cell is empty.

    Raises
    ------
    CalibrationError
        File missing or unreadable, a column missing, or any row problem (every one listed
        with its line number and subject): an empty subject_id, an unknown phantom_type, a
        repeated subject_id, an unreadable or non-positive number, an unreadable date-time.
    """
    records = _read(path)
    records.raise_if_problems(CalibrationError, f"phantom fill log {Path(path).name}")
    return {row.subject_id: row.to_fill() for _, row in records.rows}


def load_phantom_fill(path: str | Path, subject_id: str) -> PhantomFill | None:
    """The fill-log row of one phantom; another phantom's bad row does not concern it.

    Returns ``None`` when the log has no row for ``subject_id``. Raises
    :class:`CalibrationError` for file-level problems and for problems of this phantom's
    own row(s) only.
    """
    records = _read(path)
    own = records.problems_by_label.get(subject_id)
    if own:
        raise CalibrationError(f"phantom fill log {Path(path).name}: " + "; ".join(own))
    for _, row in records.rows:
        if row.subject_id == subject_id:
            return row.to_fill()
    return None
