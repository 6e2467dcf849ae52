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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rntflow.dosimetry import _checks as chk


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


def dose_uncertainty(tia_mbq_h: float, tia_fit_sd_mbq_h: float, *, calibration_rel: float,
                     rc_rel: float = 0.0, volume_rel: float = 0.0,
                     dln_rc_dln_v: float = 0.0, s_value_rel: float = 0.0) -> UncertaintyBudget:
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
    tia_rel = math.sqrt(fit_rel ** 2 + calibration_rel ** 2 + rc_rel ** 2 + vol_rc_tia ** 2)
    vol_dose = abs(1.0 + dln_rc_dln_v) * volume_rel  # mass and RC(V) correlated
    comps = {"fit": fit_rel, "calibration": calibration_rel, "recovery": rc_rel,
             "volume_mass_and_rc": vol_dose, "s_value": s_value_rel}
    dose_rel = math.sqrt(sum(v ** 2 for v in comps.values()))
    return UncertaintyBudget(tia_rel, dose_rel, comps)
