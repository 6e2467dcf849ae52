"""Voxel S-value kernel: energy conservation, published 177Lu value, FFT convolution."""

import numpy as np
import pytest
from scipy.signal import fftconvolve

from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV, SOFT_TISSUE_DENSITY_G_PER_ML
from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry.kernel import beta_mean_energy_mev, convolve_dose_gy, local_electron_energy_mev, voxel_s_kernel
from rntflow.physics.nuclides import nuclide


@pytest.fixture(scope="module")
def lu_kernel():
    return voxel_s_kernel("Lu-177", 4.42, density_g_per_ml=1.04)


@pytest.mark.parametrize(
    "name,spacing",
    [
        ("Lu-177", (4.42, 4.42, 4.42)),
        ("Y-90", (4.8, 4.8, 3.0)),
        ("Ho-166", (2.0, 2.0, 2.0)),
        ("I-131", (4.8, 4.8, 4.8)),
    ],
)
def test_electron_energy_conserved(name, spacing):
    # law of physics: an infinite medium absorbs all electron energy; the kernel spans the
    # maximum range, so its electron part must hold E_electron per decay within 1%
    k = voxel_s_kernel(name, spacing, include_photons=False)
    assert k.electron_energy_in_kernel_mev == pytest.approx(nuclide(name).electron_energy_mev, rel=0.01)


def test_photon_energy_escape_bounded(lu_kernel):
    # inside a 4.4 cm half-width water cube only part of the 113/208 keV photon energy is
    # absorbed: mu_en ~ 0.03 cm2/g -> P(absorbed within ~5 cm) = 1-exp(-0.15) ~ 0.14 (0.1-0.3)
    frac = lu_kernel.photon_energy_in_kernel_mev / lu_kernel.photon_energy_per_decay_mev
    assert 0.08 < frac < 0.35


def test_lu177_self_voxel_against_lanconelli(lu_kernel):
    # Lanconelli et al 2012 (PMB 57:517), 177Lu, 4.42 mm voxel, soft tissue (1.04 g/cm3):
    # self-voxel S about 0.24 mGy/(MBq s). Tolerance 6%: the self-voxel value is set by
    # the energy balance (92-95% of the electron energy stays in the voxel), which the
    # kernel conserves exactly; Loevinger's shape uncertainty (10-20% at sub-mm radii)
    # moves only the few % that leave the voxel.
    c = lu_kernel.centre
    assert lu_kernel.s_mgy_per_mbq_s[c] == pytest.approx(0.24, rel=0.06)
    # physical bounds: below full local absorption of all emitted energy
    mass_kg = 0.442**3 * 1.04e-3
    nuc = nuclide("Lu-177")
    upper = (nuc.electron_energy_mev + nuc.photon_energy_mev) * J_PER_MEV * 1e6 / mass_kg * 1e3
    assert lu_kernel.s_mgy_per_mbq_s[c] < upper
    # face neighbour is 1-2 orders of magnitude lower (Lanconelli: ~1e-2 of self)
    ratio = lu_kernel.s_mgy_per_mbq_s[c[0] + 1, c[1], c[2]] / lu_kernel.s_mgy_per_mbq_s[c]
    assert 1e-3 < ratio < 5e-2


def test_kernel_symmetric_and_decreasing(lu_kernel):
    s = lu_kernel.s_gy_per_mbq_h
    assert np.allclose(s, s[::-1, :, :])  # mirrored by construction
    # x<->y symmetry holds up to the direction sampling (600 Fibonacci directions: <0.1%)
    assert np.allclose(s, np.transpose(s, (1, 0, 2)), rtol=1e-3, atol=0)
    c = lu_kernel.centre[0]
    line = s[c, c, c:]
    assert np.all(np.diff(line) < 0)


