"""Site effects in dose-response: per-site logistic fits and the test of a per-site dose scale.

Pure: DataFrames in, results out. Typical input is the ``dose_effect`` view (one row per
outcome, engine and method) filtered to one endpoint, engine and method::

    df = con.sql("SELECT * FROM dose_effect WHERE endpoint = 'nephrotoxicity' "
                 "AND engine = 'organ' AND method = 'multi_time_point'").df()
    fits = dose_response_by_site(df)

The model is the logistic NTCP/TCP of :mod:`rntflow.analysis.dose_logistic`. Site effect:
likelihood-ratio test of a per-site dose scale (site-specific D50, common gamma50) against
the pooled model, plus the leave-one-site-out change in D50. A calibration error at one
site scales its doses, which is exactly what this tests. Doses in Gy, effects 0/1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from rntflow.analysis.dose_logistic import LogisticDoseFit, clean_dose_effect, fit_logistic_dose, logit_fit


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


def _site_intercepts(
    dose: np.ndarray, y: np.ndarray, sites: np.ndarray, levels: list[str]
) -> tuple[np.ndarray, float, bool]:
    """Fit ``logit p = b ln D + a_s`` (``a_s = -4 gamma ln D50_s``: one intercept per site).

    Returns the coefficients ``[b, a_1 ... a_k]``, the log-likelihood and convergence.
    """
    design = np.column_stack([np.log(dose)] + [(sites == s).astype(float) for s in levels])
    return logit_fit(design, y)


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
    dose, y = clean_dose_effect(sub[dose_col], sub[effect_col])
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
