"""Radioembolisation (TARE) imaging physics: scout shares, lung shunt, post-treatment dose maps.

Pure numpy/scipy (no Prefect, no I/O). The flows give every function arrays on one grid
(the SPECT or PET grid, VOI masks resampled onto it) plus the VOI volumes and masses
measured on the CT the VOIs were drawn on.

Activity of the VOIs (:func:`tare_voi_activities`), for an image blurred by a Gaussian
system response of ``fwhm_mm`` (any linear unit of activity: counts for a scout, MBq for a
quantified post-treatment image):

* **Lungs**: the mean concentration of the lung *core* (lung voxels at least
  :data:`LUNG_CORE_MARGIN_FWHM` FWHM inside the lung boundary) times the lung volume. The
  liver dome's activity spills into the lung bases (a liver-to-lung concentration ratio of
  ~30 makes that spill comparable to the whole lung shunt); the core is beyond its reach,
  and concentration x volume needs no spill-out recovery.
* **Liver_Perfused** and **Liver**: the sum over the mask dilated by
  :data:`DILATION_FWHM` FWHM (spill-out recovered), less the lung activity the dilated mask
  holds (lung concentration x the lung volume inside it).
* **Lesion_n**: the mean concentration measured in the lesion corrected for partial volume
  with the recovery coefficient ``RC`` of a sphere of the lesion's volume at the FWHM
  (:func:`rntflow.physics.recovery.rc_blurred_sphere`), the surrounding normal liver spilling
  in: ``C_measured = RC C_T + (1 - RC) C_N`` with ``C_N`` the normal liver's concentration
  away from the lesions and the territory's edge; then ``A_T = C_T V_T``.
* **Liver_Normal** (the partition model's non-tumoural perfused liver): ``Liver_Perfused``
  minus all lesions.

The lung shunt fraction is ``L = A_lung / (A_lung + A_liver)``; a VOI's share is its activity
over the same total (liver and lungs: what the microspheres reached).

Dose (microspheres do not move: physical decay only, all beta energy deposited locally):
``D_voxel [Gy] = A_voxel [GBq at administration] CF [J/GBq] / m_voxel [kg]``, and a VOI's
mean dose ``A_VOI CF / M_VOI`` (:func:`local_deposition_dose_map_gy`,
:func:`mean_dose_gy`). Energy is conserved: ``sum(D m) = sum(A) CF``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from rntflow.core.errors import DosimetryInputError, VoiError
from rntflow.dosimetry import _checks as chk
from rntflow.dosimetry.density import hu_to_density_g_per_ml
from rntflow.dosimetry.dvh import dvh
from rntflow.physics.recovery import rc_blurred_sphere, sphere_diameter_mm

#: VOI names of a TARE study (contract): whole liver, perfused territory, lungs, lesions.
LIVER, PERFUSED, LUNGS, NORMAL = "Liver", "Liver_Perfused", "Lungs", "Liver_Normal"
LESION_PREFIX = "Lesion_"
#: The VOIs every TARE study needs (plus at least one ``Lesion_n``).
REQUIRED_VOIS = (LIVER, PERFUSED, LUNGS)
#: Liver masks are dilated by this many FWHM to gather their spill-out (beyond 1.5 FWHM,
#: i.e. 3.5 sigma, a flat edge loses < 0.1 % of what it spills).
DILATION_FWHM = 1.5
#: The lung core lies at least this many FWHM inside the lung boundary: the liver's spill
#: there is < 2e-4 of the liver concentration (0.5 erfc(3.53 / sqrt 2)).
LUNG_CORE_MARGIN_FWHM = 1.5
#: The normal-liver background of the lesions is measured this many FWHM away from every
#: lesion and from the perfused territory's edge.
BACKGROUND_MARGIN_FWHM = 1.0
#: A core region needs at least this many voxels, else a smaller margin is used.
MIN_CORE_VOXELS = 8
#: Voxel densities below this (g/mL, air) are raised to it in dose maps: spill-out in air
#: would otherwise get ~800 times the soft-tissue dose.
MIN_DENSITY_G_PER_ML = 0.01


def lesion_names(names) -> list[str]:
    """``Lesion_n`` names among ``names``, in numeric order."""

    def key(n: str) -> tuple[int, str]:
        tail = n[len(LESION_PREFIX) :]
        return (int(tail), n) if tail.isdigit() else (10**9, n)

    return sorted((n for n in names if n.startswith(LESION_PREFIX)), key=key)


def missing_vois(names) -> list[str]:
    """The required TARE VOI names absent from ``names`` (``Lesion_n`` when there is no lesion)."""
    have = set(names)
    out = [n for n in REQUIRED_VOIS if n not in have]
    if not lesion_names(have):
        out.append(f"{LESION_PREFIX}n (at least one)")
    return out


def normal_liver_mask(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """``Liver_Perfused`` minus every lesion (bool)."""
    out = np.asarray(masks[PERFUSED], dtype=bool).copy()
    for n in lesion_names(masks):
        out &= ~np.asarray(masks[n], dtype=bool)
    return out


def voi_masses_kg(
    masks: Mapping[str, np.ndarray], hu: np.ndarray, voxel_ml: float
) -> tuple[dict[str, float], dict[str, float]]:
    """(mass kg, volume mL) of every VOI, ``Liver_Normal`` added, densities from the CT.

    Mass = volume x the mean density of the VOI's interior (voxels whose six neighbours are
    inside too; all voxels when there is no interior): boundary voxels mix the VOI with its
    neighbours (the lungs, 0.3 g/mL, with the chest wall and the liver, 1.04 g/mL: the whole-
    mask mean overestimates a lung mass by a few %).

    Parameters
    ----------
    masks : mapping of str to numpy.ndarray
        VOI name -> bool mask on the CT grid (``Liver_Perfused`` and lesions give ``Liver_Normal``).
    hu : numpy.ndarray
        CT (HU) on the same grid.
    voxel_ml : float
        CT voxel volume (mL, > 0).

    Raises
    ------
    DosimetryInputError
        NaN HU, voxel volume <= 0, a mask of another shape.
    """
    voxel_ml = chk.positive("voxel_ml", voxel_ml)
    hu_arr = chk.finite_array("hu", hu)
    rho = hu_to_density_g_per_ml(hu_arr)
    all_masks = dict(masks)
    if PERFUSED in all_masks:
        all_masks[NORMAL] = normal_liver_mask(all_masks)
    mass, vol = {}, {}
    for name, m in all_masks.items():
        m = np.asarray(m, dtype=bool)
        if m.shape != hu_arr.shape:
            raise DosimetryInputError(f"mask {name}: shape {m.shape} differs from the CT's {hu_arr.shape}")
        vol[name] = float(m.sum() * voxel_ml)
        inner = ndimage.binary_erosion(m)
        mean_rho = float(rho[inner if inner.any() else m].mean()) if m.any() else 0.0
        mass[name] = vol[name] * mean_rho / 1000.0
    return mass, vol


@dataclass
class VoiActivities:
    """Activities of a TARE study's VOIs (unit of the input image, e.g. counts or MBq).

    Attributes
    ----------
    activity : dict of str to float
        VOI -> activity (``Lesion_n``, ``Liver_Normal``, ``Liver_Perfused``, ``Liver``, ``Lungs``).
    recovery_coefficient : dict of str to float
        Lesion -> RC applied (1 = none).
    lung_shunt_fraction : float
        ``A_lung / (A_lung + A_liver)``.
    total : float
        ``A_liver + A_lung``: what the image shows of the administered activity.
    normal_concentration_per_ml : float
        The normal-liver background concentration (unit per mL).
    notes : list of str
        Fallbacks taken (small cores, a correction that would give a negative activity).
    """

    activity: dict[str, float]
    recovery_coefficient: dict[str, float]
    lung_shunt_fraction: float
    total: float
    normal_concentration_per_ml: float
    notes: list[str] = field(default_factory=list)

    def shares(self) -> dict[str, float]:
        """VOI -> share of :attr:`total` (0 when the total is not positive)."""
        return {k: (v / self.total if self.total > 0 else 0.0) for k, v in self.activity.items()}


def _distance_outside_mm(mask: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest voxel of ``mask`` (0 inside)."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing_mm)


def _distance_inside_mm(mask: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel of ``mask`` to the nearest voxel outside it (0 outside)."""
    padded = np.pad(mask, 1, constant_values=False)  # the grid's edge is outside
    d = ndimage.distance_transform_edt(padded, sampling=spacing_mm)
    return d[1:-1, 1:-1, 1:-1]


