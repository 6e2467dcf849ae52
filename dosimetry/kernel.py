"""Voxel S-value kernels built from decay data, and FFT dose convolution.

Units: the kernel ``s_gy_per_mbq_h[i, j, k]`` is the mean absorbed dose (Gy) in the voxel
at offset (i, j, k) from a source voxel holding a TIA of 1 MBq·h uniformly
(``x 1000/3600`` gives the mGy/(MBq·s) of the voxel S-value literature).

Physics model
-------------
* **Beta particles**: Loevinger's empirical beta point kernel (Loevinger R, Radiology
  1956;66:55; as given in ICRU Report 56 and Attix, *Introduction to Radiological Physics
  and Radiation Dosimetry*, 1986, sec. 8.IX):
  ``j(x) = k/(nu x)^2 {c [1 - (nu x/c) e^(1 - nu x/c)] + nu x e^(1 - nu x)}`` for
  ``x < c/nu`` and ``k/(nu x)^2 nu x e^(1 - nu x)`` beyond, with x in g/cm2,
  ``nu = 18.6 (E0 - 0.036)^-1.37 (2 - Ebar/Ebar*)`` cm2/g,
  ``Ebar* = 0.33 E0 (1 - sqrt(Z)/50)(1 + sqrt(E0)/4)`` (Z of the daughter),
  ``c = 2 (E0 < 0.5 MeV), 1.5 (0.5-1.5 MeV), 1 (1.5-3 MeV)``.
  E0 is the end point and Ebar the mean energy of the ICRP-107 beta spectrum; the kernel
  is truncated at the Katz-Penfold maximum range of E0 (Katz & Penfold 1952, Rev Mod
  Phys 24:28) and normalised numerically so it deposits exactly Ebar per decay
  (in an infinite medium). Loevinger's kernel is reported to agree with Monte Carlo within
  about 10-20% near the source; for voxels larger than the mean beta path (177Lu: about
  0.2 mm) voxel S-values depend mostly on the energy balance, which is exact here.
* **Internal-conversion and Auger electrons** (ICRP-107 groups ``IE``, ``auger``): deposited
  locally, i.e. uniformly in the source voxel (their ranges, < 0.1 mm for 177Lu, are far
  below clinical voxel sizes; documented approximation).
* **Photons** (ICRP-107 gamma and X lines): point kernel in water with the
  energy-absorption coefficient, ``E Y mu_en exp(-mu_en r)/(4 pi r^2)`` (the "mu_en
  approximation": the exponential with mu_en stands in for attenuation plus buildup and
  deposits the full photon energy in an infinite medium; Berger 1968, MIRD Pamphlet 2);
  coefficients from :mod:`dosimetry.attenuation` (NISTIR 5632).

Voxel integration: the voxel-to-voxel value is the kernel averaged over all pairs of
points (source point uniform in the source voxel, target point in the target voxel). The
distribution of the pair difference is the product of triangular ("tent") densities per
axis; for electrons (and for photons in the 3x3x3 neighbourhood) the average is done
exactly in radius with a direction average (Fibonacci sphere), which keeps the
1/r^2 singularity integrable and conserves energy by construction (the tents form a
partition of unity); photon values farther out use a tent-weighted sub-sampling.
Anisotropic voxels are supported. Distant photon voxels are sub-sampled on one fine grid
(evaluated once, reduced per axis), so a 2.2 mm kernel with photons builds in 1-2 s.

Density is a parameter whose one default is soft tissue,
:data:`rntflow.core.constants.SOFT_TISSUE_DENSITY_G_PER_ML` (1.04 g/cm3, ICRU 44). Kernels
are cached per (nuclide, voxel size, density, radius, photons) in the process.

Known limitation (issue 17): the beta part is Loevinger's model, not Monte Carlo. An
independent check against the Monte Carlo voxel S-values of Lanconelli et al 2012 found
90Y self-voxel -6 %, corner +14-20 %, (0,0,2) +51-75 %, and 177Lu face/edge neighbours
-10-14 %; energy is conserved (VOI means hold) but voxel DVH metrics of 90Y/166Ho maps are
blurred. Replacing it needs a tabulated Monte Carlo dose point kernel (or monoenergetic
electron kernels) with a known source and licence, which is not available offline here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from rntflow.core.constants import DECAYS_PER_MBQ_H, J_PER_MEV, SOFT_TISSUE_DENSITY_G_PER_ML
from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry import _checks as chk
from rntflow.dosimetry.attenuation import mu_en_over_rho_cm2_per_g
from rntflow.physics.nuclides import Nuclide, atomic_number, nuclide


# ----------------------------------------------------------------------------- beta kernel
@dataclass(frozen=True)
class LoevingerParameters:
    """Parameters of Loevinger's beta point kernel for one nuclide.

    Attributes
    ----------
    nu_cm2_per_g : float
        Apparent absorption coefficient (cm2/g).
    c : float
        Loevinger's dimensionless shape constant.
    e0_mev, mean_beta_energy_mev : float
        Spectrum end point and mean beta energy per decay (MeV).
    max_range_g_per_cm2 : float
        Katz-Penfold maximum range of E0 (g/cm2), kernel truncation.
    """

    nu_cm2_per_g: float
    c: float
    e0_mev: float
    mean_beta_energy_mev: float
    max_range_g_per_cm2: float


def katz_penfold_range_g_per_cm2(energy_mev: float) -> float:
    """Maximum electron range (g/cm2) of an electron of ``energy_mev`` (MeV, >= 0),
    Katz & Penfold 1952 (Rev Mod Phys 24:28)."""
    energy_mev = chk.non_negative("energy_mev", energy_mev)
    if energy_mev == 0:
        return 0.0
    if energy_mev <= 2.5:
        return 0.412 * energy_mev ** (1.265 - 0.0954 * math.log(energy_mev))
    return 0.530 * energy_mev - 0.106


def beta_mean_energy_mev(nuc: Nuclide) -> float:
    """Mean beta energy per decay (MeV) from the ICRP-107 spectrum."""
    if not nuc.beta_spectrum:
        return 0.0
    s = np.asarray(nuc.beta_spectrum)
    return float(np.trapezoid(s[:, 0] * s[:, 1], s[:, 0]))


def loevinger_parameters(nuclide_name: str) -> LoevingerParameters:
    """Loevinger kernel parameters from the nuclide's ICRP-107 beta spectrum."""
    nuc = nuclide(nuclide_name)
    if not nuc.beta_spectrum:
        raise DosimetryInputError(f"{nuc.name} has no beta spectrum")
    s = np.asarray(nuc.beta_spectrum)
    e0 = float(s[:, 0].max())
    ebar = beta_mean_energy_mev(nuc)
    z_daughter = atomic_number(nuc.name) + 1
    ebar_star = 0.33 * e0 * (1 - math.sqrt(z_daughter) / 50.0) * (1 + math.sqrt(e0) / 4.0)
    nu = 18.6 * (e0 - 0.036) ** -1.37 * (2.0 - ebar / ebar_star)
    c = 2.0 if e0 < 0.5 else (1.5 if e0 < 1.5 else 1.0)
    return LoevingerParameters(nu, c, e0, ebar, katz_penfold_range_g_per_cm2(e0))


