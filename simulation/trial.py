"""``rntflow simulate``: a synthetic multicentre 177Lu-PSMA trial with its ground truth.

Output folder::

    dicom/<site_id>/<PatientID>/<date>_<study>/{NM,CT,RTSTRUCT}/...   what each PACS will push
    enrolment.csv       the coordinators' enrolment table (PatientID -> trial pseudonym)
    phantom_fills.csv   the site physicists' phantom fill log
    outcomes.csv        clinical outcomes (follow-up), for ``rntflow outcomes import``
    trial.yaml          a trial config matching these sites (listener, protocol, limits)
    truth.json          ground truth: sites, phantoms, subjects, cycles, time points
    truth_voi_doses.csv one row per subject, cycle and VOI: mass, TIA, dose, BED

Everything is decided by ``seed``; the same arguments give byte-identical DICOM. This module
runs the trial and writes the tables and the config; what each site scans (protocol, phantoms,
subjects, cycles, time points) is :mod:`rntflow.simulation.sessions`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rntflow.core.enrolment import ENROLMENT_COLUMNS
from rntflow.core.fills import FILL_COLUMNS
from rntflow.simulation.outcomes import OUTCOME_MODELS, draw_outcomes
from rntflow.simulation.sessions import (
    KIDNEY_ALPHA_BETA_GY,
    KIDNEY_T_REP_H,
    NEMA_SPHERE_DIAMETERS_MM,
    PHOTOPEAK,
    SCATTER_WINDOWS,
    SPECT_SHAPE,
    SPECT_SPACING_MM,
    SessionWriter,
    off_protocol_reasons,
    phantom_anatomies,
    simulate_phantoms,
    simulate_subject,
)
from rntflow.simulation.sites import Site, default_sites
from rntflow.simulation.truth import sphere_rc
from rntflow.warehouse.outcomes import OUTCOME_COLUMNS


@dataclass(frozen=True)
class TrialSpec:
    """Size and randomness of a simulated trial."""

    n_sites: int = 3
    subjects_per_site: int = 2
    cycles: int = 2
    seed: int = 20261123
    trial_id: str = "RNT-DEMO-LU177"
    administered_mbq: float = 7400.0
    #: Subjects per TARE site (two radioembolisation sites after the 177Lu ones; 0 = no TARE arm;
    #: :mod:`rntflow.simulation.tare`).
    tare_subjects_per_site: int = 0
    #: Sites that scan only the uniform cylinder, no NEMA IEC body phantom (their recovery
    #: comes from the cylinder's edge-spread FWHM). SITE02 by default: the GE/Hermes site, whose
    #: deliberate fault (vendor Bq/mL +12 %) the cylinder alone reveals, while SITE01 keeps the
    #: clean NEMA reference and SITE03's NEMA shows its uncorrected scatter. ``()``: NEMA everywhere.
    cylinder_only_sites: tuple[str, ...] = ("SITE02",)


@dataclass
class TrialSummary:
    """What was written (counts of objects and bytes)."""

    out_dir: Path
    n_sites: int = 0
    n_subjects: int = 0
    n_studies: int = 0
    n_files: int = 0
    n_bytes: int = 0
    studies: list[str] = field(default_factory=list)


def simulate_trial(
    out_dir: str | Path, spec: TrialSpec = TrialSpec(), progress: Callable[[str], None] | None = None
) -> TrialSummary:
    """Write the synthetic trial to ``out_dir`` (see module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _m: None)
    rng = np.random.default_rng(spec.seed)
    sites = default_sites(spec.n_sites, rng, spec.cylinder_only_sites)
    summary = TrialSummary(out_dir=out, n_sites=len(sites))
    writer = SessionWriter(out, spec, summary)
    nuc = writer.nuc
    truth: dict = {
        "trial_id": spec.trial_id,
        "seed": spec.seed,
        "spec": asdict(spec),
        "radionuclide": nuc.name,
        "half_life_h": nuc.half_life_h,
        "electron_energy_mev": nuc.electron_energy_mev,
        "dose_method": "analytic TIA x electron energy / analytic mass (simulation/truth.py)",
        "sites": {},
        "phantoms": [],
        "subjects": {},
        "outcome_models": OUTCOME_MODELS,
    }
    enrolment: list[dict] = []
    fills: list[dict] = []
    phantoms = phantom_anatomies()
    phantom_labels = {k: a.label_map(writer.fine) for k, a in phantoms.items()}
    subject_counter = 0
    for site in sites:
        cam = site.camera
        truth["sites"][site.site_id] = {
            "name": site.name,
            "calling_ae_title": site.calling_ae_title,
            "camera": {"manufacturer": cam.manufacturer, "model": cam.model, "serial": cam.serial},
            "sensitivity_cps_per_mbq": cam.sensitivity_cps_per_mbq,
            "fwhm_mm": cam.fwhm_mm,
            "units": cam.units,
            "vendor_scale_error": cam.vendor_scale_error,
            "scatter_correction": cam.scatter_correction,
            "scatter_fraction": cam.scatter_fraction,
            "iterations": cam.iterations,
            "subsets": cam.subsets,
            "off_protocol": off_protocol_reasons(site),
            "vendor": {
                "profile": cam.vendor.name,
                "algorithm": cam.vendor.algorithm,
                "collimator": cam.vendor.collimator,
                "post_filter": " ".join(cam.vendor.post_filter),
                "units_attribute": cam.vendor.units_attribute,
                "rwvm": cam.vendor.rwvm,
                "total_dose_unit": cam.vendor.total_dose_unit,
            },
            "rc_hot_sphere": {f"{d:g}": sphere_rc(d, cam.fwhm_mm) for d in NEMA_SPHERE_DIAMETERS_MM},
            "nema_phantom": site.nema_phantom,
            "voi_spelling": site.voi_spelling,
        }
        say(f"{site.site_id}: phantoms")
        simulate_phantoms(writer, site, phantoms, phantom_labels, rng, truth, enrolment, fills)
        for s in range(spec.subjects_per_site):
            subject_id = f"{spec.trial_id.split('-')[0]}-{site.site_id[-2:]}{s + 1:03d}"
            say(f"{site.site_id}: subject {subject_id}")
            simulate_subject(writer, site, subject_id, subject_counter, rng, truth, enrolment)
            subject_counter += 1
    summary.n_subjects = subject_counter
    outcomes = draw_outcomes(truth, rng)
    if spec.tare_subjects_per_site > 0:  # own generator: the 177Lu part above stays byte-identical
        from rntflow.simulation.tare import simulate_tare

        outcomes += simulate_tare(writer, sites, truth, enrolment, fills, say)
    _write_tables(out, spec, sites, truth, enrolment, fills, outcomes)
    from rntflow.simulation.blood import write_blood_files  # own generator: the DICOM stays byte-identical

    write_blood_files(out, truth, spec.seed)  # blood_samples.csv, truth_marrow.csv
    say(f"wrote {summary.n_studies} studies, {summary.n_files} files, {summary.n_bytes / 1e6:.1f} MB")
    return summary