def _core(mask: np.ndarray, depth_mm: np.ndarray, margin_mm: float, notes: list[str], what: str) -> np.ndarray:
    """Voxels of ``mask`` at least ``margin_mm`` deep (halved until the core is big enough)."""
    margin = margin_mm
    while margin > 0:
        core = mask & (depth_mm >= margin)
        if core.sum() >= MIN_CORE_VOXELS:
            if margin < margin_mm:
                notes.append(f"{what}: core margin reduced to {margin:.1f} mm (small region)")
            return core
        margin = margin / 2.0 if margin > 1.0 else 0.0
    notes.append(f"{what}: no core region, the whole mask used")
    return mask


def _checked_inputs(
    activity: np.ndarray,
    masks: Mapping[str, np.ndarray],
    spacing_mm: tuple[float, float, float],
    fwhm_mm: float | None,
) -> tuple[np.ndarray, np.ndarray, float, dict[str, np.ndarray]]:
    """Validated inputs of :func:`tare_voi_activities`.

    Parameters
    ----------
    activity : numpy.ndarray (z, y, x)
        Activity per voxel; finite.
    masks : mapping of str to numpy.ndarray
        VOI masks on the activity grid.
    spacing_mm : tuple of float
        Voxel size (z, y, x) in mm, > 0.
    fwhm_mm : float or None
        System resolution (mm); ``None`` means 0.

    Returns
    -------
    tuple
        ``(activity, spacing_mm, fwhm_mm, masks)``: the checked activity array, the spacing
        as an array, the FWHM (mm, >= 0) and the masks as bool arrays.

    Raises
    ------
    VoiError
        A required VOI missing, a mask of another shape, an empty required or lesion mask.
    DosimetryInputError
        NaN/inf activity voxels, spacing <= 0 or not 3-D, FWHM < 0.
    """
    act = chk.finite_array("activity", activity)
    sp = chk.spacing_mm("spacing_mm", spacing_mm)
    if len(sp) != 3:
        raise DosimetryInputError(f"spacing_mm={spacing_mm!r}: needs (z, y, x)")
    fwhm = 0.0 if fwhm_mm is None else chk.non_negative("fwhm_mm", fwhm_mm)
    miss = missing_vois(masks)
    if miss:
        raise VoiError(f"VOI(s) missing: {', '.join(miss)}")
    m = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
    for k, v in m.items():
        if v.shape != act.shape:
            raise VoiError(f"mask {k}: shape {v.shape} differs from the image's {act.shape}")
        if not v.any() and (k in REQUIRED_VOIS or k.startswith(LESION_PREFIX)):
            raise VoiError(f"mask {k} is empty on the image grid (outside the field of view?)")
    return act, sp, fwhm, m


