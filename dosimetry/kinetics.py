"""Time-activity curves (TAC) from two or more points: model fits, choice, time-integrated activity (TIA).

All times are hours after administration (``t_h``), activities in MBq, TIA in MBq·h.

Models (``params`` order in brackets; decay constants are *effective*, 1/h):

``mono_exp``       ``A0 exp(-l t)``                                    [A0, l]
``bi_exp_uptake``  ``A0 (exp(-l1 t) - exp(-l2 t))``, l2 > l1 (uptake)  [A0, l1, l2]
``bi_exp``         ``A1 exp(-l1 t) + A2 exp(-l2 t)``                   [A1, l1, A2, l2]
``tri_exp``        ``A1 exp(-l1 t) + A2 exp(-l2 t) - (A1+A2) exp(-l3 t)`` (uptake l3 and
                   two clearances; A(0) = 0)                           [A1, l1, A2, l2, l3]
``trapezoid``      trapezoid over the points + a tail (see :func:`trapezoid_tia`)
``uptake_mono_exp`` trapezoid from (0, 0) through the points up to the peak, then a
                   mono-exponential fitted to the points from the peak on      [A0, l]

Uptake with few points (:func:`uptake_rule`): when the curve peaks after the first scan
(the maximum exceeds the first activity by more than :data:`UPTAKE_RISE_MIN`), at least two
points lie from the peak on, and no uptake model has a defined AICc (fewer than 5 points,
so ``bi_exp_uptake`` cannot be compared), a mono-exponential over all points would let the
rising points flatten the clearance (effective half-life too long). ``uptake_mono_exp`` is
used instead: the uptake phase is integrated by the trapezoid rule from A(0) = 0 and the
clearance is a mono-exponential fitted on the points from the peak on (the hybrid
trapezoid-plus-exponential-tail integration of the EANM Dosimetry Committee 177Lu
recommendations, Sjogreen Gleisner et al 2022). Its choice is reported as the fit's
``model`` with a warning naming the rule.

The weighted least-squares fit of one model and AICc are in
:mod:`rntflow.dosimetry.tac_least_squares`; single-time-point TIAs in
:mod:`rntflow.dosimetry.single_time_point`.

Bad input policy
----------------
* ``t < 0`` (before administration): :class:`~rntflow.core.errors.KineticsError`.
* zero or negative activities: *excluded with a warning* (noise at the background level
  cannot be fitted on a log-like model); fewer than one positive point left -> error.
* a fit whose terminal clearance is slower than physical decay (or negative) is rejected;
  when every model is rejected the TIA falls back to the trapezoid over the points plus
  physical decay after the last point (conservative: the upper bound of what a
  non-eliminating tracer can give), and ``fallback_reason`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rntflow.core.errors import KineticsError
from rntflow.dosimetry.tac_least_squares import aicc, fit_one, tia_sd
from rntflow.physics.kinetic_models import (
    FIT_MODELS,
    N_PARAMS,
    model_activity_mbq,
    model_tia_mbq_h,
    terminal_clearance_per_h,
)
from rntflow.physics.nuclides import nuclide

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- results
@dataclass
class TacFit:
    """Result of fitting (or integrating) one time-activity curve.

    Attributes
    ----------
    model : str
        Chosen model (``mono_exp``, ``bi_exp_uptake``, ``bi_exp``, ``tri_exp``,
        ``trapezoid``).
    params : numpy.ndarray
        Fitted parameters (MBq and 1/h, order in the module docstring); empty for
        ``trapezoid``.
    covariance : numpy.ndarray
        Parameter covariance matrix (units of params squared); empty for ``trapezoid``.
    tia_mbq_h : float
        Time-integrated activity from 0 to infinity (MBq·h).
    tia_sd_mbq_h : float
        Standard deviation of the TIA (MBq·h) from the covariance (nan when unknown).
    aicc : float
        Corrected Akaike criterion of the chosen model (nan when undefined).
    r2 : float
        Coefficient of determination on the activities (nan for ``trapezoid``).
    effective_half_life_h : float
        ln2 / terminal clearance (h).
    warnings : list of str
        Everything a reviewer should see (excluded points, rejected models ...).
    fallback_reason : str or None
        Why no fitted model was used, when the TIA comes from the conservative fallback.
    candidates : dict
        AICc of every model tried (nan: rejected or undefined).
    """

    model: str
    params: np.ndarray
    covariance: np.ndarray
    tia_mbq_h: float
    tia_sd_mbq_h: float
    aicc: float
    r2: float
    effective_half_life_h: float
    warnings: list[str] = field(default_factory=list)
    fallback_reason: str | None = None
    candidates: dict[str, float] = field(default_factory=dict)
    peak_h: float | None = None

    def activity_mbq(self, t_h: np.ndarray | float) -> np.ndarray:
        """Fitted activity (MBq) at ``t_h`` (h); not available for ``trapezoid``.

        ``uptake_mono_exp``: the mono-exponential from :attr:`peak_h` on, a line from 0
        to its value at the peak before (the TIA integrates the measured uptake points)."""
        if self.model == "trapezoid":
            raise KineticsError("the trapezoid TAC has no closed form")
        if self.model == UPTAKE_MODEL:
            t = np.asarray(t_h, dtype=float)
            mono = model_activity_mbq("mono_exp", self.params, t)
            at_peak = model_activity_mbq("mono_exp", self.params, self.peak_h)
            return np.where(t >= self.peak_h, mono, at_peak * t / self.peak_h)
        return model_activity_mbq(self.model, self.params, t_h)


# ----------------------------------------------------------------------------- helpers
def _validate(
    t_h: Sequence[float], activity_mbq: Sequence[float], activity_sd_mbq: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    t = np.asarray(t_h, dtype=float).ravel()
    a = np.asarray(activity_mbq, dtype=float).ravel()
    sd = None if activity_sd_mbq is None else np.asarray(activity_sd_mbq, dtype=float).ravel()
    if t.size != a.size or (sd is not None and sd.size != a.size):
        raise KineticsError("time, activity (and sd) arrays differ in length")
    if t.size == 0:
        raise KineticsError("no time points")
    if not np.all(np.isfinite(t)) or not np.all(np.isfinite(a)):
        raise KineticsError("non-finite time or activity")
    if np.any(t < 0):
        raise KineticsError(f"time point(s) before administration: t_h={t[t < 0].tolist()}")
    if np.unique(t).size != t.size:
        raise KineticsError("duplicate time points")
    warns: list[str] = []
    keep = a > 0
    if not np.all(keep):
        warns.append(f"excluded {int((~keep).sum())} non-positive activity point(s) at t_h={t[~keep].tolist()}")
        t, a = t[keep], a[keep]
        sd = None if sd is None else sd[keep]
    if t.size == 0:
        raise KineticsError("no positive activity left after excluding non-positive points")
    if sd is not None and np.any(sd <= 0):
        raise KineticsError("activity standard deviations must be > 0")
    order = np.argsort(t)
    return t[order], a[order], (None if sd is None else sd[order]), warns


# ----------------------------------------------------------------------------- trapezoid
def trapezoid_tia(
    t_h: Sequence[float],
    activity_mbq: Sequence[float],
    nuclide_name: str,
    *,
    activity_sd_mbq: Sequence[float] | None = None,
    start: Literal["linear", "constant"] = "linear",
    tail: Literal["physical", "fitted"] = "physical",
) -> TacFit:
    """Trapezoid over the points plus an exponential tail after the last point.

    Parameters
    ----------
    t_h, activity_mbq : sequence of float
        Times after administration (h) and activities (MBq).
    nuclide_name : str
        Radionuclide (physical decay constant).
    activity_sd_mbq : sequence of float, optional
        Standard deviation of each activity (MBq), propagated linearly (the trapezoid
        TIA is a weighted sum of the activities).
    start : {"linear", "constant"}
        Segment from t = 0 to the first point: ``linear`` assumes A(0) = 0 (uptake; area
        ``A1 t1 / 2``); ``constant`` back-extrapolates the first activity (instant uptake,
        area ``A1 t1``).
    tail : {"physical", "fitted"}
        ``physical``: ``A_n / l_phys`` (conservative, no biological clearance).
        ``fitted``: mono-exponential through the last two points, falling back to
        physical decay when that clearance is slower than physical decay.
    """
    t, a, sd, warns = _validate(t_h, activity_mbq, activity_sd_mbq)
    lam_phys = nuclide(nuclide_name).decay_constant_per_h
    w = np.zeros(t.size)
    w[0] += t[0] / 2.0 if start == "linear" else t[0]
    for i in range(t.size - 1):
        dt = t[i + 1] - t[i]
        w[i] += dt / 2.0
        w[i + 1] += dt / 2.0
    lam_tail = lam_phys
    if tail == "fitted":
        if t.size >= 2:
            lam_fit = math.log(a[-2] / a[-1]) / (t[-1] - t[-2])
            if lam_fit > lam_phys:
                lam_tail = lam_fit
            else:
                warns.append("fitted tail clearance slower than physical decay: physical tail used")
        else:
            warns.append("one point: physical tail used")
    w[-1] += 1.0 / lam_tail
    tia = float(w @ a)
    tia_sd = float(math.sqrt(np.sum((w * sd) ** 2))) if sd is not None else math.nan
    return TacFit(
        model="trapezoid",
        params=np.empty(0),
        covariance=np.empty((0, 0)),
        tia_mbq_h=tia,
        tia_sd_mbq_h=tia_sd,
        aicc=math.nan,
        r2=math.nan,
        effective_half_life_h=LN2 / lam_tail,
        warnings=warns,
    )


# ----------------------------------------------------------------------------- uptake with few points
UPTAKE_MODEL = "uptake_mono_exp"
#: Relative rise of the maximum over the first activity that counts as an uptake phase.
UPTAKE_RISE_MIN = 0.05


def uptake_rule(t: np.ndarray, a: np.ndarray) -> int | None:
    """Index of the peak when ``uptake_mono_exp`` applies (module docstring), else ``None``.

    Parameters
    ----------
    t, a : numpy.ndarray
        Validated times (h, ascending) and activities (MBq).
    """
    n = t.size
    if n >= N_PARAMS["bi_exp_uptake"] + 2:  # an uptake model can be chosen by AICc
        return None
    k = int(np.argmax(a))
    if k == 0 or n - k < 2 or not a[k] > a[0] * (1.0 + UPTAKE_RISE_MIN):
        return None
    return k


def _fit_uptake_mono_exp(
    t: np.ndarray, a: np.ndarray, sd: np.ndarray | None, lam_phys: float, k: int, warns: list[str]
) -> TacFit | None:
    """Trapezoid (0, 0) .. peak + mono-exponential from the peak on; ``None`` if rejected."""
    tt, aa = t[k:], a[k:]
    try:
        p, cov, wrss = fit_one("mono_exp", tt, aa, sd[k:] if sd is not None else None, lam_phys)
    except KineticsError as exc:
        warns.append(str(exc))
        return None
    if not p[1] > lam_phys * (1.0 - 1e-6):
        warns.append(
            f"{UPTAKE_MODEL}: clearance after the peak {p[1]:.4g}/h slower than physical {lam_phys:.4g}/h: rejected"
        )
        return None
    # uptake part: trapezoid over (0, 0), the points up to the peak (weights w on a[:k+1])
    tu = np.concatenate([[0.0], t[: k + 1]])
    w = np.zeros(k + 1)
    for i in range(k + 1):
        w[i] = (tu[i + 1] - tu[i]) / 2.0 + ((tu[i + 2] - tu[i + 1]) / 2.0 if i < k else 0.0)
    uptake_tia = float(w @ a[: k + 1])
    t_pk = float(t[k])
    tail = float(p[0] * math.exp(-p[1] * t_pk) / p[1])
    g = np.array([math.exp(-p[1] * t_pk) / p[1], -tail * (t_pk + 1.0 / p[1])])  # d tail / d (A0, l)
    var = float(g @ cov @ g) if np.all(np.isfinite(cov)) else math.nan
    if sd is not None:
        var += float(np.sum((w * sd[: k + 1]) ** 2))
    resid = aa - model_activity_mbq("mono_exp", p, tt)
    tss = float(np.sum((aa - aa.mean()) ** 2))
    warns.append(
        f"{UPTAKE_MODEL}: peak at {t_pk:g} h after the first scan with {t.size} points: uptake "
        f"integrated by trapezoid from 0, clearance fitted on the {tt.size} points from the peak"
    )
    return TacFit(
        model=UPTAKE_MODEL,
        params=p,
        covariance=cov,
        tia_mbq_h=uptake_tia + tail,
        tia_sd_mbq_h=math.sqrt(var) if var >= 0 else math.nan,
        aicc=aicc(wrss, tt.size, 2),
        r2=1.0 - float(resid @ resid) / tss if tss > 0 else math.nan,
        effective_half_life_h=LN2 / float(p[1]),
        warnings=warns,
        peak_h=t_pk,
    )


# ----------------------------------------------------------------------------- fit
def _candidate_models(models: Sequence[str] | None, n: int, warns: list[str]) -> list[str]:
    """Models to fit to ``n`` points (default or the given ones), warning about skipped ones."""
    if models is None:
        return [m for m in FIT_MODELS if n >= N_PARAMS[m] + 2]
    unknown = [m for m in models if m not in N_PARAMS]
    if unknown:
        raise KineticsError(f"unknown TAC model(s) {unknown}")
    cands = [m for m in models if n > N_PARAMS[m]]
    for m in models:
        if m not in cands:
            warns.append(f"{m}: {N_PARAMS[m]} parameters need more than {n} points; skipped")
    return cands


def _fit_candidates(
    cands: list[str], t: np.ndarray, a: np.ndarray, sd: np.ndarray | None, lam_phys: float, warns: list[str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, float, float]], dict[str, float], list[str]]:
    """Fit each candidate; return the plausible fits, every AICc (nan if failed/rejected) and the rejections."""
    n = t.size
    fits: dict[str, tuple[np.ndarray, np.ndarray, float, float]] = {}
    scores: dict[str, float] = {}
    rejected: list[str] = []
    for m in cands:
        try:
            p, cov, wrss = fit_one(m, t, a, sd, lam_phys)
        except KineticsError as exc:
            warns.append(str(exc))
            scores[m] = math.nan
            continue
        lam_term = terminal_clearance_per_h(m, p)
        tia = model_tia_mbq_h(m, p)
        if not (lam_term > lam_phys * (1.0 - 1e-6)) or not math.isfinite(tia) or tia <= 0:
            rejected.append(f"{m} (terminal clearance {lam_term:.4g}/h vs physical {lam_phys:.4g}/h)")
            scores[m] = math.nan
            continue
        score = aicc(wrss, n, N_PARAMS[m])
        scores[m] = score
        fits[m] = (p, cov, wrss, tia)
    if rejected:
        warns.append("rejected, curve does not decay at least physically: " + "; ".join(rejected))
    return fits, scores, rejected


def _trapezoid_fallback(
    t: np.ndarray,
    a: np.ndarray,
    sd: np.ndarray | None,
    nuclide_name: str,
    trapezoid_start: Literal["linear", "constant"],
    reason: str,
    warns: list[str],
    scores: dict[str, float],
) -> TacFit:
    """Trapezoid + physical tail when no model fit is usable, with the reason and the candidates."""
    fb = trapezoid_tia(t, a, nuclide_name, activity_sd_mbq=sd, start=trapezoid_start, tail="physical")
    fb.warnings = warns + fb.warnings
    fb.fallback_reason = reason + ": trapezoid + physical decay after the last point"
    fb.candidates = scores
    return fb


def _best_fit(
    t: np.ndarray,
    a: np.ndarray,
    fits: dict[str, tuple[np.ndarray, np.ndarray, float, float]],
    scores: dict[str, float],
    warns: list[str],
) -> TacFit:
    """The fit with the lowest AICc (lowest weighted RSS if no AICc is defined) as a :class:`TacFit`."""
    defined = {m: s for m, s in scores.items() if m in fits and not math.isnan(s)}
    pool = defined if defined else {m: fits[m][2] for m in fits}
    best = min(pool, key=pool.get)
    p, cov, wrss, tia = fits[best]
    resid = a - model_activity_mbq(best, p, t)
    tss = float(np.sum((a - a.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / tss if tss > 0 else math.nan
    lam_term = terminal_clearance_per_h(best, p)
    return TacFit(
        model=best,
        params=p,
        covariance=cov,
        tia_mbq_h=tia,
        tia_sd_mbq_h=tia_sd(best, p, cov),
        aicc=scores[best],
        r2=r2,
        effective_half_life_h=LN2 / lam_term,
        warnings=warns,
        candidates=scores,
    )


def fit_tac(
    t_h: Sequence[float],
    activity_mbq: Sequence[float],
    nuclide_name: str,
    *,
    activity_sd_mbq: Sequence[float] | None = None,
    models: Sequence[str] | None = None,
    trapezoid_start: Literal["linear", "constant"] = "linear",
) -> TacFit:
    """Fit the candidate models, choose by AICc, integrate to infinity.

    Parameters
    ----------
    t_h : sequence of float
        Times after administration (h), all >= 0.
    activity_mbq : sequence of float
        Activity in the VOI (MBq); non-positive points are excluded with a warning.
    nuclide_name : str
        Radionuclide, e.g. ``Lu-177`` (physical decay constant for plausibility and
        fallback).
    activity_sd_mbq : sequence of float, optional
        Absolute standard deviations (MBq); without them a constant relative error.
    models : sequence of str, optional
        Models to try. Default: ``uptake_mono_exp`` when :func:`uptake_rule` applies,
        else every model with ``N >= K + 2`` points. A model given
        explicitly is fitted whenever ``N > K`` (its AICc may then be nan; models with a
        defined AICc are preferred).
    trapezoid_start : {"linear", "constant"}
        First segment of the fallback trapezoid (see :func:`trapezoid_tia`).

    Returns
    -------
    TacFit

    Raises
    ------
    KineticsError
        On t < 0, mismatched arrays, no positive activity.
    """
    t, a, sd, warns = _validate(t_h, activity_mbq, activity_sd_mbq)
    lam_phys = nuclide(nuclide_name).decay_constant_per_h
    n = t.size
    k_peak = uptake_rule(t, a) if models is None else None
    if k_peak is not None:
        fit = _fit_uptake_mono_exp(t, a, sd, lam_phys, k_peak, warns)
        if fit is not None:
            return fit
    cands = _candidate_models(models, n, warns)
    fits, scores, rejected = _fit_candidates(cands, t, a, sd, lam_phys, warns)
    if not fits:
        if not cands:
            reason = f"too few points ({n}) for any fitted model"
        elif rejected:
            reason = "no fitted model decays at least as fast as physical decay"
        else:
            reason = "no model could be fitted"
        return _trapezoid_fallback(t, a, sd, nuclide_name, trapezoid_start, reason, warns, scores)
    return _best_fit(t, a, fits, scores, warns)