def beta_radial_energy_mev_per_cm(
    nuclide_name: str, r_cm: np.ndarray, density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML
) -> np.ndarray:
    """Beta energy deposited per decay per unit radius, ``4 pi r^2 rho j`` (MeV/cm).

    Normalised so that its integral over r from 0 to the maximum range equals the mean
    beta energy per decay. ``r_cm`` (cm, >= 0), ``density_g_per_ml`` (g/cm3, > 0).
    """
    density_g_per_ml = chk.positive("density_g_per_ml", density_g_per_ml)
    chk.non_negative_array("r_cm", r_cm)
    p = loevinger_parameters(nuclide_name)

    def shape(x: np.ndarray) -> np.ndarray:  # 4 pi x^2 j(x) up to a constant
        y = p.nu_cm2_per_g * x
        inner = p.c * (1 - (y / p.c) * np.exp(1 - y / p.c)) + y * np.exp(1 - y)
        outer = y * np.exp(1 - y)
        val = np.where(x < p.c / p.nu_cm2_per_g, inner, outer)
        return np.where(x <= p.max_range_g_per_cm2, val, 0.0)

    xg = np.linspace(0.0, p.max_range_g_per_cm2, 20001)
    norm = np.trapezoid(shape(xg), xg)
    x = np.asarray(r_cm, dtype=float) * density_g_per_ml
    return shape(x) / norm * p.mean_beta_energy_mev * density_g_per_ml