def _voi_volumes_ml(
    m: Mapping[str, np.ndarray], voxel_ml: float, volumes_ml: Mapping[str, float] | None
) -> dict[str, float]:
    """VOI volumes (mL): voxel count x ``voxel_ml``, overridden by ``volumes_ml`` (each > 0).

    ``Liver_Normal`` (:func:`normal_liver_mask`) is included.
    """
    vol = {k: float(v.sum() * voxel_ml) for k, v in m.items()}
    vol[NORMAL] = float(normal_liver_mask(m).sum() * voxel_ml)
    if volumes_ml:
        vol.update({k: chk.positive(f"volumes_ml[{k}]", v) for k, v in volumes_ml.items()})
    return vol


def _lung_core_concentration_per_ml(
    act: np.ndarray, lungs: np.ndarray, sp: np.ndarray, fwhm_mm: float, voxel_ml: float, notes: list[str]
) -> float:
    """Mean activity concentration (per mL) of the lung core (:data:`LUNG_CORE_MARGIN_FWHM`)."""
    core = _core(lungs, _distance_inside_mm(lungs, sp), LUNG_CORE_MARGIN_FWHM * fwhm_mm, notes, "Lungs")
    return float(act[core].mean()) / voxel_ml


def _dilated_activity(
    act: np.ndarray,
    mask: np.ndarray,
    lungs: np.ndarray,
    c_lung_per_ml: float,
    sp: np.ndarray,
    fwhm_mm: float,
    voxel_ml: float,
) -> float:
    """Activity in ``mask`` dilated by :data:`DILATION_FWHM` FWHM, less the lung activity it holds."""
    region = _distance_outside_mm(mask, sp) <= DILATION_FWHM * fwhm_mm if fwhm_mm > 0 else mask
    return float(act[region].sum()) - max(c_lung_per_ml, 0.0) * float((region & lungs).sum()) * voxel_ml


