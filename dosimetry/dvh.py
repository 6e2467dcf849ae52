"""Cumulative dose-volume histograms and their summary metrics per VOI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rntflow.core.errors import DosimetryInputError, VoiError
from rntflow.dosimetry import _checks as chk


@dataclass
class Dvh:
    """Cumulative DVH of one VOI.

    Attributes
    ----------
    dose_gy : numpy.ndarray
        Dose axis (Gy), ascending.
    fraction : numpy.ndarray
        Fraction of the VOI (volume or mass) receiving at least ``dose_gy``.
    mean_gy, d2_gy, d50_gy, d98_gy, min_gy, max_gy : float
        Mean and near-max/median/near-min dose (Dx: minimum dose to the hottest x%).
    v_fraction : dict
        Fraction receiving at least each requested dose level (key: level in Gy).
    total_ml, total_g : float
        VOI volume (mL) and mass (g; nan when no density was given).
    """

    dose_gy: np.ndarray
    fraction: np.ndarray
    mean_gy: float
    d2_gy: float
    d50_gy: float
    d98_gy: float
    min_gy: float
    max_gy: float
    total_ml: float
    total_g: float
    v_fraction: dict[float, float] = field(default_factory=dict)


def _dx(sorted_dose: np.ndarray, cum_w_desc: np.ndarray, x_fraction: float) -> float:
    """Minimum dose received by the hottest ``x_fraction`` of the VOI."""
    i = int(np.searchsorted(cum_w_desc, x_fraction - 1e-12))
    return float(sorted_dose[min(i, sorted_dose.size - 1)])


def dvh(
    dose_gy: np.ndarray,
    mask: np.ndarray,
    voxel_ml: float,
    *,
    density_g_per_ml: np.ndarray | float | None = None,
    levels_gy: Sequence[float] = (),
    n_bins: int = 500,
) -> Dvh:
    """Cumulative DVH of ``dose_gy`` in ``mask``, volume- or (with densities) mass-weighted.

    Parameters
    ----------
    dose_gy : numpy.ndarray
        Dose map (Gy); the voxels inside the mask must be finite.
    mask : numpy.ndarray
        Boolean VOI mask of the dose map's shape.
    voxel_ml : float
        Voxel volume (mL, > 0).
    density_g_per_ml : float or numpy.ndarray, optional
        Densities (g/cm3, > 0 inside the mask) for a mass-weighted DVH.
    levels_gy : sequence of float
        Dose levels (Gy, finite) for the V_x fractions.
    n_bins : int
        Points of the dose axis (>= 2).

    Raises
    ------
    VoiError
        Mask of another shape, or empty.
    DosimetryInputError
        NaN/inf dose inside the VOI, voxel volume or density <= 0, a
        non-finite level; the message names the argument.
    """
    m = np.asarray(mask, dtype=bool)
    if m.shape != np.shape(dose_gy):
        raise VoiError("mask and dose map differ in shape")
    if not m.any():
        raise VoiError("empty VOI")
    voxel_ml = chk.positive("voxel_ml", voxel_ml)
    levels = [chk.finite(f"levels_gy[{i}]", lv) for i, lv in enumerate(levels_gy)]
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise DosimetryInputError(f"n_bins={n_bins!r}: must be an integer >= 2")
    d = chk.finite_array("dose_gy (inside the VOI)", np.asarray(dose_gy, dtype=float)[m])
    if density_g_per_ml is None:
        w = np.full(d.size, voxel_ml)
        total_g = float("nan")
    else:
        rho = np.broadcast_to(np.asarray(density_g_per_ml, float), np.shape(dose_gy))[m]
        w = chk.positive_array("density_g_per_ml (inside the VOI)", rho) * voxel_ml
        total_g = float(w.sum())
    wn = w / w.sum()
    order = np.argsort(d)[::-1]
    ds, cw = d[order], np.cumsum(wn[order])
    axis = np.linspace(0.0, float(d.max()) if d.max() > 0 else 1.0, n_bins)
    asc = np.argsort(d)
    tail = np.concatenate([np.cumsum(wn[asc][::-1])[::-1], [0.0]])  # weight of d >= d_sorted[i]
    frac = tail[np.searchsorted(d[asc], axis, side="left")]
    return Dvh(
        dose_gy=axis,
        fraction=frac,
        mean_gy=float(wn @ d),
        d2_gy=_dx(ds, cw, 0.02),
        d50_gy=_dx(ds, cw, 0.50),
        d98_gy=_dx(ds, cw, 0.98),
        min_gy=float(d.min()),
        max_gy=float(d.max()),
        total_ml=float(m.sum() * voxel_ml),
        total_g=total_g,
        v_fraction={lv: float(wn[d >= lv].sum()) for lv in levels},
    )
