"""The SPECT/CT sessions of the synthetic 177Lu trial: what one site scans and its ground truth.

The trial protocol (time points, grids, energy windows), :class:`SessionWriter` (one SPECT/CT
study of a subject or phantom: NM, CT and RTSTRUCT), the sites' QC phantoms and the subjects
with their identities, treatment cycles and imaging time points. The run and the output
tables are :mod:`rntflow.simulation.trial`; the TARE arm reuses the writer
(:mod:`rntflow.simulation.tare`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rntflow.physics.decay import decay_integral_s
from rntflow.physics.nuclides import nuclide
from rntflow.simulation import dicom_writers as dw
from rntflow.simulation.anatomy import Anatomy, Compartment, anatomy_grid, sample_anatomy
from rntflow.simulation.geometry import Ellipsoid, EllipticCylinder, Grid, Pose, section_polygon
from rntflow.simulation.imaging import ct_hu, expected_counts, noisy_counts
from rntflow.simulation.kinetics import CompartmentKinetics, SubjectKinetics, sample_kinetics
from rntflow.simulation.sites import Site
from rntflow.simulation.truth import bed_gy, protraction_factor, self_dose_gy, tia_mbq_h

if TYPE_CHECKING:
    from rntflow.simulation.trial import TrialSpec, TrialSummary


#: Protocol imaging time points (h) and per-point timing jitter SD (h).
PROTOCOL_TIMES_H = (4.0, 24.0, 96.0, 168.0)
JITTER_SD_H = (0.4, 1.5, 6.0, 8.0)
#: SPECT and CT grids (scanner frame); both cover z from -100 to +400 mm around the patient.
SPECT_SHAPE, SPECT_SPACING_MM = (104, 80, 80), (4.8, 4.8, 4.8)
CT_SHAPE, CT_SPACING_MM = (100, 128, 128), (5.0, 3.2, 3.2)
FOV_CENTRE_MM = (0.0, 0.0, 150.0)
#: Energy windows (name, centre keV, width %) as the trial protocol asks.
PHOTOPEAK = ("Lu177_208", 208.0, 20.0)
SCATTER_WINDOWS = (("scatter_low", 170.0, 10.0), ("scatter_high", 250.0, 10.0))
TRIAL_START = dt.datetime(2026, 2, 2, 9, 0, 0)
RADIOPHARMACEUTICAL = "Lu-177-PSMA-617"
NEMA_SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
NEMA_RING_RADIUS_MM = 57.2
#: BED parameters used for the truth of the kidneys: alpha/beta 2.6 Gy, repair half-time 2.8 h
#: (Wessels et al 2008, MIRD Pamphlet No. 20, J Nucl Med 49:1884; as in dosimetry/bed.py).
KIDNEY_ALPHA_BETA_GY, KIDNEY_T_REP_H = 2.6, 2.8

_FIRST = (
    "Hans",
    "Pieter",
    "Jan",
    "Tomasz",
    "Marek",
    "Klaus",
    "Jürgen",
    "Willem",
    "Andrzej",
    "Stefan",
    "Dirk",
    "Piotr",
    "Wolfgang",
    "Maarten",
    "Krzysztof",
    "Bernd",
)
_LAST = (
    "Mustermann",
    "de Vries",
    "Jansen",
    "Kowalski",
    "Nowak",
    "Schmidt",
    "Bakker",
    "Wiśniewski",
    "Müller",
    "Visser",
    "Zieliński",
    "Schneider",
    "Smit",
    "Lewandowski",
    "Fischer",
    "Meijer",
)


def _dicom_name(name: str) -> str:
    first, last = name.split(" ", 1)
    return f"{last.upper()}^{first.upper()}"


def _protocol_windows() -> tuple[tuple[str, float, float], ...]:
    return tuple((n, c * (1 - w / 200), c * (1 + w / 200)) for n, c, w in (PHOTOPEAK, *SCATTER_WINDOWS))


def _recon(site: Site) -> dw.NmRecon:
    cam, vendor = site.camera, site.camera.vendor
    windows = _protocol_windows() if cam.scatter_correction else _protocol_windows()[:1]
    corrections = ("ATTN", "SCAT") if cam.scatter_correction else ("ATTN",)
    return dw.NmRecon(
        cam.manufacturer,
        cam.model,
        cam.serial,
        cam.units,
        windows,
        vendor.collimator,
        corrections,
        vendor.algorithm,
        cam.iterations,
        cam.subsets,
        0.0,
        cam.projections_per_head,
        cam.time_per_projection_s,
        software_versions=vendor.software_versions,
        recon_method=vendor.recon_method,
        post_filter=vendor.post_filter,
        units_attribute=vendor.units_attribute,
        rwvm=vendor.rwvm,
        bqml_ucum=vendor.bqml_ucum,
        total_dose_unit=vendor.total_dose_unit,
    )


def off_protocol_reasons(site: Site) -> list[str]:
    """How a site's reconstruction deviates from the trial protocol (the truth a check must find).

    Vendor names (algorithm, collimator, filter) are not deviations: the site's camera
    profile in the trial config accepts them; a collimator of another energy class is.
    """
    cam = site.camera
    out = []
    if not cam.scatter_correction:
        out += ["no scatter correction", "scatter windows missing"]
    if cam.iterations * cam.subsets < 48:
        out.append(f"iterations x subsets {cam.iterations}x{cam.subsets} < 48")
    if not cam.collimator.upper().startswith("ME"):
        out.append(f"collimator {cam.collimator}")
    return out


class SessionWriter:
    """Writes one SPECT/CT session (study) of a subject or phantom."""

    def __init__(self, out: Path, spec: TrialSpec, summary: TrialSummary):
        self.out, self.spec, self.summary = out, spec, summary
        self.fine = anatomy_grid()
        self.spect_grid = Grid.centred(SPECT_SHAPE, SPECT_SPACING_MM, FOV_CENTRE_MM)
        self.ct_grid = Grid.centred(CT_SHAPE, CT_SPACING_MM, FOV_CENTRE_MM)
        self.nuc = nuclide("Lu-177")

    def session(
        self,
        site: Site,
        ident: dw.Identity,
        label: str,
        description: str,
        when: dt.datetime,
        anatomy: Anatomy,
        labels: np.ndarray,
        mean_activity_mbq: np.ndarray,
        pharm: dw.Radiopharmaceutical,
        pose: Pose,
        rng: np.random.Generator,
        rois: list[tuple[str, str, Compartment]] | None = None,
    ) -> dict:
        key = f"{site.site_id}/{ident.patient_id}/{when:%Y%m%d%H%M}/{label}"
        study_dir = self.out / "dicom" / site.site_id / ident.patient_id / f"{when:%Y%m%d}_{label}"
        sess = dw.Session(
            dw.uid(key + "/study"),
            dw.uid(key + "/for"),
            f"A{int(rng.integers(10**8, 10**9))}",
            description,
            when,
            f"{site.camera.manufacturer.split()[0][:8]}{site.site_id[-2:]}",
            site.name,
        )
        cam = site.camera
        duration_s = cam.acquisition_duration_s
        expected = expected_counts(
            labels,
            self.fine,
            mean_activity_mbq,
            self.spect_grid,
            pose,
            cam.sensitivity_cps_per_mbq,
            duration_s,
            cam.fwhm_mm,
            cam.scatter_fraction,
        )
        counts = noisy_counts(expected, cam.noise_amplification, rng)
        if cam.units == "BQML":
            # vendor Bq/mL at acquisition start: counts / (S tau), tau the decay-weighted scan time (s)
            tau_s = decay_integral_s(duration_s, self.nuc.half_life_h * 3600.0)
            values = (
                counts / (cam.sensitivity_cps_per_mbq * tau_s) * 1e6 / self.spect_grid.voxel_ml * cam.vendor_scale_error
            )
        else:
            values = counts
        dw.write_nm(
            study_dir / "NM" / "NM_0001.dcm",
            values,
            self.spect_grid,
            ident,
            sess,
            _recon(site),
            pharm,
            dw.uid(key + "/nm-series"),
            dw.uid(key + "/nm"),
        )
        hu = ct_hu(labels, self.fine, anatomy.hu_lut(), self.ct_grid, pose, rng)
        ct_series = dw.uid(key + "/ct-series")
        refs = dw.write_ct(
            study_dir / "CT", hu, self.ct_grid, ident, sess, ct_series, cam.manufacturer, cam.model, cam.serial
        )
        if rois:
            self._rtstruct(study_dir, key, site, ident, sess, ct_series, refs, rois, pose, when)
        files = list(study_dir.rglob("*.dcm"))
        self.summary.n_studies += 1
        self.summary.n_files += len(files)
        self.summary.n_bytes += sum(f.stat().st_size for f in files)
        self.summary.studies.append(str(study_dir.relative_to(self.out)))
        return {
            "study_dir": str(study_dir.relative_to(self.out)),
            "acquisition_datetime": when.isoformat(),
            "duration_s": duration_s,
            "pose": {"angle_deg": pose.angle_deg, "translation_mm": list(pose.translation_mm)},
            "expected_total_counts": float(expected.sum()),
            "total_counts": float(counts.sum()),
        }

    def _rtstruct(
        self,
        study_dir: Path,
        key: str,
        site: Site,
        ident: dw.Identity,
        sess: dw.Session,
        ct_series: str,
        refs: list[tuple[str, float]],
        rois: list[tuple[str, str, Compartment]],
        pose: Pose,
        when: dt.datetime,
    ) -> None:
        colours = [(255, 0, 0), (0, 160, 255), (255, 200, 0), (0, 200, 0), (200, 0, 200), (0, 200, 200)]
        roi_list = []
        for i, (name, kind, comp) in enumerate(rois):
            contours = []
            for k, (_sop, z_mm) in enumerate(refs):
                z_anat = z_mm - pose.translation_mm[2]
                for shape in comp.shapes:
                    poly = section_polygon(shape, z_anat, pose)
                    if poly is not None:
                        poly[:, 2] = z_mm
                        contours.append((k, poly))
            if not contours:
                raise RuntimeError(f"simulator: VOI {comp.voi} lies outside the CT field of view")
            roi_list.append(dw.RoiContours(name, kind, contours, colours[i % len(colours)]))
        dw.write_rtstruct(
            study_dir / "RTSTRUCT" / "RS_0001.dcm",
            ident,
            sess,
            ct_series,
            refs,
            roi_list,
            dw.uid(key + "/rs-series"),
            dw.uid(key + "/rs"),
            when + dt.timedelta(days=1),
        )


def draw_pose(rng: np.random.Generator, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Pose:
    t = tuple(float(c + rng.normal(0.0, 5.0)) for c in centre)
    return Pose(angle_deg=float(rng.normal(0.0, 2.0)), translation_mm=t)


def phantom_anatomies() -> dict[str, Anatomy]:
    """Uniform cylinder (216 x 186 mm inner) and NEMA IEC body phantom (spheres in the z = 0 plane)."""
    cylinder = Anatomy(body=(EllipticCylinder((0.0, 0.0), (108.0, 108.0), -93.0, 93.0),), compartments=())
    spheres = []
    for i, d in enumerate(NEMA_SPHERE_DIAMETERS_MM):
        ang = math.radians(60.0 * i)
        c = (NEMA_RING_RADIUS_MM * math.cos(ang), NEMA_RING_RADIUS_MM * math.sin(ang), 0.0)
        spheres.append(Compartment(f"Sphere_{int(d)}mm", (Ellipsoid(c, (d / 2,) * 3),), "Lesion"))
    lung = Compartment("Lung_insert", (EllipticCylinder((0.0, 0.0), (25.0, 25.0), -90.0, 90.0),), "Lung")
    nema = Anatomy(body=(EllipticCylinder((0.0, 20.0), (147.0, 112.0), -90.0, 90.0),), compartments=(lung, *spheres))
    return {"uniform_cylinder": cylinder, "nema_iec_body": nema}


def simulate_phantoms(
    writer: SessionWriter,
    site: Site,
    phantoms: dict[str, Anatomy],
    labels: dict[str, np.ndarray],
    rng: np.random.Generator,
    truth: dict,
    enrolment: list[dict],
    fills: list[dict],
) -> None:
    """Write a site's QC phantom studies (cylinder, NEMA) and record their enrolment, fills and truth.

    A site without a NEMA phantom (``site.nema_phantom`` false) scans the cylinder only.
    """
    nuc, cam = writer.nuc, site.camera
    scans = [("uniform_cylinder", "CYL", "QC UNIFORM CYLINDER"), ("nema_iec_body", "NEMA", "QC NEMA IEC BODY")]
    for kind, code, desc in scans if site.nema_phantom else scans[:1]:
        anat = phantoms[kind]
        ref_time = TRIAL_START - dt.timedelta(days=14, hours=-int(rng.integers(0, 4)))
        acq_time = ref_time + dt.timedelta(hours=float(rng.uniform(1.0, 3.0)))
        t_h = (acq_time - ref_time).total_seconds() / 3600.0
        lam = nuc.decay_constant_per_h
        # mean activity over the scan / activity at the reference time
        mean_decay = (
            math.exp(-lam * t_h)
            * decay_integral_s(cam.acquisition_duration_s, nuc.half_life_h * 3600.0)
            / cam.acquisition_duration_s
        )
        sbr = None
        if kind == "uniform_cylinder":
            total_mbq = float(rng.uniform(350.0, 550.0))
            per_label = np.array([0.0, total_mbq])
            volume_ml = anat.body_volume_ml
        else:
            sbr = float(rng.choice([5.0, 8.0]))
            bkg_ml = anat.remainder_volume_ml
            sph_ml = sum(c.volume_ml for c in anat.compartments if c.voi.startswith("Sphere"))
            bkg_conc = float(rng.uniform(0.020, 0.030))
            total_mbq = bkg_conc * (bkg_ml + sbr * sph_ml)
            per_label = np.array(
                [0.0, bkg_conc * bkg_ml]
                + [0.0 if c.tissue == "Lung" else sbr * bkg_conc * c.volume_ml for c in anat.compartments]
            )
            volume_ml = bkg_ml
        patient_id = f"QC-{code}-{site.site_id}"
        subject_id = f"{site.site_id}-PH-{code}"
        ident = dw.Identity(f"QC^{code}", patient_id, "", "O")
        pharm = dw.Radiopharmaceutical("Lu-177 chloride", nuc.name, total_mbq, ref_time, nuc.half_life_h * 3600)
        info = writer.session(
            site,
            ident,
            code,
            desc,
            acq_time,
            anat,
            labels[kind],
            per_label * mean_decay,
            pharm,
            draw_pose(rng, FOV_CENTRE_MM),
            rng,
        )
        enrolment.append(
            {"site_id": site.site_id, "patient_id": patient_id, "subject_id": subject_id, "kind": "phantom"}
        )
        fills.append(
            {
                "subject_id": subject_id,
                "phantom_type": kind,
                "total_activity_mbq": round(total_mbq, 2),
                "reference_datetime": ref_time.isoformat(),
                "volume_ml": round(volume_ml, 1),
                "sphere_to_background_ratio": sbr if sbr is not None else "",
            }
        )
        truth["phantoms"].append(
            {
                "subject_id": subject_id,
                "site_id": site.site_id,
                "phantom_type": kind,
                "total_activity_mbq": total_mbq,
                "reference_datetime": ref_time.isoformat(),
                "activity_at_acquisition_start_mbq": total_mbq * math.exp(-lam * t_h),
                "mean_activity_during_acquisition_mbq": total_mbq * mean_decay,
                "sphere_to_background_ratio": sbr,
                "volume_ml": volume_ml,
                **info,
            }
        )


def _timepoints(idx: int, cycle: int, n_cycles: int, rng: np.random.Generator) -> list[tuple[float, float, str]]:
    """(nominal h, actual h, status) of the scans of one cycle, with the designed irregularities.

    Every fourth subject is imaged at one time point (~72-80 h) after cycle 1; subject
    indices 2, 7, ... miss the last scan of their last cycle; indices 4, 9, ... are scanned
    late (> 192 h) at the end of cycle 1.
    """
    if idx % 4 == 3 and cycle > 1:
        return [(96.0, float(rng.uniform(72.0, 80.0)), "single_time_point")]
    out = []
    for nominal, sd in zip(PROTOCOL_TIMES_H, JITTER_SD_H):
        t = float(nominal + np.clip(rng.normal(0.0, sd), -2 * sd, 2 * sd))
        status = "ok"
        if nominal == PROTOCOL_TIMES_H[-1]:
            if idx % 5 == 2 and cycle == n_cycles:
                continue
            if idx % 5 == 4 and cycle == 1:
                t, status = float(rng.uniform(200.0, 215.0)), "late"
        out.append((nominal, t, status))
    return out


def sample_identity(site: Site, rng: np.random.Generator) -> tuple[str, dt.date, dw.Identity]:
    """Draw a subject's name, birth date and site patient ID (their DICOM identity)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    birth = dt.date(int(rng.integers(1940, 1966)), int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    ident = dw.Identity(
        _dicom_name(f"{first} {last}"),
        f"{site.patient_id_prefix}{int(rng.integers(10**6, 10**7))}",
        birth.strftime("%Y%m%d"),
        "M",
    )
    return f"{first} {last}", birth, ident