def trial_config(spec: TrialSpec, sites: list[Site], data_dir: str = "data") -> dict:
    """The trial YAML (as a dict) for these sites; ``deployments/trial.example.yaml`` is its default.

    With ``spec.tare_subjects_per_site > 0`` the TARE sites and ``tare_arms`` are added
    (:func:`rntflow.simulation.tare.tare_config`).
    """
    ph_name, ph_c, ph_w = PHOTOPEAK
    cfg = {
        "trial_id": spec.trial_id,
        "listener": {
            "ae_title": "RNTFLOW",
            "host": "127.0.0.1",
            "port": 11112,
            "quiet_period_s": 5,
            "min_free_disk_mb": 200,
            "tls": {"enabled": False},
        },
        "paths": {
            "spool": f"{data_dir}/spool",
            "warehouse": f"{data_dir}/warehouse",
            "keys": f"{data_dir}/keys",
            "enrolment": "enrolment.csv",
            "phantom_fills": "phantom_fills.csv",
            "prefect_home": f"{data_dir}/prefect",
            "products": f"{data_dir}/products",
        },
        "sites": [
            {
                "id": s.site_id,
                "name": f"{s.name} ({s.camera.manufacturer.title()} {s.camera.model})",
                "calling_ae_titles": [s.calling_ae_title],
                **({"voi_name_map": {v: k for k, v in s.voi_spelling.items()}} if s.voi_spelling else {}),
                "cameras": [dict(s.camera.vendor.camera_profile)],
            }
            for s in sites
        ],
        "protocol": {
            "radionuclide": "Lu-177",
            "photopeak_windows": [{"name": ph_name, "center_kev": ph_c, "width_pct": ph_w}],
            "scatter_windows": [{"name": n, "center_kev": c, "width_pct": w} for n, c, w in SCATTER_WINDOWS],
            "collimator": "MEGP",
            "attenuation_correction": True,
            "scatter_correction": True,
            "algorithm": "OSEM",
            "min_iterations_x_subsets": 48,
            "max_iterations_x_subsets": 480,
            "matrix_size": SPECT_SHAPE[2],
            "voxel_size_mm": SPECT_SPACING_MM[2],
            "voxel_tolerance_mm": 0.5,
            "max_post_filter_fwhm_mm": 0.0,
            "min_projections": 60,
            "min_time_per_projection_s": 10.0,
            "time_points": [
                {"nominal_h": 4, "earliest_h": 2, "latest_h": 8},
                {"nominal_h": 24, "earliest_h": 18, "latest_h": 30},
                {"nominal_h": 96, "earliest_h": 72, "latest_h": 120},
                {"nominal_h": 168, "earliest_h": 144, "latest_h": 192},
            ],
            "dosimetry_method": "multi_time_point",
            "min_time_points_for_fit": 3,
        },
        "dose_limits": {
            "Kidneys": {"dose_gy": 23.0, "bed_gy": 40.0},
            "Bone_Marrow": {"dose_gy": 2.0},
            "Parotid_L": {"dose_gy": 20.0},
            "Parotid_R": {"dose_gy": 20.0},
        },
        "radiobiology": {
            v: {"alpha_beta_gy": KIDNEY_ALPHA_BETA_GY, "t_rep_h": KIDNEY_T_REP_H}
            for v in ("Kidney_L", "Kidney_R", "Kidneys")
        },
        "voi_name_map": {},
        "calibration": {
            "validity_days": 180,
            "drift_tolerance_pct": 5.0,
            "phantom_patient_id_pattern": "^QC[-_]",
            # NEMA sphere diameter (mm) -> (min RC, max RC), as deployments/trial.example.yaml
            "reference_rc_band": {"37": [0.60, 0.95], "28": [0.50, 0.85], "22": [0.38, 0.72], "17": [0.25, 0.58]},
        },
        "dosimetry": {"engine": "voxel_dpk", "partial_volume_correction": True},
    }
    if spec.tare_subjects_per_site > 0:
        from rntflow.simulation.tare import tare_config
        from rntflow.simulation.tare_sites import imaging_protocols_config

        tare_site_entries, cfg["tare_arms"] = tare_config([s.site_id for s in sites])
        cfg["sites"] += tare_site_entries
        cfg["imaging_protocols"] = imaging_protocols_config()
    return cfg


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})


