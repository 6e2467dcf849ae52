"""Analysis arms compared: the same outcomes fitted with the doses of two arms.

Pure: DataFrames in, results out. An arm is one processing of the trial (e.g. with and
without cross-calibration); each arm's ``dose_effect`` rows are matched per outcome on
:data:`OUTCOME_KEY`, then fitted with :func:`rntflow.analysis.dose_logistic.fit_logistic_dose`
and tested with :func:`rntflow.analysis.site_effect.site_effect_test`. Doses in Gy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from rntflow.analysis.dose_logistic import fit_logistic_dose
from rntflow.analysis.site_effect import site_effect_test

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
