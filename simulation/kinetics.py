"""True biokinetics of 177Lu-PSMA in the synthetic subjects.

Each source compartment follows ``A(t) = A_adm f (exp(-l_eff t) - exp(-l_up t))`` (uptake
then clearance, physical decay included in the rates). Effective half-lives and per-GBq
absorbed doses are drawn per subject from log-normal distributions whose centre and
spread follow published values, and the uptake fraction ``f`` is then solved so that the
subject's self-dose per GBq is the drawn value. That grounds the activities in the
literature instead of in guessed uptake percentages:

* kidneys 0.43 +/- 0.16 Gy/GBq, parotid glands 0.63 +/- 0.36 Gy/GBq (VISION dosimetry
  sub-study as summarised by de Wit-van der Veen, de Vries-Huizing and Stokkel, "Current
  status of clinical dosimetry and personalized radionuclide therapy", NKI Amsterdam
  review); submandibular glands taken like the parotids; red marrow 0.25 +/- 0.15 Gy per
  7.4 GBq cycle (VISION, same review);
* liver 0.12 Gy/GBq and spleen 0.08 Gy/GBq, lungs 0.02 Gy/GBq (Violet et al 2019,
  J Nucl Med 60:517, 177Lu-PSMA-617 dosimetry: liver 0.1, spleen 0.06-0.1, CV ~50%);
* lesions 2-8 Gy/GBq (Violet et al 2019: median tumour 5.3 Gy/GBq for PSMA-avid disease);
* effective half-lives: kidneys ~40 h, salivary glands ~35 h, liver ~70 h, spleen ~70 h,
  marrow ~30 h, lesions ~80 h (Violet 2019; Kurth et al 2018, J Nucl Med 59:1378).

The rest of the body (blood and soft tissue) holds whatever is not in the organs:
``A_rem(t) = A_adm [(1 - sum f)(0.6 e^(-l_a t) + 0.4 e^(-l_b t)) + sum f_k e^(-l_up,k t)]``
with renal washout (T_a ~ 5 h) and a slow component (T_b ~ 45 h), so that the whole
body holds exactly the administered activity at t = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV

#: (centre Gy/GBq, SD Gy/GBq, effective half-life h, CV of T_eff, uptake half-life h)
KINETICS_PRIOR = {
    "Kidney": (0.43, 0.16, 40.0, 0.20, 1.0),
    "Salivary": (0.63, 0.36, 35.0, 0.20, 1.0),
    "Liver": (0.12, 0.06, 70.0, 0.25, 0.8),
    "Spleen": (0.08, 0.04, 70.0, 0.25, 0.8),
    "Lung": (0.02, 0.01, 30.0, 0.25, 0.3),
    "Bone_Trabecular": (0.25 / 7.4, 0.15 / 7.4, 30.0, 0.25, 0.5),
    "Lesion": (4.5, 2.5, 80.0, 0.20, 3.0),
}
#: Remainder of body: fast (renal washout) and slow effective half-lives (h), fast fraction.
REMAINDER_T_FAST_H = 5.0
REMAINDER_T_SLOW_H = 45.0
REMAINDER_FAST_FRACTION = 0.6


@dataclass(frozen=True)
class CompartmentKinetics:
    """Uptake-then-clearance kinetics of one compartment.

    Attributes
    ----------
    fraction : float
        Uptake fraction ``f`` of the administered activity.
    t_eff_h : float
        Effective (clearance) half-life (h).
    t_up_h : float
        Uptake half-life (h).
    """

    fraction: float
    t_eff_h: float
    t_up_h: float

    @property
    def l_eff_per_h(self) -> float:
        return math.log(2) / self.t_eff_h

    @property
    def l_up_per_h(self) -> float:
        return math.log(2) / self.t_up_h

    def activity_mbq(self, administered_mbq: float, t_h: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t_h, dtype=float)
        return administered_mbq * self.fraction * (np.exp(-self.l_eff_per_h * t) - np.exp(-self.l_up_per_h * t))

    def integral_mbq_h(self, administered_mbq: float, t0_h: float, t1_h: float = math.inf) -> float:
        """Exact integral of the activity from ``t0_h`` to ``t1_h`` (MBq·h)."""

        def prim(lam: float, t: float) -> float:
            return 0.0 if math.isinf(t) else -math.exp(-lam * t) / lam

        e = prim(self.l_eff_per_h, t1_h) - prim(self.l_eff_per_h, t0_h)
        u = prim(self.l_up_per_h, t1_h) - prim(self.l_up_per_h, t0_h)
        return administered_mbq * self.fraction * (e - u)


@dataclass(frozen=True)
class SubjectKinetics:
    """Kinetics of every compartment of one subject (per cycle)."""

    compartments: dict[str, CompartmentKinetics]

    @property
    def organ_fraction(self) -> float:
        return sum(k.fraction for k in self.compartments.values())

    def remainder_activity_mbq(self, administered_mbq: float, t_h: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t_h, dtype=float)
        free = 1.0 - self.organ_fraction
        lf, ls = math.log(2) / REMAINDER_T_FAST_H, math.log(2) / REMAINDER_T_SLOW_H
        a = free * (REMAINDER_FAST_FRACTION * np.exp(-lf * t) + (1 - REMAINDER_FAST_FRACTION) * np.exp(-ls * t))
        for k in self.compartments.values():
            a = a + k.fraction * np.exp(-k.l_up_per_h * t)
        return administered_mbq * a

    def remainder_integral_mbq_h(self, administered_mbq: float, t0_h: float, t1_h: float) -> float:
        free = 1.0 - self.organ_fraction
        terms = [
            (free * REMAINDER_FAST_FRACTION, math.log(2) / REMAINDER_T_FAST_H),
            (free * (1 - REMAINDER_FAST_FRACTION), math.log(2) / REMAINDER_T_SLOW_H),
        ] + [(k.fraction, k.l_up_per_h) for k in self.compartments.values()]
        return administered_mbq * sum(c * (math.exp(-lam * t0_h) - math.exp(-lam * t1_h)) / lam for c, lam in terms)


def _lognormal(rng: np.random.Generator, mean: float, sd: float) -> float:
    """Draw from a log-normal with the given arithmetic mean and SD."""
    sigma2 = math.log(1 + (sd / mean) ** 2)
    return float(rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2)))


def sample_kinetics(
    rng: np.random.Generator,
    tissues: dict[str, str],
    masses_g: dict[str, float],
    electron_energy_mev: float,
    physical_half_life_h: float,
) -> SubjectKinetics:
    """Draw a subject's kinetics.

    Parameters
    ----------
    rng : numpy.random.Generator
        Randomness.
    tissues : dict
        VOI name -> tissue key of :data:`KINETICS_PRIOR`.
    masses_g : dict
        VOI name -> mass (g), used to turn the drawn Gy/GBq into an uptake fraction.
    electron_energy_mev : float
        Mean electron energy per decay (MeV) of the nuclide.
    physical_half_life_h : float
        Physical half-life (h); effective half-lives are capped just below it.

    Returns
    -------
    SubjectKinetics
    """
    out: dict[str, CompartmentKinetics] = {}
    per_mbq_h_j = DECAYS_PER_MBQ_H * electron_energy_mev * J_PER_MEV
    paired: dict[str, tuple[float, float]] = {}
    for voi, tissue in tissues.items():
        d_mean, d_sd, t_mean, t_cv, t_up = KINETICS_PRIOR[tissue]
        pair_key = voi.rsplit("_", 1)[0] if voi.endswith(("_L", "_R")) else voi
        if pair_key in paired:  # left and right organs of a pair are alike, not identical
            d0, t0 = paired[pair_key]
            d_gy_per_gbq = d0 * float(rng.lognormal(0, 0.08))
            t_eff = t0 * float(rng.lognormal(0, 0.05))
        else:
            d_gy_per_gbq = _lognormal(rng, d_mean, d_sd)
            t_eff = _lognormal(rng, t_mean, t_cv * t_mean)
            paired[pair_key] = (d_gy_per_gbq, t_eff)
        t_eff = min(t_eff, 0.9 * physical_half_life_h)
        # self-dose per GBq = 1000 f (1/l_eff - 1/l_up) per_mbq_h_j / m  ->  solve for f
        tia_per_f = 1000.0 * (t_eff - t_up) / math.log(2)
        fraction = d_gy_per_gbq * masses_g[voi] / 1000.0 / (tia_per_f * per_mbq_h_j)
        out[voi] = CompartmentKinetics(fraction=fraction, t_eff_h=t_eff, t_up_h=t_up)
    total = sum(k.fraction for k in out.values())
    if total > 0.6:  # keep the body physiologic; scale all uptakes down together
        out = {v: CompartmentKinetics(k.fraction * 0.6 / total, k.t_eff_h, k.t_up_h) for v, k in out.items()}
    return SubjectKinetics(out)
