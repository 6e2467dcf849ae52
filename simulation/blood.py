"""Blood samples of the synthetic trial and the truth of the blood-based red-marrow dose.

Blood is part of the simulator's remainder of body (:mod:`rntflow.simulation.kinetics`):
the tracer not taken up by an organ clears with a fast (renal, ``T_a``) and a slow (``T_b``)
component. Whole blood of volume ``V_bl`` holds the share ``b_a`` of the fast and ``b_b`` of
the slow component (the slow component is mostly held in extravascular tissue), so

``C_bl(t) = A_adm (1 - sum f) [b_a p e^(-l_a t) + b_b (1 - p) e^(-l_b t)] / V_bl``  (MBq/mL)

and the activity in blood never exceeds the remainder's. Per subject ``V_bl`` is the ICRP 89
reference blood volume times a log-normal factor (CV 10 %), ``b_a`` ~ U(0.20, 0.30) (blood is
about a quarter of the extracellular volume the fast component distributes in), ``b_b`` ~
U(0.03, 0.07). With the default trial this gives blood-based marrow doses of about
0.02-0.03 Gy/GBq, the range published for 177Lu-PSMA (DOMAIN.md: 0.25 +/- 0.15 Gy per 7.4 GBq).

Samples are drawn at :data:`BLOOD_SAMPLE_TIMES_H` (lab timing jitter 5 %) with 5 %
multiplicative measurement noise (well counter, pipetting). The truth of the blood-based
marrow dose is exact, with the same conventions as the pipeline
(:mod:`rntflow.dosimetry.marrow`), and shares no code with it:

* ``TIAC_bl`` the exact integral of ``C_bl``; ``TIA_RM = TIAC_bl x RMBLR (1) x m_RM``
  (ICRP 89 reference male, :data:`rntflow.core.constants.RED_MARROW_MASS_G`);
* self-dose: electrons absorbed locally (:func:`rntflow.simulation.truth.self_dose_gy`);
* cross-dose: ``(TIA_WB - TIA_RM) x S(RM<-RB)``, ``TIA_WB`` the exact whole-body integral
  (every compartment plus the remainder), S from
  :data:`rntflow.core.constants.S_RM_FROM_RB_LU177_GY_PER_MBQ_H`.

Randomness comes from its own generator seeded from the trial seed, so the DICOM output of
:func:`rntflow.simulation.trial.simulate_trial` is unchanged by this module.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from rntflow.core.constants import BLOOD_VOLUME_ML, RED_MARROW_MASS_G, S_RM_FROM_RB_LU177_GY_PER_MBQ_H
from rntflow.simulation.kinetics import (
    REMAINDER_FAST_FRACTION,
    REMAINDER_T_FAST_H,
    REMAINDER_T_SLOW_H,
    CompartmentKinetics,
    SubjectKinetics,
)
from rntflow.simulation.truth import self_dose_gy, tia_mbq_h

#: Nominal blood sampling times (h after the start of administration). Eight, not six: the
#: blood curve is bi-exponential (renal and slow phase), and with six samples AICc's small-sample
#: penalty for the 4-parameter ``bi_exp`` (2k(k+1)/(n-k-1) = 40) makes ``mono_exp`` win about
#: two times in three, whose TIAC then errs by -7 +/- 9 % (up to -30 %); with these eight the
#: ``bi_exp`` is chosen and the TIAC errs by 0 +/- 2 % (5 % noise, 96 simulated cycles).
BLOOD_SAMPLE_TIMES_H = (0.5, 1.0, 2.0, 4.0, 24.0, 48.0, 96.0, 168.0)
#: Relative measurement noise (SD) of a blood sample and relative SD of the sampling time.
BLOOD_NOISE_CV = 0.05
BLOOD_TIME_JITTER_CV = 0.05
#: Columns of ``blood_samples.csv`` (the format ``rntflow blood import`` reads).
BLOOD_CSV_COLUMNS = ("subject_id", "cycle", "t_h", "activity_concentration_bq_per_ml")
#: Columns of ``truth_marrow.csv``.
TRUTH_MARROW_COLUMNS = (
    "subject_id",
    "site_id",
    "cycle",
    "blood_volume_ml",
    "tiac_mbq_h_per_ml",
    "red_marrow_mass_g",
    "red_marrow_tia_mbq_h",
    "whole_body_tia_mbq_h",
    "self_dose_gy",
    "cross_dose_gy",
    "dose_gy",
    "image_voi_dose_gy",
)
#: Red-marrow-to-blood concentration ratio of the truth (a PSMA ligand: 1).
TRUTH_RMBLR = 1.0
#: Offset mixed into the trial seed for this module's own generator.
_SEED_STREAM = 177


def _blood_share(rng: np.random.Generator) -> tuple[float, float, float]:
    """(blood volume mL, share of the fast and of the slow remainder component in blood)."""
    v = BLOOD_VOLUME_ML["M"] * float(rng.lognormal(0.0, 0.10))
    return v, float(rng.uniform(0.20, 0.30)), float(rng.uniform(0.03, 0.07))


def _terms(kin: SubjectKinetics, admin_mbq: float, v_ml: float, b_fast: float, b_slow: float):
    free = 1.0 - kin.organ_fraction
    c = admin_mbq * free / v_ml
    return (
        (c * b_fast * REMAINDER_FAST_FRACTION, math.log(2) / REMAINDER_T_FAST_H),
        (c * b_slow * (1.0 - REMAINDER_FAST_FRACTION), math.log(2) / REMAINDER_T_SLOW_H),
    )


def blood_concentration_mbq_per_ml(
    kin: SubjectKinetics, admin_mbq: float, v_ml: float, b_fast: float, b_slow: float, t_h: np.ndarray | float
) -> np.ndarray:
    """True whole-blood activity concentration (MBq/mL) at ``t_h`` (h)."""
    t = np.asarray(t_h, dtype=float)
    return sum(a * np.exp(-lam * t) for a, lam in _terms(kin, admin_mbq, v_ml, b_fast, b_slow))


def blood_tiac_mbq_h_per_ml(kin: SubjectKinetics, admin_mbq: float, v_ml: float, b_fast: float, b_slow: float) -> float:
    """Exact blood time-integrated activity concentration (MBq h/mL), 0 to infinity."""
    return float(sum(a / lam for a, lam in _terms(kin, admin_mbq, v_ml, b_fast, b_slow)))


def whole_body_tia_mbq_h(kin: SubjectKinetics, admin_mbq: float) -> float:
    """Exact whole-body TIA (MBq h): every compartment plus the remainder of body."""
    organs = sum(tia_mbq_h(k, admin_mbq) for k in kin.compartments.values())
    return float(organs + kin.remainder_integral_mbq_h(admin_mbq, 0.0, math.inf))


def marrow_truth(
    kin: SubjectKinetics, admin_mbq: float, v_ml: float, b_fast: float, b_slow: float, electron_energy_mev: float
) -> dict:
    """Truth of the blood-based red-marrow dose of one cycle (module docstring)."""
    m_rm = RED_MARROW_MASS_G["M"]
    tiac = blood_tiac_mbq_h_per_ml(kin, admin_mbq, v_ml, b_fast, b_slow)
    tia_rm = tiac * TRUTH_RMBLR * m_rm
    wb = whole_body_tia_mbq_h(kin, admin_mbq)
    self_gy = self_dose_gy(tia_rm, m_rm, electron_energy_mev)
    cross_gy = (wb - tia_rm) * S_RM_FROM_RB_LU177_GY_PER_MBQ_H
    return {
        "blood_volume_ml": v_ml,
        "tiac_mbq_h_per_ml": tiac,
        "red_marrow_mass_g": m_rm,
        "red_marrow_tia_mbq_h": tia_rm,
        "whole_body_tia_mbq_h": wb,
        "self_dose_gy": self_gy,
        "cross_dose_gy": cross_gy,
        "dose_gy": self_gy + cross_gy,
    }


def _cycle_kinetics(cyc: dict) -> SubjectKinetics:
    return SubjectKinetics({v: CompartmentKinetics(**k) for v, k in cyc["kinetics"].items()})


def blood_tables(truth: dict, seed: int) -> tuple[list[dict], list[dict]]:
    """Blood sample rows and truth rows for every subject and cycle of ``truth`` (truth.json's dict)."""
    rng = np.random.default_rng([int(seed), _SEED_STREAM])
    samples: list[dict] = []
    truths: list[dict] = []
    e_mev = truth["electron_energy_mev"]
    for sid in sorted(truth["subjects"]):
        subj = truth["subjects"][sid]
        v_ml, b_fast, b_slow = _blood_share(rng)
        for cyc in subj["cycles"]:
            kin = _cycle_kinetics(cyc)
            admin = cyc["administered_mbq"]
            for nominal in BLOOD_SAMPLE_TIMES_H:
                t = nominal * (1.0 + float(np.clip(rng.normal(0.0, BLOOD_TIME_JITTER_CV), -0.1, 0.1)))
                t = round(t, 3)
                c = float(blood_concentration_mbq_per_ml(kin, admin, v_ml, b_fast, b_slow, t))
                c *= max(0.0, 1.0 + float(rng.normal(0.0, BLOOD_NOISE_CV)))
                samples.append(
                    {
                        "subject_id": sid,
                        "cycle": cyc["cycle"],
                        "t_h": f"{t:.3f}",
                        "activity_concentration_bq_per_ml": f"{c * 1e6:.1f}",
                    }
                )
            row = marrow_truth(kin, admin, v_ml, b_fast, b_slow, e_mev)
            row.update(
                {
                    "subject_id": sid,
                    "site_id": subj["site_id"],
                    "cycle": cyc["cycle"],
                    "image_voi_dose_gy": cyc["dose_gy"].get("Bone_Marrow", ""),
                }
            )
            truths.append(row)
    return samples, truths


def write_blood_files(out_dir: str | Path, truth: dict, seed: int) -> tuple[Path, Path]:
    """Write ``blood_samples.csv`` (the lab's file) and ``truth_marrow.csv`` into ``out_dir``."""
    out = Path(out_dir)
    samples, truths = blood_tables(truth, seed)
    paths = (out / "blood_samples.csv", out / "truth_marrow.csv")
    for path, rows, cols in ((paths[0], samples, BLOOD_CSV_COLUMNS), (paths[1], truths, TRUTH_MARROW_COLUMNS)):
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(cols), lineterminator="\n", extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return paths
