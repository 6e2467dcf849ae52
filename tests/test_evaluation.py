"""The calibration bias study against arms whose dose errors are known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rntflow.evaluation import calibration_bias_study, truth_targets


def _truth(n_per_site: int = 4) -> dict:
    rng = np.random.default_rng(7)
    subjects = {}
    for site in ("SITE01", "SITE02", "SITE03"):
        for i in range(n_per_site):
            dose = {"Parotid_L": rng.uniform(5, 20), "Parotid_R": rng.uniform(5, 20), "Lesion_1": rng.uniform(20, 90)}
            subjects[f"{site}-{i}"] = {
                "site_id": site,
                "cumulative": {"dose_gy": dose, "bed_gy": {"Kidneys": rng.uniform(5, 25)}},
            }
    return {"subjects": subjects}


def _arm(truth: dict, scale: dict[str, float]) -> pd.DataFrame:
    """``dose_effect``-like rows: the true dose quantity times a per-site scale."""
    t = truth_targets(truth)
    k = t["site_id"].map(scale).fillna(1.0)
    return pd.DataFrame(
        {
            "subject_id": t["subject_id"],
            "site_id": t["site_id"],
            "endpoint": t["endpoint"],
            "lesion_voi": t["lesion_voi"].replace("", None),
            "cumulative_dose_gy": t["true_gy"] * k,
            "cumulative_bed_gy": t["true_gy"] * k,
        }
    )


def test_a_site_scaled_by_k_shows_as_site_scale_k_and_a_pooled_bias():
    truth = _truth()
    arms = {"exact": _arm(truth, {}), "site02 x1.3": _arm(truth, {"SITE02": 1.3})}
    st = calibration_bias_study(arms, truth, n_per_site=300, n_rep=40, seed=3)
    q = st.set_index(["endpoint", "arm", "quantity"])["median"]
    for endpoint in ("nephrotoxicity", "xerostomia", "lesion_response"):
        # exact doses reproduce the true-dose fit exactly; measured/true ratios are 1 and 1.3
        assert q[(endpoint, "exact", "d50_over_true_dose_fit")] == pytest.approx(1.0, abs=1e-9)
        assert q[(endpoint, "site02 x1.3", "measured_over_true_SITE02")] == pytest.approx(1.3)
        assert q[(endpoint, "site02 x1.3", "site_scale_SITE02")] == pytest.approx(1.3, rel=0.08)
        assert q[(endpoint, "exact", "site_scale_SITE02")] == pytest.approx(1.0, abs=0.08)
        # a third of the pooled doses read 30 % high: the pooled D50 moves up by about 10 %
        assert 1.04 < q[(endpoint, "site02 x1.3", "d50_over_true_dose_fit")] < 1.2


def test_sites_left_out_of_the_pool_do_not_bias_it():
    truth = _truth()
    arms = {"site03 x0.7": _arm(truth, {"SITE03": 0.7})}
    st = calibration_bias_study(arms, truth, n_per_site=200, n_rep=20, exclude_from_pool=["SITE03"], seed=4)
    q = st.set_index(["endpoint", "arm", "quantity"])["median"]
    assert q[("nephrotoxicity", "site03 x0.7", "d50_over_true_dose_fit")] == pytest.approx(1.0, abs=1e-9)
    assert q[("nephrotoxicity", "site03 x0.7", "site_scale_SITE03")] == pytest.approx(0.7, rel=0.1)
