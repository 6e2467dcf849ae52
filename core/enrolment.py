"""The coordinators' enrolment table (``enrolment.csv``): site PatientID -> trial pseudonym.

The identity key table the listener pseudonymises with::

    site_id,patient_id,subject_id,kind
    SITE01,HOSP1234567,RNT-01001,patient
    SITE01,QC-CYL-SITE01,SITE01-PH-CYL,phantom

Its location is ``paths.enrolment`` of the trial config (:mod:`rntflow.core.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, field_validator

from rntflow.core.csvfiles import read_csv_records
from rntflow.core.errors import EnrolmentError


@dataclass(frozen=True)
class Enrolment:
    """One row of the coordinator's enrolment table (the identity key table).

    Attributes
    ----------
    site_id : str
        The site that enrolled the subject.
    patient_id : str
        The hospital's PatientID (PHI: lives only in the key table).
    subject_id : str
        The trial pseudonym used everywhere beyond the listener.
    kind : str
        ``patient`` or ``phantom``.
    """

    site_id: str
    patient_id: str
    subject_id: str
    kind: str = "patient"


ENROLMENT_COLUMNS = ("site_id", "patient_id", "subject_id", "kind")


class EnrolmentRow(BaseModel):
    """The enrolment table's row model (see :func:`load_enrolment`)."""

    site_id: str
    patient_id: str
    subject_id: str
    kind: Literal["patient", "phantom"] = "patient"

    @field_validator("kind", mode="before")
    @classmethod
    def _default_kind(cls, value: str | None) -> str:
        return value or "patient"


def load_enrolment(path: str | Path) -> list[Enrolment]:
    """Read the enrolment CSV (columns ``site_id,patient_id,subject_id[,kind]``).

    A missing file is an empty enrolment (the listener may start before the first
    subject is enrolled; ``rntflow check-config`` reports it).

    Raises
    ------
    EnrolmentError
        Listing every problem with its line: a missing column, an empty field, an unknown
        kind, a PatientID enrolled twice at a site or a subject_id used twice.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = read_csv_records(
        path,
        EnrolmentRow,
        error=EnrolmentError,
        what=f"enrolment table {path}",
        columns=ENROLMENT_COLUMNS[:3],
        unique=[("site_id", "patient_id"), ("subject_id",)],
        label=lambda cells: cells.get("subject_id"),
        private=("patient_id",),
    )
    records.raise_if_problems(EnrolmentError, f"enrolment table {path}")
    return [Enrolment(r.site_id, r.patient_id, r.subject_id, r.kind) for _, r in records.rows]
