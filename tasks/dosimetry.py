"""Prefect tasks for one subject-cycle: register the time points, compute the doses.

Load (the product store: quantified SPECT, CT, VOI masks; the warehouse: population
kinetics), call the pure code (``dosimetry.registration``, ``dosimetry.vois``,
``dosimetry.cycle``), save (cached transforms) and return warehouse records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import SimpleITK as sitk
from prefect import task

from rntflow.analysis.population_kinetics import population_kinetics
from rntflow.core.config import TrialConfig
from rntflow.core.qa import PASS, WARN, CheckResult, qa_row, status_if
from rntflow.dosimetry.cycle import compute_cycle_dosimetry
from rntflow.dosimetry.cycle_types import CycleDosimetry, CycleSettings, Finding, TimePoint, Voi
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
        config.warehouse_root,
        "tac_fits",
        "trial_id = ? AND subject_id <> ? AND n_timepoints >= 3",
        [config.trial_id, exclude_subject],
    )
    if fits.empty:
        return {}
    pk = population_kinetics(fits)
    return {r["voi"]: float(r["median_h"]) for r in pk.to_dict("records") if r["n"] >= 3}


def _registration_check(rec: dict, m: TimePointMeta, ref: TimePointMeta) -> dict:
    """The ``registration`` qa row of time point ``m`` registered to the reference."""
    ncc = rec.get("ncc_after")
    ok = ncc is not None and ncc >= MIN_REGISTRATION_NCC
    return qa_row(
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


def _expired_calibration_check(m: TimePointMeta, subject_id: str, cycle: int) -> dict:
    """The cycle's qa row for a time point quantified with an expired calibration."""
    return qa_row(
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


def _registered_timepoints(
    store: ProductStore,
    metas: list[TimePointMeta],
    ref: TimePointMeta,
    ref_ct: sitk.Image,
    ref_spect: sitk.Image,
    subject_id: str,
    cycle: int,
    checks: list[dict],
) -> list[TimePoint]:
    """The cycle's time points on the reference SPECT grid; registration and calibration rows go to ``checks``."""
    tps = []
    for m in metas:
        arr, rec = _registered(store, m, ref, ref_ct, ref_spect)
        tps.append(TimePoint(m.study_id, m.t_h, arr, m.calibration_rel, m.calibration_id))
        if rec:
            checks.append(_registration_check(rec, m, ref))
        if m.calibration_status == "expired":
            checks.append(_expired_calibration_check(m, subject_id, cycle))
    return tps


def _reference_vois(store: ProductStore, ref: TimePointMeta, ref_ct: sitk.Image, ref_spect: sitk.Image) -> list[Voi]:
    """The reference time point's VOIs: fractions on the SPECT grid, volume and mass from the CT."""
    ct_arr = sitk.GetArrayFromImage(ref_ct)
    ct_voxel_ml = float(np.prod(ref_ct.GetSpacing())) / 1000.0
    vois = []
    for name, mask_img in store.vois(ref).items():
        mask = sitk.GetArrayFromImage(mask_img).astype(bool)
        frac = resample_mask_fraction(mask, mask_img, ref_spect)
        vois.append(Voi(name, frac, float(mask.sum() * ct_voxel_ml), mass_g(mask, ct_arr, ct_voxel_ml)))
    return vois


def _cycle_settings(
    config: TrialConfig,
    ref: TimePointMeta,
    spacing_zyx: tuple[float, float, float],
    subject_id: str,
    n_timepoints: int,
) -> CycleSettings:
    """The dosimetry settings of a cycle (population kinetics for a single time point)."""
    rb = {k: (v.alpha_beta_gy, v.t_rep_h) for k, v in config.radiobiology.items()}
    return CycleSettings(
        nuclide_name=ref.radionuclide,
        administered_activity_mbq=ref.administered_activity_mbq or 0.0,
        spacing_mm=spacing_zyx,
        voxel_engine=config.dosimetry.engine,
        partial_volume_correction=config.dosimetry.partial_volume_correction,
        rc_fwhm_mm=ref.rc_fwhm_mm,
        rc_fwhm_rel_sd=RC_FWHM_REL_SD.get(ref.rc_fwhm_source or "nema", 0.0),
        radiobiology=rb,
        population_t_eff_h=population_t_eff(config, subject_id) if n_timepoints == 1 else {},
    )


def _compute_doses(
    tps: list[TimePoint],
    vois: list[Voi],
    settings: CycleSettings,
    ref: TimePointMeta,
    ref_ct: sitk.Image,
    ref_spect: sitk.Image,
) -> CycleDosimetry:
    """Run the cycle dosimetry with the kernel or CT the configured voxel engine needs."""
    engine = settings.voxel_engine
    spacing_zyx = settings.spacing_mm
    kernel = kernel_for(ref.radionuclide, tuple(round(s, 4) for s in spacing_zyx)) if engine == "voxel_dpk" else None
    hu = None
    if engine == "voxel_led":
        hu = sitk.GetArrayFromImage(
            resample(ref_ct, ref_spect, sitk.Transform(3, sitk.sitkIdentity), default_value=-1000.0)
        )
    return compute_cycle_dosimetry(tps, vois, settings, kernel=kernel, hu_on_spect=hu)


def _partial_volume_checks(settings: CycleSettings, ref: TimePointMeta, subject_id: str, cycle: int) -> list[dict]:
    """The cycle's ``partial_volume_correction`` result: warn without a NEMA RC curve, else pass."""
    if settings.partial_volume_correction and ref.rc_fwhm_mm is None:
        check = CheckResult(
            "partial_volume_correction",
            WARN,
            "no RC curve",
            "the camera's NEMA RC curve",
            "no NEMA phantom, configured system FWHM or cylinder-edge estimate for this camera: "
            "activities not corrected for recovery",
        )
    elif settings.partial_volume_correction and ref.rc_fwhm_source in ("configured", "cylinder_edge"):
        check = CheckResult(
            "partial_volume_correction",
            WARN,
            f"{ref.rc_fwhm_source} FWHM {ref.rc_fwhm_mm:.1f} mm",
            "the camera's NEMA RC curve",
            f"recovery from a {ref.rc_fwhm_source.replace('_', ' ')} FWHM (no NEMA phantom): dose SDs include "
            f"a {100 * settings.rc_fwhm_rel_sd:.0f} % FWHM uncertainty",
        )
    elif settings.partial_volume_correction:
        # a pass row too, so that a warning from before the NEMA phantom arrived is superseded
        check = CheckResult(
            "partial_volume_correction",
            PASS,
            f"nema FWHM {ref.rc_fwhm_mm:.1f} mm",
            "the camera's NEMA RC curve",
            "recovery from the camera's NEMA RC curve",
        )
    else:
        return []
    return [qa_row(check, "cycle", f"{subject_id}/{cycle}")]


def _finding_rows(findings: list[Finding], subject_id: str, cycle: int) -> list[dict]:
    """qa rows of the dosimetry's own findings (VOI-scoped ones keyed by subject/cycle/VOI)."""
    return [
        qa_row(
            CheckResult(f.check_name, f.status, f.value_found, f.value_expected, f.message),
            f.scope,
            f"{subject_id}/{cycle}/{f.scope_id}" if f.scope == "voi" else f.scope_id,
        )
        for f in findings
    ]


@dataclass(frozen=True)
class CycleDosimetryResult:
    """What the dosimetry of one subject-cycle produced: its warehouse rows, or why it waits.

    The rows are dicts keyed by warehouse column names, units in the names (``dose_gy``,
    ``dose_sd_gy``, ``bed_gy``, ``tia_mbq_h``, ``effective_half_life_h``, ``volume_ml`` ...);
    the flow adds the trial, site, subject and cycle columns (and ``final``) when it loads them.

    Attributes
    ----------
    status : {"done", "waiting"}
        ``waiting``: the cycle has no time point with VOIs yet (no rows at all).
    reason : str or None
        Why the cycle waits; ``None`` when done.
    study_ids : list of str
        The cycle's quantified time points, by time after administration.
    method : str or None
        How the cycle's kinetics were computed: ``multi_time_point`` or ``single_time_point``
        (the rows name the exact variant); ``None`` when waiting.
    voi_timepoints : list of dict
        ``voi_timepoints`` rows per VOI and time point: time after administration (h),
        activity and its SD (MBq), volume (mL), mass (g), recovery coefficient.
    tac_fits : list of dict
        ``tac_fits`` rows per VOI: the time-activity model, TIA and its SD (MBq h), effective
        half-life (h).
    voi_doses : list of dict
        ``voi_doses`` rows per VOI and dose engine: absorbed dose and its SD (Gy), BED (Gy),
        mass (g), TIA (MBq h); without ``final`` (the flow decides it).
    dvhs : list of dict
        ``dvhs`` rows per VOI and engine: dose bins (Gy) and volume fractions.
    checks : list of dict
        ``qa_checks`` rows (registration, calibration validity, partial-volume correction, the
        dosimetry's own findings), with ``subject_id`` and ``cycle``.
    """

    status: str
    reason: str | None
    study_ids: list[str]
    method: str | None = None
    voi_timepoints: list[dict] = field(default_factory=list)
    tac_fits: list[dict] = field(default_factory=list)
    voi_doses: list[dict] = field(default_factory=list)
    dvhs: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """The doses were computed (``status`` ``done``)."""
        return self.status == "done"


@task(name="cycle-dosimetry", retries=1, retry_delay_seconds=2)
def cycle_dosimetry(config: TrialConfig, site_id: str, subject_id: str, cycle: int) -> CycleDosimetryResult:
    """Register a cycle's time points to its reference and compute its doses.

    Returns
    -------
    CycleDosimetryResult
        ``done`` with the method and the ``voi_timepoints``, ``tac_fits``, ``voi_doses``,
        ``dvhs`` and ``qa_checks`` rows, or ``waiting`` and why; the cycle's study ids.
    """
    store = product_store(config)
    metas = cycle_timepoints(store, site_id, subject_id, cycle)
    refs = [m for m in metas if m.voi_names]
    if not metas or not refs:
        return CycleDosimetryResult("waiting", "no VOIs (RTSTRUCT/SEG) for this cycle yet", [m.study_id for m in metas])
    ref = refs[0]
    ref_ct, ref_spect = store.ct(ref), store.spect(ref)
    spacing_xyz = ref_spect.GetSpacing()
    spacing_zyx = (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])
    checks: list[dict] = []
    tps = _registered_timepoints(store, metas, ref, ref_ct, ref_spect, subject_id, cycle, checks)
    vois = _reference_vois(store, ref, ref_ct, ref_spect)
    settings = _cycle_settings(config, ref, spacing_zyx, subject_id, len(tps))
    result = _compute_doses(tps, vois, settings, ref, ref_ct, ref_spect)
    checks += _partial_volume_checks(settings, ref, subject_id, cycle)
    checks += _finding_rows(result.findings, subject_id, cycle)
    for c in checks:
        c.update({"subject_id": subject_id, "cycle": cycle})
    return CycleDosimetryResult(
        "done",
        None,
        [m.study_id for m in metas],
        method=result.method,
        voi_timepoints=result.voi_timepoints,
        tac_fits=result.tac_fits,
        voi_doses=result.voi_doses,
        dvhs=result.dvhs,
        checks=checks,
    )
