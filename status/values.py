"""Value conversions shared by the status modules: UTC datetimes, ISO text, numbers from rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc(value: Any) -> datetime | None:
    """An aware UTC datetime from a warehouse value (naive is taken as UTC); ``None`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC text with a ``Z`` suffix; ``None`` stays ``None``."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def num(value: Any) -> float | None:
    """A float from a warehouse value; ``None`` for missing, NaN or non-numeric values."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def int_or_none(value: Any) -> int | None:
    """An int from a warehouse value (see :func:`num`)."""
    f = num(value)
    return None if f is None else int(f)


def hours(h: float) -> str:
    """A time point as shown to the coordinator, e.g. ``24h``."""
    return f"{h:g}h"
