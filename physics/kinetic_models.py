"""Time-activity curve models: the equations, their analytic integrals and tail clearance.

The one home of the sums of exponentials that :mod:`rntflow.dosimetry.kinetics` fits and the
reports plot. Times in h, activities in MBq, rate constants in 1/h.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rntflow.core.errors import KineticsError

#: Number of fitted parameters per model.
N_PARAMS = {"mono_exp": 2, "bi_exp_uptake": 3, "bi_exp": 4, "tri_exp": 5}


FIT_MODELS = tuple(N_PARAMS)


def model_activity_mbq(model: str, params: Sequence[float], t_h: np.ndarray | float) -> np.ndarray:
    """Activity (MBq) of ``model`` with ``params`` at times ``t_h`` (h)."""
    t = np.asarray(t_h, dtype=float)
    p = np.asarray(params, dtype=float)
    if model == "mono_exp":
        return p[0] * np.exp(-p[1] * t)
    if model == "bi_exp_uptake":
        return p[0] * (np.exp(-p[1] * t) - np.exp(-p[2] * t))
    if model == "bi_exp":
        return p[0] * np.exp(-p[1] * t) + p[2] * np.exp(-p[3] * t)
    if model == "tri_exp":
        return p[0] * np.exp(-p[1] * t) + p[2] * np.exp(-p[3] * t) - (p[0] + p[2]) * np.exp(-p[4] * t)
    raise KineticsError(f"unknown TAC model {model!r}")


def model_tia_mbq_h(model: str, params: Sequence[float]) -> float:
    """Analytic TIA (MBq·h) from 0 to infinity; ``inf`` if a decay constant is <= 0."""
    p = np.asarray(params, dtype=float)
    lams = {"mono_exp": [1], "bi_exp_uptake": [1, 2], "bi_exp": [1, 3], "tri_exp": [1, 3, 4]}[model]
    if any(p[i] <= 0 for i in lams):
        return math.inf
    if model == "mono_exp":
        return float(p[0] / p[1])
    if model == "bi_exp_uptake":
        return float(p[0] * (1.0 / p[1] - 1.0 / p[2]))
    if model == "bi_exp":
        return float(p[0] / p[1] + p[2] / p[3])
    return float(p[0] / p[1] + p[2] / p[3] - (p[0] + p[2]) / p[4])


def terminal_clearance_per_h(model: str, params: Sequence[float]) -> float:
    """Slowest effective decay constant (1/h) governing the tail of the curve."""
    p = np.asarray(params, dtype=float)
    if model == "mono_exp":
        return float(p[1])
    if model == "bi_exp_uptake":
        return float(min(p[1], p[2]))
    if model == "bi_exp":
        lams = [p[1] if p[0] > 0 else np.inf, p[3] if p[2] > 0 else np.inf]
        return float(min(lams))
    return float(min(p[1] if p[0] > 0 else np.inf, p[3] if p[2] > 0 else np.inf))
