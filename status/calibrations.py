"""The current calibration of every camera, as the coordinator sees it at the reference time.

The rules (which calibration is current, when it expires, when it is due) are those of
:mod:`rntflow.core.calibration_policy`; this module applies them to ``calibrations`` rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rntflow.core.calibration_policy import current_calibration, validity
from rntflow.status.values import iso, num

#: A calibration expiring within this many days is reported as ``due``.
DUE_WITHIN_DAYS = 30


@dataclass(frozen=True)
class CalibrationState:
    """The current state of one camera's calibration.

    Attributes
    ----------
    camera_id : str
    status : str
        ``valid``, ``due``, ``expired`` or ``missing``.
    radionuclide, protocol, calibration_id : str or None
        Of the current calibration (``None`` when missing).
    valid_from, expires_at : str or None
        ISO 8601 UTC (de-identified clock).
    days_left : float or None
        Days from ``as_of`` to expiry (negative once expired).
    drift_flag : bool or None
        Sensitivity drift beyond the trial's tolerance at this calibration.
    drift_pct : float or None
    """

    camera_id: str
    status: str
    radionuclide: str | None = None
    protocol: str | None = None
    calibration_id: str | None = None
    valid_from: str | None = None
    expires_at: str | None = None
    days_left: float | None = None
    drift_flag: bool | None = None
    drift_pct: float | None = None


@dataclass(frozen=True)
class _Row:
    """A ``calibrations`` row as a dated record (the view holds one version per calibration)."""

    valid_from: datetime
    row: dict[str, Any]
    version: int = 0


def calibration_state(
    valid_from: datetime, as_of: datetime, validity_days: int, due_within_days: int = DUE_WITHIN_DAYS
) -> tuple[str, datetime, float]:
    """Status of a calibration made at ``valid_from``, seen at ``as_of``.

    Parameters
    ----------
    valid_from : datetime
        Start of validity (aware).
    as_of : datetime
        Reference time (aware, same clock as ``valid_from``).
    validity_days : int
        ``config.calibration.validity_days`` (d).
    due_within_days : int
        Horizon for ``due`` (d).

    Returns
    -------
    (status, expires_at, days_left)
        See :func:`rntflow.core.calibration_policy.validity`: ``expired`` when
        ``as_of - valid_from > validity_days``; ``due`` when it expires within
        ``due_within_days``; else ``valid``. ``days_left`` is negative once expired.
    """
    v = validity(valid_from, as_of, validity_days, due_within_days)
    return v.status, v.expires_at, v.days_left


def calibration_states(
    calibrations: Iterable[dict[str, Any]],
    cameras: dict[str, set[str]],
    as_of: datetime,
    validity_days: int,
    due_within_days: int = DUE_WITHIN_DAYS,
) -> dict[str, list[CalibrationState]]:
    """The current calibration of every camera, per site.

    Parameters
    ----------
    calibrations : iterable of dict
        Rows of the ``calibrations`` table (``site_id``, ``camera_id``, ``radionuclide``,
        ``protocol``, ``calibration_id``, ``valid_from``, ``drift_pct``, ``drift_flag``).
    cameras : dict
        ``site_id`` -> cameras seen in studies; one without a calibration is ``missing``.
    as_of : datetime
        Reference time; calibrations made after it do not count, and a calibration
        superseded only after it is still the current one.
    validity_days, due_within_days : int
        See :func:`calibration_state`.

    Returns
    -------
    dict
        ``site_id`` -> states sorted by camera, one per camera, radionuclide and protocol.
    """
    by_key: dict[tuple[str, str, str, str], list[_Row]] = {}
    for c in calibrations:
        if c["valid_from"] is not None:
            by_key.setdefault((c["site_id"], c["camera_id"], c["radionuclide"], c["protocol"]), []).append(
                _Row(c["valid_from"], c)
            )
    calibrated: dict[str, set[str]] = {}
    states: dict[str, list[CalibrationState]] = {}
    for (site_id, camera_id, nuclide, protocol), series in sorted(by_key.items()):
        current = current_calibration(series, as_of)
        if current is None:
            continue  # only calibrations made after as_of: none at that time
        cal = current.row
        v = validity(current.valid_from, as_of, validity_days, due_within_days)
        calibrated.setdefault(site_id, set()).add(camera_id)
        states.setdefault(site_id, []).append(
            CalibrationState(
                camera_id=camera_id,
                status=v.status,
                radionuclide=nuclide,
                protocol=protocol,
                calibration_id=cal.get("calibration_id"),
                valid_from=iso(current.valid_from),
                expires_at=iso(v.expires_at),
                days_left=round(v.days_left, 1),
                drift_flag=cal.get("drift_flag"),
                drift_pct=num(cal.get("drift_pct")),
            )
        )
    for site_id, cams in cameras.items():
        for camera_id in sorted(cams - calibrated.get(site_id, set())):
            states.setdefault(site_id, []).append(CalibrationState(camera_id=camera_id, status="missing"))
    return {
        k: sorted(v, key=lambda c: (c.camera_id, c.radionuclide or "", c.protocol or "")) for k, v in states.items()
    }
