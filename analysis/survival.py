"""Progression-free survival against dose: Kaplan-Meier, log-rank test and Cox model.

Pure: DataFrames in, results out. Kaplan-Meier per dose group (split at the median dose),
log-rank test and a Cox proportional-hazards model on dose (hazard ratio per 10 Gy), from
``lifelines`` (imported when used). Doses in Gy, times in months, events 0/1.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pandas as pd


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
