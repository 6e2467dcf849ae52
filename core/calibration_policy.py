"""Calibration currency and drift (pure): which calibration holds when, until when, and how it moved.

One camera's calibrations for one radionuclide at one site form a *series*: the key is
``(site_id, camera_id, radionuclide)``, since a camera id (``Manufacturer|Model|Serial``) is
unique only within a site (two sites may report the same id: a blank or vendor-default
serial). Grouping records into series (normalising radionuclide spellings) is the caller's
job (:func:`rntflow.harmonization.calibration.series_key`); every function here works on the
records of one series. The registry (:mod:`rntflow.harmonization.calibration`), the
``calibrations`` warehouse rows (:mod:`rntflow.tasks.common`), the phantom task
(:mod:`rntflow.tasks.calibration`) and the coordinator's status (:mod:`rntflow.status`) all
call these functions.

The rules
---------
* **Order.** Calibrations are ordered by ``(valid_from, version)``: a re-analysis of the same
  phantom scan (same ``valid_from``, higher version) comes after the one it replaces.
* **Currency.** The calibration current at time ``t`` is the last one in that order with
  ``valid_from <= t``; one made only after ``t`` does not count. Supersession by a later
  calibration takes effect at that calibration's ``valid_from``, not before.
* **Validity.** A calibration expires ``validity_days`` after ``valid_from``; it is
  ``expired`` at ``t`` when ``t - valid_from > validity_days`` (the expiry instant itself is
  still valid), ``due`` when it is not expired and expires within ``due_within_days``,
  otherwise ``valid``. Its validity ends at the earlier of its expiry and the ``valid_from``
  of the calibration that supersedes it.
* **Drift.** A calibration's drift is ``100 (value - reference) / reference`` (%) against the
  last calibration *of the same kind* (sensitivity, or vendor Bq/mL scale factor) before it
  in the order above; a first calibration of its kind has no drift. The drift is flagged
  when ``|drift_pct| > drift_tolerance_pct``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Literal, Protocol, TypeVar

#: Validity of a calibration seen at some time (``missing``: none is current).
CalibrationStatus = Literal["valid", "due", "expired", "missing"]


class Dated(Protocol):
    """A calibration as far as currency goes.

    Attributes
    ----------
    valid_from : datetime
        Start of validity (the phantom scan time).
    version : int
        Registry version; breaks ties between records with the same ``valid_from``.
    """

    @property
    def valid_from(self) -> datetime: ...

    @property
    def version(self) -> int: ...


class Measured(Dated, Protocol):
    """A calibration as far as drift goes: a dated record with a kind and a value.

    Attributes
    ----------
    kind : str
        ``sensitivity`` (cps/MBq) or ``vendor_scale_factor`` (dimensionless).
    value : float
        The calibration value in the unit of its kind.
    """

    @property
    def kind(self) -> str: ...

    @property
    def value(self) -> float: ...


D = TypeVar("D", bound=Dated)
M = TypeVar("M", bound=Measured)


@dataclass(frozen=True)
class Validity:
    """A calibration's validity seen at one time.

    Attributes
    ----------
    status : str
        ``valid``, ``due`` or ``expired``.
    expires_at : datetime
        ``valid_from + validity_days``.
    days_left : float
        Days from the time of view to ``expires_at`` (negative once expired).
    """

    status: CalibrationStatus
    expires_at: datetime
    days_left: float


@dataclass(frozen=True)
class TimelineEntry(Generic[M]):
    """One calibration of a series with its validity end, successor and drift.

    Attributes
    ----------
    calibration : Measured
    valid_until : datetime
        The earlier of its expiry and the ``valid_from`` of its successor.
    superseded_by : Measured or None
        The next calibration of the series (any kind), ``None`` for the last.
    drift_pct : float or None
        Drift (%) against the previous calibration of the same kind.
    drift_flag : bool or None
        ``|drift_pct| > drift_tolerance_pct``; ``None`` without a drift.
    """

    calibration: M
    valid_until: datetime
    superseded_by: M | None
    drift_pct: float | None
    drift_flag: bool | None


def order_key(c: Dated) -> tuple[datetime, int]:
    """Sort key of the calibration order: ``(valid_from, version)``."""
    return c.valid_from, c.version


def current_calibration(series: Iterable[D], at: datetime | None = None) -> D | None:
    """The calibration current at ``at``.

    Parameters
    ----------
    series : iterable of Dated
        One site's camera's calibrations for one radionuclide.
    at : datetime, optional
        Time of use (same clock and tz-awareness as ``valid_from``); ``None``: the latest of
        the series, whenever it was made.

    Returns
    -------
    Dated or None
        The last record in ``(valid_from, version)`` order with ``valid_from <= at`` (the
        first of equal records); ``None`` when there is none.
    """
    usable = [c for c in series if at is None or c.valid_from <= at]
    return max(usable, key=order_key, default=None)


def expires_at(valid_from: datetime, validity_days: float) -> datetime:
    """End of a calibration's validity period: ``valid_from + validity_days``."""
    return valid_from + timedelta(days=validity_days)


