"""Biologically effective dose (LQ model) for mono-exponentially decaying dose rates.

``BED = D (1 + D/(alpha/beta) * T_rep/(T_rep + T_eff))`` with ``T_rep = ln2/mu`` the repair
half-time and ``T_eff`` the effective half-life of the dose rate (Dale 1985, Br J Radiol
58:515; as used for 177Lu kidneys by Wessels et al 2008, J Nucl Med 49:1884). Cycles are
separate with full repair in between: their BEDs add (the cumulative BED is that sum, taken
once, in the warehouse's cumulative dose view, warehouse/catalog.py).
"""

from __future__ import annotations

from rntflow.core.errors import DosimetryInputError


def bed_gy(dose_gy: float, alpha_beta_gy: float, t_rep_h: float, t_eff_h: float) -> float:
    """BED (Gy) of one cycle with mono-exponential dose rate."""
    if dose_gy < 0 or alpha_beta_gy <= 0 or t_rep_h <= 0 or t_eff_h <= 0:
        raise DosimetryInputError("BED needs dose >= 0 and alpha/beta, T_rep, T_eff > 0")
    return dose_gy * (1.0 + dose_gy / alpha_beta_gy * t_rep_h / (t_rep_h + t_eff_h))
