"""BED, DVH, uncertainty budget, quantification."""

import math

import numpy as np
import pytest

from rntflow.dosimetry.bed import bed_cycles_gy, bed_gy, eqd2_gy
from rntflow.dosimetry.dvh import dvh
from rntflow.dosimetry.quantify import (counts_to_bq_per_ml, decay_correct, decay_during_acquisition_factor,
                                partial_volume_correct, vendor_bq_per_ml, voi_activity_mbq)
from rntflow.dosimetry.uncertainty import activity_relative_uncertainty, dose_uncertainty
from rntflow.core.errors import CalibrationError, DosimetryInputError


def test_bed_kidney_worked_example():
    # kidney alpha/beta 2.6 Gy, T_rep 2.8 h (DOMAIN.md), T_eff 40 h, 4 cycles of 5.75 Gy (23 Gy):
    # by hand one cycle: 5.75 * (1 + 5.75/2.6 * 2.8/42.8) = 5.75 * 1.14468 = 6.5819 Gy
    one = bed_gy(5.75, 2.6, 2.8, 40.0)
    assert one == pytest.approx(5.75 * (1 + 5.75 / 2.6 * 2.8 / 42.8), rel=1e-12)
    assert one == pytest.approx(6.582, abs=1e-3)
    total = bed_cycles_gy([5.75] * 4, 2.6, 2.8, 40.0)
    assert total == pytest.approx(26.33, abs=0.01)  # 23 Gy -> ~26-28 Gy BED (seed 000 context)
    # one single 23 Gy cycle is worse than four: fractionation spares
    assert bed_gy(23.0, 2.6, 2.8, 40.0) > total
    assert eqd2_gy(total, 2.6) == pytest.approx(total / (1 + 2 / 2.6))
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
    assert b.dose_rel == pytest.approx(math.sqrt(0.05 ** 2 + 0.05 ** 2 + 0.1 ** 2))
    # with PVC the RC rises with volume (slope 0.5): a larger VOI raises RC, lowering A,
    # and raises the mass: the two errors add (|1 + 0.5|), per Gear 2018
    b2 = dose_uncertainty(1000.0, 50.0, calibration_rel=0.05, volume_rel=0.1, dln_rc_dln_v=0.5)
    assert b2.components["volume_mass_and_rc"] == pytest.approx(0.15)
    assert activity_relative_uncertainty(10000, 0.05) == pytest.approx(math.sqrt(1e-4 + 0.0025))


def test_counts_to_concentration_and_decay():
    # 1 MBq in 1 mL voxel, 10 cps/MBq for 100 s -> 1000 counts -> 1e6 Bq/mL
    assert counts_to_bq_per_ml(1000.0, 10.0, 100.0, 1.0) == pytest.approx(1e6)
    # exact decay integral: counts of a decaying source over T equal A0 (1-e^-lT)/l * sens
    lam_s = math.log(2) / (64.1 * 3600)  # 90Y (ICRP-107 64.1 h)
    T = 20 * 3600.0
    counts = 10.0 * 1.0 * (1 - math.exp(-lam_s * T)) / lam_s
    assert counts_to_bq_per_ml(counts, 10.0, T, 1.0, nuclide_name="Y-90") == pytest.approx(1e6, rel=1e-9)
    assert decay_during_acquisition_factor("Lu-177", 0.0) == 1.0
    # one half-life back in time doubles the activity
    assert decay_correct(1.0, "Lu-177", 159.528, 0.0) == pytest.approx(2.0, rel=1e-4)
    assert vendor_bq_per_ml(np.array([110.0]), 1.1)[0] == pytest.approx(100.0)
    with pytest.raises(CalibrationError):
        vendor_bq_per_ml(np.array([1.0]), 0.0)


def test_partial_volume_correction():
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    conc = np.full((4, 4, 4), 1e6)
    a = voi_activity_mbq(conc, mask, 0.5)
    assert a == pytest.approx(4.0)
    assert partial_volume_correct(a, 4.0, lambda v: 0.8) == pytest.approx(5.0)
    with pytest.raises(CalibrationError):
        partial_volume_correct(a, 4.0, lambda v: 0.0)
