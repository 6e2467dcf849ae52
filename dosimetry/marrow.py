"""Blood-based red-marrow dosimetry (pure physics: no Prefect, no I/O).

The EANM red-marrow method (Hindorf et al 2010, EANM Dosimetry Committee guidelines for
bone marrow and whole-body dosimetry, Eur J Nucl Med Mol Imaging 37:1238; applied to
177Lu in the EANM Dosimetry Committee recommendations for 177Lu-labelled somatostatin-
receptor- and PSMA-targeting ligands, Sjogreen Gleisner et al 2022, Eur J Nucl Med Mol
Imaging 49:1778), for a radiopharmaceutical that does not bind to marrow, bone or blood
cells:

1. **Blood TAC.** The activity concentration in whole blood (MBq/mL) at the sample times
   (h after administration) is fitted like an organ TAC, with the project's fitter
   (:func:`rntflow.dosimetry.kinetics.fit_tac`), restricted to the models an intravenous
   bolus in blood can follow: ``mono_exp`` and ``bi_exp`` (no uptake phase), chosen by
   AICc. Its integral is the blood's time-integrated activity concentration
   ``TIAC_bl`` (MBq h/mL).
2. **Red-marrow TIA** ``TIA_RM = TIAC_bl x RMBLR x m_RM`` with the red-marrow-to-blood
   concentration ratio RMBLR (:data:`DEFAULT_RMBLR` = 1 for small peptides and PSMA ligands,
   which cross the marrow's sinusoids freely: Forrer et al 2009, Eur J Nucl Med Mol Imaging
   36:1138 measured marrow aspirate = blood for 177Lu-DOTATATE; EANM 2022) and the red-marrow
   mass ``m_RM`` (ICRP 89 reference adult, :data:`rntflow.core.constants.RED_MARROW_MASS_G`,
   or the patient's when known). As in the guideline, a mL of blood counts as a g of marrow
   (the density difference is inside RMBLR's uncertainty).
3. **Self-dose** ``TIA_RM x S(RM<-RM)`` with the electrons (beta, IC, Auger) absorbed locally
   and no photon self-term: :func:`rntflow.dosimetry.organ.organ_self_dose_gy` with
   ``include_photons=False``. Why: the 177Lu betas (mean range ~0.3 mm in tissue) stay in the
   spongiosa cavity they start in (a few tenths to ~1 mm, ICRP 110); the marrow is spread over
   the skeleton, so its photon self-absorption is small and its photons are counted with the
   body's in step 4. This is the same convention as the image-based organ engine and the
   simulator's truth; a phantom S(RM<-RM), which lets some electron energy escape to bone
   trabeculae, would read a few per cent lower.
4. **Cross-dose from the remainder of body** ``TIA_RB x S(RM<-RB)``, ``TIA_RB = TIA_WB -
   TIA_RM``. No published 177Lu S(RM<-RB) is stored in this project, so
   :func:`s_rm_from_remainder_gy_per_mbq_h` approximates it: photons only, the energy a
   uniformly loaded body absorbs per decay (self-absorbed fraction of a soft-tissue sphere of
   the body's mass) spread over the body mass (a remote, uniformly irradiated target receives
   the body-average dose). A sphere absorbs more than a body-shaped phantom, so the term errs
   high by about a third; for 177Lu it is ~5-10 % of the marrow dose (see the report of
   :func:`blood_marrow_dose`: ``cross_dose_gy``). The other organs' and lesions' activity is
   lumped into the remainder (same uniform-body S) rather than given organ-specific S-values.
5. **Whole-body TIA.** A measured one (whole-body counting or planar imaging) when the trial
   has it; otherwise :func:`whole_body_tia_estimate`: the imaged VOIs' TIAs (organs and
   lesions, the marrow VOI excluded) plus the blood pool (``TIAC_bl`` x reference blood
   volume). That misses the non-imaged extravascular soft tissue, so the cross-dose is a
   lower estimate there, and the two approximations (sphere high, missing tissue low) partly
   cancel; the simulator's truth uses the exact whole-body integral. On the demo trial
   (simulated 177Lu-PSMA, 93 % of the activity outside the imaged VOIs) the estimate holds
   about a quarter of the whole-body TIA, so the cross-dose (11 % of the true marrow dose)
   reads ~74 % low and the marrow dose 4-11 % low (mean -7.5 %); with the exact whole-body
   TIA the error is the blood fit's, within +/-6 %. A trial that measures whole-body retention
   should pass it (``whole_body_tia_mbq_h``).

Blood sampling: the bi-exponential blood curve needs about eight samples (e.g. 0.5, 1, 2, 4,
24, 48, 96, 168 h). With six, AICc's small-sample penalty for the 4-parameter ``bi_exp``
usually picks ``mono_exp``, and the TIAC then errs by -7 +/- 9 % (up to -30 %) in simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rntflow.core.constants import (
    BLOOD_VOLUME_ML,
    BODY_MASS_G,
    DECAYS_PER_MBQ_H,
    J_PER_MEV,
    RED_MARROW_MASS_G,
)
from rntflow.dosimetry import _checks as chk
from rntflow.dosimetry.kinetics import TacFit, fit_tac
from rntflow.dosimetry.organ import organ_self_dose_gy, photon_absorbed_fraction_sphere
from rntflow.physics.nuclides import nuclide

#: Red-marrow-to-blood activity concentration ratio for small peptides and PSMA ligands
#: (Hindorf et al 2010; Forrer et al 2009; EANM 2022): the method's one biological setting.
DEFAULT_RMBLR = 1.0
#: TAC models a blood curve after an intravenous bolus may follow (no uptake phase).
BLOOD_MODELS = ("mono_exp", "bi_exp")
#: Reference sex used when a subject's sex is unknown (the ICRP 89 adult male).
DEFAULT_SEX = "M"
#: Label of the method in the warehouse (``marrow_doses.method``).
BLOOD_METHOD = "blood"
IMAGE_METHOD = "image"


def reference_values(sex: str | None) -> tuple[str, float, float, float]:
    """ICRP 89 reference (sex used, red-marrow mass g, body mass g, blood volume mL).

    ``sex`` is ``M`` or ``F``; anything else (unknown, ``O``, ``None``) takes
    :data:`DEFAULT_SEX`, which the caller should record.
    """
    s = sex if sex in RED_MARROW_MASS_G else DEFAULT_SEX
    return s, RED_MARROW_MASS_G[s], BODY_MASS_G[s], BLOOD_VOLUME_ML[s]


def fit_blood_tac(
    t_h: Sequence[float],
    concentration_mbq_per_ml: Sequence[float],
    nuclide_name: str,
    *,
    concentration_sd_mbq_per_ml: Sequence[float] | None = None,
) -> TacFit:
    """Fit the blood TAC (MBq/mL at ``t_h`` h) with :data:`BLOOD_MODELS`, chosen by AICc.

    The result's ``tia_mbq_h`` is the blood TIAC (MBq h/mL). With fewer than 3 samples the
    fitter's conservative fallback applies (trapezoid + physical decay), named in
    ``fallback_reason``.

    Raises
    ------
    KineticsError
        Samples before administration, duplicate times, no positive concentration.
    """
    return fit_tac(
        t_h,
        concentration_mbq_per_ml,
        nuclide_name,
        activity_sd_mbq=concentration_sd_mbq_per_ml,
        models=BLOOD_MODELS,
        trapezoid_start="constant",  # blood is highest at injection: no uptake ramp
    )


def s_rm_from_remainder_gy_per_mbq_h(nuclide_name: str, body_mass_g: float = BODY_MASS_G[DEFAULT_SEX]) -> float:
    """Approximate S(red marrow <- remainder of body) (Gy per MBq h): photons only.

    ``S = 3.6e9 x 1.602e-13 J/MeV x E_photon x phi / m_body`` with ``E_photon`` the photon
    energy per decay (ICRP-107) and ``phi`` the photon self-absorbed fraction of a unit-density
    soft-tissue sphere of ``body_mass_g`` (module docstring, step 4).
    """
    body_mass_g = chk.positive("body_mass_g", body_mass_g)
    nuc = nuclide(nuclide_name)
    phi = photon_absorbed_fraction_sphere(nuc.name, body_mass_g)
    return DECAYS_PER_MBQ_H * J_PER_MEV * nuc.photon_energy_mev * phi / (body_mass_g * 1e-3)


def whole_body_tia_estimate(
    voi_tia_mbq_h: Mapping[str, float],
    tiac_mbq_h_per_ml: float,
    blood_volume_ml: float,
    marrow_voi: str = "Bone_Marrow",
) -> float:
    """Whole-body TIA (MBq h) without a whole-body measurement (module docstring, step 5).

    Parameters
    ----------
    voi_tia_mbq_h : mapping VOI -> TIA (MBq h)
        Image-based TIAs of the cycle's VOIs (organs and lesions); ``marrow_voi`` is left out
        (the marrow is the target, its activity is the blood-based TIA).
    tiac_mbq_h_per_ml : float
        Blood TIAC (MBq h/mL).
    blood_volume_ml : float
        Blood volume (mL), e.g. the ICRP 89 reference.
    """
    tiac = chk.non_negative("tiac_mbq_h_per_ml", tiac_mbq_h_per_ml)
    vol = chk.positive("blood_volume_ml", blood_volume_ml)
    organs = sum(chk.non_negative(f"voi_tia_mbq_h[{v!r}]", t) for v, t in voi_tia_mbq_h.items() if v != marrow_voi)
    return float(organs + tiac * vol)


@dataclass(frozen=True)
class BloodMarrowDose:
    """Blood-based red-marrow absorbed dose of one cycle.

    Attributes
    ----------
    dose_gy, dose_sd_gy : float
        Self- plus cross-dose (Gy) and its standard deviation from the blood fit (nan if unknown).
    self_dose_gy, cross_dose_gy : float
        The red marrow's self-dose and the remainder-of-body cross-dose (Gy).
    tiac_mbq_h_per_ml, tiac_sd_mbq_h_per_ml : float
        Blood time-integrated activity concentration (MBq h/mL) and its SD.
    red_marrow_tia_mbq_h, remainder_tia_mbq_h : float
        ``TIAC x RMBLR x m_RM`` and ``TIA_WB - TIA_RM`` (MBq h).
    red_marrow_mass_g, rmblr, s_rm_from_rb_gy_per_mbq_h : float
        The inputs used.
    """

    dose_gy: float
    dose_sd_gy: float
    self_dose_gy: float
    cross_dose_gy: float
    tiac_mbq_h_per_ml: float
    tiac_sd_mbq_h_per_ml: float
    red_marrow_tia_mbq_h: float
    remainder_tia_mbq_h: float
    red_marrow_mass_g: float
    rmblr: float
    s_rm_from_rb_gy_per_mbq_h: float


def marrow_dose_from_tiac(
    tiac_mbq_h_per_ml: float,
    nuclide_name: str,
    *,
    whole_body_tia_mbq_h: float,
    red_marrow_mass_g: float = RED_MARROW_MASS_G[DEFAULT_SEX],
    rmblr: float = DEFAULT_RMBLR,
    body_mass_g: float = BODY_MASS_G[DEFAULT_SEX],
    tiac_sd_mbq_h_per_ml: float | None = None,
) -> BloodMarrowDose:
    """Red-marrow dose (steps 2-4 of the module docstring) from a blood TIAC (MBq h/mL).

    Raises
    ------
    DosimetryInputError
        NaN/inf, a negative TIAC or whole-body TIA, a mass or RMBLR <= 0; naming the argument.
    """
    tiac = chk.non_negative("tiac_mbq_h_per_ml", tiac_mbq_h_per_ml)
    tiac_sd = None if tiac_sd_mbq_h_per_ml is None else chk.non_negative("tiac_sd_mbq_h_per_ml", tiac_sd_mbq_h_per_ml)
    if tiac_sd is not None and math.isnan(tiac_sd):
        tiac_sd = None
    wb = chk.non_negative("whole_body_tia_mbq_h", whole_body_tia_mbq_h)
    m_rm = chk.positive("red_marrow_mass_g", red_marrow_mass_g)
    rmblr = chk.positive("rmblr", rmblr)
    tia_rm = tiac * rmblr * m_rm
    tia_rm_sd = None if tiac_sd is None else tiac_sd * rmblr * m_rm
    self_dose = organ_self_dose_gy(tia_rm, nuclide_name, m_rm, tia_sd_mbq_h=tia_rm_sd, include_photons=False)
    s_rb = s_rm_from_remainder_gy_per_mbq_h(nuclide_name, body_mass_g)
    tia_rb = max(wb - tia_rm, 0.0)
    cross = tia_rb * s_rb
    return BloodMarrowDose(
        dose_gy=self_dose.dose_gy + cross,
        dose_sd_gy=self_dose.dose_sd_gy,
        self_dose_gy=self_dose.dose_gy,
        cross_dose_gy=cross,
        tiac_mbq_h_per_ml=tiac,
        tiac_sd_mbq_h_per_ml=math.nan if tiac_sd is None else tiac_sd,
        red_marrow_tia_mbq_h=tia_rm,
        remainder_tia_mbq_h=tia_rb,
        red_marrow_mass_g=m_rm,
        rmblr=rmblr,
        s_rm_from_rb_gy_per_mbq_h=s_rb,
    )


def blood_marrow_dose(
    t_h: Sequence[float],
    concentration_mbq_per_ml: Sequence[float],
    nuclide_name: str,
    *,
    voi_tia_mbq_h: Mapping[str, float] | None = None,
    whole_body_tia_mbq_h: float | None = None,
    sex: str | None = None,
    red_marrow_mass_g: float | None = None,
    rmblr: float = DEFAULT_RMBLR,
) -> tuple[BloodMarrowDose, TacFit, str]:
    """Blood samples of one cycle -> blood-based red-marrow dose (module docstring).

    Parameters
    ----------
    t_h, concentration_mbq_per_ml : sequence of float
        Sample times (h after administration) and whole-blood activity concentrations (MBq/mL).
    nuclide_name : str
    voi_tia_mbq_h : mapping, optional
        Image-based TIAs of the cycle's VOIs, for :func:`whole_body_tia_estimate`.
    whole_body_tia_mbq_h : float, optional
        A measured whole-body TIA (MBq h); wins over the estimate.
    sex : str, optional
        ``M``/``F`` for the reference masses (unknown: :data:`DEFAULT_SEX`).
    red_marrow_mass_g : float, optional
        The patient's red-marrow mass (g) instead of the reference.
    rmblr : float
        Red-marrow-to-blood concentration ratio.

    Returns
    -------
    (BloodMarrowDose, TacFit, str)
        The dose, the blood fit, and where the whole-body TIA came from (``measured`` or
        ``image_vois+blood_pool``).
    """
    fit = fit_blood_tac(t_h, concentration_mbq_per_ml, nuclide_name)
    _, m_ref, body_g, blood_ml = reference_values(sex)
    if whole_body_tia_mbq_h is not None:
        wb, source = whole_body_tia_mbq_h, "measured"
    else:
        wb, source = whole_body_tia_estimate(voi_tia_mbq_h or {}, fit.tia_mbq_h, blood_ml), "image_vois+blood_pool"
    dose = marrow_dose_from_tiac(
        fit.tia_mbq_h,
        nuclide_name,
        whole_body_tia_mbq_h=wb,
        red_marrow_mass_g=m_ref if red_marrow_mass_g is None else red_marrow_mass_g,
        rmblr=rmblr,
        body_mass_g=body_g,
        tiac_sd_mbq_h_per_ml=fit.tia_sd_mbq_h,
    )
    return dose, fit, source


def prefer_blood_marrow(
    image_per_cycle: Mapping[int, tuple[float, float | None]], blood_per_cycle: Mapping[int, float]
) -> tuple[dict[int, tuple[float, float | None]], list[int]]:
    """The marrow doses the cumulative limit sums: the blood-based one where a cycle has it.

    Parameters
    ----------
    image_per_cycle : mapping cycle -> (dose_gy, bed_gy or None)
        Image-based ``Bone_Marrow`` doses.
    blood_per_cycle : mapping cycle -> dose_gy
        Blood-based red-marrow doses.

    Returns
    -------
    (dict, list)
        cycle -> (dose_gy, bed_gy or None), cycles ascending (a blood-based cycle has no BED),
        and the cycles whose dose is blood-based.
    """
    cycles = sorted(set(image_per_cycle) | set(blood_per_cycle))
    out: dict[int, tuple[float, float | None]] = {}
    used = []
    for c in cycles:
        if c in blood_per_cycle:
            out[c] = (float(blood_per_cycle[c]), None)
            used.append(c)
        else:
            out[c] = image_per_cycle[c]
    return out, used
