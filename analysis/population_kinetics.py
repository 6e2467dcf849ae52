"""Population kinetics: the effective half-life distribution per VOI across subjects.

Pure: a DataFrame of TAC fits in, a summary table out. Median, IQR and n of the effective
half-life (h) per VOI from multi-time-point fits: the population values that
single-time-point methods use (Madsen 2018; Hänscheid 2018 choose their time point from it).
"""

from __future__ import annotations

import pandas as pd

#: Kinetics models that *use* a population half-life, excluded from population statistics.
SINGLE_TIME_POINT_MODELS = (
    "hanscheid",
    "madsen",
    "single_time_point",
    "single_time_point_hanscheid",
    "single_time_point_madsen",
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
