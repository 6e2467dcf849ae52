"""QA rules of a subject's treatment (pure): cumulative dose limits and protocol time points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rntflow.core import protocol
from rntflow.dosimetry import _checks as chk


@dataclass(frozen=True)
class LimitCheck:
    """One organ's cumulative dose (or BED) against the trial's limit."""

    voi: str
    quantity: str  # "dose_gy" or "bed_gy"
    cumulative: float
    limit: float
    n_cycles: int

    @property
    def status(self) -> str:
        """``fail`` above the limit, ``warn`` above 80% of it (the next cycle may cross it), else ``pass``."""
        if self.cumulative > self.limit:
            return "fail"
        return "warn" if self.cumulative > 0.8 * self.limit else "pass"

    @property
    def message(self) -> str:
        what = "absorbed dose" if self.quantity == "dose_gy" else "BED"
        return (
            f"cumulative {self.voi} {what} {self.cumulative:.2f} Gy over {self.n_cycles} cycle(s) "
            f"against a limit of {self.limit:g} Gy"
        )


def cumulative_limit_checks(
    per_cycle: Mapping[str, Sequence[tuple[float, float | None]]],
    limits: Mapping[str, tuple[float | None, float | None]],
) -> list[LimitCheck]:
    """Sum each organ's per-cycle (dose_gy, bed_gy) and compare with its limits.

    Parameters
    ----------
    per_cycle : mapping VOI -> sequence of (dose_gy, bed_gy or None), one per cycle
    limits : mapping VOI -> (dose limit Gy or None, BED limit Gy or None)

    Raises
    ------
    DosimetryInputError
        A NaN/inf or negative dose or BED, or a limit that is not finite and > 0; the
        message names the VOI, the cycle and the value.
    """
    out = []
    for voi, (dose_limit, bed_limit) in limits.items():
        if dose_limit is not None:
            dose_limit = chk.positive(f"limits[{voi!r}] dose limit (Gy)", dose_limit)
        if bed_limit is not None:
            bed_limit = chk.positive(f"limits[{voi!r}] BED limit (Gy)", bed_limit)
        cycles = per_cycle.get(voi)
        if not cycles:
            continue
        cycles = [
            (
                chk.non_negative(f"per_cycle[{voi!r}][{i}] dose_gy", d),
                None if b is None else chk.non_negative(f"per_cycle[{voi!r}][{i}] bed_gy", b),
            )
            for i, (d, b) in enumerate(cycles)
        ]
        if dose_limit is not None:
            out.append(LimitCheck(voi, "dose_gy", float(sum(d for d, _ in cycles)), dose_limit, len(cycles)))
        beds = [b for _, b in cycles if b is not None]
        if bed_limit is not None and len(beds) == len(cycles):
            out.append(LimitCheck(voi, "bed_gy", float(sum(beds)), bed_limit, len(cycles)))
    return out


@dataclass(frozen=True)
class _Window:
    """A protocol window given as a ``(nominal, earliest, latest)`` tuple (h)."""

    nominal_h: float
    earliest_h: float
    latest_h: float


def missing_time_points(t_h: Sequence[float], windows: Sequence[tuple[float, float, float]]) -> list[float]:
    """Nominal times (h) of the protocol windows ``(nominal, earliest, latest)`` with no scan.

    Each scan fills only the window it belongs to (:func:`rntflow.core.protocol.missing_time_points`).

    Raises
    ------
    DosimetryInputError
        A scan time (h since administration) that is NaN/inf or before the
        administration, or a window bound that is not finite.
    """
    times = [chk.time_after_admin(f"t_h[{i}]", t) for i, t in enumerate(t_h)]
    wins = [_Window(*(chk.finite(f"windows[{i}][{j}]", v) for j, v in enumerate(w))) for i, w in enumerate(windows)]
    return protocol.missing_time_points(times, wins)
