"""Uncertainty propagation for TIA and absorbed dose, after the EANM guidance
(Gear et al 2018, EJNMMI 45:2456, "EANM practical guidance on uncertainty analysis for
molecular radiotherapy absorbed dose calculations").

Model (relative standard uncertainties, first-order / quadrature):

* Activity of a VOI at one time point: ``A = C / (Q * RC(V))``: counts C (Poisson,
  ``1/sqrt(C)``), calibration factor Q, recovery coefficient RC.
* TIA: the random per-time-point part is carried by the fit covariance
  (:attr:`dosimetry.kinetics.TacFit.tia_sd_mbq_h`). The calibration factor is the same at
  every time point (fully correlated) so it scales the TIA as a whole and is added once
  (Gear 2018 sec. "Time-integrated activity"); the RC likewise when one VOI volume is used.
* Dose, self-dose ``D = TIA * E / m`` with ``m = rho V``: the volume enters through the
  mass *and* through RC(V); with the sensitivity ``s = dln RC/dln V`` the covariance term
  is carried by the combined coefficient ``|1 + s|`` (Gear 2018 eq. for correlated RC and
  volume): ``(u_D/D)^2 = (u_TIA'/TIA)^2 + ((1 + s) u_V/V)^2`` where u_TIA' excludes RC.
* Recovery from a FWHM that is not a NEMA phantom's (:func:`recovery_rel_sd`): the RC of the
  VOI's sphere-equivalent diameter is recomputed at the FWHM -/+ its relative uncertainty
  (:data:`RC_FWHM_REL_SD`) and the larger relative change is the RC's standard
  uncertainty. It enters the TIA and dose in full, an upper bound: with background-aware
  correction the activity moves by (A - A_bg)/A of the RC's relative change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rntflow.dosimetry import _checks as chk
from rntflow.physics.recovery import rc_blurred_sphere, sphere_diameter_mm

#: Relative standard uncertainty of the recovery FWHM by where it came from
#: (``calibrations.rc_fwhm_source``). NEMA: the RC curve is fitted to the measured sphere RCs,
#: whose own uncertainty is not propagated here (0). A uniform cylinder's edge: 15 %, which
#: covers the edge fit's error on Gaussian-blurred cylinders (< 2 % point-sampled, +4 % with
#: 4.4 mm voxel averaging; tests/harmonization/test_cylinder_edge.py), on the demo trial's
#: scatter-corrected cylinders (+1.5 and +3 %; simulation/imaging.py images) and the
#: difference between a transaxial edge and the 3-D response that recovers a sphere; not an
#: uncorrected scatter halo (+24 % on the demo's off-protocol site). A configured FWHM: the
#: same 15 %, its provenance being unknown to the platform.
RC_FWHM_REL_SD: dict[str, float] = {"nema": 0.0, "cylinder_edge": 0.15, "configured": 0.15}


@dataclass(frozen=True)
class UncertaintyBudget:
    """Relative standard uncertainties (fractions, 0.05 = 5%).

    Attributes
    ----------
    tia_rel : float
        Of the TIA.
    dose_rel : float
        Of the absorbed dose.
    components : dict
        Each input's contribution to the dose (relative, before quadrature).
    """

    tia_rel: float
    dose_rel: float
    components: dict[str, float] = field(default_factory=dict)


def dose_uncertainty(
    tia_mbq_h: float,
    tia_fit_sd_mbq_h: float,
    *,
    calibration_rel: float,
    rc_rel: float = 0.0,
    volume_rel: float = 0.0,
    dln_rc_dln_v: float = 0.0,
    s_value_rel: float = 0.0,
) -> UncertaintyBudget:
    """EANM-style budget for a VOI's TIA and self-dose.

    Parameters
    ----------
    tia_mbq_h, tia_fit_sd_mbq_h : float
        TIA (MBq·h) and its standard deviation from the fit covariance (MBq·h; 0 when
        there is no covariance, e.g. trapezoid or single time point).
    calibration_rel : float
        Relative uncertainty of the camera calibration factor (correlated over time points).
    rc_rel : float
        Relative uncertainty of the recovery coefficient from the RC curve itself.
    volume_rel : float
        Relative uncertainty of the VOI volume (delineation).
    dln_rc_dln_v : float
        Logarithmic slope of the RC curve at the VOI volume (0: no PVC or large VOI).
    s_value_rel : float
        Relative uncertainty of the S-value/model other than mass (0 by default).

    Raises
    ------
    DosimetryInputError
        TIA not finite and > 0; an uncertainty that is NaN, inf or negative (pass a fit
        standard deviation of 0 when the TIA has no fit covariance).
    """
    tia_mbq_h = chk.positive("tia_mbq_h", tia_mbq_h)
    fit_sd = chk.non_negative("tia_fit_sd_mbq_h", tia_fit_sd_mbq_h)
    calibration_rel = chk.non_negative("calibration_rel", calibration_rel)
    rc_rel = chk.non_negative("rc_rel", rc_rel)
    volume_rel = chk.non_negative("volume_rel", volume_rel)
    s_value_rel = chk.non_negative("s_value_rel", s_value_rel)
    dln_rc_dln_v = chk.finite("dln_rc_dln_v", dln_rc_dln_v)
    fit_rel = fit_sd / tia_mbq_h
    vol_rc_tia = abs(dln_rc_dln_v) * volume_rel  # RC(V) effect on the TIA alone
    tia_rel = math.sqrt(fit_rel**2 + calibration_rel**2 + rc_rel**2 + vol_rc_tia**2)
    vol_dose = abs(1.0 + dln_rc_dln_v) * volume_rel  # mass and RC(V) correlated
    comps = {
        "fit": fit_rel,
        "calibration": calibration_rel,
        "recovery": rc_rel,
        "volume_mass_and_rc": vol_dose,
        "s_value": s_value_rel,
    }
    dose_rel = math.sqrt(sum(v**2 for v in comps.values()))
    return UncertaintyBudget(tia_rel, dose_rel, comps)


def recovery_rel_sd(volume_ml: float, fwhm_mm: float | None, fwhm_rel_sd: float) -> float:
    """Relative standard uncertainty of a VOI's recovery coefficient from its FWHM's.

    Parameters
    ----------
    volume_ml : float
        VOI volume (mL); recovery is that of the sphere of equal volume.
    fwhm_mm : float or None
        Recovery FWHM (mm); ``None`` or <= 0: no correction, no uncertainty.
    fwhm_rel_sd : float
        Relative standard uncertainty of the FWHM (:data:`RC_FWHM_REL_SD`).

    Returns
    -------
    float
        ``max |RC(FWHM (1 +- u)) / RC(FWHM) - 1|`` (fraction).
    """
    volume_ml = chk.positive("volume_ml", volume_ml)
    fwhm_rel_sd = chk.non_negative("fwhm_rel_sd", fwhm_rel_sd)
    if fwhm_mm is None or fwhm_mm <= 0 or fwhm_rel_sd == 0:
        return 0.0
    d_mm = float(sphere_diameter_mm(volume_ml))
    rc = rc_blurred_sphere(d_mm, fwhm_mm)
    return max(abs(rc_blurred_sphere(d_mm, fwhm_mm * (1.0 + k * fwhm_rel_sd)) / rc - 1.0) for k in (-1.0, 1.0))