def test_fft_convolution_matches_scipy_and_uniform_limit():
    k = voxel_s_kernel("Lu-177", 4.8, include_photons=False)
    rng = np.random.default_rng(0)
    tia = rng.uniform(0, 5, (20, 22, 18))
    ours = convolve_dose_gy(tia, k)
    ref = fftconvolve(tia, k.s_gy_per_mbq_h, mode="same")
    assert np.allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.max())
    # law of physics: a large uniform TIA gives in its interior the LED dose E_e/m per voxel
    uniform = np.ones((25, 25, 25))
    dose = convolve_dose_gy(uniform, k)[12, 12, 12]
    mass_kg = 0.48**3 * k.density_g_per_ml * 1e-3
    led = nuclide("Lu-177").electron_energy_mev * J_PER_MEV * DECAYS_PER_MBQ_H / mass_kg
    assert dose == pytest.approx(led, rel=0.005)


def test_default_density_is_the_one_soft_tissue_value():
    # one documented default (core/constants.py): every engine's default is that value
    k = voxel_s_kernel("Lu-177", 4.8, include_photons=False)
    assert k.density_g_per_ml == SOFT_TISSUE_DENSITY_G_PER_ML == 1.04


def test_kernel_is_cached_and_read_only():
    a = voxel_s_kernel("Lu-177", 4.8, include_photons=False)
    b = voxel_s_kernel("177Lu", (4.8, 4.8, 4.8), include_photons=False)
    assert a is b  # same (nuclide, voxel size, density): built once
    assert voxel_s_kernel("Lu-177", 4.8, include_photons=False, density_g_per_ml=1.0) is not a
    with pytest.raises(ValueError):
        a.s_gy_per_mbq_h[0, 0, 0] = 1.0  # the cached arrays cannot be altered by a caller


def test_local_electron_emissions_on_their_own():
    # the production kernel deposits IC and Auger electrons in the source voxel; ICRP-107:
    # 177Lu about 0.0147 MeV per decay on top of the 0.1330 MeV mean beta energy, 90Y
    # (pure beta) essentially none. A reference kernel of betas only lacks exactly this.
    lu, y = nuclide("Lu-177"), nuclide("Y-90")
    assert local_electron_energy_mev("Lu-177") == pytest.approx(lu.electron_energy_mev - beta_mean_energy_mev(lu))
    assert 0.012 < local_electron_energy_mev("Lu-177") < 0.017
    assert beta_mean_energy_mev(lu) == pytest.approx(0.1330, rel=0.01)
    # 90Y: < 0.3% (no IC/Auger to speak of; the 0.0015 MeV left is the trapezoid integral of
    # the tabulated spectrum against ICRP-107's mean beta energy)
    assert local_electron_energy_mev("Y-90") < 3e-3 * beta_mean_energy_mev(y)
    k = voxel_s_kernel("Lu-177", 4.42, include_photons=False)
    local_gy = local_electron_energy_mev("Lu-177") * J_PER_MEV * DECAYS_PER_MBQ_H / (0.442**3 * 1.04e-3)
    beta_only = voxel_s_kernel("Lu-177", 4.42, include_photons=False).s_electron_gy_per_mbq_h[k.centre] - local_gy
    assert 0.0 < local_gy / beta_only < 0.15  # the local part is ~10% of the self-voxel value


def test_nan_voxel_is_rejected_not_spread():
    # one NaN voxel would turn every voxel of the FFT convolution into NaN: named error instead
    k = voxel_s_kernel("Lu-177", 4.8, include_photons=False)
    tia = np.ones((16, 16, 16))
    tia[3, 4, 5] = np.nan
    with pytest.raises(DosimetryInputError, match=r"tia_map_mbq_h.*1 of 4096.*\(3, 4, 5\)"):
        convolve_dose_gy(tia, k)
    tia[3, 4, 5] = -1.0
    with pytest.raises(DosimetryInputError, match="negative"):
        convolve_dose_gy(tia, k)
    tia[3, 4, 5] = 0.0
    assert np.all(np.isfinite(convolve_dose_gy(tia, k))) and np.all(convolve_dose_gy(tia, k) >= 0)
