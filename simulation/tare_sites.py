"""The two radioembolisation (TARE) sites of the synthetic trial and their cameras.

* ``SITE04`` (QuiremSpheres, 166Ho): Siemens Symbia Intevo-like SPECT/CT (Manufacturer
  ``SIEMENS NM``), medium-energy collimator (``MELP``), photopeak 81 keV 15 % and an upper
  scatter window 118 keV 12 % (the 166Ho protocol of Stella et al 2021, EJNMMI Phys 8:22,
  "Gamma camera characterization at high holmium-166 activity in liver radioembolization"),
  reconstruction with attenuation and scatter correction (CorrectedImage ATTN\\SCAT), counts
  without Units. 166Ho scout (QuiremScout ~250 MBq) and post-treatment 166Ho SPECT/CT.
* ``SITE05`` (SIR-Spheres, 90Y): 99mTc-MAA scout on a GE Discovery NM/CT 670-like SPECT/CT
  (LEHR, 140 keV 15 %, counts) and post-treatment 90Y TOF PET/CT on a Siemens Biograph
  Vision-like scanner (PET Image Storage, Bq/mL, :mod:`rntflow.simulation.dicom_pet`).

Camera physics (the simulator's truth, in ``truth.json`` ``tare_sites``):

* 166Ho SPECT sensitivity 3.6 cps/MBq, about a third of the 177Lu sensitivity of the same
  camera model at SITE01 (10.4 cps/MBq). Synthetic figure, reasoned from ICRP-107 yields and
  the window: the 80.6 keV gamma has 6.7 % yield against 11.0 % for 177Lu's 208 keV (x 0.61);
  a 15 % window at 81 keV holds ~75 % of a NaI photopeak whose resolution there is ~14 %,
  against ~95 % for 20 % at 208 keV (x 0.8); the scatter correction removes the 166Ho
  downscatter and bremsstrahlung from the 1.38-1.83 MeV lines (~x 0.7 of what the window
  records as primary-like counts): 10.4 x 0.61 x 0.8 x 0.7 = 3.6.
  Resolution 13 mm FWHM (ME collimator at 81 keV). The scatter correction leaves a residual
  broad component of 4 % of the primary counts (60 mm FWHM, as the uncorrected scatter of
  :mod:`rntflow.simulation.imaging`): why a 166Ho SPECT shows a small apparent lung shunt even
  without shunting (Stella et al 2021). Dual-window subtraction adds the scatter window's
  variance: noise amplification 4.5 (3.0 for the 177Lu cameras).
* 99mTc-MAA SPECT: 140 cps/MBq (LEHR, synthetic; only count ratios are used), 9 mm FWHM.
* 90Y TOF PET: 6 mm FWHM; values in Bq/mL decay-corrected to the acquisition start, with a
  vendor scale error of +6 % (corrected by the site's PET phantom cross-calibration); noise:
  see :func:`rntflow.simulation.tare.pet_noise_sd_bqml`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rntflow.simulation import dicom_writers as dw
from rntflow.simulation.sites import VendorProfile

#: DICOM CID 18 codes (PS3.16) of the TARE radionuclides: SNOMED CT for 99mTc and 90Y; CID 18
#: gives 166Ho only as NCIt C1943 (SNOMED CT has no 166Ho concept in CID 18).
TARE_RADIONUCLIDE_CODES = {
    "Tc-99m": ("72454006", "SCT", "^99m^Technetium"),
    "Y-90": ("14691008", "SCT", "^90^Yttrium"),
    "Ho-166": ("C1943", "NCIt", "^166^Holmium"),
}
#: 90Y internal pair production: positrons per decay (Selwyn et al 2007, Appl Radiat Isot 65:318).
Y90_POSITRON_FRACTION = 3.2e-5


@dataclass(frozen=True)
class SpectCamera:
    """A TARE SPECT/CT camera as the simulator images with it and writes its header."""

    manufacturer: str
    model: str
    serial: str
    sensitivity_cps_per_mbq: float
    fwhm_mm: float
    residual_scatter_fraction: float
    noise_amplification: float
    windows: tuple[tuple[str, float, float], ...]  # (name, centre keV, width %)
    collimator: str
    corrections: tuple[str, ...]
    algorithm: str
    iterations: int
    subsets: int
    projections_per_head: int
    time_per_projection_s: float
    vendor: VendorProfile

    @property
    def acquisition_duration_s(self) -> float:
        return self.projections_per_head * self.time_per_projection_s

    def recon(self) -> dw.NmRecon:
        """The NM header fields (counts; windows as lower/upper keV)."""
        v = self.vendor
        return dw.NmRecon(
            self.manufacturer,
            self.model,
            self.serial,
            "CNTS",
            tuple((n, c * (1 - w / 200), c * (1 + w / 200)) for n, c, w in self.windows),
            self.collimator,
            self.corrections,
            self.algorithm,
            self.iterations,
            self.subsets,
            0.0,
            self.projections_per_head,
            self.time_per_projection_s,
            software_versions=v.software_versions,
            recon_method=v.recon_method,
            post_filter=v.post_filter,
            units_attribute=v.units_attribute,
            rwvm=v.rwvm,
            bqml_ucum=v.bqml_ucum,
            total_dose_unit=v.total_dose_unit,
        )


@dataclass(frozen=True)
class PetCamera:
    """A TOF PET/CT as the simulator images with it (see :mod:`rntflow.simulation.dicom_pet`)."""

    manufacturer: str
    model: str
    serial: str
    fwhm_mm: float
    vendor_scale_error: float
    detection_efficiency: float  # coincidences detected per positron in the FOV
    background_counts_per_voxel: float  # randoms (176Lu of LSO) equivalent per voxel
    noise_amplification: float
    bed_duration_s: float
    software_versions: str = "VR20B"


SIEMENS_HO = VendorProfile(
    "siemens",
    "Flash3D",
    "{algorithm} {iterations}i{subsets}s",
    "MELP",
    ("XYZ Gauss 0.0",),
    units_attribute=False,
    rwvm="when_scaled",
    software_versions="VB22",
)
GE_TC = VendorProfile(
    "ge_hermes",
    "OSEM",
    "{algorithm} {iterations} iterations {subsets} subsets",
    "LEHR",
    ("Butterworth", "0.48", "10"),
    units_attribute=False,
    rwvm="always",
    total_dose_unit="MBq",
    software_versions="Xeleris 4.0",
)

HO_CAMERA = SpectCamera(
    "SIEMENS NM",
    "Symbia Intevo Bold",
    "1187",
    3.6,
    13.0,
    0.04,
    4.5,
    (("Ho166_81", 81.0, 15.0), ("Ho166_scat_118", 118.0, 12.0)),
    "MELP",
    ("ATTN", "SCAT"),
    "Flash3D",
    8,
    8,
    60,
    30.0,
    SIEMENS_HO,
)
TC_CAMERA = SpectCamera(
    "GE MEDICAL SYSTEMS",
    "Discovery NM/CT 670",
    "GE5512",
    140.0,
    9.0,
    0.0,
    3.0,
    (("Tc99m_140", 140.0, 15.0), ("Tc99m_scat_120", 120.0, 10.0)),
    "LEHR",
    ("ATTN", "SCAT"),
    "OSEM",
    4,
    10,
    60,
    20.0,
    GE_TC,
)
PET_CAMERA = PetCamera("SIEMENS", "Biograph Vision 600", "PV1042", 6.0, 1.06, 0.05, 20.0, 2.0, 900.0)


@dataclass(frozen=True)
class TareSite:
    """One TARE hospital: its arm, device and cameras."""

    site_id: str
    name: str
    calling_ae_title: str
    patient_id_prefix: str
    arm_id: str
    device: str
    scout_agent: str
    post_imaging: str
    scout_camera: SpectCamera
    post_camera: SpectCamera | PetCamera

    @property
    def voi_spelling(self) -> dict[str, str]:  # the 177Lu writer's RTSTRUCT helper reads it
        return {}


def tare_site_ids(lu_site_ids: list[str]) -> list[str]:
    """SITE04 and SITE05 when free, else the next free SITEnn numbers."""
    taken, out, n = set(lu_site_ids), [], 4
    while len(out) < 2:
        sid = f"SITE{n:02d}"
        if sid not in taken:
            out.append(sid)
        n += 1
    return out


def tare_sites(lu_site_ids: list[str]) -> list[TareSite]:
    """The two TARE sites (no randomness: their cameras are fixed)."""
    ho_id, y_id = tare_site_ids(lu_site_ids)
    return [
        TareSite(
            ho_id,
            "Utrecht",
            f"HOLMIUM{ho_id[-2:]}_PACS",
            f"UMC{ho_id[-2:]}",
            "TARE-HO166",
            "QuiremSpheres",
            "Ho-166-scout",
            "spect",
            HO_CAMERA,
            HO_CAMERA,
        ),
        TareSite(
            y_id,
            "Leuven",
            f"SIRT{y_id[-2:]}_PACS",
            f"LEU{y_id[-2:]}",
            "TARE-Y90",
            "SIR-Spheres",
            "Tc-99m-MAA",
            "pet",
            TC_CAMERA,
            PET_CAMERA,
        ),
    ]


def site_config(site: TareSite) -> dict:
    """The ``sites`` entry of the trial config: AE title and camera profiles with ``system_fwhm_mm``."""
    if site.post_imaging == "spect":
        cams = [
            {
                "manufacturer": "SIEMENS",
                "algorithms": ["Flash3D", "xSPECT"],
                "collimators": ["MELP"],
                "post_filters": ["XYZ Gauss 0.0"],
                "system_fwhm_mm": site.scout_camera.fwhm_mm,
            }
        ]
        label = f"{site.scout_camera.manufacturer.title()} {site.scout_camera.model}"
    else:
        pet = site.post_camera
        cams = [
            {
                "manufacturer": "GE",
                "algorithms": ["OSEM3D", "Evolution"],
                "collimators": ["LEHR"],
                "matrix_sizes": [128],
                "post_filters": ["Butterworth 0.48 10"],
                "scatter_evidence": ["corrected_image", "energy_windows", "text"],
                "system_fwhm_mm": site.scout_camera.fwhm_mm,
            },
            {
                "manufacturer": "SIEMENS",
                "model": "Biograph Vision",
                "algorithms": ["PSF+TOF"],
                "system_fwhm_mm": pet.fwhm_mm,
            },
        ]
        label = f"GE {site.scout_camera.model} + Siemens {pet.model}"
    return {
        "id": site.site_id,
        "name": f"{site.name} ({label})",
        "calling_ae_titles": [site.calling_ae_title],
        "cameras": cams,
    }


def imaging_protocols_config() -> list[dict]:
    """``imaging_protocols`` of the trial config: the TARE scouts' and post-treatment imaging's
    reconstruction protocols (99mTc-MAA SPECT, 166Ho SPECT, 90Y TOF PET), as in
    ``deployments/trial.example.yaml``."""
    return [
        {
            "radionuclide": "Tc-99m",
            "photopeak_windows": [{"name": "Tc99m_140", "center_kev": 140.0, "width_pct": 15.0}],
            "scatter_windows": [{"name": "Tc99m_scat_120", "center_kev": 120.0, "width_pct": 10.0}],
            "collimator": "LEHR",
            "min_iterations_x_subsets": 30,
            "matrix_size": 80,
            "voxel_size_mm": 4.8,
            "time_points": [{"nominal_h": 1.0, "earliest_h": 0.25, "latest_h": 4.0}],
        },
        {
            "radionuclide": "Ho-166",
            "photopeak_windows": [{"name": "Ho166_81", "center_kev": 81.0, "width_pct": 15.0}],
            "scatter_windows": [{"name": "Ho166_scat_118", "center_kev": 118.0, "width_pct": 12.0}],
            "collimator": "MEGP",
            "min_iterations_x_subsets": 30,
            "matrix_size": 80,
            "voxel_size_mm": 4.8,
            "time_points": [
                {"nominal_h": 2.0, "earliest_h": 0.5, "latest_h": 24.0},
                {"nominal_h": 72.0, "earliest_h": 24.0, "latest_h": 168.0},
            ],
        },
        {
            "radionuclide": "Y-90",
            "modality": "PT",
            "time_of_flight": True,
            "min_iterations_x_subsets": 10,
            "max_iterations_x_subsets": 200,
            "matrix_size": 110,
            "voxel_size_mm": 4.0,
            "max_post_filter_fwhm_mm": 5.0,
            "time_points": [{"nominal_h": 24.0, "earliest_h": 2.0, "latest_h": 72.0}],
        },
    ]


def arms_config(sites: list[TareSite]) -> list[dict]:
    """``tare_arms`` of the trial config (as the TARE contract lists them)."""
    out = []
    for s in sites:
        arm = {
            "id": s.arm_id,
            "device": s.device,
            "scout_agent": s.scout_agent,
            "sites": [s.site_id],
            "post_imaging": s.post_imaging,
        }
        if s.scout_agent == "Ho-166-scout":
            arm["scout_max_activity_mbq"] = 1000
        out.append(arm)
    return out