def _cycle_kinetics(base: SubjectKinetics, rng: np.random.Generator) -> SubjectKinetics:
    """The subject's kinetics with this cycle's random variation of uptake fraction and effective half-life."""
    return SubjectKinetics(
        {
            v: CompartmentKinetics(
                k.fraction * float(rng.lognormal(0, 0.08)), k.t_eff_h * float(rng.lognormal(0, 0.05)), k.t_up_h
            )
            for v, k in base.compartments.items()
        }
    )


def _mean_activity_mbq(kin: SubjectKinetics, anat: Anatomy, admin_mbq: float, t_h: float, dur_h: float) -> np.ndarray:
    """Mean activity (MBq) during an acquisition per label: outside (0), remainder, then each compartment."""
    return np.array(
        [0.0, kin.remainder_integral_mbq_h(admin_mbq, t_h, t_h + dur_h) / dur_h]
        + [kin.compartments[c.voi].integral_mbq_h(admin_mbq, t_h, t_h + dur_h) / dur_h for c in anat.compartments]
    )


def _simulate_timepoint(
    writer: SessionWriter,
    site: Site,
    ident: dw.Identity,
    anat: Anatomy,
    labels: np.ndarray,
    rois: list[tuple[str, str, Compartment]],
    kin: SubjectKinetics,
    pharm: dw.Radiopharmaceutical,
    admin: dt.datetime,
    admin_mbq: float,
    cycle: int,
    tp_index: int,
    timepoint: tuple[float, float, str],
    rng: np.random.Generator,
) -> dict:
    """Write the SPECT/CT session of one time point of a cycle and return its ground truth."""
    nominal, t_h, status = timepoint
    when = admin + dt.timedelta(hours=t_h)
    dur_h = site.camera.acquisition_duration_s / 3600.0
    mean_act = _mean_activity_mbq(kin, anat, admin_mbq, t_h, dur_h)
    info = writer.session(
        site,
        ident,
        f"C{cycle}_{int(nominal)}H",
        f"LU177 PSMA C{cycle} SPECT/CT {int(nominal)}H",
        when,
        anat,
        labels,
        mean_act,
        pharm,
        draw_pose(rng),
        rng,
        rois if tp_index == 0 else None,
    )
    info.update(
        {
            "index": tp_index,
            "nominal_h": nominal,
            "t_h": t_h,
            "status": status,
            "reference": tp_index == 0,
            "activity_mbq": {
                c.voi: float(kin.compartments[c.voi].activity_mbq(admin_mbq, t_h)) for c in anat.compartments
            },
        }
    )
    return info


