"""The logistic dose-effect (NTCP/TCP) curve: the one home of the model.

Used by the simulator to draw outcomes from known dose-response truths
(:mod:`rntflow.simulation.outcomes`, :mod:`rntflow.simulation.truth`) and by the analysis
that fits the same model to observed outcomes (:mod:`rntflow.analysis.dose_logistic`,
:mod:`rntflow.analysis.figures`). Both are siblings; this lower layer is what they share.

Model (Okunieff et al 1995, Int J Radiat Oncol Biol Phys 32:1227, the ``gamma50`` form)::

    P(D) = 1 / (1 + (D50 / D) ** (4 * gamma50))  =  expit(4 gamma50 (ln D - ln D50))

with ``D`` and ``D50`` absorbed dose (or BED) in Gy and ``gamma50`` the normalised slope
at ``D50`` (dimensionless: the increase in probability per unit relative dose increase,
``dP/d(ln D)`` at ``D50``, is ``gamma50``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit


def logistic_ntcp(dose_gy: np.ndarray | float, d50_gy: float, gamma50: float) -> np.ndarray:
    """Logistic dose-effect probability ``P = 1 / (1 + (D50/D)^(4 gamma50))``.

    Parameters
    ----------
    dose_gy : array_like
        Dose (Gy), or BED (Gy) for a BED-based model; > 0. A dose <= 0 is taken as 0,
        the limit of the curve: P = 0 for ``gamma50 > 0``.
    d50_gy : float
        Dose (Gy) with 50 % effect probability, > 0.
    gamma50 : float
        Normalised slope at D50 (dimensionless).

    Returns
    -------
    numpy.ndarray
        Probability (0-1), same shape as ``dose_gy``.

    Notes
    -----
    Evaluated as ``expit(4 gamma50 (ln D - ln D50))``, which neither overflows at small
    doses nor loses precision near P = 1.
    """
    d = np.maximum(np.asarray(dose_gy, dtype=float), 0.0)
    with np.errstate(divide="ignore"):
        return expit(4.0 * gamma50 * (np.log(d) - math.log(d50_gy)))
