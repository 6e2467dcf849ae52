"""Input checks shared by the public physics functions of :mod:`rntflow.dosimetry`.

Every check raises :class:`rntflow.core.errors.DosimetryInputError` (or the error class a
caller passes) with a message that names the argument and the offending value, e.g.
``mass_g=-5.0: must be > 0``. Scalars come back as ``float``, arrays as float ``ndarray``,
so a caller writes ``m = positive("mass_g", mass_g)`` and uses ``m``.

What is rejected: NaN and +-inf everywhere; values of the wrong sign (negative activity,
TIA or dose, non-positive mass, volume, density, spacing, half-life); non-numbers
(``None``, strings, booleans); times before administration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rntflow.core.errors import DosimetryInputError


def _scalar(name: str, value: object, error: type[Exception]) -> float:
    """``value`` as a finite float, or ``error`` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise error(f"{name}={value!r}: must be a number")
    v = float(value)
    if not math.isfinite(v):
        raise error(f"{name}={v!r}: must be finite")
    return v


def finite(name: str, value: object, *, error: type[Exception] = DosimetryInputError) -> float:
    """``value`` as a finite float (any sign)."""
    return _scalar(name, value, error)


def non_negative(name: str, value: object, *, error: type[Exception] = DosimetryInputError) -> float:
    """``value`` as a finite float ``>= 0`` (activity, TIA, dose, an uncertainty)."""
    v = _scalar(name, value, error)
    if v < 0:
        raise error(f"{name}={v!r}: must be >= 0")
    return v


def positive(name: str, value: object, *, error: type[Exception] = DosimetryInputError) -> float:
    """``value`` as a finite float ``> 0`` (mass, volume, density, half-life, a ratio)."""
    v = _scalar(name, value, error)
    if v <= 0:
        raise error(f"{name}={v!r}: must be > 0")
    return v


def in_range(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    high_open: bool = False,
    error: type[Exception] = DosimetryInputError,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    v = _scalar(name, value, error)
    if v < low or v > high or (high_open and v == high):
        bracket = ")" if high_open else "]"
        raise error(f"{name}={v!r}: must be in [{low:g}, {high:g}{bracket}")
    return v


def time_after_admin(name: str, value: object, *, error: type[Exception] = DosimetryInputError) -> float:
    """A time since administration (h): finite and not before the administration."""
    v = _scalar(name, value, error)
    if v < 0:
        raise error(f"{name}={v!r}: time before administration")
    return v


def _first_bad(mask: np.ndarray) -> str:
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return f"{int(mask.sum())} of {mask.size} voxel(s), first at index {idx}"


def finite_array(
    name: str, values: object, *, ndim: int | None = None, error: type[Exception] = DosimetryInputError
) -> np.ndarray:
    """``values`` as a float array without NaN or inf (optionally of ``ndim`` dimensions)."""
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise error(f"{name}: not a numeric array ({exc})") from exc
    if ndim is not None and a.ndim != ndim:
        raise error(f"{name}: must be {ndim}-D, got shape {a.shape}")
    if a.size == 0:
        raise error(f"{name}: empty array")
    bad = ~np.isfinite(a)
    if bad.any():
        raise error(f"{name}: NaN or inf in {_first_bad(bad)}")
    return a


def non_negative_array(
    name: str, values: object, *, ndim: int | None = None, error: type[Exception] = DosimetryInputError
) -> np.ndarray:
    """A finite float array with every element ``>= 0`` (activity or TIA map)."""
    a = finite_array(name, values, ndim=ndim, error=error)
    neg = a < 0
    if neg.any():
        raise error(f"{name}: negative value {float(a[neg].min())!r} in {_first_bad(neg)}")
    return a


def positive_array(
    name: str, values: object, *, ndim: int | None = None, error: type[Exception] = DosimetryInputError
) -> np.ndarray:
    """A finite float array with every element ``> 0`` (density map)."""
    a = finite_array(name, values, ndim=ndim, error=error)
    bad = a <= 0
    if bad.any():
        raise error(f"{name}: non-positive value {float(a[bad].min())!r} in {_first_bad(bad)}")
    return a


def spacing_mm(name: str, value: float | Sequence[float]) -> np.ndarray:
    """Voxel spacing (mm): one positive finite number or three; returns shape (3,)."""
    a = np.asarray(value, dtype=float) if not isinstance(value, (str, bytes)) else np.array([np.nan])
    if a.ndim == 0:
        a = np.repeat(a, 3)
    if a.shape != (3,):
        raise DosimetryInputError(f"{name}={value!r}: must be one number or three (mm)")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise DosimetryInputError(f"{name}={tuple(float(x) for x in a)!r}: every spacing must be finite and > 0 mm")
    return a