def _simulate_cycle(
    writer: SessionWriter,
    site: Site,
    ident: dw.Identity,
    anat: Anatomy,
    labels: np.ndarray,
    rois: list[tuple[str, str, Compartment]],
    base: SubjectKinetics,
    start: dt.datetime,
    idx: int,
    cycle: int,
    rng: np.random.Generator,
) -> dict:
    """Draw one treatment cycle, write its SPECT/CT sessions and return its ground truth."""
    nuc, spec = writer.nuc, writer.spec
    admin = start + dt.timedelta(weeks=6 * (cycle - 1), days=int(rng.integers(-3, 4)))
    admin_mbq = float(spec.administered_mbq * rng.normal(1.0, 0.03))
    kin = _cycle_kinetics(base, rng)
    pharm = dw.Radiopharmaceutical(RADIOPHARMACEUTICAL, nuc.name, round(admin_mbq, 1), admin, nuc.half_life_h * 3600)
    tps = _timepoints(idx, cycle, spec.cycles, rng)
    cyc = _cycle_truth(anat, kin, admin_mbq, nuc.electron_energy_mev)
    cyc.update(
        {
            "cycle": cycle,
            "administration_datetime": admin.isoformat(),
            "administered_mbq": admin_mbq,
            "method": "single_time_point" if len(tps) == 1 else "multi_time_point",
            "timepoints": [],
            "missing_nominal_h": [n for n in PROTOCOL_TIMES_H if n not in [t[0] for t in tps]] if len(tps) > 1 else [],
        }
    )
    for tp_index, tp in enumerate(tps):
        cyc["timepoints"].append(
            _simulate_timepoint(
                writer, site, ident, anat, labels, rois, kin, pharm, admin, admin_mbq, cycle, tp_index, tp, rng
            )
        )
    return cyc


