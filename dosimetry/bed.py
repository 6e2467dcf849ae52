"""Biologically effective dose (LQ model) for mono-exponentially decaying dose rates.

``BED = D (1 + D/(alpha/beta) * T_rep/(T_rep + T_eff))`` with ``T_rep = ln2/mu`` the repair
half-time and ``T_eff`` the effective half-life of the dose rate (Dale 1985, Br J Radiol
58:515; as used for 177Lu kidneys by Wessels et al 2008, J Nucl Med 49:1884). Cycles are
separate with full repair in between: their BEDs add (the cumulative BED is that sum, taken
once, in the warehouse's cumulative dose view, warehouse/catalog.py).
"""

from __future__ import annotations

from rntflow.dosimetry import _checks as chk


def bed_gy(dose_gy: float, alpha_beta_gy: float, t_rep_h: float, t_eff_h: float) -> float:
    """BED (Gy) of one cycle with mono-exponential dose rate.

    Parameters
    ----------
    dose_gy : float
        Absorbed dose of the cycle (Gy, >= 0).
    alpha_beta_gy : float
        alpha/beta of the tissue (Gy, > 0).
    t_rep_h, t_eff_h : float
        Repair half-time and effective half-life of the dose rate (h, > 0).

    Raises
    ------
    DosimetryInputError
        NaN/inf, negative dose, or a non-positive alpha/beta or half-time; the message
        names the argument and its value.
    """
    dose_gy = chk.non_negative("dose_gy", dose_gy)
    alpha_beta_gy = chk.positive("alpha_beta_gy", alpha_beta_gy)
    t_rep_h = chk.positive("t_rep_h", t_rep_h)
    t_eff_h = chk.positive("t_eff_h", t_eff_h)
    return dose_gy * (1.0 + dose_gy / alpha_beta_gy * t_rep_h / (t_rep_h + t_eff_h))
