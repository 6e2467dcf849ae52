"""The QA result model: one check's verdict and the warehouse ``qa_checks`` row made from it.

Every check the platform runs (reconstruction protocol, phantom analysis, calibration
validity and drift, registration, kinetics, cumulative dose limits, processing) ends as a
:class:`CheckResult` and is written with :func:`qa_row`, so the status and scope
vocabularies below are the only ones a ``qa_checks`` row can carry
(``warehouse/schema.py`` declares the same vocabularies for the column values).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from rntflow.core.errors import VocabularyError

#: Verdict of a check: ``pass``, ``warn`` (recorded, processing goes on, a person should look)
#: or ``fail`` (the result is unusable or a limit is crossed).
Status = Literal["pass", "warn", "fail"]
PASS: Status = "pass"
WARN: Status = "warn"
FAIL: Status = "fail"
#: The status vocabulary, best first.
STATUSES: tuple[Status, ...] = get_args(Status)

#: What a check concerns (the ``scope`` column); ``scope_id`` identifies it within the scope.
Scope = Literal["site", "camera", "calibration", "study", "subject", "cycle", "voi", "flow_run"]
SCOPES: tuple[Scope, ...] = get_args(Scope)


@dataclass(frozen=True)
class CheckResult:
    """One QA check: what was found, what is expected, and the verdict.

    Attributes
    ----------
    check : str
        Check name (the ``check_name`` column), e.g. ``energy_window_photopeak``.
    status : {"pass", "warn", "fail"}
        Verdict.
    value_found : str
        Value found, as text with its unit (``"missing"`` when absent).
    value_expected : str
        Value or range expected, as text with its unit.
    message : str
        One sentence for the coordinator.

    Raises
    ------
    VocabularyError
        When ``status`` is not in :data:`STATUSES`.
    """

    check: str
    status: Status
    value_found: str
    value_expected: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise VocabularyError(f"QA check {self.check!r}: status {self.status!r} is not one of {STATUSES}")


def status_if(ok: bool, otherwise: Status = FAIL) -> Status:
    """``pass`` when ``ok``, else ``otherwise`` (``fail`` unless told)."""
    return PASS if ok else otherwise


def worst_status(statuses: Iterable[str]) -> Status:
    """The worst of ``statuses`` (``fail`` > ``warn`` > ``pass``); ``pass`` for none.

    Raises
    ------
    VocabularyError
        When a status is not in :data:`STATUSES`.
    """
    worst = 0
    for s in statuses:
        if s not in STATUSES:
            raise VocabularyError(f"status {s!r} is not one of {STATUSES}")
        worst = max(worst, STATUSES.index(s))
    return STATUSES[worst]


def qa_row(result: CheckResult, scope: Scope, scope_id: str, **cols: object) -> dict[str, object]:
    """A ``qa_checks`` row from a check result.

    Parameters
    ----------
    result : CheckResult
        The check.
    scope : str
        What was checked (one of :data:`SCOPES`).
    scope_id : str
        Identifier within the scope (e.g. the study_id, or ``subject_id/cycle/voi``).
    **cols
        Further columns of the row: ``trial_id``, ``site_id``, ``subject_id``, ``study_id``,
        ``cycle``.

    Returns
    -------
    dict
        Column name -> value, as the warehouse writer takes it.

    Raises
    ------
    VocabularyError
        When ``scope`` is not in :data:`SCOPES` or ``cols`` would overwrite a check column.
    """
    if scope not in SCOPES:
        raise VocabularyError(f"QA check {result.check!r}: scope {scope!r} is not one of {SCOPES}")
    row: dict[str, object] = {
        "check_name": result.check,
        "scope": scope,
        "scope_id": scope_id,
        "status": result.status,
        "value_found": result.value_found,
        "value_expected": result.value_expected,
        "message": result.message,
    }
    clash = sorted(set(row) & set(cols))
    if clash:
        raise VocabularyError(f"QA check {result.check!r}: extra columns {clash} would overwrite the check's own")
    return {**row, **cols}


#: How a study's processing ended (``processing`` QA result ``value_found``): see
#: flows/process_study.py. ``waiting`` studies are processed again when what they wait for
#: arrives (tasks/dependencies.py).
PROCESSED, WAITING, FAILED_STUDY = "processed", "waiting", "failed"
STUDY_STATES: tuple[str, ...] = (PROCESSED, WAITING, FAILED_STUDY)