def simulate_subject(
    writer: SessionWriter,
    site: Site,
    subject_id: str,
    idx: int,
    rng: np.random.Generator,
    truth: dict,
    enrolment: list[dict],
) -> None:
    """Draw one subject, write the studies of all their cycles and record their ground truth and enrolment."""
    nuc, spec = writer.nuc, writer.spec
    anat = sample_anatomy(rng, int(rng.integers(1, 6)))
    labels = anat.label_map(writer.fine)
    tissues = {c.voi: c.tissue for c in anat.compartments}
    masses = {c.voi: c.mass_g for c in anat.compartments}
    base = sample_kinetics(rng, tissues, masses, nuc.electron_energy_mev, nuc.half_life_h)
    name, birth, ident = sample_identity(site, rng)
    enrolment.append(
        {"site_id": site.site_id, "patient_id": ident.patient_id, "subject_id": subject_id, "kind": "patient"}
    )
    rois = [
        (site.voi_spelling.get(c.voi, c.voi), "GTV" if c.voi.startswith("Lesion") else "ORGAN", c)
        for c in anat.compartments
    ]
    subj = {
        "site_id": site.site_id,
        "patient_name": name,
        "patient_id": ident.patient_id,
        "birth_date": birth.isoformat(),
        "n_lesions": len(anat.lesion_diameters_mm),
        "vois": {c.voi: {"volume_ml": c.volume_ml, "mass_g": c.mass_g, "tissue": c.tissue} for c in anat.compartments},
        "cycles": [],
    }
    start = TRIAL_START + dt.timedelta(days=int(rng.integers(0, 60)), hours=float(rng.uniform(1.0, 3.0)))
    for cycle in range(1, spec.cycles + 1):
        subj["cycles"].append(_simulate_cycle(writer, site, ident, anat, labels, rois, base, start, idx, cycle, rng))
    subj["cumulative"] = {
        "dose_gy": {v: sum(c["dose_gy"][v] for c in subj["cycles"]) for v in subj["cycles"][0]["dose_gy"]},
        "bed_gy": {v: sum(c["bed_gy"][v] for c in subj["cycles"]) for v in subj["cycles"][0]["bed_gy"]},
    }
    truth["subjects"][subject_id] = subj


