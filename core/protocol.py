"""Protocol time points (pure): which imaging time point a scan belongs to.

The trial's imaging protocol (``TrialConfig.protocol.time_points``, see
:class:`rntflow.core.config.TimePointWindow`) names nominal scan times after administration
with an acceptance window ``earliest_h <= t_h <= latest_h`` each. This module is the one
place that maps scan times onto those windows; the reconstruction check
(:mod:`rntflow.harmonization.protocol_checks`), the coordinator's status
(:mod:`rntflow.status`), the QA of missing time points (:mod:`rntflow.dosimetry.limits`)
and the dosimetry flow's readiness (:mod:`rntflow.flows.dosimetry`) all call it.

The rules
---------
* A scan at ``t_h`` belongs to the window holding it, bounds included. When windows overlap
  it belongs to the one whose nominal time is nearest (the first such window on a tie).
  A scan without a time (``None`` or NaN) belongs to no window.
* Each scan fills at most one window: a window without a scan of its own is missing even
  if a scan assigned to an overlapping window also lies inside it.
* A time point's deadline is the administration time plus the ``latest_h`` of its window.
* The last time point (largest nominal time) has arrived once a scan at or after the
  earliest time of its window exists; a scan later than the window counts too (nothing
  later is expected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

OutOfWindowReason = Literal["no_time", "early", "late", "between"]


class Window(Protocol):
    """What a protocol window provides (:class:`rntflow.core.config.TimePointWindow` does).

    Attributes
    ----------
    nominal_h, earliest_h, latest_h : float
        Nominal time and acceptance window (h after administration).
    """

    @property
    def nominal_h(self) -> float: ...

    @property
    def earliest_h(self) -> float: ...

    @property
    def latest_h(self) -> float: ...


@dataclass(frozen=True)
class WindowAssignment:
    """Scans distributed over the protocol windows by :func:`assign_to_windows`.

    Attributes
    ----------
    slots : tuple of tuple of int
        Per window (in the order given), the indices of the scans it holds.
    out_of_window : tuple of int
        Indices of the scans that fall in no window.
    """

    slots: tuple[tuple[int, ...], ...]
    out_of_window: tuple[int, ...] = field(default=())

    def missing(self) -> list[int]:
        """Indices of the windows that hold no scan."""
        return [i for i, s in enumerate(self.slots) if not s]


def _no_time(t_h: float | None) -> bool:
    return t_h is None or t_h != t_h  # None or NaN


def match_window(t_h: float | None, windows: Sequence[Window]) -> int | None:
    """Index of the protocol window a scan at ``t_h`` belongs to.

    Parameters
    ----------
    t_h : float or None
        Acquisition time after administration (h); ``None`` or NaN when unknown.
    windows : sequence of Window
        ``config.protocol.time_points``.

    Returns
    -------
    int or None
        Index into ``windows`` of the window holding ``t_h`` (bounds included; the nearest
        nominal time when windows overlap, the first of equals on a tie), ``None`` when
        ``t_h`` is unknown or outside every window.
    """
    if _no_time(t_h):
        return None
    hits = [i for i, w in enumerate(windows) if w.earliest_h <= t_h <= w.latest_h]
    if not hits:
        return None
    return min(hits, key=lambda i: abs(windows[i].nominal_h - t_h))


def nominal_time_point(t_h: float | None, windows: Sequence[Window]) -> float | None:
    """Nominal time (h) of the window a scan at ``t_h`` belongs to, or ``None`` (see :func:`match_window`)."""
    i = match_window(t_h, windows)
    return None if i is None else windows[i].nominal_h


def out_of_window_reason(t_h: float | None, windows: Sequence[Window]) -> OutOfWindowReason:
    """Why a scan matches no window.

    Returns
    -------
    str
        ``no_time`` (``t_h`` unknown), ``early`` (before every window), ``late`` (after every
        window) or ``between`` (in a gap between windows).
    """
    if _no_time(t_h):
        return "no_time"
    if t_h < min(w.earliest_h for w in windows):
        return "early"
    if t_h > max(w.latest_h for w in windows):
        return "late"
    return "between"


def assign_to_windows(t_h: Sequence[float | None], windows: Sequence[Window]) -> WindowAssignment:
    """Put every scan of a cycle into the window it belongs to.

    Parameters
    ----------
    t_h : sequence of float or None
        Scan times after administration (h), in any order.
    windows : sequence of Window

    Returns
    -------
    WindowAssignment
        Scan indices per window (in scan order) and those outside every window.
    """
    slots: list[list[int]] = [[] for _ in windows]
    outside: list[int] = []
    for k, t in enumerate(t_h):
        i = match_window(t, windows)
        if i is None:
            outside.append(k)
        else:
            slots[i].append(k)
    return WindowAssignment(tuple(tuple(s) for s in slots), tuple(outside))


def missing_time_points(t_h: Sequence[float | None], windows: Sequence[Window]) -> list[float]:
    """Nominal times (h) of the windows that hold none of the scans ``t_h`` (protocol order)."""
    a = assign_to_windows(t_h, windows)
    return [windows[i].nominal_h for i in a.missing()]


def last_window(windows: Sequence[Window]) -> Window:
    """The protocol's last time point (largest nominal time; the first of equals)."""
    if not windows:
        raise ValueError("the imaging protocol has no time points")
    return max(windows, key=lambda w: w.nominal_h)


def last_time_point_reached(t_h: Sequence[float | None], windows: Sequence[Window]) -> bool:
    """Whether a scan at or after the earliest time of the last window exists (a late one counts)."""
    earliest = last_window(windows).earliest_h
    return any(not _no_time(t) and t >= earliest for t in t_h)


def time_point_deadline(administered_at: datetime, window: Window) -> datetime:
    """Latest acceptable scan time of a time point: administration + ``latest_h`` (h)."""
    return administered_at + timedelta(hours=window.latest_h)
