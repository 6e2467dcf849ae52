"""Prefect tasks for one subject-cycle: register the time points, compute the doses.

Load (the product store: quantified SPECT, CT, VOI masks; the warehouse: population
kinetics), call the pure code (``dosimetry.registration``, ``dosimetry.vois``,
``dosimetry.cycle``), save (cached transforms) and return warehouse records.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import SimpleITK as sitk
from prefect import task

from rntflow.analysis.dose_effect import population_kinetics
from rntflow.core.config import TrialConfig
from rntflow.core.qa import WARN, CheckResult, qa_row, status_if
from rntflow.dosimetry.cycle import CycleSettings, TimePoint, Voi, compute_cycle_dosimetry
from rntflow.dosimetry.density import mass_g
from rntflow.dosimetry.kernel import VoxelKernel, voxel_s_kernel
from rntflow.dosimetry.registration import register_rigid, resample
from rntflow.dosimetry.uncertainty import RC_FWHM_REL_SD
from rntflow.dosimetry.vois import resample_mask_fraction
from rntflow.tasks.common import product_store
from rntflow.tasks.products import ProductStore, TimePointMeta
from rntflow.warehouse.writer import read_latest

#: Registration below this normalised cross-correlation (CT after vs reference) is a warning.
MIN_REGISTRATION_NCC = 0.9
#: Multi-resolution settings (coarse to fine) for CT of ~3 x 3 x 5 mm voxels: stopping at half
#: resolution costs ~1 s instead of ~14 s and moves the result by < 2.5 mm (half a SPECT voxel).
REGISTRATION_SHRINK = (4, 2)
REGISTRATION_SMOOTHING_MM = (4.0, 2.0)


@lru_cache(maxsize=8)
def kernel_for(nuclide_name: str, spacing_mm: tuple[float, float, float]) -> VoxelKernel:
    """Voxel S-value kernel, built once per process for a nuclide and voxel size."""
    return voxel_s_kernel(nuclide_name, spacing_mm)


def cycle_timepoints(store: ProductStore, site_id: str, subject_id: str, cycle: int) -> list[TimePointMeta]:
    """The quantified time points of one cycle, by time after administration."""
    return sorted((m for m in store.timepoints(site_id, subject_id) if m.cycle == cycle), key=lambda m: m.t_h)


def _registered(
    store: ProductStore, m: TimePointMeta, ref: TimePointMeta, ref_ct: sitk.Image, ref_spect: sitk.Image
) -> tuple[np.ndarray, dict]:
    """Time point ``m``'s SPECT on the reference SPECT grid, and the registration record."""
    spect = store.spect(m)
    if m.study_id == ref.study_id:
        return sitk.GetArrayFromImage(spect), {}
    cached = store.load_transform(m, ref.study_id)
    if cached is None:
        ct = store.ct(m)
        if ct is None:  # no CT: same scanner frame assumed, flagged
            tf = sitk.Transform(3, sitk.sitkIdentity)
            rec = {"study_id": m.study_id, "ncc_after": None, "method": "none (no CT)"}
            return sitk.GetArrayFromImage(resample(spect, ref_spect, tf)), rec
        res = register_rigid(
            ref_ct,
            ct,
            shrink_factors=REGISTRATION_SHRINK,
            smoothing_sigmas_mm=REGISTRATION_SMOOTHING_MM,
            sampling_fraction=0.1,
        )
        rec = {
            "study_id": m.study_id,
            "ncc_before": res.ncc_before,
            "ncc_after": res.ncc_after,
            "translation_mm": list(res.translation_mm),
            "rotation_deg": list(res.rotation_deg),
            "method": "rigid CT-CT, Mattes MI",
        }
        store.save_transform(m, ref.study_id, res.transform, rec)
        tf = res.transform
    else:
        tf, rec = cached
    return sitk.GetArrayFromImage(resample(spect, ref_spect, tf)), rec


def population_t_eff(config: TrialConfig, exclude_subject: str) -> dict[str, float]:
    """Median effective half-life per VOI from other subjects' multi-time-point fits (h)."""
    fits = read_latest(
        config.warehouse_dir,
        "tac_fits",
        "trial_id = ? AND subject_id <> ? AND n_timepoints >= 3",
        [config.trial_id, exclude_subject],
    )
    if fits.empty:
        return {}
    pk = population_kinetics(fits)
    return {r["voi"]: float(r["median_h"]) for r in pk.to_dict("records") if r["n"] >= 3}