def _write_tables(
    out: Path,
    spec: TrialSpec,
    sites: list[Site],
    truth: dict,
    enrolment: list[dict],
    fills: list[dict],
    outcomes: list[dict],
) -> None:
    # the coordinators' files in the columns the pipeline reads (one declaration each)
    _write_csv(out / "enrolment.csv", enrolment, list(ENROLMENT_COLUMNS))
    _write_csv(out / "phantom_fills.csv", fills, list(FILL_COLUMNS))
    _write_csv(out / "outcomes.csv", outcomes, list(OUTCOME_COLUMNS))
    rows = []
    for sid, subj in truth["subjects"].items():
        for cyc in subj["cycles"]:
            for voi, dose in cyc["dose_gy"].items():
                mass = (
                    subj["vois"][voi]["mass_g"]
                    if voi in subj["vois"]
                    else sum(subj["vois"][k]["mass_g"] for k in ("Kidney_L", "Kidney_R"))
                )
                rows.append(
                    {
                        "subject_id": sid,
                        "site_id": subj["site_id"],
                        "cycle": cyc["cycle"],
                        "voi": voi,
                        "mass_g": round(mass, 3),
                        "tia_mbq_h": round(cyc["tia_mbq_h"][voi], 4),
                        "dose_gy": round(dose, 5),
                        "bed_gy": round(cyc["bed_gy"].get(voi, float("nan")), 5),
                        "method": cyc["method"],
                        "n_timepoints": len(cyc["timepoints"]),
                    }
                )
    _write_csv(
        out / "truth_voi_doses.csv",
        rows,
        ["subject_id", "site_id", "cycle", "voi", "mass_g", "tia_mbq_h", "dose_gy", "bed_gy", "method", "n_timepoints"],
    )
    if "tare" in truth:
        from rntflow.simulation.tare import TRUTH_TARE_COLUMNS, truth_rows

        _write_csv(out / "truth_tare.csv", truth_rows(truth["tare"]), list(TRUTH_TARE_COLUMNS))
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    (out / "trial.yaml").write_text(
        "# rntflow trial configuration written by `rntflow simulate` for this synthetic trial\n"
        + yaml.safe_dump(trial_config(spec, sites), sort_keys=False)
    )