def _lesion_activities(
    act: np.ndarray,
    m: Mapping[str, np.ndarray],
    vol_ml: Mapping[str, float],
    sp: np.ndarray,
    fwhm_mm: float,
    voxel_ml: float,
    notes: list[str],
) -> tuple[dict[str, float], dict[str, float], float]:
    """Partial-volume corrected lesion activities, normal-liver spill-in removed.

    Parameters
    ----------
    act : numpy.ndarray
        Activity per voxel.
    m : mapping of str to numpy.ndarray
        Bool VOI masks on the activity grid.
    vol_ml : mapping of str to float
        VOI volumes (mL).
    sp : numpy.ndarray
        Voxel size (z, y, x) in mm.
    fwhm_mm : float
        System resolution (mm); 0: no correction (RC = 1).
    voxel_ml : float
        Voxel volume (mL).
    notes : list of str
        Appended to (reduced background margin, failed corrections).

    Returns
    -------
    tuple
        ``(activity, recovery_coefficient, normal_concentration_per_ml)``: lesion name ->
        activity, lesion name -> RC used, and the normal-liver background concentration.
    """
    lesions = lesion_names(m)
    normal = normal_liver_mask(m)
    any_lesion = np.zeros_like(normal)
    for n in lesions:
        any_lesion |= m[n]
    away = np.minimum(_distance_outside_mm(any_lesion, sp), _distance_inside_mm(m[PERFUSED], sp))
    bg = _core(normal, away, BACKGROUND_MARGIN_FWHM * fwhm_mm, notes, "Liver_Normal background")
    c_normal = float(act[bg].mean()) / voxel_ml if bg.any() else 0.0
    out: dict[str, float] = {}
    rcs: dict[str, float] = {}
    for n in lesions:
        c_meas = float(act[m[n]].mean()) / voxel_ml
        rc = rc_blurred_sphere(float(sphere_diameter_mm(vol_ml[n])), fwhm_mm) if fwhm_mm > 0 else 1.0
        c_t = (c_meas - (1.0 - rc) * c_normal) / rc
        if not c_t > 0:
            notes.append(f"{n}: partial-volume correction gave {c_t:.3g} per mL; measured mean used")
            c_t, rc = max(c_meas, 0.0), 1.0
        rcs[n] = rc
        out[n] = c_t * vol_ml[n]
    return out, rcs, c_normal


