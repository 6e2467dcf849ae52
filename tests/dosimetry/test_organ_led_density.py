"""Organ/sphere self-dose, LED maps and HU->density."""

import math

import numpy as np
import pytest

from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry.density import hu_to_density_g_per_ml, mass_g
from rntflow.dosimetry.led import led_dose_gy
from rntflow.dosimetry.organ import (
    electron_absorbed_fraction_sphere,
    organ_self_dose_gy,
    photon_absorbed_fraction_sphere,
    scale_s_value_by_mass,
    sphere_dose_gy,
)
from rntflow.physics.nuclides import nuclide


def test_organ_electron_dose_by_hand():
    # D = TIA * 3.6e9 * E_e * 1.602e-13 / m, electrons phi = 1
    tia, m = 50_000.0, 300.0
    d = organ_self_dose_gy(tia, "Lu-177", m, include_photons=False)
    by_hand = tia * 3.6e9 * nuclide("Lu-177").electron_energy_mev * 1.602176634e-13 / (m / 1000)
    assert d.dose_gy == pytest.approx(by_hand, rel=1e-12)


def test_kidney_dose_per_gbq_plausible():
    # de Wit-van der Veen et al., NKI review: 177Lu kidneys 0.43-0.65 Gy/GBq; a 150 g kidney holding 1.5% of 7.4 GBq with
    # T_eff 50 h gives TIA = 0.015*7400*50/ln2 MBq h and must land in 0.2-1.5 Gy/GBq
    tia = 0.015 * 7400 * 50 / math.log(2)
    d = organ_self_dose_gy(tia, "Lu-177", 150.0).dose_gy / 7.4
    assert 0.2 < d < 1.5


def test_sphere_electron_absorbed_fractions():
    # Stabin & Konijnenberg 2000 (JNM 41:149): 177Lu electron AF ~1 above ~1 mL (>0.95);
    # AF increases with size; 90Y (longer range) lower than 177Lu at the same size
    lu = [electron_absorbed_fraction_sphere("Lu-177", v) for v in (0.1, 1.0, 10.0, 100.0)]
    assert lu[1] > 0.95 and all(np.diff(lu) > 0) and lu[-1] < 1.0
    assert electron_absorbed_fraction_sphere("Y-90", 1.0) < lu[1]
    assert electron_absorbed_fraction_sphere("Y-90", 1000.0) > 0.95


def test_photon_af_limits():
    # law of physics: photon AF -> 0 for tiny spheres, grows with size, < 1
    small, big = (photon_absorbed_fraction_sphere("I-131", m) for m in (0.01, 5000.0))
    assert small < 0.01 < big < 1.0


def test_sphere_dose_uncertainty_and_errors():
    d = sphere_dose_gy(1000.0, "Lu-177", 5.0, tia_sd_mbq_h=100.0, volume_sd_ml=0.5)
    assert d.dose_sd_gy == pytest.approx(d.dose_gy * math.hypot(0.1, 0.1), rel=1e-9)
    with pytest.raises(DosimetryInputError):
        sphere_dose_gy(1000.0, "Lu-177", 0.0)
    with pytest.raises(DosimetryInputError):
        organ_self_dose_gy(1000.0, "Lu-177", -5.0)


def test_mass_scaling():
    assert scale_s_value_by_mass(1.0, 300.0, 150.0) == pytest.approx(2.0)


def test_hu_to_density_knots_and_mass():
    # Schneider 1996 knots reproduced exactly; water 0 HU -> 1.0 g/cm3
    assert hu_to_density_g_per_ml(0.0) == pytest.approx(1.0)
    assert hu_to_density_g_per_ml(-1000.0) == pytest.approx(0.00121)
    assert hu_to_density_g_per_ml(1500.0) == pytest.approx(1.92)
    assert hu_to_density_g_per_ml(-2000.0) == pytest.approx(0.00121)
    assert np.all(np.diff(hu_to_density_g_per_ml(np.linspace(-1000, 3000, 50))) > 0)
    mask = np.ones((2, 2, 2), bool)
    assert mass_g(mask, np.full((2, 2, 2), 0.0), 0.5) == pytest.approx(4.0)


def test_led_map_by_hand_and_density():
    tia = np.full((3, 3, 3), 10.0)
    d = led_dose_gy(tia, "Y-90", (4.0, 4.0, 4.0), density_g_per_ml=1.0)
    by_hand = 10 * 3.6e9 * nuclide("Y-90").electron_energy_mev * 1.602176634e-13 / (0.064 * 1e-3)
    assert d[1, 1, 1] == pytest.approx(by_hand, rel=1e-12)
    # default: the one soft-tissue density (1.04 g/cm3, core/constants.py)
    assert led_dose_gy(tia, "Y-90", (4.0, 4.0, 4.0))[1, 1, 1] == pytest.approx(by_hand / 1.04, rel=1e-12)
    # bone (1500 HU, 1.92 g/cm3) gets 1/1.92 of the water dose
    d_bone = led_dose_gy(tia, "Y-90", (4.0, 4.0, 4.0), hu=np.full((3, 3, 3), 1500.0))
    assert d_bone[0, 0, 0] == pytest.approx(by_hand / 1.92, rel=1e-9)


@pytest.mark.parametrize("rho", [0.0, -1.0, float("nan"), float("inf")])
def test_led_rejects_impossible_density_instead_of_flooring(rho):
    # a density of 0 or -1 used to be floored to 0.01 g/mL: 133 Gy where 1.33 Gy was meant
    with pytest.raises(DosimetryInputError, match="density_g_per_ml"):
        led_dose_gy(np.ones((2, 2, 2)), "Lu-177", (4.0, 4.0, 4.0), density_g_per_ml=rho)
    dens = np.ones((2, 2, 2))
    dens[1, 0, 1] = rho
    with pytest.raises(DosimetryInputError, match=r"density_g_per_ml.*\(1, 0, 1\)"):
        led_dose_gy(np.ones((2, 2, 2)), "Lu-177", (4.0, 4.0, 4.0), density_g_per_ml=dens)


def test_led_rejects_negative_tia_and_floors_only_ct_air():
    with pytest.raises(DosimetryInputError, match="tia_map_mbq_h.*negative"):
        led_dose_gy(np.full((2, 2, 2), -1.0), "Lu-177", (4.0, 4.0, 4.0))
    # CT air (-1000 HU, 0.0012 g/cm3) is floored at min_ct_density_g_per_ml (documented)
    air = led_dose_gy(np.ones((1, 1, 2)), "Lu-177", (4.0, 4.0, 4.0), hu=np.array([[[-1000.0, 0.0]]]))
    assert air[0, 0, 0] / air[0, 0, 1] == pytest.approx(1.0 / 0.01, rel=1e-9)


def test_organ_and_sphere_defaults_are_soft_tissue():
    # organ (was 1.05) and lesion sphere (was 1.0) defaults: the one value 1.04 g/cm3
    assert photon_absorbed_fraction_sphere("I-131", 300.0) == pytest.approx(
        photon_absorbed_fraction_sphere("I-131", 300.0, 1.04), rel=1e-12
    )
    a = sphere_dose_gy(100.0, "Lu-177", 10.0, include_photons=False)
    assert a.mass_g == pytest.approx(10.4)
    assert mass_g(np.ones((2, 2, 2), bool), None, 0.5) == pytest.approx(4.0 * 1.04)
