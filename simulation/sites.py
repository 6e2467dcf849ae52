"""Hospitals of the synthetic trial, each with its own SPECT/CT camera and habits.

Site templates cycle when more sites are asked for; every site after the third gets
jittered sensitivity and resolution so that no two are the same. Deliberate faults:

* site 2 (GE) reconstructs in vendor Bq/mL with a +12% scale error (uncorrected by the
  vendor), and names its VOIs in its own spelling;
* site 3 (Mediso) is off-protocol: no scatter correction (only the photopeak window is
  acquired, so scatter adds counts), 2 iterations x 8 subsets (16 < 48 required).

A site may scan only the uniform cylinder (:attr:`Site.nema_phantom` false; by default site 2,
:attr:`rntflow.simulation.trial.TrialSpec.cylinder_only_sites`): no NEMA IEC body phantom,
so its partial-volume correction uses the system FWHM fitted to the cylinder's edge.

Each camera writes its NM reconstructions the way its vendor does (:class:`VendorProfile`;
what vendors send is summarised in the harmonisation code's
``harmonization/nm_conventions.py``): Siemens-like counts without Units (0054,1001) or
RealWorldValueMappingSequence (the NM IOD has no Units; counts are a RECON TOMO's default),
``Flash3D``, ``MELP``, ``XYZ Gauss 0.0``; GE/Hermes-like Bq/mL carried only by
RealWorldValueMappingSequence with the UCUM code ``Bq/ml``, ``OSEM`` with iterations and
subsets spelt out, ``Butterworth 0.48 10``, and RadionuclideTotalDose in Bq (a common vendor
deviation from the NM module's MBq); Mediso-like counts with Units ``CNTS`` and a ``{counts}``
mapping, ``Tera-Tomo``. The trial config accepts each vocabulary through the site's camera
profile (:attr:`VendorProfile.camera_profile`, as in ``deployments/trial.example.yaml``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class VendorProfile:
    """How one vendor's software writes an NM reconstruction header.

    Attributes
    ----------
    name : str
        Short label (``siemens``, ``ge_hermes``, ``mediso``).
    algorithm : str
        Algorithm name as written (``Flash3D``, ``OSEM``, ``Tera-Tomo``).
    recon_method : str
        ReconstructionMethod template with ``{algorithm}``, ``{iterations}``, ``{subsets}``.
    collimator : str
        CollimatorGridName.
    post_filter : tuple of str
        ConvolutionKernel values (SH, VM 1-n: ``("Butterworth", "0.48", "10")``).
    units_attribute : bool
        Whether Units (0054,1001) is written.
    rwvm : {"always", "when_scaled"}
        RealWorldValueMappingSequence always, or only when stored values need a slope.
    bqml_ucum : str
        UCUM code of a Bq/mL mapping (``Bq/ml`` as Hermes writes it).
    total_dose_unit : {"MBq", "Bq"}
        Unit of RadionuclideTotalDose as written.
    software_versions : str
    camera_profile : dict
        The ``sites[].cameras`` entry that accepts this vocabulary in the trial config.
    """

    name: str
    algorithm: str
    recon_method: str
    collimator: str
    post_filter: tuple[str, ...]
    units_attribute: bool
    rwvm: Literal["always", "when_scaled"]
    bqml_ucum: str = "Bq/ml"
    total_dose_unit: Literal["MBq", "Bq"] = "MBq"
    software_versions: str = "VA10"
    camera_profile: dict = field(default_factory=dict)


SIEMENS = VendorProfile(
    "siemens",
    "Flash3D",
    "{algorithm} {iterations}i{subsets}s",
    "MELP",
    ("XYZ Gauss 0.0",),
    units_attribute=False,
    rwvm="when_scaled",
    software_versions="VB22",
    camera_profile={
        "manufacturer": "SIEMENS",
        "algorithms": ["Flash3D", "xSPECT"],
        "collimators": ["MELP"],
        "post_filters": ["XYZ Gauss 0.0"],
    },
)
GE_HERMES = VendorProfile(
    "ge_hermes",
    "OSEM",
    "{algorithm} {iterations} iterations {subsets} subsets",
    "MEGP",
    ("Butterworth", "0.48", "10"),
    units_attribute=False,
    rwvm="always",
    bqml_ucum="Bq/ml",
    total_dose_unit="Bq",
    software_versions="HybridRecon 4.0",
    camera_profile={
        "manufacturer": "GE",
        "algorithms": ["OSEM3D", "Evolution"],
        "collimators": ["MEGP", "MEHS"],
        "matrix_sizes": [128],
        "post_filters": ["Butterworth 0.48 10"],
        "scatter_evidence": ["corrected_image", "energy_windows", "text"],
        "scatter_text_patterns": ["scatter correct"],
    },
)
MEDISO = VendorProfile(
    "mediso",
    "Tera-Tomo",
    "{algorithm} {iterations}i{subsets}s",
    "ME",
    ("NONE",),
    units_attribute=True,
    rwvm="always",
    software_versions="InterView 3.08",
    camera_profile={"manufacturer": "MEDISO", "algorithms": ["Tera-Tomo"]},
)


@dataclass(frozen=True)
class Camera:
    """A SPECT/CT system and how the site reconstructs with it.

    Attributes
    ----------
    manufacturer, model, serial : str
        As written to DICOM.
    sensitivity_cps_per_mbq : float
        True system sensitivity for 177Lu in the 208 keV window (reconstructed counts per
        second of acquisition per MBq in the field of view).
    fwhm_mm : float
        Reconstructed spatial resolution (Gaussian FWHM, mm).
    units : str
        ``CNTS`` or ``BQML`` (vendor-quantified).
    vendor_scale_error : float
        Multiplicative error of a vendor Bq/mL reconstruction (1.0 = exact).
    scatter_correction : bool
        Whether scatter is corrected; if not, ``scatter_fraction`` of extra counts appear.
    scatter_fraction : float
        Scatter-to-primary ratio in the photopeak window when uncorrected.
    iterations, subsets : int
        OSEM settings.
    vendor : VendorProfile
        How the camera's software writes the NM header (algorithm, collimator and filter
        names, units, RadionuclideTotalDose unit).
    projections_per_head : int
        Views per detector head (two heads).
    time_per_projection_s : float
        Seconds per view.
    noise_amplification : float
        Variance-to-mean ratio of reconstructed voxel counts (OSEM noise is not Poisson).
    """

    manufacturer: str
    model: str
    serial: str
    sensitivity_cps_per_mbq: float
    fwhm_mm: float
    units: str = "CNTS"
    vendor_scale_error: float = 1.0
    scatter_correction: bool = True
    scatter_fraction: float = 0.0
    iterations: int = 6
    subsets: int = 16
    vendor: VendorProfile = SIEMENS
    projections_per_head: int = 60
    time_per_projection_s: float = 20.0
    noise_amplification: float = 3.0

    @property
    def acquisition_duration_s(self) -> float:
        return self.projections_per_head * self.time_per_projection_s

    @property
    def collimator(self) -> str:
        """Collimator name as the vendor writes it."""
        return self.vendor.collimator


@dataclass(frozen=True)
class Site:
    """One hospital of the trial.

    ``nema_phantom`` false: the site's physicists scan only the uniform cylinder (no NEMA
    IEC body phantom), as many sites do.
    """

    site_id: str
    name: str
    calling_ae_title: str
    camera: Camera
    voi_spelling: dict[str, str]
    patient_id_prefix: str
    nema_phantom: bool = True


_GE_SPELLING = {
    "Kidney_L": "LT KIDNEY",
    "Kidney_R": "RT KIDNEY",
    "Liver": "LIVER",
    "Spleen": "SPLEEN",
    "Parotid_L": "LT PAROTID",
    "Parotid_R": "RT PAROTID",
    "Glnd_Submand_L": "LT SUBMANDIBULAR",
    "Glnd_Submand_R": "RT SUBMANDIBULAR",
    "Bone_Marrow": "MARROW L-SPINE",
    "Lungs": "LUNGS",
}

_TEMPLATES = (
    (
        "Amsterdam",
        "SITE01_PACS",
        Camera("SIEMENS", "Symbia Intevo Bold", "1053", 10.4, 11.0, vendor=SIEMENS),
        {},
        "AMC",
    ),
    (
        "Krakow",
        "GEPACS02",
        Camera(
            "GE MEDICAL SYSTEMS",
            "Discovery NM/CT 670 Pro",
            "GE4471",
            11.6,
            12.5,
            units="BQML",
            vendor_scale_error=1.12,
            iterations=4,
            subsets=12,
            vendor=GE_HERMES,
        ),
        _GE_SPELLING,
        "KRK",
    ),
    (
        "Wuerzburg",
        "ANYSCAN3",
        Camera(
            "MEDISO",
            "AnyScan SC",
            "MD-2291",
            12.9,
            14.0,
            scatter_correction=False,
            scatter_fraction=0.28,
            iterations=2,
            subsets=8,
            vendor=MEDISO,
        ),
        {},
        "WUE",
    ),
)


def default_sites(n_sites: int, rng: np.random.Generator, cylinder_only_sites: Collection[str] = ()) -> list[Site]:
    """The trial's sites: the three templates, then jittered copies.

    Parameters
    ----------
    n_sites : int
        Number of sites (>= 1).
    rng : numpy.random.Generator
        Randomness for sites beyond the templates.
    cylinder_only_sites : collection of str
        Site ids (``SITE02``) that scan no NEMA IEC body phantom, only the uniform cylinder.
    """
    sites = []
    for i in range(n_sites):
        name, ae, cam, spelling, prefix = _TEMPLATES[i % len(_TEMPLATES)]
        site_id = f"SITE{i + 1:02d}"
        if i >= len(_TEMPLATES):
            cam = replace(
                cam,
                serial=f"{cam.serial}-{i + 1}",
                sensitivity_cps_per_mbq=float(np.clip(cam.sensitivity_cps_per_mbq * rng.uniform(0.9, 1.1), 9.5, 13.5)),
                fwhm_mm=float(np.clip(cam.fwhm_mm + rng.uniform(-1.5, 1.5), 8.0, 16.0)),
            )
            ae = f"{ae[:12]}_{i + 1:02d}"
            name = f"{name} {i // len(_TEMPLATES) + 1}"
        nema = site_id not in cylinder_only_sites
        sites.append(Site(site_id, name, ae, cam, dict(spelling), f"{prefix}{i + 1:02d}", nema_phantom=nema))
    return sites