@task(name="cycle-dosimetry", retries=1, retry_delay_seconds=2)
def cycle_dosimetry(config: TrialConfig, site_id: str, subject_id: str, cycle: int) -> dict:
    """Register a cycle's time points to its reference and compute its doses.

    Returns
    -------
    dict
        ``status`` (``done`` or ``waiting``), ``reason``, ``method``, the record lists
        ``voi_timepoints``, ``tac_fits``, ``voi_doses``, ``dvhs``, ``checks``, and
        ``study_ids``.
    """
    store = product_store(config)
    metas = cycle_timepoints(store, site_id, subject_id, cycle)
    refs = [m for m in metas if m.voi_names]
    if not metas or not refs:
        return {
            "status": "waiting",
            "reason": "no VOIs (RTSTRUCT/SEG) for this cycle yet",
            "study_ids": [m.study_id for m in metas],
        }
    ref = refs[0]
    ref_ct, ref_spect = store.ct(ref), store.spect(ref)
    spacing_xyz = ref_spect.GetSpacing()
    spacing_zyx = (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])
    checks: list[dict] = []
    tps = []
    for m in metas:
        arr, rec = _registered(store, m, ref, ref_ct, ref_spect)
        tps.append(TimePoint(m.study_id, m.t_h, arr, m.calibration_rel, m.calibration_id))
        if rec:
            ncc = rec.get("ncc_after")
            ok = ncc is not None and ncc >= MIN_REGISTRATION_NCC
            checks.append(
                qa_row(
                    CheckResult(
                        "registration",
                        status_if(ok, WARN),
                        "no CT" if ncc is None else f"NCC {ncc:.3f}",
                        f"NCC >= {MIN_REGISTRATION_NCC}",
                        f"{rec['method']} to reference {ref.study_id}",
                    ),
                    "study",
                    m.study_id,
                    study_id=m.study_id,
                )
            )
        if m.calibration_status == "expired":
            checks.append(
                qa_row(
                    CheckResult(
                        "calibration_validity",
                        WARN,
                        "expired",
                        "valid",
                        f"time point {m.study_id} quantified with an expired calibration {m.calibration_id}",
                    ),
                    "cycle",
                    f"{subject_id}/{cycle}",
                )
            )
    ct_arr = sitk.GetArrayFromImage(ref_ct)
    ct_voxel_ml = float(np.prod(ref_ct.GetSpacing())) / 1000.0
    vois = []
    for name, mask_img in store.vois(ref).items():
        mask = sitk.GetArrayFromImage(mask_img).astype(bool)
        frac = resample_mask_fraction(mask, mask_img, ref_spect)
        vois.append(Voi(name, frac, float(mask.sum() * ct_voxel_ml), mass_g(mask, ct_arr, ct_voxel_ml)))
    admin_mbq = ref.administered_activity_mbq or 0.0
    rb = {k: (v.alpha_beta_gy, v.t_rep_h) for k, v in config.radiobiology.items()}
    engine = config.dosimetry.engine
    settings = CycleSettings(
        nuclide_name=ref.radionuclide,
        administered_activity_mbq=admin_mbq,
        spacing_mm=spacing_zyx,
        voxel_engine=engine,
        partial_volume_correction=config.dosimetry.partial_volume_correction,
        rc_fwhm_mm=ref.rc_fwhm_mm,
        rc_fwhm_rel_sd=RC_FWHM_REL_SD.get(ref.rc_fwhm_source or "nema", 0.0),
        radiobiology=rb,
        population_t_eff_h=population_t_eff(config, subject_id) if len(tps) == 1 else {},
    )
    kernel = kernel_for(ref.radionuclide, tuple(round(s, 4) for s in spacing_zyx)) if engine == "voxel_dpk" else None
    hu = None
    if engine == "voxel_led":
        hu = sitk.GetArrayFromImage(
            resample(ref_ct, ref_spect, sitk.Transform(3, sitk.sitkIdentity), default_value=-1000.0)
        )
    result = compute_cycle_dosimetry(tps, vois, settings, kernel=kernel, hu_on_spect=hu)
    if settings.partial_volume_correction and ref.rc_fwhm_mm is None:
        checks.append(
            qa_row(
                CheckResult(
                    "partial_volume_correction",
                    WARN,
                    "no RC curve",
                    "the camera's NEMA RC curve",
                    "no NEMA phantom, configured system FWHM or cylinder-edge estimate for this camera: "
                    "activities not corrected for recovery",
                ),
                "cycle",
                f"{subject_id}/{cycle}",
            )
        )
    elif settings.partial_volume_correction and ref.rc_fwhm_source in ("configured", "cylinder_edge"):
        checks.append(
            qa_row(
                CheckResult(
                    "partial_volume_correction",
                    WARN,
                    f"{ref.rc_fwhm_source} FWHM {ref.rc_fwhm_mm:.1f} mm",
                    "the camera's NEMA RC curve",
                    f"recovery from a {ref.rc_fwhm_source.replace('_', ' ')} FWHM (no NEMA phantom): dose SDs include "
                    f"a {100 * settings.rc_fwhm_rel_sd:.0f} % FWHM uncertainty",
                ),
                "cycle",
                f"{subject_id}/{cycle}",
            )
        )
    for f in result.findings:
        checks.append(
            qa_row(
                CheckResult(f.check_name, f.status, f.value_found, f.value_expected, f.message),
                f.scope,
                f"{subject_id}/{cycle}/{f.scope_id}" if f.scope == "voi" else f.scope_id,
            )
        )
    for c in checks:
        c.update({"subject_id": subject_id, "cycle": cycle})
    return {
        "status": "done",
        "reason": None,
        "method": result.method,
        "voi_timepoints": result.voi_timepoints,
        "tac_fits": result.tac_fits,
        "voi_doses": result.voi_doses,
        "dvhs": result.dvhs,
        "checks": checks,
        "study_ids": [m.study_id for m in metas],
    }