def photon_radial_energy_mev_per_cm(
    nuclide_name: str, r_cm: np.ndarray, density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML
) -> np.ndarray:
    """Photon energy absorbed per decay per unit radius (MeV/cm), mu_en approximation;
    ``r_cm`` (cm, >= 0), ``density_g_per_ml`` (g/cm3, > 0)."""
    density_g_per_ml = chk.positive("density_g_per_ml", density_g_per_ml)
    r = chk.non_negative_array("r_cm", r_cm)
    nuc = nuclide(nuclide_name)
    out = np.zeros_like(r)
    for e, y in nuc.photon_lines:
        mu = float(mu_en_over_rho_cm2_per_g(e)) * density_g_per_ml
        out += e * y * mu * np.exp(-mu * r)
    return out


def local_electron_energy_mev(nuclide_name: str) -> float:
    """IC and Auger electron energy per decay (MeV), deposited locally."""
    nuc = nuclide(nuclide_name)
    return max(nuc.electron_energy_mev - beta_mean_energy_mev(nuc), 0.0)


# ----------------------------------------------------------------------------- geometry
def sphere_geometric_factor(r_cm: np.ndarray, radius_cm: float) -> np.ndarray:
    """Probability that a point at distance r (random direction) from a uniform point of a
    sphere of radius R is inside it: ``1 - 3x/4 + x^3/16``, x = r/R < 2 (Berger 1971,
    MIRD Pamphlet 7). ``r_cm`` (cm, >= 0), ``radius_cm`` (cm, > 0)."""
    radius_cm = chk.positive("radius_cm", radius_cm)
    x = chk.non_negative_array("r_cm", r_cm) / radius_cm
    return np.where(x < 2.0, 1 - 0.75 * x + x**3 / 16.0, 0.0)


def _fibonacci_directions(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + math.sqrt(5)) * i
    s = np.sqrt(1 - z * z)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)


def _tent(u: np.ndarray, a: float) -> np.ndarray:
    return np.clip(1.0 - np.abs(u) / a, 0.0, None) / a


def _radial_voxel_energy(
    f_r: np.ndarray, r_cm: np.ndarray, w_r: np.ndarray, spacing_cm: np.ndarray, half: tuple[int, int, int], n_dirs: int
) -> np.ndarray:
    """Energy (MeV/decay) in each target voxel of the octant [0..half], exact radial form.

    ``E(o) = V * sum_r w_r f(r) mean_dir prod_i tent(r w_i - o_i)``.
    """
    dirs = _fibonacci_directions(n_dirs)
    coef = (w_r * f_r)[:, None] * np.ones((1, n_dirs)) / n_dirs  # (R, M)
    mats = []
    for ax in range(3):
        o = np.arange(half[ax] + 1) * spacing_cm[ax]
        u = r_cm[None, :, None] * dirs[None, None, :, ax] - o[:, None, None]
        mats.append(_tent(u, spacing_cm[ax]).reshape(o.size, -1))
    c = coef.reshape(-1)
    ab = np.einsum("ap,bp->abp", mats[0] * c[None, :], mats[1])
    e = ab.reshape(-1, c.size) @ mats[2].T
    vol = float(np.prod(spacing_cm))
    return e.reshape(half[0] + 1, half[1] + 1, half[2] + 1) * vol


