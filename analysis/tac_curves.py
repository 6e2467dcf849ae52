"""Time-activity curves of the stored TAC fits, evaluated for drawing.

The warehouse ``tac_fits`` table keeps each cycle's chosen kinetic model and its
parameters as JSON (``params_json``, written by ``dosimetry/cycle_kinetics.py``); this module turns
them back into activities (MBq) at chosen times (h after administration). Fitted models
are evaluated with :func:`rntflow.physics.kinetic_models.model_activity_mbq`, the same
function the fits were made with, so a drawn curve is the fitted curve.

``uptake_mono_exp`` (trapezoid from (0, 0) through the measured points up to the peak, then
a mono-exponential fitted from the peak on; ``dosimetry/kinetics.py``) is drawn the way its
TIA integrates it: straight lines from (0, 0) through the stored uptake points, then the
exponential from the peak on, so the area under the drawn curve is the fit's TIA.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from rntflow.physics.kinetic_models import model_activity_mbq

#: ``params_json`` keys of the fitted TAC models, in the parameter order of
#: :func:`rntflow.physics.kinetic_models.model_activity_mbq` (as written by ``dosimetry/cycle_kinetics.py``);
#: ``uptake_mono_exp``: the mono-exponential's ``a0_mbq`` and ``lambda_per_h`` (1/h), the peak
#: time ``peak_h`` (h) and the measured points up to it, ``uptake_t_h`` (h) and
#: ``uptake_activity_mbq`` (MBq), lists drawn by :func:`uptake_mono_exp_curve`.
TAC_PARAM_KEYS: Mapping[str, tuple[str, ...]] = {
    "mono_exp": ("a0_mbq", "lambda_per_h"),
    "bi_exp_uptake": ("a0_mbq", "lambda1_per_h", "lambda2_per_h"),
    "bi_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h"),
    "tri_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h", "lambda3_per_h"),
    "uptake_mono_exp": ("a0_mbq", "lambda_per_h", "peak_h", "uptake_t_h", "uptake_activity_mbq"),
}

#: Models drawn piecewise rather than by ``model_activity_mbq`` (see :func:`uptake_mono_exp_curve`).
PIECEWISE_TAC_MODELS = ("uptake_mono_exp",)

#: Single-time-point TAC models; ``params_json`` holds ``t_h``, ``activity_mbq``, ``t_eff_h``.
SINGLE_TIME_POINT_TAC_MODELS = ("hanscheid", "madsen")

_LN2 = math.log(2.0)


def uptake_mono_exp_curve(params: Mapping[str, object], t_h: np.ndarray) -> np.ndarray:
    """Activity (MBq) of a stored ``uptake_mono_exp`` fit at times ``t_h`` (h).

    Straight lines from (0 h, 0 MBq) through the uptake points (``uptake_t_h``,
    ``uptake_activity_mbq``: the measured points up to and including the peak) for
    ``t < peak_h``; ``a0_mbq exp(-lambda_per_h t)`` for ``t >= peak_h``. The curve steps at
    the peak from the measured to the fitted activity, as the TIA does (trapezoid up to the
    peak plus the fitted tail ``a0 exp(-lambda peak_h) / lambda``).

    Parameters
    ----------
    params : mapping
        Decoded ``params_json`` with the keys of :data:`TAC_PARAM_KEYS` ``["uptake_mono_exp"]``.
    t_h : numpy.ndarray
        Times (h after administration).

    Raises
    ------
    ValueError
        Uptake points that are not increasing in time, do not end at ``peak_h``, or differ
        in length; a decay constant or peak time that is not positive.
    KeyError
        A missing parameter.
    """
    a0, lam, peak = (float(params[k]) for k in ("a0_mbq", "lambda_per_h", "peak_h"))
    tu = np.asarray(params["uptake_t_h"], dtype=float).ravel()
    au = np.asarray(params["uptake_activity_mbq"], dtype=float).ravel()
    if not (math.isfinite(lam) and lam > 0 and math.isfinite(peak) and peak > 0):
        raise ValueError(f"uptake_mono_exp: lambda_per_h and peak_h must be > 0, got {lam}, {peak}")
    if tu.size == 0 or tu.size != au.size or np.any(np.diff(tu) <= 0) or tu[0] <= 0 or not math.isclose(tu[-1], peak):
        raise ValueError(
            "uptake_mono_exp: uptake_t_h/uptake_activity_mbq must be increasing times (h) > 0 "
            "ending at peak_h, with one activity (MBq) each"
        )
    rising = np.interp(t_h, np.concatenate([[0.0], tu]), np.concatenate([[0.0], au]))
    return np.where(t_h >= peak, a0 * np.exp(-lam * t_h), rising)


def tac_curve(model: str, params_json: str | Mapping[str, float], t_h: np.ndarray | float) -> np.ndarray:
    """Activity (MBq) of a stored TAC fit at times ``t_h`` (h after administration).

    Parameters
    ----------
    model : str
        ``tac_fits.model``: one of :data:`TAC_PARAM_KEYS` (fitted models, evaluated with
        :func:`rntflow.physics.kinetic_models.model_activity_mbq`; ``uptake_mono_exp`` with
        :func:`uptake_mono_exp_curve`) or ``hanscheid``/``madsen`` (single time point:
        ``A(t) = activity_mbq * exp(-ln2 (t - t_h) / t_eff_h)``).
    params_json : str or mapping
        ``tac_fits.params_json`` (JSON text) or the decoded mapping; activities in MBq,
        decay constants in 1/h, times in h.
    t_h : array_like
        Times (h).

    Returns
    -------
    numpy.ndarray
        Activity (MBq), same shape as ``t_h``.

    Raises
    ------
    ValueError
        Unknown or undrawable model (e.g. ``trapezoid``, which has no closed form),
        malformed JSON, or missing/invalid parameters.
    """
    if isinstance(params_json, str):
        params = json.loads(params_json)
    elif isinstance(params_json, Mapping):
        params = dict(params_json)
    else:
        raise ValueError(f"params_json must be JSON text or a mapping, not {type(params_json).__name__}")
    if not isinstance(params, dict):
        raise ValueError("params_json must decode to an object")
    t = np.asarray(t_h, dtype=float)
    try:
        if model in PIECEWISE_TAC_MODELS:
            return uptake_mono_exp_curve(params, t)
        if model in TAC_PARAM_KEYS:
            values = [float(params[k]) for k in TAC_PARAM_KEYS[model]]
            return np.asarray(model_activity_mbq(model, values, t), dtype=float)
        if model in SINGLE_TIME_POINT_TAC_MODELS:
            t0, a0, t_eff = (float(params[k]) for k in ("t_h", "activity_mbq", "t_eff_h"))
            if not (math.isfinite(t_eff) and t_eff > 0):
                raise ValueError(f"{model}: t_eff_h must be > 0 h, got {t_eff}")
            return a0 * np.exp(-_LN2 * (t - t0) / t_eff)
    except KeyError as exc:
        raise ValueError(f"{model}: parameter {exc.args[0]!r} missing in params_json") from None
    except TypeError as exc:
        raise ValueError(f"{model}: invalid parameter ({exc})") from None
    raise ValueError(f"TAC model {model!r} has no closed form to draw")
