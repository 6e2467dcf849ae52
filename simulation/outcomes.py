"""Clinical outcomes drawn from known dose-response models (parameters kept in the truth).

The parameters are synthetic, chosen so that the doses of a small simulated trial span
the steep part of each curve (so that a dose-effect analysis has something to find);
they are not clinical estimates. Models (the logistic NTCP is the ``gamma50`` form of
Okunieff et al 1995, Int J Radiat Oncol Biol Phys 32:1227):

* nephrotoxicity (CTCAE grade >= 2 kidney-function decline) ~ logistic NTCP of the
  cumulative kidney BED;
* xerostomia (grade >= 1) ~ logistic NTCP of the cumulative mean parotid dose;
* lesion response (CR/PR vs SD/PD) ~ logistic in the cumulative lesion dose;
* progression-free survival ~ exponential with hazard ``h0 exp(-beta D_lesion_mean / 10 Gy)``,
  administratively censored at 24 months.
"""

from __future__ import annotations

import math

import numpy as np

from rntflow.simulation.truth import logistic_ntcp

OUTCOME_MODELS = {
    "nephrotoxicity": {
        "dose": "cumulative Kidneys BED (Gy)",
        "d50_gy": 12.0,
        "gamma50": 1.5,
        "event": "CTCAE grade >= 2",
    },
    "xerostomia": {
        "dose": "cumulative mean of Parotid_L and Parotid_R dose (Gy)",
        "d50_gy": 10.0,
        "gamma50": 1.0,
        "event": "CTCAE grade >= 1",
    },
    "lesion_response": {
        "dose": "cumulative lesion dose (Gy)",
        "d50_gy": 45.0,
        "gamma50": 1.2,
        "event": "response CR or PR",
    },
    "pfs": {
        "dose": "mean cumulative lesion dose (Gy)",
        "h0_per_month": math.log(2) / 9.0,
        "beta_per_10gy": 0.25,
        "censor_months": 24.0,
    },
}


def draw_outcomes(truth: dict, rng: np.random.Generator) -> list[dict]:
    """One row per subject and endpoint (per lesion for lesion response)."""
    rows: list[dict] = []
    m = OUTCOME_MODELS
    for sid, subj in truth["subjects"].items():
        bed = subj["cumulative"]["bed_gy"]["Kidneys"]
        dose = subj["cumulative"]["dose_gy"]
        tox = rng.random() < float(logistic_ntcp(bed, m["nephrotoxicity"]["d50_gy"], m["nephrotoxicity"]["gamma50"]))
        rows.append(
            {
                "subject_id": sid,
                "endpoint": "nephrotoxicity",
                "assessed_months": 12,
                "grade": int(rng.choice([2, 3], p=[0.8, 0.2])) if tox else int(rng.choice([0, 1], p=[0.7, 0.3])),
            }
        )
        parotid = 0.5 * (dose["Parotid_L"] + dose["Parotid_R"])
        xer = rng.random() < float(logistic_ntcp(parotid, m["xerostomia"]["d50_gy"], m["xerostomia"]["gamma50"]))
        rows.append(
            {
                "subject_id": sid,
                "endpoint": "xerostomia",
                "assessed_months": 6,
                "grade": int(rng.choice([1, 2], p=[0.7, 0.3])) if xer else 0,
            }
        )
        lesion_doses = [v for k, v in dose.items() if k.startswith("Lesion_")]
        for voi in sorted(k for k in dose if k.startswith("Lesion_")):
            p = float(logistic_ntcp(dose[voi], m["lesion_response"]["d50_gy"], m["lesion_response"]["gamma50"]))
            resp = rng.random() < p
            rows.append(
                {
                    "subject_id": sid,
                    "endpoint": "lesion_response",
                    "lesion_voi": voi,
                    "assessed_months": 3,
                    "response": str(rng.choice(["CR", "PR"], p=[0.3, 0.7]))
                    if resp
                    else str(rng.choice(["SD", "PD"], p=[0.6, 0.4])),
                }
            )
        d_mean = float(np.mean(lesion_doses))
        hazard = m["pfs"]["h0_per_month"] * math.exp(-m["pfs"]["beta_per_10gy"] * d_mean / 10.0)
        t = float(rng.exponential(1.0 / hazard))
        censor = m["pfs"]["censor_months"]
        rows.append(
            {
                "subject_id": sid,
                "endpoint": "pfs",
                "event": int(t <= censor),
                "time_to_event_months": round(min(t, censor), 2),
                "assessed_months": round(min(t, censor), 2),
            }
        )
    return rows
