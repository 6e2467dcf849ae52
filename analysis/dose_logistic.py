"""Logistic dose-response (NTCP/TCP) fits by maximum likelihood, with profile-likelihood CIs.

Pure: arrays or DataFrame columns in, fits out. The model is
:func:`rntflow.physics.ntcp.logistic_ntcp` (Okunieff et al 1995, Int J Radiat Oncol Biol
Phys 32:1227 for the ``gamma50`` form)::

    P(D) = 1 / (1 + (D50 / D) ** (4 * gamma50))  =  expit(4 gamma50 (ln D - ln D50))

fitted by maximum likelihood: it is a logistic regression in ln D, fitted with
:class:`statsmodels.discrete.discrete_model.Logit` (Newton-Raphson).
95 % confidence intervals are **profile-likelihood** intervals: the parameter values where
twice the drop of the profile log-likelihood equals the chi-square(1) 95 % quantile (3.841;
Venzon and Moolgavkar 1988, Appl Stat 37:87). statsmodels reports Wald intervals only,
which are symmetric in ln D50 and gamma50 and undercover with the few events a trial site
has; the profile is computed here (one-parameter score roots, see :func:`fit_logistic_dose`).
A bound that is not reached within a factor 1000 of the estimate (D50) or +/- 200
(gamma50) is reported as ``inf``/``-inf``.

Doses are in Gy (absorbed dose or BED); effects are 0/1.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import expit, log_expit

from rntflow.physics.ntcp import logistic_ntcp

#: chi-square(1) quantile for a 95 % profile-likelihood interval.
CHI2_1_95 = float(stats.chi2.ppf(0.95, 1))


@dataclass(frozen=True)
class LogisticDoseFit:
    """Maximum-likelihood logistic dose-response fit.

    Attributes
    ----------
    d50_gy : float
        Dose with 50 % effect probability.
    d50_ci_gy : tuple of float
        95 % profile-likelihood interval of ``d50_gy``.
    gamma50 : float
        Normalised slope at D50 (dimensionless).
    gamma50_ci : tuple of float
        95 % profile-likelihood interval of ``gamma50``.
    n : int
        Observations used.
    n_events : int
        Observations with effect = 1.
    log_likelihood : float
        Maximised log-likelihood.
    converged : bool
        False when the data separate (MLE at infinity) or the fit failed.
    """

    d50_gy: float
    d50_ci_gy: tuple[float, float]
    gamma50: float
    gamma50_ci: tuple[float, float]
    n: int
    n_events: int
    log_likelihood: float
    converged: bool

    def probability(self, dose_gy: np.ndarray | float) -> np.ndarray:
        """Effect probability (0-1) at ``dose_gy`` (Gy), :func:`~rntflow.physics.ntcp.logistic_ntcp`."""
        return logistic_ntcp(dose_gy, self.d50_gy, self.gamma50)


def _loglik(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(y * log_expit(z) + (1 - y) * log_expit(-z)))


#: Largest absolute logistic coefficient taken as finite: beyond it the data separate (the
#: maximum-likelihood estimate is at infinity) even when the optimiser reports convergence.
MAX_ABS_COEFFICIENT = 1e4


def logit_fit(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Logistic regression ``logit p = design @ beta`` by maximum likelihood (statsmodels).

    Parameters
    ----------
    design : numpy.ndarray
        Design matrix, one row per observation (include a column of ones for an intercept).
    y : numpy.ndarray
        Outcomes, 0 or 1.

    Returns
    -------
    tuple
        ``(beta, log_likelihood, converged)``; ``converged`` is False when statsmodels
        detects (quasi-)perfect separation, does not converge, the Hessian is singular or a
        coefficient exceeds :data:`MAX_ABS_COEFFICIENT`.
    """
    # statsmodels is imported on first fit, not with the module (~1 s of imports)
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

    nan = np.full(design.shape[1], math.nan)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PerfectSeparationWarning)
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            res = sm.Logit(y, design).fit(method="newton", maxiter=100, disp=0)
        except (np.linalg.LinAlgError, PerfectSeparationError):
            return nan, math.nan, False
    beta = np.asarray(res.params, dtype=float)
    separated = any(issubclass(w.category, (PerfectSeparationWarning, ConvergenceWarning)) for w in caught)
    converged = (
        bool(res.mle_retvals.get("converged", False))
        and not separated
        and bool(np.all(np.isfinite(beta)))
        and float(np.max(np.abs(beta))) <= MAX_ABS_COEFFICIENT
    )
    return beta, float(res.llf), converged


def _root_1d(score, span: float) -> float:
    """Root of a decreasing score function on [-span, span] (the boundary if none)."""
    lo, hi = score(-span), score(span)
    if lo <= 0:
        return -span
    if hi >= 0:
        return span
    return float(optimize.brentq(score, -span, span, xtol=1e-12))