def is_expired(valid_from: datetime, at: datetime, validity_days: float) -> bool:
    """Whether a calibration made at ``valid_from`` has expired at ``at`` (``at - valid_from > validity_days``)."""
    return at - valid_from > timedelta(days=validity_days)


def validity(valid_from: datetime, at: datetime, validity_days: float, due_within_days: float = 0.0) -> Validity:
    """Validity of a calibration made at ``valid_from``, seen at ``at``.

    Parameters
    ----------
    valid_from, at : datetime
        Same clock and tz-awareness.
    validity_days : float
        ``TrialConfig.calibration.validity_days`` (d).
    due_within_days : float
        A calibration not expired but expiring within this many days (d) is ``due``; 0
        makes only the expiry instant itself ``due``.

    Returns
    -------
    Validity
    """
    end = expires_at(valid_from, validity_days)
    days_left = (end - at).total_seconds() / 86400.0
    if is_expired(valid_from, at, validity_days):
        status: CalibrationStatus = "expired"
    elif days_left <= due_within_days:
        status = "due"
    else:
        status = "valid"
    return Validity(status, end, days_left)


def drift_pct(value: float, reference: float) -> float:
    """Drift (%) of a calibration value against the reference value it is compared with."""
    return 100.0 * (value - reference) / reference


def drift_flag(drift: float | None, tolerance_pct: float) -> bool | None:
    """``|drift| > tolerance_pct``; ``None`` when there is no drift (a first calibration)."""
    return None if drift is None else abs(drift) > tolerance_pct


def drift_reference(series: Iterable[M], new: M) -> M | None:
    """The calibration ``new`` is compared with for drift.

    Parameters
    ----------
    series : iterable of Measured
        The series ``new`` joins or belongs to (``new`` itself is skipped).
    new : Measured

    Returns
    -------
    Measured or None
        The last calibration of the same kind before ``new`` in ``(valid_from, version)``
        order, ``None`` when ``new`` is the first of its kind.
    """
    prior = [c for c in series if c is not new and c.kind == new.kind and order_key(c) <= order_key(new)]
    return max(prior, key=order_key, default=None)


def calibration_drift(series: Iterable[M], new: M) -> float | None:
    """Drift (%) of ``new`` against its :func:`drift_reference`; ``None`` for a first calibration."""
    ref = drift_reference(series, new)
    return None if ref is None else drift_pct(new.value, ref.value)


def calibration_timeline(
    series: Sequence[M], validity_days: float, drift_tolerance_pct: float
) -> list[TimelineEntry[M]]:
    """Every calibration of a series with its validity end, successor and drift.

    Parameters
    ----------
    series : sequence of Measured
        One site's camera's calibrations for one radionuclide, every version kept.
    validity_days : float
        Validity period (d).
    drift_tolerance_pct : float
        Drift tolerance (%).

    Returns
    -------
    list of TimelineEntry
        In ``(valid_from, version)`` order.
    """
    ordered = sorted(series, key=order_key)
    out = []
    for i, c in enumerate(ordered):
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        end = expires_at(c.valid_from, validity_days)
        until = min(end, nxt.valid_from) if nxt is not None else end
        drift = calibration_drift(ordered[:i], c)
        out.append(TimelineEntry(c, until, nxt, drift, drift_flag(drift, drift_tolerance_pct)))
    return out