def _mirror(octant: np.ndarray) -> np.ndarray:
    """Full symmetric kernel from its non-negative octant."""
    full = octant
    for ax in range(3):
        flipped = np.flip(np.take(full, np.arange(1, full.shape[ax]), axis=ax), axis=ax)
        full = np.concatenate([flipped, full], axis=ax)
    return full


@dataclass(frozen=True)
class VoxelKernel:
    """Voxel S-value kernel.

    Attributes
    ----------
    nuclide : str
    spacing_mm : tuple of float
        Voxel size (mm) along the array axes.
    density_g_per_ml : float
        Medium density (water/soft tissue scaled).
    s_gy_per_mbq_h : numpy.ndarray
        Total kernel, odd shape, source voxel at the centre (Gy per MBq·h in the source).
    s_electron_gy_per_mbq_h, s_photon_gy_per_mbq_h : numpy.ndarray
        Electron (beta + local IC/Auger) and photon parts.
    electron_energy_in_kernel_mev, electron_energy_per_decay_mev : float
        Energy check: electron energy deposited inside the kernel vs emitted (MeV/decay).
    photon_energy_in_kernel_mev, photon_energy_per_decay_mev : float
        Photon energy absorbed inside the kernel vs emitted (the rest escapes the kernel).
    """

    nuclide: str
    spacing_mm: tuple[float, float, float]
    density_g_per_ml: float
    s_gy_per_mbq_h: np.ndarray
    s_electron_gy_per_mbq_h: np.ndarray
    s_photon_gy_per_mbq_h: np.ndarray
    electron_energy_in_kernel_mev: float
    electron_energy_per_decay_mev: float
    photon_energy_in_kernel_mev: float
    photon_energy_per_decay_mev: float

    @property
    def s_mgy_per_mbq_s(self) -> np.ndarray:
        """Kernel in mGy/(MBq·s), the unit of published voxel S-value tables."""
        return self.s_gy_per_mbq_h * 1000.0 / 3600.0

    @property
    def centre(self) -> tuple[int, int, int]:
        """Index of the source voxel."""
        return tuple(n // 2 for n in self.s_gy_per_mbq_h.shape)  # type: ignore[return-value]


def voxel_s_kernel(
    nuclide_name: str,
    spacing_mm: tuple[float, float, float] | float,
    *,
    radius_mm: float | None = None,
    density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML,
    include_photons: bool = True,
    n_dirs: int = 600,
    n_sub: int = 8,
) -> VoxelKernel:
    """Build (or take from the cache) the voxel S-value kernel of ``nuclide_name``.

    Parameters
    ----------
    nuclide_name : str
        Radionuclide, any spelling (``Lu-177``, ``177Lu``).
    spacing_mm : float or (float, float, float)
        Voxel size (mm) per array axis; anisotropic allowed.
    radius_mm : float, optional
        Half-width of the kernel (mm). Default: the electron range plus one voxel when
        photons are ignored, otherwise ``max(40 mm, electron range + 1 voxel)``.
    density_g_per_ml : float
        Medium density (g/cm3); distances scale as 1/density. Default: soft tissue
        (:data:`rntflow.core.constants.SOFT_TISSUE_DENSITY_G_PER_ML`).
    include_photons : bool
        Add the photon contribution.
    n_dirs : int
        Directions of the radial averaging.
    n_sub : int
        Sub-samples per axis for distant photon voxels.

    Returns
    -------
    VoxelKernel
        Cached per (nuclide, spacing, density, radius, photons, sampling); its arrays are
        read-only, so callers cannot alter the cached kernel.

    Raises
    ------
    DosimetryInputError
        Unknown nuclide, spacing or density not finite and > 0, radius not finite and > 0.
    """
    sp = tuple(float(v) for v in chk.spacing_mm("spacing_mm", spacing_mm))
    rho = chk.positive("density_g_per_ml", density_g_per_ml)
    radius = None if radius_mm is None else chk.positive("radius_mm", radius_mm)
    for name, val in (("n_dirs", n_dirs), ("n_sub", n_sub)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise DosimetryInputError(f"{name}={val!r}: must be a positive integer")
    return _cached_kernel(nuclide(nuclide_name).name, sp, rho, radius, bool(include_photons), int(n_dirs), int(n_sub))


@functools.lru_cache(maxsize=16)
def _cached_kernel(
    nuc_name: str,
    sp_mm_t: tuple[float, float, float],
    rho: float,
    radius_mm: float | None,
    include_photons: bool,
    n_dirs: int,
    n_sub: int,
) -> VoxelKernel:
    nuc = nuclide(nuc_name)
    sp_mm = np.asarray(sp_mm_t)
    sp_cm = sp_mm / 10.0
    lp = loevinger_parameters(nuc.name) if nuc.beta_spectrum else None
    e_range_cm = (lp.max_range_g_per_cm2 / rho) if lp else 0.0
    if radius_mm is None:
        radius_mm = e_range_cm * 10 + sp_mm.max()
        if include_photons and nuc.photon_lines:
            radius_mm = max(40.0, radius_mm)
    half = tuple(int(max(1, math.ceil(radius_mm / s))) for s in sp_mm)

    # electrons: beta kernel (radial exact), IC/Auger local
    e_oct = np.zeros(tuple(h + 1 for h in half))
    if lp is not None:
        # radial step <= 1/40 of the smallest voxel side (the tents are piecewise
        # polynomial on that scale), 200-1200 steps
        n_r = int(np.clip(math.ceil(40.0 * e_range_cm / float(sp_cm.min())), 200, 1200)) + 1
        r = np.linspace(0.0, e_range_cm, n_r)
        w = np.full(r.size, r[1] - r[0])
        w[0] = w[-1] = w[0] / 2
        f = beta_radial_energy_mev_per_cm(nuc.name, r, rho)
        eh = tuple(min(half[i], int(math.ceil(e_range_cm / sp_cm[i])) + 1) for i in range(3))
        e_oct[: eh[0] + 1, : eh[1] + 1, : eh[2] + 1] = _radial_voxel_energy(f, r, w, sp_cm, eh, n_dirs)
    e_oct[0, 0, 0] += local_electron_energy_mev(nuc.name)
    electron = _mirror(e_oct)

    p_oct = np.zeros_like(e_oct)
    if include_photons and nuc.photon_lines:
        p_oct = _photon_octant(nuc, sp_cm, half, rho, n_dirs, n_sub)
    photon = _mirror(p_oct)

    mass_kg = float(np.prod(sp_cm)) * rho * 1e-3
    to_gy = J_PER_MEV * DECAYS_PER_MBQ_H / mass_kg
    arrays = [(electron + photon) * to_gy, electron * to_gy, photon * to_gy]
    for a in arrays:
        a.setflags(write=False)
    return VoxelKernel(
        nuclide=nuc.name,
        spacing_mm=sp_mm_t,
        density_g_per_ml=rho,
        s_gy_per_mbq_h=arrays[0],
        s_electron_gy_per_mbq_h=arrays[1],
        s_photon_gy_per_mbq_h=arrays[2],
        electron_energy_in_kernel_mev=float(electron.sum()),
        electron_energy_per_decay_mev=nuc.electron_energy_mev,
        photon_energy_in_kernel_mev=float(photon.sum()),
        photon_energy_per_decay_mev=float(sum(e * y for e, y in nuc.photon_lines)),
    )


def clear_kernel_cache() -> None:
    """Forget the cached kernels (benchmarks time cold builds with it)."""
    _cached_kernel.cache_clear()


def _photon_octant(
    nuc: Nuclide, sp_cm: np.ndarray, half: tuple[int, int, int], rho: float, n_dirs: int, n_sub: int
) -> np.ndarray:
    """Photon energy (MeV/decay) per target voxel of the octant [0..half].

    The 3x3x3 neighbourhood is averaged exactly in radius (:func:`_radial_voxel_energy`);
    farther voxels by tent-weighted sub-sampling of the point kernel: with ``n_sub``
    sub-samples per axis and voxel the sample points of all voxels lie on one fine grid of
    pitch ``spacing/n_sub``, so the kernel is evaluated once on that grid (radial table,
    linear interpolation) and reduced per axis with the tent weights (separable).
    """
    near = tuple(min(1, h) for h in half)
    r_near = np.linspace(0.0, float(np.linalg.norm(sp_cm * (np.array(near) + 1))), 801)
    w = np.full(r_near.size, r_near[1] - r_near[0])
    w[0] = w[-1] = w[0] / 2
    f_near = photon_radial_energy_mev_per_cm(nuc.name, r_near, rho)
    near_vals = _radial_voxel_energy(f_near, r_near, w, sp_cm, near, n_dirs)

    lines = [(e * y, float(mu_en_over_rho_cm2_per_g(e)) * rho) for e, y in nuc.photon_lines]
    m = np.arange(2 * n_sub)
    u = (m + 0.5) / n_sub - 1.0  # sub-sample offsets in voxel units
    wt = 1.0 - np.abs(u)
    wt /= wt.sum()
    axes, reducers = [], []
    for ax in range(3):
        q = np.arange(-n_sub, n_sub * (half[ax] + 1))  # fine-grid index
        axes.append((q + 0.5) * sp_cm[ax] / n_sub)
        red = np.zeros((half[ax] + 1, q.size))
        for i in range(half[ax] + 1):
            red[i, n_sub * i : n_sub * i + 2 * n_sub] = wt  # q = n_sub (i - 1) + m
        reducers.append(red)
    d = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    d_tab = np.linspace(0.0, float(d.max()) * 1.0001, 8193)
    g_tab = sum(ey * mu * np.exp(-mu * d_tab) for ey, mu in lines)
    kern = np.interp(d, d_tab, g_tab) / (4.0 * math.pi * d * d)
    out = np.tensordot(reducers[0], kern, axes=(1, 0))
    out = np.tensordot(reducers[1], out, axes=(1, 1)).transpose(1, 0, 2)
    out = np.tensordot(out, reducers[2], axes=(2, 1))
    out *= float(np.prod(sp_cm))
    out[: near[0] + 1, : near[1] + 1, : near[2] + 1] = near_vals
    return out


# ----------------------------------------------------------------------------- convolution
def convolve_dose_gy(
    tia_map_mbq_h: np.ndarray, kernel: VoxelKernel | np.ndarray, *, workers: int | None = None
) -> np.ndarray:
    """Dose map (Gy) = TIA map (MBq·h per voxel) convolved with the kernel.

    Real FFTs (``scipy.fft.rfftn``) on arrays zero-padded to a fast length of
    ``n + k - 1`` per axis (linear, not circular, convolution); the output has the shape
    of the TIA map ("same" mode). The kernel must have odd size along every axis.

    Raises
    ------
    DosimetryInputError
        A NaN, inf or negative voxel in the TIA map (the message counts them and gives
        the first index: one NaN would otherwise turn the whole map NaN through the FFT),
        a non-finite or negative kernel, or shapes that are not 3-D and odd.
    """
    k_in = kernel.s_gy_per_mbq_h if isinstance(kernel, VoxelKernel) else kernel
    k = chk.non_negative_array("kernel", k_in, ndim=3)
    a = chk.non_negative_array("tia_map_mbq_h", tia_map_mbq_h, ndim=3)
    if any(n % 2 == 0 for n in k.shape):
        raise DosimetryInputError("kernel shape must be odd along every axis")
    full = [na + nk - 1 for na, nk in zip(a.shape, k.shape)]
    fast = [sfft.next_fast_len(n, real=True) for n in full]
    fa = sfft.rfftn(a, fast, workers=workers)
    fk = sfft.rfftn(k, fast, workers=workers)
    out = sfft.irfftn(fa * fk, fast, workers=workers)
    start = [nk // 2 for nk in k.shape]
    # both operands are >= 0: FFT round-off (~1e-16 of the maximum) is clipped to 0
    return np.maximum(out[tuple(slice(s, s + n) for s, n in zip(start, a.shape))], 0.0)
