"""Pipeline doses against the simulator's ground truth (used by the demo and the tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from warehouse.writer import read_latest

#: Engines compared with the truth: organ self-dose (organs) and the sphere model (lesions).
TRUTH_ENGINES = ("organ", "sphere")


def compare_with_truth(warehouse_dir: str | Path, truth_csv: str | Path) -> pd.DataFrame:
    """One row per subject, cycle and VOI present in both: pipeline vs true dose.

    Returns columns ``subject_id, site_id, cycle, voi, engine, method, final, n_timepoints,
    dose_gy, true_dose_gy, error_pct, mass_g, true_mass_g, tia_mbq_h, true_tia_mbq_h``.
    """
    truth = pd.read_csv(truth_csv)
    got = read_latest(warehouse_dir, "voi_doses")
    if got.empty:
        return pd.DataFrame()
    got = got[got["engine"].isin(TRUTH_ENGINES)]
    got = got.sort_values("method").drop_duplicates(["subject_id", "cycle", "voi"], keep="first")
    got = got.astype({"cycle": int})
    m = got.merge(truth.rename(columns={"dose_gy": "true_dose_gy", "mass_g": "true_mass_g",
                                        "tia_mbq_h": "true_tia_mbq_h", "method": "true_method",
                                        "site_id": "true_site_id"}),
                  on=["subject_id", "cycle", "voi"], how="inner")
    m["error_pct"] = 100.0 * (m["dose_gy"] / m["true_dose_gy"] - 1.0)
    cols = ["subject_id", "site_id", "cycle", "voi", "engine", "method", "final", "n_timepoints", "dose_gy",
            "true_dose_gy", "error_pct", "mass_g", "true_mass_g", "tia_mbq_h", "true_tia_mbq_h"]
    return m[cols].sort_values(["subject_id", "cycle", "voi"]).reset_index(drop=True)
