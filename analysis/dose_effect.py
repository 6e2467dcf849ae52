"""Dose-effect analysis over warehouse frames (pure: DataFrames in, results out).

Typical input is the ``dose_effect`` view (one row per outcome, engine and method) filtered
to one endpoint, engine and method::

    df = con.sql("SELECT * FROM dose_effect WHERE endpoint = 'nephrotoxicity' "
                 "AND engine = 'organ' AND method = 'multi_time_point'").df()
    fits = dose_response_by_site(df)

Models
------
Logistic NTCP/TCP (Okunieff et al 1995, Int J Radiat Oncol Biol Phys 32:1227 for the
``gamma50`` form)::

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

PFS against dose: Kaplan-Meier per dose group (split at the median dose), log-rank test
and a Cox proportional-hazards model on dose (hazard ratio per 10 Gy), from ``lifelines``.

Site effect: likelihood-ratio test of a per-site dose scale (site-specific D50, common
gamma50) against the pooled model, plus the leave-one-site-out change in D50. A
calibration error at one site scales its doses, which is exactly what this tests.

Population kinetics: effective half-life distribution per VOI (median, IQR, n) from
multi-time-point fits, the population values that single-time-point methods use
(Madsen 2018; Hänscheid 2018 choose their time point from it).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, stats
from scipy.special import expit, log_expit
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

#: chi-square(1) quantile for a 95 % profile-likelihood interval.
CHI2_1_95 = float(stats.chi2.ppf(0.95, 1))
#: Kinetics models that *use* a population half-life, excluded from population statistics.
SINGLE_TIME_POINT_MODELS = (
    "hanscheid",
    "madsen",
    "single_time_point",
    "single_time_point_hanscheid",
    "single_time_point_madsen",
)


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
        """Effect probability (0-1) at ``dose_gy`` (Gy), :func:`ntcp_logistic`."""
        return ntcp_logistic(dose_gy, self.d50_gy, self.gamma50)


def ntcp_logistic(dose_gy: np.ndarray | float, d50_gy: float, gamma50: float) -> np.ndarray:
    """Logistic dose-effect probability ``P = 1 / (1 + (D50/D)^(4 gamma50))``.

    Parameters
    ----------
    dose_gy : array_like
        Dose (Gy), > 0 (0 gives P = 0 for gamma50 > 0).
    d50_gy : float
        Dose (Gy) with 50 % effect probability, > 0.
    gamma50 : float
        Normalised slope at D50 (dimensionless).

    Returns
    -------
    numpy.ndarray
        Probability (0-1), same shape as ``dose_gy``.
    """
    d = np.asarray(dose_gy, dtype=float)
    with np.errstate(divide="ignore"):
        return expit(4.0 * gamma50 * (np.log(d) - math.log(d50_gy)))


def _loglik(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(y * log_expit(z) + (1 - y) * log_expit(-z)))


#: Largest absolute logistic coefficient taken as finite: beyond it the data separate (the
#: maximum-likelihood estimate is at infinity) even when the optimiser reports convergence.
MAX_ABS_COEFFICIENT = 1e4


def _logit(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, bool]:
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


def _clean(dose_gy, effect) -> tuple[np.ndarray, np.ndarray]:
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
    dose, y = _clean(dose_gy, effect)
    n, n_events = len(y), int(y.sum())
    nan_fit = LogisticDoseFit(
        math.nan, (math.nan, math.nan), math.nan, (math.nan, math.nan), n, n_events, math.nan, False
    )
    if n < 3 or n_events in (0, n):
        return nan_fit
    lnd = np.log(dose)
    beta, ll_max, ok = _logit(np.column_stack([np.ones(n), lnd]), y)
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


def _fit_row(label: str, fit: LogisticDoseFit) -> dict:
    return {
        "site_id": label,
        "n": fit.n,
        "n_events": fit.n_events,
        "d50_gy": fit.d50_gy,
        "d50_ci_low_gy": fit.d50_ci_gy[0],
        "d50_ci_high_gy": fit.d50_ci_gy[1],
        "gamma50": fit.gamma50,
        "gamma50_ci_low": fit.gamma50_ci[0],
        "gamma50_ci_high": fit.gamma50_ci[1],
        "converged": fit.converged,
    }


def dose_response_by_site(
    df: pd.DataFrame, dose_col: str = "cumulative_dose_gy", effect_col: str = "effect", site_col: str = "site_id"
) -> pd.DataFrame:
    """Logistic dose-response fit pooled (``site_id == 'pooled'``) and per site.

    Use for NTCP (toxicity rows of ``dose_effect``) and for lesion response (responder
    CR/PR against lesion dose): the model is the same.

    Returns
    -------
    pandas.DataFrame
        One row per fit: ``site_id, n, n_events, d50_gy, d50_ci_low_gy, d50_ci_high_gy,
        gamma50, gamma50_ci_low, gamma50_ci_high, converged``.
    """
    rows = [_fit_row("pooled", fit_logistic_dose(df[dose_col], df[effect_col]))]
    for site, part in df.groupby(site_col, sort=True):
        rows.append(_fit_row(str(site), fit_logistic_dose(part[dose_col], part[effect_col])))
    return pd.DataFrame(rows)


def lesion_response_fit(df: pd.DataFrame, dose_col: str = "cumulative_dose_gy") -> LogisticDoseFit:
    """Logistic fit of responder (CR/PR) against lesion dose, from ``dose_effect`` rows."""
    rows = df[df["endpoint"] == "lesion_response"] if "endpoint" in df else df
    responder = rows["response"].isin(["CR", "PR"]).astype(int) if "response" in rows else rows["effect"]
    return fit_logistic_dose(rows[dose_col], responder)


def _site_intercepts(
    dose: np.ndarray, y: np.ndarray, sites: np.ndarray, levels: list[str]
) -> tuple[np.ndarray, float, bool]:
    """Fit ``logit p = b ln D + a_s`` (``a_s = -4 gamma ln D50_s``: one intercept per site).

    Returns the coefficients ``[b, a_1 ... a_k]``, the log-likelihood and convergence.
    """
    design = np.column_stack([np.log(dose)] + [(sites == s).astype(float) for s in levels])
    return _logit(design, y)


@dataclass(frozen=True)
class SiteEffectTest:
    """Does a per-site dose scale improve the dose-response fit?

    Attributes
    ----------
    lr_statistic : float
        2 (ll_per_site_d50 - ll_pooled).
    dof : int
        Number of sites - 1.
    p_value : float
        chi-square(dof) upper tail of ``lr_statistic``.
    site_dose_scale : dict
        Per-site D50 divided by the pooled D50 (1 = no site effect).
    leave_one_out : pandas.DataFrame
        ``site_id, d50_gy, d50_change_pct``: pooled D50 without that site.
    """

    lr_statistic: float
    dof: int
    p_value: float
    site_dose_scale: dict[str, float]
    leave_one_out: pd.DataFrame


def site_effect_test(
    df: pd.DataFrame, dose_col: str = "cumulative_dose_gy", effect_col: str = "effect", site_col: str = "site_id"
) -> SiteEffectTest:
    """Likelihood-ratio test of a per-site dose scale (site-specific D50, common gamma50)."""
    sub = df[[dose_col, effect_col, site_col]].dropna()
    sub = sub[sub[dose_col] > 0]
    dose, y = _clean(sub[dose_col], sub[effect_col])
    sites = sub[site_col].astype(str).to_numpy()
    levels = sorted(set(sites))
    pooled = fit_logistic_dose(dose, y)
    beta, ll_alt, ok = _site_intercepts(dose, y, sites, levels)
    if not ok or not pooled.converged:
        raise ValueError("site-effect model did not converge (separated data or too few events per site)")
    lr = max(0.0, 2 * (ll_alt - pooled.log_likelihood))
    dof = len(levels) - 1
    d50_sites = {s: math.exp(-beta[1 + i] / beta[0]) for i, s in enumerate(levels)}
    scale = {s: d / pooled.d50_gy for s, d in d50_sites.items()}
    loo = []
    for s in levels:
        keep = sites != s
        fit = fit_logistic_dose(dose[keep], y[keep])
        loo.append({"site_id": s, "d50_gy": fit.d50_gy, "d50_change_pct": 100 * (fit.d50_gy / pooled.d50_gy - 1)})
    return SiteEffectTest(lr, dof, float(stats.chi2.sf(lr, dof)) if dof > 0 else math.nan, scale, pd.DataFrame(loo))


@dataclass(frozen=True)
class PfsAnalysis:
    """Progression-free survival against dose.

    Attributes
    ----------
    split_dose_gy : float
        Median dose: ``high`` group is dose > split.
    groups : pandas.DataFrame
        ``group, n, events, median_pfs_months`` (Kaplan-Meier; ``inf`` if not reached).
    logrank_p : float
        Log-rank test p-value, high vs low.
    cox_hr_per_10gy : float
        Cox hazard ratio per 10 Gy.
    cox_hr_ci_per_10gy : tuple of float
        95 % Wald interval of the hazard ratio.
    cox_p : float
        Wald p-value of the dose coefficient.
    cox_converged : bool
        False when lifelines warned that the Cox fit did not converge (e.g. complete
        separation: every event on one side of a dose); the Cox figures are then NaN.
    """

    split_dose_gy: float
    groups: pd.DataFrame
    logrank_p: float
    cox_hr_per_10gy: float
    cox_hr_ci_per_10gy: tuple[float, float]
    cox_p: float
    cox_converged: bool = True


def pfs_vs_dose(
    df: pd.DataFrame,
    dose_col: str = "cumulative_dose_gy",
    time_col: str = "time_to_event_months",
    event_col: str = "event",
) -> PfsAnalysis:
    """Kaplan-Meier by dose group (median split), log-rank test and Cox model on dose."""
    from lifelines import CoxPHFitter, KaplanMeierFitter
    from lifelines.exceptions import ConvergenceWarning
    from lifelines.statistics import logrank_test

    data = df[[dose_col, time_col, event_col]].dropna().astype(float)
    if len(data) < 4:
        raise ValueError("need at least 4 subjects with dose, time and event for a PFS analysis")
    split = float(data[dose_col].median())
    high = data[dose_col] > split
    rows = []
    for name, mask in (("low", ~high), ("high", high)):
        part = data[mask]
        km = KaplanMeierFitter().fit(part[time_col], part[event_col])
        rows.append(
            {
                "group": name,
                "n": int(mask.sum()),
                "events": int(part[event_col].sum()),
                "median_pfs_months": float(km.median_survival_time_),
            }
        )
    lr = logrank_test(
        data.loc[~high, time_col], data.loc[high, time_col], data.loc[~high, event_col], data.loc[high, event_col]
    )
    cox_data = pd.DataFrame({"dose_10gy": data[dose_col] / 10.0, "T": data[time_col], "E": data[event_col]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        cph = CoxPHFitter().fit(cox_data, duration_col="T", event_col="E")
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        return PfsAnalysis(
            split, pd.DataFrame(rows), float(lr.p_value), math.nan, (math.nan, math.nan), math.nan, cox_converged=False
        )
    summ = cph.summary.loc["dose_10gy"]
    return PfsAnalysis(
        split,
        pd.DataFrame(rows),
        float(lr.p_value),
        float(summ["exp(coef)"]),
        (float(summ["exp(coef) lower 95%"]), float(summ["exp(coef) upper 95%"])),
        float(summ["p"]),
    )


def population_kinetics(
    tac_fits: pd.DataFrame, by: tuple[str, ...] = ("voi",), half_life_col: str = "effective_half_life_h"
) -> pd.DataFrame:
    """Effective half-life distribution per organ from multi-time-point fits.

    Rows fitted by a single-time-point model (which *use* a population half-life) and
    non-positive or missing half-lives are excluded.

    Returns
    -------
    pandas.DataFrame
        ``by`` columns and ``n, median_h, q1_h, q3_h, iqr_h, mean_h, sd_h``.
    """
    data = tac_fits
    if "model" in data:
        data = data[~data["model"].isin(SINGLE_TIME_POINT_MODELS)]
    data = data[data[half_life_col].notna() & (data[half_life_col] > 0)]
    grouped = data.groupby(list(by), sort=True)[half_life_col]
    out = pd.DataFrame(
        {
            "n": grouped.size(),
            "median_h": grouped.median(),
            "q1_h": grouped.quantile(0.25),
            "q3_h": grouped.quantile(0.75),
            "mean_h": grouped.mean(),
            "sd_h": grouped.std(ddof=1),
        }
    ).reset_index()
    out.insert(len(by) + 4, "iqr_h", out["q3_h"] - out["q1_h"])
    return out


def logistic_d50_point(dose_gy, effect) -> float:
    """Maximum-likelihood D50 (Gy) without confidence intervals (NaN if separated or too few).

    For resampling studies, where the profile-likelihood intervals of
    :func:`fit_logistic_dose` would cost a hundred times more.
    """
    dose, y = _clean(dose_gy, effect)
    if len(y) < 3 or y.sum() in (0, len(y)):
        return math.nan
    beta, _, ok = _logit(np.column_stack([np.ones(len(y)), np.log(dose)]), y)
    if not ok or beta[1] <= 0:
        return math.nan
    return math.exp(-beta[0] / beta[1])


def per_site_d50(dose_gy, effect, sites) -> dict[str, float]:
    """Site-specific D50 (Gy) with a common slope: ``logit p = b ln D + a_site``.

    A calibration error of ``k`` at one site scales its doses by ``k`` and so its D50 by
    ``k``; the ratio of a site's D50 to the others' estimates that factor. Empty when the
    model does not converge (separated data).
    """
    dose = np.asarray(dose_gy, dtype=float)
    y = np.asarray(effect, dtype=float)
    sites = np.asarray(sites).astype(str)
    ok = np.isfinite(dose) & np.isfinite(y) & (dose > 0)
    dose, y, sites = dose[ok], y[ok], sites[ok]
    levels = sorted(set(sites))
    beta, _, converged = _site_intercepts(dose, y, sites, levels)
    if not converged or beta[0] <= 0:
        return {}
    return {s: math.exp(-beta[1 + i] / beta[0]) for i, s in enumerate(levels)}


#: Columns that identify one outcome across analysis arms.
OUTCOME_KEY = ("subject_id", "endpoint", "lesion_voi")


def one_row_per_outcome(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``lesion_voi`` null made ``''`` (a join key), checked to hold one row per outcome.

    Raises
    ------
    ValueError
        When an outcome has several rows (``dose_effect`` has one per engine: filter it to
        one engine per target first).
    """
    out = df.assign(lesion_voi=df["lesion_voi"].fillna(""))
    dup = out.duplicated(list(OUTCOME_KEY))
    if dup.any():
        first = out.loc[dup, list(OUTCOME_KEY)].iloc[0].to_dict()
        raise ValueError(
            f"{int(dup.sum())} outcome(s) with more than one dose row (e.g. {first}): "
            "filter dose_effect to one engine per target"
        )
    return out


