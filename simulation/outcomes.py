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

from rntflow.physics.ntcp import logistic_ntcp

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


#: TARE (radioembolisation) outcome models, per microsphere device. Logistic in the mean
#: delivered dose (``gamma50`` form above). Anchors that were checked for this simulator:
#: the EANM procedure guideline (Weber et al 2022, Eur J Nucl Med Mol Imaging 49:1682, Table 3,
#: modified from Levillain et al 2021): 90Y resin, HCC, tumour dose >= 100-120 Gy for response,
#: normal perfused liver < 40 Gy (unilobar; < 30 Gy pre-treated); and the product limits of
#: seed 000's Table 1 (SIR-Spheres parenchyma <= 40 Gy, tumour 100-120 Gy; QuiremSpheres
#: parenchyma <= 60 Gy, tumour > 100-150 Gy). The dose-response fits these anchors come from
#: -- Strigari et al 2010 (J Nucl Med 51:1377; 90Y resin, HCC: normal-liver NTCP and tumour
#: response vs dose) and Chiesa et al 2015 (Eur J Nucl Med Mol Imaging 42:1718; 90Y glass) --
#: and the 166Ho dose-response of van Roekel / Bastiaannet et al could not be confirmed here,
#: so the parameters below are SYNTHETIC, placed in the published ranges: tumour D50 near the
#: lower end of the target (a response probability of ~50 % at 100 Gy for resin, as the
#: guideline's ">= 100-120 Gy" threshold implies), liver-toxicity (CTCAE grade >= 3) D50 above
#: the parenchyma limit (the limit is set where severe toxicity is still rare): 52 Gy for
#: SIR-Spheres (the order of the resin NTCP D50 reported for HCC), 75 Gy for QuiremSpheres
#: (limit 60 Gy). Different microspheres differ per Gy (activity per sphere), hence the
#: per-device parameters.
TARE_OUTCOME_MODELS = {
    "lesion_response": {
        "dose": "mean delivered tumour dose of the lesion (Gy)",
        "event": "response CR or PR",
        "SIR-Spheres": {"d50_gy": 100.0, "gamma50": 1.5},
        "QuiremSpheres": {"d50_gy": 90.0, "gamma50": 1.5},
        "source": "synthetic within Weber et al 2022 EJNMMI 49:1682 Table 3 / Strigari et al 2010 JNM 51:1377",
    },
    "liver_toxicity": {
        "dose": "mean delivered Liver_Normal dose (Gy)",
        "event": "CTCAE grade >= 3 (liver/hepatobiliary)",
        "SIR-Spheres": {"d50_gy": 52.0, "gamma50": 2.0},
        "QuiremSpheres": {"d50_gy": 75.0, "gamma50": 2.0},
        "source": "synthetic within Weber et al 2022 Table 3 / seed 000 Table 1 / Strigari et al 2010",
    },
}


def draw_tare_outcomes(tare_truth: dict, rng: np.random.Generator) -> list[dict]:
    """TARE rows of outcomes.csv: ``lesion_response`` per Lesion_n (3 months) and
    ``liver_toxicity`` (CTCAE grade, 3 months), from the delivered doses of the first treatment."""
    rows: list[dict] = []
    m = TARE_OUTCOME_MODELS
    for sid, subj in tare_truth.items():
        tr = subj["treatments"][0]
        dose, device = tr["dose_gy"]["delivered"], tr["device"]
        for voi in sorted((v for v in dose if v.startswith("Lesion_")), key=lambda v: int(v[7:])):
            p = float(logistic_ntcp(dose[voi], **m["lesion_response"][device]))
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
        p_tox = float(logistic_ntcp(dose["Liver_Normal"], **m["liver_toxicity"][device]))
        tox = rng.random() < p_tox
        grade = int(rng.choice([3, 4], p=[0.85, 0.15])) if tox else int(rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15]))
        rows.append({"subject_id": sid, "endpoint": "liver_toxicity", "assessed_months": 3, "grade": grade})
    return rows
