"""BED, DVH, uncertainty budget (quantification is tested on the production code in
tests/harmonization/test_phantom.py, partial-volume correction in tests/dosimetry/test_cycle.py)."""

import math

import numpy as np
import pytest

from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry.bed import bed_gy
from rntflow.dosimetry.dvh import dvh
from rntflow.dosimetry.uncertainty import dose_uncertainty


def test_bed_kidney_worked_example():
    # kidney alpha/beta 2.6 Gy, T_rep 2.8 h (Wessels et al 2008, J Nucl Med 49:1884), T_eff 40 h,
    # 4 cycles of 5.75 Gy (23 Gy):
    # by hand one cycle: 5.75 * (1 + 5.75/2.6 * 2.8/42.8) = 5.75 * 1.14468 = 6.5819 Gy
    one = bed_gy(5.75, 2.6, 2.8, 40.0)
    assert one == pytest.approx(5.75 * (1 + 5.75 / 2.6 * 2.8 / 42.8), rel=1e-12)
    assert one == pytest.approx(6.582, abs=1e-3)
    # cycles with full repair in between add (the warehouse's cumulative view sums them)
    total = 4 * one
    assert total == pytest.approx(
        26.33, abs=0.01
    )  # 23 Gy -> ~26-28 Gy BED (kidney BED range in de Wit-van der Veen et al., NKI review)
    # one single 23 Gy cycle is worse than four: fractionation spares
    assert bed_gy(23.0, 2.6, 2.8, 40.0) > total
    with pytest.raises(DosimetryInputError):
        bed_gy(1.0, 0.0, 2.8, 40.0)


def test_dvh_metrics_on_known_distribution():
    dose = np.arange(1, 101, dtype=float).reshape(1, 10, 10)  # 1..100 Gy, equal volumes
    mask = np.ones_like(dose, bool)
    h = dvh(dose, mask, 0.1, levels_gy=[50.0, 100.0])
    assert h.mean_gy == pytest.approx(50.5)
    assert h.d2_gy == pytest.approx(99.0) and h.d50_gy == pytest.approx(51.0) and h.d98_gy == pytest.approx(3.0)
    assert h.v_fraction[50.0] == pytest.approx(0.51) and h.v_fraction[100.0] == pytest.approx(0.01)
    assert h.fraction[0] == pytest.approx(1.0) and np.all(np.diff(h.fraction) <= 0)
    # mass weighting: doubling the density of the top half moves the mean up
    rho = np.where(dose > 50, 2.0, 1.0)
    assert dvh(dose, mask, 0.1, density_g_per_ml=rho).mean_gy > h.mean_gy


def test_uncertainty_quadrature_and_rc_volume_correlation():
    b = dose_uncertainty(1000.0, 50.0, calibration_rel=0.05, volume_rel=0.1)
    assert b.tia_rel == pytest.approx(math.hypot(0.05, 0.05))
    assert b.dose_rel == pytest.approx(math.sqrt(0.05**2 + 0.05**2 + 0.1**2))
    # with PVC the RC rises with volume (slope 0.5): a larger VOI raises RC, lowering A,
    # and raises the mass: the two errors add (|1 + 0.5|), per Gear 2018
    b2 = dose_uncertainty(1000.0, 50.0, calibration_rel=0.05, volume_rel=0.1, dln_rc_dln_v=0.5)
    assert b2.components["volume_mass_and_rc"] == pytest.approx(0.15)
