"""Time-activity curves of the stored TAC fits, evaluated for drawing.

The warehouse ``tac_fits`` table keeps each cycle's chosen kinetic model and its
parameters as JSON (``params_json``, written by ``dosimetry/cycle.py``); this module turns
them back into activities (MBq) at chosen times (h after administration). Fitted models
are evaluated with :func:`rntflow.physics.kinetic_models.model_activity_mbq`, the same
function the fits were made with, so a drawn curve is the fitted curve.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from rntflow.physics.kinetic_models import model_activity_mbq

#: ``params_json`` keys of the fitted TAC models, in the parameter order of
#: :func:`rntflow.physics.kinetic_models.model_activity_mbq` (as written by ``dosimetry/cycle.py``).
TAC_PARAM_KEYS: Mapping[str, tuple[str, ...]] = {
    "mono_exp": ("a0_mbq", "lambda_per_h"),
    "bi_exp_uptake": ("a0_mbq", "lambda1_per_h", "lambda2_per_h"),
    "bi_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h"),
    "tri_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h", "lambda3_per_h"),
}

#: Single-time-point TAC models; ``params_json`` holds ``t_h``, ``activity_mbq``, ``t_eff_h``.
SINGLE_TIME_POINT_TAC_MODELS = ("hanscheid", "madsen")

_LN2 = math.log(2.0)


def tac_curve(model: str, params_json: str | Mapping[str, float], t_h: np.ndarray | float) -> np.ndarray:
    """Activity (MBq) of a stored TAC fit at times ``t_h`` (h after administration).

    Parameters
    ----------
    model : str
        ``tac_fits.model``: one of :data:`TAC_PARAM_KEYS` (fitted models, evaluated with
        :func:`rntflow.physics.kinetic_models.model_activity_mbq`) or ``hanscheid``/``madsen``
        (single time point: ``A(t) = activity_mbq * exp(-ln2 (t - t_h) / t_eff_h)``).
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