@dataclass(frozen=True)
class ArmComparison:
    """The same outcomes analysed with the doses of two arms (e.g. cross-calibration on/off).

    Attributes
    ----------
    fits : pandas.DataFrame
        ``arm, n, n_events, d50_gy, d50_ci_low_gy, d50_ci_high_gy, gamma50, site_effect_p``:
        pooled logistic fit per arm and the p-value of its site-effect test.
    site_dose_ratio : pandas.DataFrame
        ``site_id, n, dose_ratio_median, dose_ratio_min, dose_ratio_max``: dose of the
        second arm over the first, per outcome, summarised per site.
    d50_ratio : float
        Pooled D50 of the second arm over the first.
    """

    fits: pd.DataFrame
    site_dose_ratio: pd.DataFrame
    d50_ratio: float


def compare_arms(
    first: pd.DataFrame,
    second: pd.DataFrame,
    dose_col: str = "cumulative_dose_gy",
    names: tuple[str, str] = ("cross-calibrated", "vendor face value"),
) -> ArmComparison:
    """Fit the dose-response on the same outcomes with each arm's doses.

    Parameters
    ----------
    first, second : pandas.DataFrame
        ``dose_effect`` rows of one endpoint (and one engine) from each arm; outcomes are
        matched on :data:`OUTCOME_KEY`, unmatched rows are dropped.
    dose_col : str
        Dose column (Gy), e.g. ``cumulative_dose_gy`` or ``cumulative_bed_gy``.
    names : tuple of str
        Labels of the two arms.
    """

    def keyed(df: pd.DataFrame) -> pd.DataFrame:
        return one_row_per_outcome(df[[*OUTCOME_KEY, "site_id", "effect", dose_col]]).dropna(
            subset=[dose_col, "effect"]
        )

    m = keyed(first).merge(keyed(second)[[*OUTCOME_KEY, dose_col]], on=list(OUTCOME_KEY), suffixes=("_a", "_b"))
    rows = []
    for name, col in zip(names, (f"{dose_col}_a", f"{dose_col}_b")):
        fit = fit_logistic_dose(m[col], m["effect"])
        try:
            p = site_effect_test(m.rename(columns={col: "dose"}), dose_col="dose").p_value
        except ValueError:
            p = math.nan
        rows.append(
            {
                "arm": name,
                "n": fit.n,
                "n_events": fit.n_events,
                "d50_gy": fit.d50_gy,
                "d50_ci_low_gy": fit.d50_ci_gy[0],
                "d50_ci_high_gy": fit.d50_ci_gy[1],
                "gamma50": fit.gamma50,
                "site_effect_p": p,
            }
        )
    m["ratio"] = m[f"{dose_col}_b"] / m[f"{dose_col}_a"]
    g = m.groupby("site_id", sort=True)["ratio"]
    ratio = pd.DataFrame(
        {"n": g.size(), "dose_ratio_median": g.median(), "dose_ratio_min": g.min(), "dose_ratio_max": g.max()}
    ).reset_index()
    fits = pd.DataFrame(rows)
    return ArmComparison(fits, ratio, float(fits["d50_gy"].iloc[1] / fits["d50_gy"].iloc[0]))