def tare_voi_activities(
    activity: np.ndarray,
    masks: Mapping[str, np.ndarray],
    spacing_mm: tuple[float, float, float],
    fwhm_mm: float | None,
    *,
    volumes_ml: Mapping[str, float] | None = None,
) -> VoiActivities:
    """Activities of the TARE VOIs, spill-out and partial volume corrected (module docstring).

    Parameters
    ----------
    activity : numpy.ndarray (z, y, x)
        Activity per voxel (any linear unit: counts, MBq); finite.
    masks : mapping of str to numpy.ndarray
        ``Liver``, ``Liver_Perfused``, ``Lungs`` and ``Lesion_n`` bool masks on this grid.
    spacing_mm : tuple of float
        Voxel size (z, y, x) in mm, > 0.
    fwhm_mm : float or None
        System resolution (Gaussian FWHM, mm); ``None`` or 0: no dilation, no partial-volume
        correction, the lung concentration from the whole lung mask.
    volumes_ml : mapping of str to float, optional
        Accurate VOI volumes (mL), e.g. from the CT the VOIs were drawn on; default: voxel
        count x voxel volume on this grid.

    Returns
    -------
    VoiActivities

    Raises
    ------
    VoiError
        A required VOI missing (named), a mask of another shape, an empty mask.
    DosimetryInputError
        NaN/inf activity voxels, spacing <= 0, FWHM < 0.
    """
    act, sp, fwhm, m = _checked_inputs(activity, masks, spacing_mm, fwhm_mm)
    voxel_ml = float(np.prod(sp)) / 1000.0
    vol = _voi_volumes_ml(m, voxel_ml, volumes_ml)
    notes: list[str] = []
    lungs = m[LUNGS]
    c_lung = _lung_core_concentration_per_ml(act, lungs, sp, fwhm, voxel_ml, notes)
    a_lung = max(c_lung, 0.0) * vol[LUNGS]
    a_perfused = max(_dilated_activity(act, m[PERFUSED], lungs, c_lung, sp, fwhm, voxel_ml), 0.0)
    a_liver = max(_dilated_activity(act, m[LIVER] | m[PERFUSED], lungs, c_lung, sp, fwhm, voxel_ml), 0.0)
    out, rcs, c_normal = _lesion_activities(act, m, vol, sp, fwhm, voxel_ml, notes)
    a_lesions = sum(out.values())
    if a_lesions > a_perfused:
        notes.append("lesion activities exceed the perfused territory's; Liver_Normal set to 0")
    out[NORMAL] = max(a_perfused - a_lesions, 0.0)
    out[PERFUSED] = a_perfused
    out[LIVER] = max(a_liver, a_perfused)
    out[LUNGS] = a_lung
    total = out[LIVER] + a_lung
    lsf = a_lung / total if total > 0 else 0.0
    return VoiActivities(out, rcs, lsf, total, c_normal, notes)


def tumour_to_normal_ratio(
    activity: Mapping[str, float], masses_kg: Mapping[str, float], lesions: list[str] | None = None
) -> float:
    """``r = (sum A_T / sum M_T) / (A_N / M_N)``, lesions taken together (partition model).

    Raises
    ------
    DosimetryInputError
        No lesion, a mass <= 0, a normal-liver activity <= 0.
    """
    lesions = lesion_names(activity) if lesions is None else lesions
    if not lesions:
        raise DosimetryInputError("tumour_to_normal_ratio: no Lesion_n")
    a_t = sum(activity[n] for n in lesions)
    m_t = sum(chk.positive(f"masses_kg[{n}]", masses_kg[n]) for n in lesions)
    a_n = chk.positive("activity[Liver_Normal]", activity[NORMAL])
    m_n = chk.positive("masses_kg[Liver_Normal]", masses_kg[NORMAL])
    return (a_t / m_t) / (a_n / m_n)


def mean_dose_gy(activity_gbq: float, cf_j_per_gbq: float, mass_kg: float) -> float:
    """Mean absorbed dose (Gy) of a VOI holding ``activity_gbq`` (at administration) for good.

    Raises
    ------
    DosimetryInputError
        Activity < 0, CF or mass <= 0, NaN/inf.
    """
    a = chk.non_negative("activity_gbq", activity_gbq)
    return a * chk.positive("cf_j_per_gbq", cf_j_per_gbq) / chk.positive("mass_kg", mass_kg)


