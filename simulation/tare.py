"""The radioembolisation (TARE) arm of the synthetic trial (issue 18, simulator part).

Two sites after the 177Lu ones (``SITE04`` 166Ho/QuiremSpheres, ``SITE05`` 90Y/SIR-Spheres;
:mod:`rntflow.simulation.tare_sites`), ``TrialSpec.tare_subjects_per_site`` subjects each, one
treatment per subject:

* scout study 7-14 days before treatment: 166Ho-scout (~250 MBq QuiremScout) SPECT/CT 1-3 h
  after injection, or 99mTc-MAA (~150 MBq) SPECT/CT ~1 h after; NM (counts) + CT + RTSTRUCT;
* treatment: the activity the partition model plans on the true scout distribution, minus a
  vial residual (:mod:`rntflow.simulation.tare_plan`);
* post-treatment study: 166Ho SPECT/CT ~3 days after, or 90Y TOF PET/CT ~1 day after
  (PET in Bq/mL, :mod:`rntflow.simulation.dicom_pet`); + CT + RTSTRUCT;
* phantoms: a 166Ho uniform cylinder on the 166Ho camera, a 90Y uniform cylinder on the PET.

Everything draws from its own generator (``numpy.random.default_rng([spec.seed, TARE_SALT])``),
so the 177Lu part of a trial is byte-identical with and without the TARE arm. Geometry and
images reuse the 177Lu machinery: :func:`rntflow.simulation.imaging.expected_counts` /
:func:`~rntflow.simulation.imaging.noisy_counts` (camera blur, scaled Poisson noise) and
the NM, CT and RTSTRUCT writers of :mod:`rntflow.simulation.dicom_writers`. The NM writer
knows only the 177Lu radionuclide code, so the TARE NM objects get their
RadionuclideCodeSequence (DICOM CID 18) and intra-arterial route after it returns, and are
saved again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.sequence import Sequence

from rntflow.physics.decay import decay_integral_s
from rntflow.physics.nuclides import nuclide
from rntflow.simulation import dicom_pet as dp
from rntflow.simulation import dicom_writers as dw
from rntflow.simulation.geometry import Grid
from rntflow.simulation.imaging import ct_hu, expected_counts, noisy_counts
from rntflow.simulation.outcomes import TARE_OUTCOME_MODELS, draw_tare_outcomes
from rntflow.simulation.sessions import (
    FOV_CENTRE_MM,
    TRIAL_START,
    SessionWriter,
    draw_pose,
    phantom_anatomies,
    sample_identity,
)
from rntflow.simulation.tare_plan import TRUTH_TARE_COLUMNS, draw_subject, label_activity, plan_subject, truth_rows
from rntflow.simulation.tare_sites import (
    TARE_RADIONUCLIDE_CODES,
    Y90_POSITRON_FRACTION,
    PetCamera,
    SpectCamera,
    TareSite,
    arms_config,
    site_config,
    tare_sites,
)

TARE_SALT = 18  # issue 18
#: PET grid: 110 slices of 4 mm, 110 x 110 of 4 mm (z -68 ... +368 mm around the FOV centre).
PET_SHAPE, PET_SPACING_MM = (110, 110, 110), (4.0, 4.0, 4.0)
SCOUT_MBQ = {"Ho-166-scout": 250.0, "Tc-99m-MAA": 150.0}
PHARM_NAMES = {
    "Ho-166-scout": "Ho-166 microspheres (QuiremScout)",
    "Tc-99m-MAA": "Tc-99m MAA",
    "QuiremSpheres": "Ho-166 microspheres (QuiremSpheres)",
    "SIR-Spheres": "Y-90 resin microspheres (SIR-Spheres)",
}

__all__ = ["TRUTH_TARE_COLUMNS", "simulate_tare", "tare_config", "truth_rows"]


def tare_config(lu_site_ids: list[str]) -> tuple[list[dict], list[dict]]:
    """(``sites`` entries, ``tare_arms``) the trial config gains for the TARE arm."""
    sites = tare_sites(lu_site_ids)
    return [site_config(s) for s in sites], arms_config(sites)


def pet_noise_sd_bqml(conc_bqml: np.ndarray, cam: PetCamera, voxel_ml: float) -> np.ndarray:
    """SD (Bq/mL) of a 90Y PET voxel: coincidences ``n = c pf eps T v`` (positron fraction
    3.2e-5, detection efficiency eps, bed time T, voxel volume v) plus a random background
    ``b`` (176Lu of LSO, randoms), variance ``g (n + b)`` (OSEM-TOF amplification g), so the
    relative SD grows as the count density falls (~15 % per voxel at 1.2 MBq/mL, ~80 % at
    0.1 MBq/mL)."""
    per_bqml = Y90_POSITRON_FRACTION * cam.detection_efficiency * cam.bed_duration_s * voxel_ml
    n = np.clip(conc_bqml, 0, None) * per_bqml
    return np.sqrt(cam.noise_amplification * (n + cam.background_counts_per_voxel)) / per_bqml


class _Tare:
    """Writes the TARE studies (shares the 177Lu writer's grids, RTSTRUCT helper and summary)."""

    def __init__(self, writer: SessionWriter, rng: np.random.Generator):
        self.w, self.rng = writer, rng
        self.pet_grid = Grid.centred(PET_SHAPE, PET_SPACING_MM, FOV_CENTRE_MM)

    def _session(self, site: TareSite, ident: dw.Identity, label: str, desc: str, when: dt.datetime, make: str):
        key = f"{site.site_id}/{ident.patient_id}/{when:%Y%m%d%H%M}/{label}"
        study_dir = self.w.out / "dicom" / site.site_id / ident.patient_id / f"{when:%Y%m%d}_{label}"
        sess = dw.Session(
            dw.uid(key + "/study"),
            dw.uid(key + "/for"),
            f"A{int(self.rng.integers(10**8, 10**9))}",
            desc,
            when,
            f"{make.split()[0][:8]}{site.site_id[-2:]}",
            site.name,
        )
        return key, study_dir, sess

    def _ct_rs(self, site, ident, key, study_dir, sess, labels, lut, pose, rois, make, model, serial, when) -> None:
        hu = ct_hu(labels, self.w.fine, lut, self.w.ct_grid, pose, self.rng)
        ct_series = dw.uid(key + "/ct-series")
        refs = dw.write_ct(study_dir / "CT", hu, self.w.ct_grid, ident, sess, ct_series, make, model, serial)
        if rois:
            self.w._rtstruct(study_dir, key, site, ident, sess, ct_series, refs, rois, pose, when)

    def _count(self, study_dir: Path) -> None:
        s = self.w.summary
        files = list(study_dir.rglob("*.dcm"))
        s.n_studies += 1
        s.n_files += len(files)
        s.n_bytes += sum(f.stat().st_size for f in files)
        s.studies.append(str(study_dir.relative_to(self.w.out)))

    def spect(self, site, cam: SpectCamera, ident, label, desc, when, labels, lut, act_start_mbq, nuc, pharm, rois):
        """NM SPECT (counts) + CT (+ RTSTRUCT) of activities ``act_start_mbq`` (per label, at ``when``)."""
        key, study_dir, sess = self._session(site, ident, label, desc, when, cam.manufacturer)
        pose = draw_pose(self.rng, (0.0, 0.0, 0.0) if rois else FOV_CENTRE_MM)
        dur = cam.acquisition_duration_s
        mean = act_start_mbq * decay_integral_s(dur, nuc.half_life_h * 3600.0) / dur
        exp_counts = expected_counts(
            labels,
            self.w.fine,
            mean,
            self.w.spect_grid,
            pose,
            cam.sensitivity_cps_per_mbq,
            dur,
            cam.fwhm_mm,
            cam.residual_scatter_fraction,
        )
        counts = noisy_counts(exp_counts, cam.noise_amplification, self.rng)
        path = study_dir / "NM" / "NM_0001.dcm"
        ds = dw.write_nm(
            path,
            counts,
            self.w.spect_grid,
            ident,
            sess,
            cam.recon(),
            pharm,
            dw.uid(key + "/nm-series"),
            dw.uid(key + "/nm"),
        )
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        rp.RadionuclideCodeSequence = Sequence([dw._code(*TARE_RADIONUCLIDE_CODES[nuc.name])])
        rp.RadiopharmaceuticalRoute = "Intra-arterial" if rois else ""
        dw._save(ds, path)
        self._ct_rs(
            site, ident, key, study_dir, sess, labels, lut, pose, rois, cam.manufacturer, cam.model, cam.serial, when
        )
        self._count(study_dir)
        return {
            "study_dir": str(study_dir.relative_to(self.w.out)),
            "acquisition_datetime": when.isoformat(),
            "duration_s": dur,
            "pose": {"angle_deg": pose.angle_deg, "translation_mm": list(pose.translation_mm)},
            "expected_total_counts": float(exp_counts.sum()),
            "total_counts": float(counts.sum()),
        }

    def pet(self, site, cam: PetCamera, ident, label, desc, when, labels, lut, act_start_mbq, nuc, pharm, rois):
        """90Y PET (Bq/mL at the acquisition start, x vendor scale error, noise) + CT (+ RTSTRUCT)."""
        key, study_dir, sess = self._session(site, ident, label, desc, when, cam.manufacturer)
        pose = draw_pose(self.rng, (0.0, 0.0, 0.0) if rois else FOV_CENTRE_MM)
        g = self.pet_grid
        mbq_per_voxel = expected_counts(labels, self.w.fine, act_start_mbq, g, pose, 1.0, 1.0, cam.fwhm_mm)
        conc = mbq_per_voxel * 1e6 / g.voxel_ml
        noisy = conc + self.rng.normal(0.0, 1.0, conc.shape) * pet_noise_sd_bqml(conc, cam, g.voxel_ml)
        values = noisy * cam.vendor_scale_error
        recon = dp.PetRecon(cam.manufacturer, cam.model, cam.serial, cam.software_versions, cam.bed_duration_s)
        dp.write_pet(study_dir / "PET", values, g, ident, sess, recon, pharm, dw.uid(key + "/pet-series"))
        self._ct_rs(
            site, ident, key, study_dir, sess, labels, lut, pose, rois, cam.manufacturer, cam.model, cam.serial, when
        )
        self._count(study_dir)
        return {
            "study_dir": str(study_dir.relative_to(self.w.out)),
            "acquisition_datetime": when.isoformat(),
            "duration_s": cam.bed_duration_s,
            "pose": {"angle_deg": pose.angle_deg, "translation_mm": list(pose.translation_mm)},
            "vendor_scale_error": cam.vendor_scale_error,
            "true_total_mbq_in_image": float(mbq_per_voxel.sum()),
        }

    def image(self, site, post: bool, *args):
        cam = site.post_camera if post else site.scout_camera
        return self.pet(site, cam, *args) if isinstance(cam, PetCamera) else self.spect(site, cam, *args)


def _pharm(name: str, nuc, mbq: float, start: dt.datetime, pet: bool):
    if pet:
        code = TARE_RADIONUCLIDE_CODES[nuc.name]
        return dp.PetRadiopharmaceutical(
            name, nuc.name, mbq, start, nuc.half_life_h * 3600, Y90_POSITRON_FRACTION, code
        )
    return dw.Radiopharmaceutical(name, nuc.name, round(mbq, 2), start, nuc.half_life_h * 3600)


def _phantom(t: _Tare, site: TareSite, truth: dict, enrolment: list[dict], fills: list[dict]) -> None:
    """A uniform cylinder of the treatment radionuclide on the post-treatment camera."""
    rng = t.rng
    cam = site.post_camera
    pet = isinstance(cam, PetCamera)
    nuc = nuclide("Y-90" if pet else "Ho-166")
    anat = phantom_anatomies()["uniform_cylinder"]
    labels = anat.label_map(t.w.fine)
    ref_time = TRIAL_START - dt.timedelta(days=14, hours=-int(rng.integers(0, 4)))
    acq = ref_time + dt.timedelta(hours=float(rng.uniform(1.0, 3.0)))
    t_h = (acq - ref_time).total_seconds() / 3600.0
    total = float(rng.uniform(1500.0, 2500.0) if pet else rng.uniform(400.0, 600.0))
    at_start = total * math.exp(-nuc.decay_constant_per_h * t_h)
    patient_id, subject_id = f"QC-CYL-{site.site_id}", f"{site.site_id}-PH-CYL"
    ident = dw.Identity("QC^CYL", patient_id, "", "O")
    pharm = _pharm(f"{nuc.name} chloride", nuc, total, ref_time, pet)
    info = t.image(
        site,
        True,
        ident,
        "CYL",
        "QC UNIFORM CYLINDER",
        acq,
        labels,
        anat.hu_lut(),
        np.array([0.0, at_start]),
        nuc,
        pharm,
        None,
    )
    enrolment.append({"site_id": site.site_id, "patient_id": patient_id, "subject_id": subject_id, "kind": "phantom"})
    volume_ml = anat.body_volume_ml
    fills.append(
        {
            "subject_id": subject_id,
            "phantom_type": "uniform_cylinder",
            "total_activity_mbq": round(total, 2),
            "reference_datetime": ref_time.isoformat(),
            "volume_ml": round(volume_ml, 1),
            "sphere_to_background_ratio": "",
        }
    )
    truth["tare_phantoms"].append(
        {
            "subject_id": subject_id,
            "site_id": site.site_id,
            "radionuclide": nuc.name,
            "phantom_type": "uniform_cylinder",
            "modality": "PT" if pet else "NM",
            "total_activity_mbq": total,
            "reference_datetime": ref_time.isoformat(),
            "volume_ml": volume_ml,
            "activity_at_acquisition_start_mbq": at_start,
            "concentration_at_acquisition_start_bqml": at_start * 1e6 / volume_ml,
            **(
                {"vendor_scale_error": cam.vendor_scale_error}
                if pet
                else {"sensitivity_cps_per_mbq": cam.sensitivity_cps_per_mbq}
            ),
            **info,
        }
    )


def _subject(t: _Tare, site: TareSite, idx: int, subject_id: str, truth: dict, enrolment: list[dict]) -> None:
    rng = t.rng
    anat, params = draw_subject(site, idx, rng)
    plan = plan_subject(site, anat, params, rng)
    name, birth, ident = sample_identity(site, rng)
    enrolment.append(
        {"site_id": site.site_id, "patient_id": ident.patient_id, "subject_id": subject_id, "kind": "patient"}
    )
    labels = anat.label_anatomy().label_map(t.w.fine)
    lut, rois = anat.hu_lut(), anat.rois()
    scout_nuc = nuclide("Tc-99m" if site.scout_agent == "Tc-99m-MAA" else "Ho-166")
    treat_nuc = nuclide(plan["radionuclide"])
    scout_admin = TRIAL_START + dt.timedelta(days=int(rng.integers(0, 60)), hours=float(rng.uniform(0.0, 2.0)))
    scout_mbq = SCOUT_MBQ[site.scout_agent] * float(rng.normal(1.0, 0.05))
    scout_t_h = float(rng.uniform(0.75, 1.5) if scout_nuc.name == "Tc-99m" else rng.uniform(1.0, 3.0))
    treat_admin = scout_admin + dt.timedelta(days=int(rng.integers(7, 15)), hours=float(rng.uniform(1.0, 3.0)))
    pet = site.post_imaging == "pet"
    post_t_h = float(rng.uniform(20.0, 26.0) if pet else rng.uniform(68.0, 76.0))
    admin_mbq = plan["administered_activity_gbq"] * 1000.0
    scout_when = scout_admin + dt.timedelta(hours=scout_t_h)
    post_when = treat_admin + dt.timedelta(hours=post_t_h)
    scout_act = label_activity(
        anat, plan["scout_share"], scout_mbq * math.exp(-scout_nuc.decay_constant_per_h * scout_t_h)
    )
    post_act = label_activity(
        anat, plan["delivered_share"], admin_mbq * math.exp(-treat_nuc.decay_constant_per_h * post_t_h)
    )
    nuc_tag = {"Tc-99m": "TC99M MAA", "Ho-166": "HO166", "Y-90": "Y90"}
    scout = t.image(
        site,
        False,
        ident,
        "SCOUT",
        f"{nuc_tag[scout_nuc.name]} SCOUT SPECT/CT",
        scout_when,
        labels,
        lut,
        scout_act,
        scout_nuc,
        _pharm(PHARM_NAMES[site.scout_agent], scout_nuc, scout_mbq, scout_admin, False),
        rois,
    )
    post = t.image(
        site,
        True,
        ident,
        "POST",
        f"{nuc_tag[treat_nuc.name]} POST-TREATMENT {'PET/CT' if pet else 'SPECT/CT'}",
        post_when,
        labels,
        lut,
        post_act,
        treat_nuc,
        _pharm(PHARM_NAMES[site.device], treat_nuc, admin_mbq, treat_admin, pet),
        rois,
    )
    plan.update(
        {
            "treatment": 1,
            "scout_agent": site.scout_agent,
            "scout_radionuclide": scout_nuc.name,
            "scout_administered_mbq": scout_mbq,
            "scout_administration_datetime": scout_admin.isoformat(),
            "administration_datetime": treat_admin.isoformat(),
            "administered_mbq": admin_mbq,
            "scout_study": {**scout, "t_h": scout_t_h, "activity_at_start_mbq": scout_act.tolist()},
            "post_study": {**post, "t_h": post_t_h, "activity_at_start_mbq": post_act.tolist()},
        }
    )
    truth["tare"][subject_id] = {
        "site_id": site.site_id,
        "arm_id": site.arm_id,
        "patient_name": name,
        "patient_id": ident.patient_id,
        "birth_date": birth.isoformat(),
        "n_lesions": len(anat.tumours),
        "treatments": [plan],
    }


def simulate_tare(
    writer: SessionWriter,
    lu_sites: list,
    truth: dict,
    enrolment: list[dict],
    fills: list[dict],
    say: Callable[[str], None],
) -> list[dict]:
    """Write the TARE arm into ``writer.out``; extend truth, enrolment and fills; return outcome rows."""
    spec = writer.spec
    rng = np.random.default_rng([spec.seed, TARE_SALT])
    t = _Tare(writer, rng)
    sites = tare_sites([s.site_id for s in lu_sites])
    truth["tare"] = {}
    truth["tare_phantoms"] = []
    truth["tare_sites"] = {}
    truth["tare_outcome_models"] = TARE_OUTCOME_MODELS
    for site in sites:
        cams = {"scout": site.scout_camera, "post": site.post_camera}
        truth["tare_sites"][site.site_id] = {
            "name": site.name,
            "calling_ae_title": site.calling_ae_title,
            "arm_id": site.arm_id,
            "device": site.device,
            "scout_agent": site.scout_agent,
            "post_imaging": site.post_imaging,
            "cameras": {
                role: {
                    "manufacturer": c.manufacturer,
                    "model": c.model,
                    "serial": c.serial,
                    "fwhm_mm": c.fwhm_mm,
                    **(
                        {"vendor_scale_error": c.vendor_scale_error, "positron_fraction": Y90_POSITRON_FRACTION}
                        if isinstance(c, PetCamera)
                        else {
                            "sensitivity_cps_per_mbq": c.sensitivity_cps_per_mbq,
                            "residual_scatter_fraction": c.residual_scatter_fraction,
                            "energy_windows": [list(w) for w in c.windows],
                        }
                    ),
                }
                for role, c in cams.items()
            },
        }
        say(f"{site.site_id}: TARE phantom")
        _phantom(t, site, truth, enrolment, fills)
        for s in range(spec.tare_subjects_per_site):
            subject_id = f"{spec.trial_id.split('-')[0]}-{site.site_id[-2:]}{s + 1:03d}"
            say(f"{site.site_id}: TARE subject {subject_id}")
            _subject(t, site, s, subject_id, truth, enrolment)
    writer.summary.n_sites += len(sites)
    writer.summary.n_subjects += len(truth["tare"])
    return draw_tare_outcomes(truth["tare"], rng)
