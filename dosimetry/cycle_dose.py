"""Steps 3-4 of a cycle: the dose of every VOI, its BED, DVH and uncertainty (pure).

Organ engine (self-dose, CT mass) for organs, sphere model for ``Lesion_<n>``, and the
trial's voxel engine (DPK convolution or local deposition) on a voxel TIA map whose VOI sums
equal the fitted TIAs (hybrid method: voxel distribution, VOI-level kinetics). ``Kidneys``
is derived from both kidneys. BED per organ with the LQ parameters given, DVH per VOI (voxel
engine), uncertainty per EANM (fit covariance, calibration, recovery, volume); the recovery
term from the FWHM's uncertainty when it is not a NEMA phantom's (``rc_fwhm_rel_sd``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry.bed import bed_gy
from rntflow.dosimetry.cycle_kinetics import VoiTia
from rntflow.dosimetry.cycle_types import DVH_FRACTION_THRESHOLD, CycleDosimetry, CycleSettings, TimePoint, Voi
from rntflow.dosimetry.dvh import dvh
from rntflow.dosimetry.kernel import VoxelKernel, convolve_dose_gy
from rntflow.dosimetry.led import led_dose_gy
from rntflow.dosimetry.organ import organ_self_dose_gy, sphere_dose_gy
from rntflow.dosimetry.uncertainty import dose_uncertainty, recovery_rel_sd
from rntflow.physics.nuclides import nuclide

#: Relative standard uncertainty of a VOI's volume from CT delineation (EANM, Gear 2018:
#: a one-voxel boundary shift on a 5 mm CT; used when the caller gives none).
DEFAULT_VOLUME_REL = 0.05


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


def _voxel_tia_map_mbq_h(
    tps: Sequence[TimePoint], vois: Sequence[Voi], tias: Mapping[str, VoiTia], lam_phys_per_h: float, voxel_ml: float
) -> np.ndarray:
    """Voxel TIA map (MBq h per voxel) whose VOI sums equal the VOI TIAs as imaged (hybrid method).

    Outside the VOIs: trapezoid plus physical tail with two or more time points, Hänscheid
    (``A 2 t / ln 2``) with one.
    """
    t_h = np.array([tp.t_h for tp in tps])
    stack = np.stack([tp.bq_per_ml for tp in tps]) * (voxel_ml / 1e6)  # MBq per voxel
    if len(tps) >= 2:
        w = _voxel_tia_weights_h(t_h, lam_phys_per_h)
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
            tia_map[inside] *= 1.0 + voi.fraction[inside] * (tias[voi.name].measured_tia_mbq_h / s - 1.0)
    return tia_map


def dose_map_gy(
    tps: Sequence[TimePoint],
    vois: Sequence[Voi],
    tias: Mapping[str, VoiTia],
    settings: CycleSettings,
    voxel_ml: float,
    kernel: VoxelKernel | np.ndarray | None,
    hu_on_spect: np.ndarray | None,
) -> np.ndarray:
    """Step 3, voxel engine: dose map (Gy) from the hybrid voxel TIA map (DPK or LED)."""
    nuc = nuclide(settings.nuclide_name)
    tia_map = _voxel_tia_map_mbq_h(tps, vois, tias, nuc.decay_constant_per_h, voxel_ml)
    if settings.voxel_engine == "voxel_dpk":
        if kernel is None:
            raise DosimetryInputError("voxel_dpk needs a voxel S-value kernel")
        return convolve_dose_gy(tia_map, kernel)
    return led_dose_gy(tia_map, nuc.name, settings.spacing_mm, hu=hu_on_spect)


def voi_dose_records(
    voi: Voi,
    kin: VoiTia,
    settings: CycleSettings,
    dose_map: np.ndarray | None,
    voxel_ml: float,
    cal_rel: float,
    cal_id: str | None,
    out: CycleDosimetry,
) -> None:
    """Step 3-4 for one VOI: organ or sphere dose, voxel-engine mean dose and DVH, into ``out``."""
    nuc_name = nuclide(settings.nuclide_name).name
    tia, tia_sd = kin.tia_mbq_h, kin.tia_sd_mbq_h
    rc_rel = (
        recovery_rel_sd(voi.volume_ml, settings.rc_fwhm_mm, settings.rc_fwhm_rel_sd)
        if settings.partial_volume_correction and voi.volume_ml > 0
        else 0.0
    )
    budget = dose_uncertainty(
        tia,
        tia_sd if math.isfinite(tia_sd) else 0.0,
        calibration_rel=cal_rel,
        rc_rel=rc_rel,
        volume_rel=DEFAULT_VOLUME_REL,
    )
    if voi.is_lesion:
        sd = sphere_dose_gy(tia, nuc_name, voi.volume_ml)
        engine = "sphere"
    else:
        sd = organ_self_dose_gy(tia, nuc_name, voi.mass_g)
        engine = "organ"
    out.voi_doses.append(
        _dose_row(
            voi.name,
            engine,
            kin.method,
            sd.dose_gy,
            sd.dose_gy * budget.dose_rel,
            voi.mass_g,
            tia,
            kin.t_eff_h,
            settings,
            cal_id,
        )
    )
    if dose_map is None:
        return
    mask = voi.fraction >= DVH_FRACTION_THRESHOLD
    if not mask.any():
        return
    h = dvh(dose_map, mask, voxel_ml, levels_gy=settings.dvh_levels_gy, n_bins=100)
    mean = float((dose_map * voi.fraction).sum() / voi.fraction.sum())
    out.voi_doses.append(
        _dose_row(
            voi.name,
            settings.voxel_engine,
            kin.method,
            mean,
            mean * budget.dose_rel,
            voi.mass_g,
            tia,
            kin.t_eff_h,
            settings,
            cal_id,
        )
    )
    for i, (d, f) in enumerate(zip(h.dose_gy, h.fraction)):
        out.dvhs.append(
            {
                "voi": voi.name,
                "engine": settings.voxel_engine,
                "bin_index": i,
                "dose_bin_gy": round(float(d), 6),
                "volume_fraction": float(f),
            }
        )


def kidneys_record(voi_doses: Sequence[dict], settings: CycleSettings, cal_id: str | None) -> dict | None:
    """Both kidneys as one organ (TIA and mass add), from the two organ-engine rows; else ``None``."""
    kid = [r for r in voi_doses if r["voi"] in ("Kidney_L", "Kidney_R") and r["engine"] == "organ"]
    if len(kid) != 2:
        return None
    tia = sum(r["tia_mbq_h"] for r in kid)
    mass = sum(r["mass_g"] for r in kid)
    sd = organ_self_dose_gy(tia, nuclide(settings.nuclide_name).name, mass)
    rel = max(r["dose_sd_gy"] / r["dose_gy"] for r in kid if r["dose_gy"] > 0)
    t_eff = (sum(r["tia_mbq_h"] * (r["_t_eff_h"] or 0.0) for r in kid) / tia) if tia > 0 else None
    return _dose_row(
        "Kidneys", "organ", kid[0]["method"], sd.dose_gy, sd.dose_gy * rel, mass, tia, t_eff, settings, cal_id
    )


def _dose_row(
    voi: str,
    engine: str,
    method: str,
    dose: float,
    dose_sd: float,
    mass_g: float,
    tia: float,
    t_eff_h: float | None,
    settings: CycleSettings,
    calibration_id: str | None,
) -> dict:
    bed = None
    rb = settings.radiobiology.get(voi)
    if rb is not None and t_eff_h and t_eff_h > 0 and dose >= 0:
        bed = bed_gy(dose, rb[0], rb[1], t_eff_h)
    return {
        "voi": voi,
        "engine": engine,
        "method": method,
        "dose_gy": float(dose),
        "dose_sd_gy": float(dose_sd),
        "bed_gy": bed,
        "mass_g": float(mass_g),
        "tia_mbq_h": float(tia),
        "administered_activity_mbq": float(settings.administered_activity_mbq),
        "calibration_id": calibration_id,
        "_t_eff_h": t_eff_h,
    }