def _cycle_truth(anat: Anatomy, kin: SubjectKinetics, admin_mbq: float, e_mev: float) -> dict:
    tia = {c.voi: tia_mbq_h(kin.compartments[c.voi], admin_mbq) for c in anat.compartments}
    dose = {c.voi: self_dose_gy(tia[c.voi], c.mass_g, e_mev) for c in anat.compartments}
    kid = [anat.compartment("Kidney_L"), anat.compartment("Kidney_R")]
    tia["Kidneys"] = tia["Kidney_L"] + tia["Kidney_R"]
    dose["Kidneys"] = self_dose_gy(tia["Kidneys"], sum(k.mass_g for k in kid), e_mev)
    g = {v: protraction_factor([kin.compartments[v]], KIDNEY_T_REP_H) for v in ("Kidney_L", "Kidney_R")}
    g["Kidneys"] = protraction_factor([kin.compartments["Kidney_L"], kin.compartments["Kidney_R"]], KIDNEY_T_REP_H)
    bed = {v: bed_gy(dose[v], g[v], KIDNEY_ALPHA_BETA_GY) for v in g}
    return {
        "kinetics": {v: asdict(k) for v, k in kin.compartments.items()},
        "tia_mbq_h": tia,
        "dose_gy": dose,
        "bed_gy": bed,
        "kidney_g_factor": g,
        "remainder_fraction": 1.0 - kin.organ_fraction,
    }
