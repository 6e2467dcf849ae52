"""One subject-cycle, from registered quantitative time points to VOI doses (pure).

The steps a physicist follows for a 177Lu cycle (EANM, Sjögreen Gleisner 2022), on arrays
that the caller has already quantified (Bq/mL at acquisition start) and registered onto
the reference time point's SPECT grid:

1. VOI activity per time point: sum of concentration x VOI fraction x voxel volume,
   partial-volume corrected with the site's recovery curve when asked (``rc_fwhm_mm``:
   the Gaussian FWHM fitted to the site's NEMA phantom). An object of concentration C in
   a background C_bg images with mean ``RC0 C + (1 - RC0) C_bg`` (``RC0(d(V), FWHM)``, the
   recovery of a hot sphere in a cold background, at the VOI's sphere-equivalent
   diameter), so ``A = (A_measured - (1 - RC0) C_bg V) / RC0`` with C_bg the median
   concentration in a shell 1-2 FWHM outside the VOI, other VOIs excluded. After 177Lu
   most activity is in the remainder of the body early on: ignoring the background
   spill-in reads low-uptake organs tens of % high at 4 h (measured on the simulator).
2. Kinetics per VOI: with two or more points a TAC fit with AICc
   model choice (:func:`dosimetry.kinetics.fit_tac`); with one point a single-time-point
   TIA (Madsen with a population effective half-life when one is given, else Hänscheid).
3. Dose per VOI: organ engine (self-dose, CT mass) for organs, sphere model for
   ``Lesion_<n>``, and the trial's voxel engine (DPK convolution or local deposition) on
   a voxel TIA map whose VOI sums equal the fitted TIAs (hybrid method: voxel
   distribution, VOI-level kinetics). ``Kidneys`` is derived from both kidneys.
4. BED per organ with the LQ parameters given, DVH per VOI (voxel engine), uncertainty
   per EANM (fit covariance, calibration, recovery, volume).

Nothing here reads files or knows Prefect. Results are plain records whose keys are the
warehouse's column names (units in the names).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from rntflow.dosimetry.bed import bed_gy
from rntflow.dosimetry.dvh import dvh
from rntflow.dosimetry.kernel import VoxelKernel, convolve_dose_gy
from rntflow.dosimetry.kinetics import TacFit, fit_tac, haenscheid_tia, madsen_tia, trapezoid_tia
from rntflow.dosimetry.led import led_dose_gy
from rntflow.physics.nuclides import nuclide
from rntflow.dosimetry.organ import organ_self_dose_gy, sphere_dose_gy
from rntflow.dosimetry.uncertainty import dose_uncertainty
from rntflow.core.errors import DosimetryInputError, KineticsError

LESION_RE = re.compile(r"^Lesion_\d+$")
#: Relative standard uncertainty of a VOI's volume from CT delineation (EANM, Gear 2018:
#: a one-voxel boundary shift on a 5 mm CT; used when the caller gives none).
DEFAULT_VOLUME_REL = 0.05
#: Relative standard uncertainty of one time point's VOI activity for the trapezoid's TIA
#: uncertainty (counting noise and registration of an organ-sized VOI, a few %; EANM
#: Gear 2018 quotes 2-10%).
TIME_POINT_ACTIVITY_REL = 0.05
#: Fraction of a voxel inside a VOI for the voxel to count in the DVH.
DVH_FRACTION_THRESHOLD = 0.5


@dataclass(frozen=True)
class TimePoint:
    """One quantified, registered time point.

    Attributes
    ----------
    study_id : str
        Pseudonymous study key.
    t_h : float
        Acquisition start after administration (h).
    bq_per_ml : numpy.ndarray (z, y, x)
        Activity concentration at acquisition start on the reference SPECT grid (Bq/mL).
    calibration_rel : float
        Relative standard uncertainty of the calibration used (fraction).
    calibration_id : str or None
    """

    study_id: str
    t_h: float
    bq_per_ml: np.ndarray
    calibration_rel: float = 0.0
    calibration_id: str | None = None


@dataclass(frozen=True)
class Voi:
    """One VOI on the reference SPECT grid.

    Attributes
    ----------
    name : str
        TG-263 name or ``Lesion_<n>``.
    fraction : numpy.ndarray (z, y, x)
        Fraction of each SPECT voxel inside the VOI (0-1).
    volume_ml, mass_g : float
        From the reference CT (mass with CT densities).
    """

    name: str
    fraction: np.ndarray
    volume_ml: float
    mass_g: float

    @property
    def is_lesion(self) -> bool:
        return bool(LESION_RE.match(self.name))


@dataclass(frozen=True)
class CycleSettings:
    """What the trial config says about one cycle's dosimetry.

    Attributes
    ----------
    nuclide_name : str
    administered_activity_mbq : float
    spacing_mm : (dz, dy, dx)
        SPECT voxel size (mm).
    voxel_engine : {"voxel_dpk", "voxel_led", "organ"}
        ``organ`` computes no dose map.
    partial_volume_correction : bool
    rc_fwhm_mm : float or None
        The site's fitted recovery FWHM (mm); ``None``: no correction possible.
    radiobiology : mapping VOI -> (alpha_beta_gy, t_rep_h)
    population_t_eff_h : mapping VOI -> float
        Population effective half-lives for Madsen's single-time-point method.
    dvh_levels_gy : sequence of float
    """

    nuclide_name: str
    administered_activity_mbq: float
    spacing_mm: tuple[float, float, float]
    voxel_engine: str = "voxel_dpk"
    partial_volume_correction: bool = True
    rc_fwhm_mm: float | None = None
    radiobiology: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    population_t_eff_h: Mapping[str, float] = field(default_factory=dict)
    dvh_levels_gy: Sequence[float] = (5.0, 10.0, 20.0)


@dataclass(frozen=True)
class Finding:
    """A QA finding about the cycle (scope ``cycle`` or ``voi``)."""

    check_name: str
    scope: str
    scope_id: str
    status: str
    value_found: str
    value_expected: str
    message: str


@dataclass
class CycleDosimetry:
    """Records of one cycle, keyed by warehouse column names."""

    method: str
    voi_timepoints: list[dict] = field(default_factory=list)
    tac_fits: list[dict] = field(default_factory=list)
    voi_doses: list[dict] = field(default_factory=list)
    dvhs: list[dict] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    dose_map_gy: np.ndarray | None = None


def recovery_coefficient(volume_ml: float, fwhm_mm: float | None) -> float:
    """Recovery of a hot sphere of ``volume_ml`` in a cold background, blurred by ``fwhm_mm``."""
    if fwhm_mm is None or fwhm_mm <= 0:
        return 1.0
    from rntflow.physics.recovery import rc_blurred_sphere, sphere_diameter_mm

    return float(rc_blurred_sphere(float(sphere_diameter_mm(volume_ml)), fwhm_mm))


def background_shells(vois: Sequence[Voi], spacing_mm: tuple[float, float, float],
                      fwhm_mm: float | None) -> dict[str, np.ndarray]:
    """Per VOI, the voxels 1-2 FWHM outside it and outside every VOI (boolean, z y x)."""
    if fwhm_mm is None or fwhm_mm <= 0 or not vois:
        return {}
    any_voi = np.zeros(vois[0].fraction.shape, bool)
    for v in vois:
        any_voi |= v.fraction > 0
    out = {}
    for v in vois:
        inside = v.fraction >= DVH_FRACTION_THRESHOLD
        if not inside.any():
            continue
        dist = ndimage.distance_transform_edt(~inside, sampling=spacing_mm)
        out[v.name] = (dist > fwhm_mm) & (dist <= 2.0 * fwhm_mm) & ~any_voi
    return out


def cycle_method(n_timepoints: int) -> str:
    """``multi_time_point`` from two points on (a fit, or a trapezoid when a fit is not
    possible), ``single_time_point`` with one."""
    if n_timepoints <= 0:
        raise DosimetryInputError("a cycle needs at least one quantified time point")
    return "multi_time_point" if n_timepoints >= 2 else "single_time_point"


def _voxel_tia_weights_h(t_h: np.ndarray, lam_phys_per_h: float) -> np.ndarray:
    """Trapezoid weights (linear from A(0)=0) plus a physical tail after the last point."""
    w = np.zeros(t_h.size)
    w[0] = t_h[0] / 2
    for i in range(t_h.size - 1):
        dt = t_h[i + 1] - t_h[i]
        w[i] += dt / 2
        w[i + 1] += dt / 2
    w[-1] += 1.0 / lam_phys_per_h
    return w


def _params_json(fit: TacFit) -> str:
    names = {"mono_exp": ("a0_mbq", "lambda_per_h"),
             "bi_exp_uptake": ("a0_mbq", "lambda1_per_h", "lambda2_per_h"),
             "bi_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h"),
             "tri_exp": ("a1_mbq", "lambda1_per_h", "a2_mbq", "lambda2_per_h", "lambda3_per_h")}
    keys = names.get(fit.model, ())
    return json.dumps({k: round(float(v), 8) for k, v in zip(keys, fit.params)}, sort_keys=True)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def compute_cycle_dosimetry(timepoints: Sequence[TimePoint], vois: Sequence[Voi], settings: CycleSettings, *,
                            kernel: VoxelKernel | np.ndarray | None = None,
                            hu_on_spect: np.ndarray | None = None) -> CycleDosimetry:
    """Doses of one subject-cycle (see module docstring).

    Parameters
    ----------
    timepoints : sequence of TimePoint
        Registered onto one grid; any order (sorted by ``t_h`` here).
    vois : sequence of Voi
    settings : CycleSettings
    kernel : VoxelKernel or ndarray, optional
        Needed for ``voxel_dpk`` (the caller caches it per nuclide and voxel size).
    hu_on_spect : ndarray, optional
        Reference CT on the SPECT grid (HU), for local-deposition densities.

    Raises
    ------
    DosimetryInputError
        No time points, a time point before administration, grids that differ, a VOI
        with no voxel in the image.
    """
    tps = sorted(timepoints, key=lambda tp: tp.t_h)
    if not tps:
        raise DosimetryInputError("a cycle needs at least one quantified time point")
    shape = tps[0].bq_per_ml.shape
    for tp in tps:
        if tp.t_h <= 0:
            raise DosimetryInputError(f"time point {tp.study_id} at {tp.t_h:.2f} h is not after the administration")
        if tp.bq_per_ml.shape != shape:
            raise DosimetryInputError("time points are not on one grid: register and resample first")
    if not vois:
        raise DosimetryInputError("no VOIs for this cycle")
    nuc = nuclide(settings.nuclide_name)
    voxel_ml = float(np.prod(settings.spacing_mm)) / 1000.0
    t_h = np.array([tp.t_h for tp in tps])
    method = cycle_method(len(tps))
    out = CycleDosimetry(method=method)
    cal_rel = max(tp.calibration_rel for tp in tps)
    cal_id = tps[-1].calibration_id

    # 1. VOI activities
    shells = background_shells(vois, settings.spacing_mm, settings.rc_fwhm_mm) \
        if settings.partial_volume_correction else {}
    tias: dict[str, tuple[float, float, float, str]] = {}  # voi -> (tia, tia_sd, t_eff_h, method)
    measured_tia: dict[str, float] = {}
    rcs: dict[str, float] = {}
    for voi in vois:
        if voi.fraction.shape != shape:
            raise DosimetryInputError(f"VOI {voi.name}: mask grid differs from the image grid")
        if float(voi.fraction.sum()) <= 0:
            out.findings.append(Finding("voi_in_image", "voi", voi.name, "fail", "0 voxels", "> 0 voxels",
                                        f"VOI {voi.name} has no voxel inside the SPECT field of view"))
            continue
        rc = recovery_coefficient(voi.volume_ml, settings.rc_fwhm_mm) if settings.partial_volume_correction else 1.0
        rcs[voi.name] = rc
        act = np.array([float((tp.bq_per_ml * voi.fraction).sum()) * voxel_ml / 1e6 for tp in tps])
        corrected = act / rc
        shell = shells.get(voi.name)
        if rc < 1.0 and shell is not None and shell.any():
            v_ml = float(voi.fraction.sum()) * voxel_ml
            bg = np.array([float(np.median(tp.bq_per_ml[shell])) for tp in tps]) * v_ml / 1e6  # MBq in V at C_bg
            spill_in = (act - (1.0 - rc) * np.clip(bg, 0.0, None)) / rc
            if np.all(spill_in > 0):
                corrected = spill_in
            else:
                out.findings.append(Finding("partial_volume_correction", "voi", voi.name, "warn",
                                            "background >= VOI", "VOI hotter than its surroundings",
                                            f"{voi.name}: not hotter than its surroundings; recovery applied "
                                            "without background correction"))
        for tp, a in zip(tps, corrected):
            out.voi_timepoints.append({
                "voi": voi.name, "study_id": tp.study_id, "t_h": float(tp.t_h), "activity_mbq": float(a),
                "activity_sd_mbq": float(abs(a) * tp.calibration_rel), "volume_ml": voi.volume_ml,
                "mass_g": voi.mass_g, "recovery_coefficient": rc, "calibration_id": tp.calibration_id})
        try:
            tias[voi.name] = _kinetics(voi.name, t_h, corrected, settings, method, out)
        except KineticsError as exc:
            out.findings.append(Finding("tac_fit", "voi", voi.name, "fail", "no TIA", "a TIA",
                                        f"{voi.name}: {exc}"))
            continue
        # as imaged (before recovery and background correction): scales the voxel TIA map
        measured_tia[voi.name] = tias[voi.name][0] * float(act.sum() / corrected.sum()) if corrected.sum() > 0 \
            else tias[voi.name][0]

    # 2. voxel TIA map and dose map (hybrid: VOI sums equal the VOI TIAs as imaged)
    dose_map = None
    if settings.voxel_engine in ("voxel_dpk", "voxel_led"):
        stack = np.stack([tp.bq_per_ml for tp in tps]) * (voxel_ml / 1e6)  # MBq per voxel
        if len(tps) >= 2:
            w = _voxel_tia_weights_h(t_h, nuc.decay_constant_per_h)
            tia_map = np.tensordot(w, stack, axes=1)
        else:
            tia_map = stack[0] * (2.0 * t_h[0] / math.log(2.0))  # Hänscheid outside the VOIs
        tia_map = np.clip(tia_map, 0.0, None)
        for voi in vois:
            if voi.name not in tias:
                continue
            inside = voi.fraction > 0
            s = float((tia_map * voi.fraction).sum())
            if s > 0:
                tia_map[inside] *= 1.0 + voi.fraction[inside] * (measured_tia[voi.name] / s - 1.0)
        if settings.voxel_engine == "voxel_dpk":
            if kernel is None:
                raise DosimetryInputError("voxel_dpk needs a voxel S-value kernel")
            dose_map = convolve_dose_gy(tia_map, kernel)
        else:
            dose_map = led_dose_gy(tia_map, nuc.name, settings.spacing_mm, hu=hu_on_spect)
        out.dose_map_gy = dose_map

    # 3. doses
    for voi in vois:
        if voi.name not in tias:
            continue
        tia, tia_sd, t_eff_h, kin_method = tias[voi.name]
        budget = dose_uncertainty(tia, tia_sd if math.isfinite(tia_sd) else 0.0, calibration_rel=cal_rel,
                                  volume_rel=DEFAULT_VOLUME_REL)
        if voi.is_lesion:
            sd = sphere_dose_gy(tia, nuc.name, voi.volume_ml)
            engine = "sphere"
        else:
            sd = organ_self_dose_gy(tia, nuc.name, voi.mass_g)
            engine = "organ"
        out.voi_doses.append(_dose_row(voi.name, engine, kin_method, sd.dose_gy, sd.dose_gy * budget.dose_rel,
                                       voi.mass_g, tia, t_eff_h, settings, cal_id))
        if dose_map is not None:
            mask = voi.fraction >= DVH_FRACTION_THRESHOLD
            if not mask.any():
                continue
            h = dvh(dose_map, mask, voxel_ml, levels_gy=settings.dvh_levels_gy, n_bins=100)
            mean = float((dose_map * voi.fraction).sum() / voi.fraction.sum())
            out.voi_doses.append(_dose_row(voi.name, settings.voxel_engine, kin_method, mean, mean * budget.dose_rel,
                                           voi.mass_g, tia, t_eff_h, settings, cal_id))
            for i, (d, f) in enumerate(zip(h.dose_gy, h.fraction)):
                out.dvhs.append({"voi": voi.name, "engine": settings.voxel_engine, "bin_index": i,
                                 "dose_bin_gy": round(float(d), 6), "volume_fraction": float(f)})

    # Kidneys: both kidneys as one organ (TIA and mass add)
    kid = [r for r in out.voi_doses if r["voi"] in ("Kidney_L", "Kidney_R") and r["engine"] == "organ"]
    if len(kid) == 2 and not any(v.name == "Kidneys" for v in vois):
        tia = sum(r["tia_mbq_h"] for r in kid)
        mass = sum(r["mass_g"] for r in kid)
        sd = organ_self_dose_gy(tia, nuc.name, mass)
        rel = max(r["dose_sd_gy"] / r["dose_gy"] for r in kid if r["dose_gy"] > 0)
        t_eff = (sum(r["tia_mbq_h"] * (r["_t_eff_h"] or 0.0) for r in kid) / tia) if tia > 0 else None
        out.voi_doses.append(_dose_row("Kidneys", "organ", kid[0]["method"], sd.dose_gy, sd.dose_gy * rel,
                                       mass, tia, t_eff, settings, cal_id))
    for r in out.voi_doses:
        r.pop("_t_eff_h", None)
    return out


def _kinetics(name: str, t_h: np.ndarray, act_mbq: np.ndarray, settings: CycleSettings, method: str,
              out: CycleDosimetry) -> tuple[float, float, float, str]:
    """TIA, its SD and the effective half-life of one VOI; appends the tac_fits record."""
    if method == "multi_time_point":
        # AICc needs N >= K + 2: with 3 points no model qualifies, and the physical-decay
        # tail of the fallback overestimates a clearing organ by tens of %. Three points:
        # trapezoid with a tail fitted through the last two points. On the demo's 3-point
        # cycle (4, 24, 96 h) that read organs -3.5..+1.4% and lesions -8%, where a mono-
        # exponential through all three read lesions +19/+25% (their uptake phase at 4 h).
        if t_h.size == 3:
            fit = trapezoid_tia(t_h, act_mbq, settings.nuclide_name, tail="fitted",
                                activity_sd_mbq=TIME_POINT_ACTIVITY_REL * np.abs(act_mbq))
        else:
            fit = fit_tac(t_h, act_mbq, settings.nuclide_name)
        warns = list(fit.warnings)
        problem = fit.fallback_reason or ("; ".join(fit.warnings) if fit.model == "trapezoid" and fit.warnings
                                          else None) or (f"poor TAC fit (R2 {fit.r2:.3f})"
                                                         if math.isfinite(fit.r2) and fit.r2 < 0.9 else None)
        out.findings.append(Finding("tac_fit", "voi", name, "warn" if problem else "pass",
                                    f"{fit.model}, R2 {fit.r2:.3f}" if math.isfinite(fit.r2) else fit.model,
                                    "a fitted model with R2 >= 0.9", f"{name}: {problem or 'fitted'}"))
        out.tac_fits.append({
            "voi": name, "model": fit.model, "params_json": _params_json(fit), "n_timepoints": int(t_h.size),
            "aicc": _finite(fit.aicc), "r2": _finite(fit.r2), "tia_mbq_h": float(fit.tia_mbq_h),
            "tia_sd_mbq_h": _finite(fit.tia_sd_mbq_h), "effective_half_life_h": _finite(fit.effective_half_life_h),
            "fallback_reason": fit.fallback_reason or ("; ".join(warns) if warns else None)})
        return fit.tia_mbq_h, fit.tia_sd_mbq_h, fit.effective_half_life_h, "multi_time_point"
    t, a = float(t_h[-1]), float(act_mbq[-1])
    pop = settings.population_t_eff_h.get(name)
    if pop:
        stp = madsen_tia(t, a, pop)
        kin_method = "single_time_point_madsen"
        t_eff = pop
    else:
        stp = haenscheid_tia(t, a)
        kin_method = "single_time_point_hanscheid"
        t_eff = t  # Hänscheid is exact when t = T_eff
    out.findings.append(Finding("tac_fit", "voi", name, "warn" if stp.warnings else "pass", f"t = {t:.1f} h",
                                "0.75-2.5 T_eff", "; ".join(stp.warnings) or f"{name}: single time point, {stp.method}"))
    out.tac_fits.append({
        "voi": name, "model": "madsen" if stp.method == "madsen" else "hanscheid", "params_json":
            json.dumps({"t_h": round(t, 4), "activity_mbq": round(a, 6), "t_eff_h": t_eff}),
        "n_timepoints": int(t_h.size), "aicc": None, "r2": None, "tia_mbq_h": float(stp.tia_mbq_h),
        "tia_sd_mbq_h": None, "effective_half_life_h": float(t_eff),
        "fallback_reason": "; ".join(stp.warnings) or None})
    # single-time-point methods: about 10% (Hänscheid's range; Madsen with population T_eff)
    return stp.tia_mbq_h, 0.10 * stp.tia_mbq_h, t_eff, kin_method


def _dose_row(voi: str, engine: str, method: str, dose: float, dose_sd: float, mass_g: float, tia: float,
              t_eff_h: float | None, settings: CycleSettings, calibration_id: str | None) -> dict:
    bed = None
    rb = settings.radiobiology.get(voi)
    if rb is not None and t_eff_h and t_eff_h > 0 and dose >= 0:
        bed = bed_gy(dose, rb[0], rb[1], t_eff_h)
    return {"voi": voi, "engine": engine, "method": method, "dose_gy": float(dose), "dose_sd_gy": float(dose_sd),
            "bed_gy": bed, "mass_g": float(mass_g), "tia_mbq_h": float(tia),
            "administered_activity_mbq": float(settings.administered_activity_mbq),
            "calibration_id": calibration_id, "_t_eff_h": t_eff_h}