def clean_dose_effect(dose_gy, effect) -> tuple[np.ndarray, np.ndarray]:
    """The observations with a finite positive dose and a finite effect.

    Parameters
    ----------
    dose_gy : array-like
        Dose (or BED) per observation, Gy.
    effect : array-like
        Effect per observation, 0 or 1.

    Returns
    -------
    tuple of numpy.ndarray
        ``(dose_gy, effect)`` of the kept observations, as floats.

    Raises
    ------
    ValueError
        When a kept effect is neither 0 nor 1.
    """
    dose = np.asarray(dose_gy, dtype=float)
    y = np.asarray(effect, dtype=float)
    ok = np.isfinite(dose) & np.isfinite(y) & (dose > 0)
    if np.any(~np.isin(y[ok], (0.0, 1.0))):
        raise ValueError("effect must be 0 or 1")
    return dose[ok], y[ok]


def _profile_bound(profile, start: float, ll_max: float, step: float, direction: int, n_steps: int) -> float:
    """Walk from ``start`` until the deviance exceeds the chi2 quantile; refine with brentq."""

    def excess(v: float) -> float:
        return 2 * (ll_max - profile(v)) - CHI2_1_95

    prev = start
    for i in range(1, n_steps + 1):
        cur = start + direction * step * i
        if excess(cur) > 0:
            return float(optimize.brentq(excess, prev, cur, xtol=1e-8))
        prev = cur
    return direction * math.inf


def fit_logistic_dose(dose_gy, effect) -> LogisticDoseFit:
    """Fit ``P = 1/(1+(D50/D)^(4 gamma50))`` by maximum likelihood with profile 95 % CIs.

    Parameters
    ----------
    dose_gy : array-like
        Dose (or BED) per observation, Gy; non-positive or missing doses are dropped.
    effect : array-like
        1 when the effect (toxicity grade >= 2, response, ...) occurred, else 0.

    Returns
    -------
    LogisticDoseFit
    """
    dose, y = clean_dose_effect(dose_gy, effect)
    n, n_events = len(y), int(y.sum())
    nan_fit = LogisticDoseFit(
        math.nan, (math.nan, math.nan), math.nan, (math.nan, math.nan), n, n_events, math.nan, False
    )
    if n < 3 or n_events in (0, n):
        return nan_fit
    lnd = np.log(dose)
    beta, ll_max, ok = logit_fit(np.column_stack([np.ones(n), lnd]), y)
    a, b = beta
    if not ok or b == 0:
        return nan_fit
    gamma50 = float(b / 4)
    ln_d50 = float(-a / b)

    # Profile likelihood, not in statsmodels (module docstring): each profile point maximises
    # over the other parameter, a one-dimensional score root (exact and ~100x cheaper than
    # refitting a statsmodels model with an offset at each of the ~10^2 points a bound needs).

    def profile_d50(ln_c: float) -> float:  # maximise over gamma at fixed D50
        x = 4 * (lnd - ln_c)
        return _loglik(_root_1d(lambda g: float(np.sum(x * (y - expit(g * x)))), 1e3) * x, y)

    def profile_gamma(g: float) -> float:  # maximise over D50 (intercept) at fixed gamma
        off = 4 * g * lnd
        span = float(np.max(np.abs(off))) + 50.0
        a_hat = _root_1d(lambda a: float(np.sum(y - expit(a + off))), span)
        return _loglik(a_hat + off, y)

    ln_step = 0.02
    d50_lo = _profile_bound(profile_d50, ln_d50, ll_max, ln_step, -1, int(math.log(1000) / ln_step))
    d50_hi = _profile_bound(profile_d50, ln_d50, ll_max, ln_step, +1, int(math.log(1000) / ln_step))
    g_step = max(abs(gamma50) * 0.02, 0.01)
    n_g = int(200 / g_step) if g_step > 0 else 1000
    n_g = min(n_g, 5000)
    g_lo = _profile_bound(profile_gamma, gamma50, ll_max, g_step, -1, n_g)
    g_hi = _profile_bound(profile_gamma, gamma50, ll_max, g_step, +1, n_g)
    return LogisticDoseFit(
        d50_gy=math.exp(ln_d50),
        d50_ci_gy=(
            math.exp(d50_lo) if math.isfinite(d50_lo) else 0.0,
            math.exp(d50_hi) if math.isfinite(d50_hi) else math.inf,
        ),
        gamma50=gamma50,
        gamma50_ci=(g_lo, g_hi),
        n=n,
        n_events=n_events,
        log_likelihood=ll_max,
        converged=True,
    )


def logistic_d50_point(dose_gy, effect) -> float:
    """Maximum-likelihood D50 (Gy) without confidence intervals (NaN if separated or too few).

    For resampling studies, where the profile-likelihood intervals of
    :func:`fit_logistic_dose` would cost a hundred times more.
    """
    dose, y = clean_dose_effect(dose_gy, effect)
    if len(y) < 3 or y.sum() in (0, len(y)):
        return math.nan
    beta, _, ok = logit_fit(np.column_stack([np.ones(len(y)), np.log(dose)]), y)
    if not ok or beta[1] <= 0:
        return math.nan
    return math.exp(-beta[0] / beta[1])


def lesion_response_fit(df: pd.DataFrame, dose_col: str = "cumulative_dose_gy") -> LogisticDoseFit:
    """Logistic fit of responder (CR/PR) against lesion dose, from ``dose_effect`` rows."""
    rows = df[df["endpoint"] == "lesion_response"] if "endpoint" in df else df
    responder = rows["response"].isin(["CR", "PR"]).astype(int) if "response" in rows else rows["effect"]
    return fit_logistic_dose(rows[dose_col], responder)
