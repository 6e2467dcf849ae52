"""Photon attenuation and energy-absorption coefficients of liquid water.

Source: J.H. Hubbell and S.M. Seltzer, *Tables of X-Ray Mass Attenuation Coefficients and
Mass Energy-Absorption Coefficients*, NISTIR 5632 (1995), NIST Standard Reference Database
126, Table 4 "Water, Liquid". Values typed once here (energies in MeV, coefficients in
cm2/g) for the range that radionuclide photon lines need; interpolated log-log, as NIST
recommends. Soft tissue is treated as water scaled by density (the ratio of mu_en/rho of
ICRU soft tissue to water is within 1-2% between 30 keV and 3 MeV, same source).
"""

from __future__ import annotations

import numpy as np

#: (energy_mev, mu_over_rho_cm2_per_g, mu_en_over_rho_cm2_per_g), NISTIR 5632 water, liquid.
WATER_TABLE = np.array(
    [
        [0.001, 4078.0, 4065.0],
        [0.0015, 1376.0, 1372.0],
        [0.002, 617.3, 615.2],
        [0.003, 192.9, 191.7],
        [0.004, 82.78, 81.91],
        [0.005, 42.58, 41.88],
        [0.006, 24.64, 24.05],
        [0.008, 10.37, 9.915],
        [0.010, 5.329, 4.944],
        [0.015, 1.673, 1.374],
        [0.020, 0.8096, 0.5503],
        [0.030, 0.3756, 0.1557],
        [0.040, 0.2683, 0.06947],
        [0.050, 0.2269, 0.04223],
        [0.060, 0.2059, 0.03190],
        [0.080, 0.1837, 0.02597],
        [0.100, 0.1707, 0.02546],
        [0.150, 0.1505, 0.02764],
        [0.200, 0.1370, 0.02967],
        [0.300, 0.1186, 0.03192],
        [0.400, 0.1061, 0.03279],
        [0.500, 0.09687, 0.03299],
        [0.600, 0.08956, 0.03284],
        [0.800, 0.07865, 0.03206],
        [1.000, 0.07072, 0.03103],
        [1.250, 0.06323, 0.02965],
        [1.500, 0.05754, 0.02833],
        [2.000, 0.04942, 0.02608],
        [3.000, 0.03969, 0.02281],
        [4.000, 0.03403, 0.02066],
    ]
)


def _loglog(energy_mev: np.ndarray | float, column: int) -> np.ndarray:
    e = np.clip(np.asarray(energy_mev, dtype=float), WATER_TABLE[0, 0], WATER_TABLE[-1, 0])
    return np.exp(np.interp(np.log(e), np.log(WATER_TABLE[:, 0]), np.log(WATER_TABLE[:, column])))


def mu_over_rho_cm2_per_g(energy_mev: np.ndarray | float) -> np.ndarray:
    """Mass attenuation coefficient of water (cm2/g), log-log interpolated."""
    return _loglog(energy_mev, 1)


def mu_en_over_rho_cm2_per_g(energy_mev: np.ndarray | float) -> np.ndarray:
    """Mass energy-absorption coefficient of water (cm2/g), log-log interpolated."""
    return _loglog(energy_mev, 2)
