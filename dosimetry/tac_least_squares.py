"""Weighted least-squares fit of one TAC model, the TIA's standard deviation and AICc.

Weighted least squares (``scipy.optimize.least_squares``, trust-region reflective). Weights
are ``1/sd``; without given standard deviations a constant *relative* error is assumed
(``sd ∝ A``) and the covariance is scaled by the residual variance (as ``curve_fit`` with
``absolute_sigma=False``). Model choice: corrected Akaike information criterion
(Glatting et al 2007, Med Phys 34:4285; Kletting et al 2013, Med Phys 40:102504)
``AICc = N ln(WRSS/N) + 2K + 2K(K+1)/(N-K-1)`` with K the number of fitted parameters; a
model is a candidate only when ``N >= K + 2`` (AICc defined).

The models' activities and TIAs are :mod:`rntflow.physics.kinetic_models`; the choice
between the fitted models is :func:`rntflow.dosimetry.kinetics.fit_tac`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

from rntflow.core.errors import KineticsError
from rntflow.physics.kinetic_models import N_PARAMS, model_activity_mbq, model_tia_mbq_h


def _starts(model: str, t: np.ndarray, a: np.ndarray, lam_phys: float) -> list[np.ndarray]:
    """A few starting points per model (multi-start against local minima)."""
    # log-linear fit on the late half of the points gives the terminal clearance
    late = slice(max(0, t.size // 2 - (1 if t.size % 2 == 0 else 0)), None)
    if t[late].size >= 2:
        slope, icpt = np.polyfit(t[late], np.log(a[late]), 1)
        lam = max(-slope, lam_phys * 1.05)
        a0 = math.exp(icpt)
    else:
        lam, a0 = lam_phys * 2.0, a[0] * math.exp(lam_phys * 2.0 * t[0])
    t_first = max(t[0], 1e-3)
    out: list[np.ndarray] = []
    for mult in (3.0, 10.0, 30.0):
        if model == "mono_exp":
            out.append(np.array([a0, lam]))
            break
        lam_fast = max(lam * mult, 1.0 / t_first)
        if model == "bi_exp_uptake":
            out.append(np.array([a0, lam, lam_fast * (mult / 10.0) + lam]))
        elif model == "bi_exp":
            out.append(np.array([0.7 * a0, lam, max(a[0] - 0.7 * a0, 0.3 * a0), lam * mult]))
        elif model == "tri_exp":
            out.append(np.array([0.7 * a0, lam, 0.3 * a0 + a[0], lam * mult, lam * mult * 10.0]))
    return out


def fit_one(
    model: str, t: np.ndarray, a: np.ndarray, sd: np.ndarray | None, lam_phys: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted LSQ fit; returns params, covariance, weighted RSS."""
    k = N_PARAMS[model]
    sigma = sd if sd is not None else a.copy()  # constant relative error model
    amp_idx = {"mono_exp": [0], "bi_exp_uptake": [0], "bi_exp": [0, 2], "tri_exp": [0, 2]}[model]
    lo = np.full(k, -1.0)  # decay constants may go (a little) negative: detected afterwards
    hi = np.full(k, 50.0)
    for i in amp_idx:
        lo[i], hi[i] = 0.0, np.inf

    def resid(p: np.ndarray) -> np.ndarray:
        return (model_activity_mbq(model, p, t) - a) / sigma

    best = None
    for p0 in _starts(model, t, a, lam_phys):
        p0 = np.clip(p0, lo + 1e-9, np.where(np.isfinite(hi), hi - 1e-9, p0 * 10 + 1))
        try:
            res = least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", method="trf", max_nfev=2000 * k)
        except Exception:  # pragma: no cover - numerical breakdown of one start
            continue
        if best is None or res.cost < best.cost:
            best = res
    if best is None:
        raise KineticsError(f"{model}: least squares failed from every start")
    wrss = float(2.0 * best.cost)
    jac = best.jac
    cov = np.linalg.pinv(jac.T @ jac)
    dof = t.size - k
    if sd is None:
        cov = cov * (wrss / dof if dof > 0 else np.inf)
    return best.x, cov, wrss


def tia_sd(model: str, params: np.ndarray, cov: np.ndarray) -> float:
    """sqrt(g^T C g) with g the numeric gradient of the analytic TIA."""
    if not np.all(np.isfinite(cov)):
        return math.nan
    g = np.zeros(params.size)
    for i in range(params.size):
        h = 1e-6 * max(abs(params[i]), 1e-9)
        up, dn = params.copy(), params.copy()
        up[i] += h
        dn[i] -= h
        g[i] = (model_tia_mbq_h(model, up) - model_tia_mbq_h(model, dn)) / (2 * h)
    var = float(g @ cov @ g)
    return math.sqrt(var) if var >= 0 else math.nan


def aicc(wrss: float, n_points: int, n_params: int) -> float:
    """Corrected Akaike information criterion (nan when ``n_points < n_params + 2``)."""
    if n_points - n_params - 1 <= 0 or wrss <= 0:
        return math.nan if n_points - n_params - 1 <= 0 else -math.inf
    return (
        n_points * math.log(wrss / n_points) + 2 * n_params + 2 * n_params * (n_params + 1) / (n_points - n_params - 1)
    )