def predicted_doses_gy(
    shares: Mapping[str, float], masses_kg: Mapping[str, float], activity_gbq: float, cf_j_per_gbq: float
) -> dict[str, float]:
    """VOI -> ``share x activity x CF / mass`` (Gy), for the VOIs that have a positive mass.

    ``activity_gbq`` is the planned (planned doses) or administered (predicted doses)
    treatment activity; ``shares`` the scout's (:meth:`VoiActivities.shares`).
    """
    a = chk.non_negative("activity_gbq", activity_gbq)
    return {
        k: mean_dose_gy(max(s, 0.0) * a, cf_j_per_gbq, masses_kg[k])
        for k, s in shares.items()
        if masses_kg.get(k, 0.0) > 0
    }


def decay_factor_to_administration(half_life_h: float, t_since_admin_h: float) -> float:
    """``exp(ln 2 t / T_half)``: activity at administration over activity ``t`` hours later.

    Raises
    ------
    DosimetryInputError
        Half-life <= 0, a time before administration (beyond 1 minute of clock skew: 0 then).
    """
    t_half = chk.positive("half_life_h", half_life_h)
    t = chk.finite("t_since_admin_h", t_since_admin_h)
    if t < -1.0 / 60.0:
        raise DosimetryInputError(f"t_since_admin_h={t!r}: the image was acquired before administration")
    return math.exp(math.log(2.0) * max(t, 0.0) / t_half)


def voxel_mass_kg(hu: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Mass (kg) of every voxel from its HU (density floored at :data:`MIN_DENSITY_G_PER_ML`)."""
    voxel_ml = chk.positive("voxel_ml", voxel_ml)
    rho = np.maximum(hu_to_density_g_per_ml(chk.finite_array("hu", hu)), MIN_DENSITY_G_PER_ML)
    return rho * voxel_ml / 1000.0


def local_deposition_dose_map_gy(activity_gbq: np.ndarray, cf_j_per_gbq: float, mass_kg: np.ndarray) -> np.ndarray:
    """``D = A CF / m`` per voxel (Gy): activity at administration (GBq per voxel, microspheres
    fixed, decayed to infinity in the CF), CF (J/GBq), voxel mass (kg).

    Negative voxels (reconstruction noise, e.g. PET) are kept: they carry the noise of the
    mean and cancel in VOI sums; energy is conserved exactly (``sum(D m) = sum(A) CF``).

    Raises
    ------
    DosimetryInputError
        NaN/inf activity, CF <= 0, a voxel mass <= 0, shapes that differ.
    """
    a = chk.finite_array("activity_gbq", activity_gbq)
    m = chk.positive_array("mass_kg", mass_kg)
    if a.shape != m.shape:
        raise DosimetryInputError(f"activity_gbq: shape {a.shape} differs from mass_kg's {m.shape}")
    return a * chk.positive("cf_j_per_gbq", cf_j_per_gbq) / m


@dataclass(frozen=True)
class DoseMetrics:
    """DVH metrics of one VOI (Gy; Dx = minimum dose of the hottest x % of the mass)."""

    mean_gy: float
    d2_gy: float
    d50_gy: float
    d70_gy: float
    d98_gy: float


def dvh_metrics_gy(dose_gy: np.ndarray, mask: np.ndarray, mass_kg: np.ndarray, voxel_ml: float) -> DoseMetrics:
    """Mass-weighted DVH metrics (:func:`rntflow.dosimetry.dvh.dvh`) of a dose map in a mask.

    ``mean_gy`` is the mass-weighted mean of the map as imaged (no partial-volume
    correction: the VOI's corrected mean is ``A CF / M``, :func:`mean_dose_gy`).

    Raises
    ------
    VoiError
        An empty mask or one of another shape.
    """
    density = np.asarray(mass_kg, dtype=float) * 1000.0 / chk.positive("voxel_ml", voxel_ml)
    h = dvh(dose_gy, mask, voxel_ml, density_g_per_ml=density)
    m = np.asarray(mask, dtype=bool)
    d, w = np.asarray(dose_gy, dtype=float)[m], density[m]
    order = np.argsort(d)[::-1]
    cum = np.cumsum(w[order]) / w.sum()
    d70 = float(d[order][min(int(np.searchsorted(cum, 0.70 - 1e-12)), d.size - 1)])
    return DoseMetrics(h.mean_gy, h.d2_gy, h.d50_gy, d70, h.d98_gy)
