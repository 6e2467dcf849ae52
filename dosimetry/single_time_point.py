"""Single-time-point TIA: Hänscheid's and Madsen's formulas and their error bounds.

All times are hours after administration (``t_h``), activities in MBq, TIA in MBq·h. Both
methods assume a mono-exponential; each returns a warning when its error bound
(:data:`STP_ERROR_BOUND`) is exceeded or cannot be checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rntflow.core.errors import KineticsInputError
from rntflow.dosimetry import _checks as chk

LN2 = math.log(2.0)


@dataclass(frozen=True)
class SingleTimePointTia:
    """TIA from one measurement.

    Attributes
    ----------
    tia_mbq_h : float
        Time-integrated activity (MBq·h).
    method : str
        ``haenscheid`` or ``madsen``.
    warnings : tuple of str
        E.g. time outside the method's accurate range.
    """

    tia_mbq_h: float
    method: str
    warnings: tuple[str, ...] = ()


#: Error bound of the single-time-point warnings (|TIA error| above it is flagged).
STP_ERROR_BOUND = 0.10


def _check_stp(t_h: float, activity_mbq: float) -> tuple[float, float]:
    t_h = chk.time_after_admin("t_h", t_h, error=KineticsInputError)
    if t_h == 0:
        raise KineticsInputError("t_h=0.0: single-time-point methods need t_h > 0")
    return t_h, chk.positive("activity_mbq", activity_mbq, error=KineticsInputError)


def haenscheid_error(x: float) -> float:
    """Relative TIA error of Hänscheid's formula for a mono-exponential scanned at
    ``t = x T_eff``: ``x 2^(1-x) - 1`` (0 at x = 1 and 2; -10.8 % at 0.75, -11.6 % at 2.5,
    +6.1 % at its maximum x = 1/ln2)."""
    return x * 2.0 ** (1.0 - x) - 1.0


def madsen_error(x: float, t_eff_rel_dev: float) -> float:
    """Relative TIA error of Madsen's formula scanned at ``t = x T_pop`` for a patient
    whose T_eff is ``T_pop (1 + t_eff_rel_dev)``: ``k exp(x ln2 (1 - k)) - 1`` with
    ``k = 1/(1 + t_eff_rel_dev)`` (first order ``-(1 - x ln2) dev``: least sensitive at
    ``t = T_pop/ln2 = 1.44 T_pop``, Piwowarska-Bilska et al., Cancers 2022;14:3418, section 5: "about 1.5 T_eff")."""
    k = 1.0 / (1.0 + t_eff_rel_dev)
    return k * math.exp(x * LN2 * (1.0 - k)) - 1.0


def haenscheid_tia(t_h: float, activity_mbq: float, t_eff_h: float | None = None) -> SingleTimePointTia:
    """Hänscheid et al 2018 (J Nucl Med 59:75): ``TIA = A(t) * 2 t / ln 2``.

    Exact for a mono-exponential with ``t = T_eff`` or ``2 T_eff``; the error
    (:func:`haenscheid_error`) exceeds 10 % outside about 0.77-2.44 T_eff. A warning is
    returned when it does for the given (e.g. population) ``t_eff_h``, and when no
    ``t_eff_h`` is given (the bound cannot then be checked).

    Raises
    ------
    KineticsInputError
        NaN/inf, t_h <= 0 (before or at administration), activity <= 0, t_eff_h <= 0.
    """
    t_h, activity_mbq = _check_stp(t_h, activity_mbq)
    warns: list[str] = []
    if t_eff_h is None:
        warns.append(
            f"Hänscheid: t = {t_h:.1f} h, no T_eff given: the {STP_ERROR_BOUND:.0%} error bound "
            "(0.77-2.44 T_eff) cannot be checked"
        )
    else:
        x = t_h / chk.positive("t_eff_h", t_eff_h, error=KineticsInputError)
        err = haenscheid_error(x)
        if abs(err) > STP_ERROR_BOUND:
            warns.append(
                f"Hänscheid: t = {x:.2f} T_eff, TIA error {err:+.1%} for a mono-exponential "
                f"(over {STP_ERROR_BOUND:.0%}: keep t within 0.77-2.44 T_eff)"
            )
    return SingleTimePointTia(activity_mbq * 2.0 * t_h / LN2, "haenscheid", tuple(warns))


def madsen_tia(
    t_h: float, activity_mbq: float, t_eff_h: float, *, t_eff_rel_sd: float | None = None
) -> SingleTimePointTia:
    """Madsen et al 2018 (Med Phys 45:2318): ``TIA = A(t) exp(l_eff t) / l_eff``.

    ``t_eff_h`` is a population effective half-life (h); the TIA is exact for a
    mono-exponential with that half-life. ``t_eff_rel_sd`` is the relative spread of the
    individual T_eff around it (e.g. 0.2); a warning is returned when a patient one
    spread away would get a TIA error (:func:`madsen_error`) above 10 % at this scan
    time, and when no spread is given (the bound cannot then be checked).

    Raises
    ------
    KineticsInputError
        NaN/inf, t_h <= 0, activity <= 0, t_eff_h <= 0, spread outside [0, 1).
    """
    t_h, activity_mbq = _check_stp(t_h, activity_mbq)
    t_eff_h = chk.positive("t_eff_h", t_eff_h, error=KineticsInputError)
    x = t_h / t_eff_h
    warns: list[str] = []
    if t_eff_rel_sd is None:
        warns.append(
            f"Madsen: t = {x:.2f} T_pop; spread of the individual T_eff not given: the "
            f"{STP_ERROR_BOUND:.0%} error bound cannot be checked (least sensitive at 1.44 T_pop)"
        )
    else:
        sd = chk.in_range("t_eff_rel_sd", t_eff_rel_sd, 0.0, 1.0, high_open=True, error=KineticsInputError)
        err = max((madsen_error(x, dev) for dev in (-sd, sd)), key=abs)
        if abs(err) > STP_ERROR_BOUND:
            warns.append(
                f"Madsen: t = {x:.2f} T_pop, TIA error up to {err:+.1%} for a T_eff {sd:.0%} off "
                f"the population value (over {STP_ERROR_BOUND:.0%}; least sensitive at 1.44 T_pop)"
            )
    lam = LN2 / t_eff_h
    if lam * t_h > 700.0:  # exp overflows a float near 709.8
        raise KineticsInputError(
            f"t_h={t_h!r}: {x:.3g} population half-lives (t_eff_h={t_eff_h!r}) after "
            "administration, the back-extrapolation overflows"
        )
    return SingleTimePointTia(activity_mbq * math.exp(lam * t_h) / lam, "madsen", tuple(warns))
