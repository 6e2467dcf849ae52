"""The trial configuration: one YAML file, validated into typed settings.

``deployments/trial.example.yaml`` is the demo's. Relative paths in the file are resolved
against the file's own folder, so a config and its data can move together.

Invalid configuration raises :class:`rntflow.core.errors.ConfigError` whose message names the
key (as a dotted path, e.g. ``sites.1.calling_ae_titles``) and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from rntflow.core.config_services import (  # noqa: F401  (re-exported: the config's sections)
    AE_TITLE_RE,
    AdmissionSettings,
    ListenerSettings,
    PathSettings,
    TlsSettings,
    WarehouseStorageSettings,
    _check_ae,
    _Strict,
)
from rntflow.core.constants import PRODUCTS
from rntflow.core.errors import ConfigError

ScatterEvidence = Literal["corrected_image", "energy_windows", "text", "declared"]
#: Where a reconstruction may show that scatter was corrected (see :class:`CameraProfile`).
SCATTER_EVIDENCE: tuple[str, ...] = ("corrected_image", "energy_windows", "text", "declared")


class CameraProfile(_Strict):
    """What one site's camera (or camera model) calls things in its NM reconstructions.

    The trial protocol (:class:`ImagingProtocol`) keeps the trial-wide physics; a profile
    only widens the accepted vocabulary. Names are compared case-insensitively with spaces,
    hyphens and dots ignored (``Flash 3D`` = ``FLASH3D``).

    Attributes
    ----------
    manufacturer, model : str or None
        The profile applies to reconstructions whose Manufacturer / ManufacturerModelName
        contain this text (case-insensitive); ``None`` matches any.
    algorithms : list of str
        Accepted algorithm names besides ``protocol.algorithm`` (e.g. ``Flash3D``,
        ``Evolution``, ``Astonish``, ``xSPECT``, ``HybridRecon``). A header name matches
        when it starts with an accepted name (``OSEM3D`` starts with ``OSEM``).
    collimators : list of str
        Accepted CollimatorGridName values besides ``protocol.collimator`` (``MELP``, ``ME``).
    matrix_sizes : list of int
        Accepted reconstruction matrices besides ``protocol.matrix_size``.
    post_filters : list of str
        Accepted ConvolutionKernel strings as the camera writes them (``Butterworth 0.48 10``).
    scatter_evidence : list of str
        Where this camera shows scatter correction: ``corrected_image`` (CorrectedImage
        (0028,0051) contains ``SCAT``), ``energy_windows`` (scatter windows listed in the
        reconstruction), ``text`` (one of ``scatter_text_patterns`` in SeriesDescription,
        ReconstructionMethod, ConvolutionKernel or a private text element), ``declared`` (the
        site's physicist declares the camera's protocol always corrects scatter).
    scatter_text_patterns : list of str
        Regular expressions (case-insensitive) that evidence scatter correction in text.
    system_fwhm_mm : float or None
        The camera's reconstructed system resolution (Gaussian FWHM, mm) as the site's
        physicist measured it (e.g. with a line source), for partial-volume correction when
        the site has no NEMA IEC phantom. It takes precedence over the estimate from the
        uniform cylinder's edge; a NEMA phantom's RC curve takes precedence over both.
    """

    manufacturer: str | None = None
    model: str | None = None
    algorithms: list[str] = Field(default_factory=list)
    collimators: list[str] = Field(default_factory=list)
    matrix_sizes: list[int] = Field(default_factory=list)
    post_filters: list[str] = Field(default_factory=list)
    scatter_evidence: list[ScatterEvidence] = Field(default_factory=lambda: ["corrected_image", "energy_windows"])
    scatter_text_patterns: list[str] = Field(default_factory=list)
    system_fwhm_mm: float | None = Field(None, gt=0, le=50)

    @field_validator("scatter_text_patterns")
    @classmethod
    def _regexes(cls, values: list[str]) -> list[str]:
        for v in values:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"{v!r} is not a valid regular expression: {exc}") from exc
        return values

    def matches(self, manufacturer: str | None, model: str | None) -> bool:
        """Whether this profile applies to a camera (``None`` fields match anything)."""
        for want, got in ((self.manufacturer, manufacturer), (self.model, model)):
            if want is not None and want.strip().upper() not in (got or "").upper():
                return False
        return True


class SiteSettings(_Strict):
    """One hospital: its PACS AE titles, optionally source addresses, and its cameras.

    Attributes
    ----------
    nm_units : {"counts", "bq_per_ml"} or None
        What the site's NM reconstruction pixels mean when no header says so (no
        RealWorldValueMappingSequence, no Units, no vendor convention): the fourth rule of
        :func:`rntflow.harmonization.headers.resolve_pixel_units`.
    cameras : list of CameraProfile
        The site's camera vocabularies; the first whose manufacturer/model match a header
        applies (:meth:`camera_profile`).
    """

    id: str = Field(pattern=r"^[A-Z0-9_]{2,16}$")
    name: str
    calling_ae_titles: list[str] = Field(min_length=1)
    source_addresses: list[str] = Field(default_factory=list)
    voi_name_map: dict[str, str] = Field(default_factory=dict)
    nm_units: Literal["counts", "bq_per_ml"] | None = None
    cameras: list[CameraProfile] = Field(default_factory=list)

    @field_validator("calling_ae_titles")
    @classmethod
    def _aes(cls, values: list[str]) -> list[str]:
        return [_check_ae(v) for v in values]

    def camera_profile(self, manufacturer: str | None, model: str | None) -> CameraProfile | None:
        """The first of :attr:`cameras` matching the header's Manufacturer and model, or ``None``."""
        return next((c for c in self.cameras if c.matches(manufacturer, model)), None)


class EnergyWindow(_Strict):
    """An acquisition energy window by centre (keV) and full width (% of centre)."""

    name: str
    center_kev: float = Field(gt=0)
    width_pct: float = Field(gt=0, le=100)

    @property
    def lower_kev(self) -> float:
        return self.center_kev * (1 - self.width_pct / 200)

    @property
    def upper_kev(self) -> float:
        return self.center_kev * (1 + self.width_pct / 200)


class TimePointWindow(_Strict):
    """A protocol imaging time point with its acceptance window (h after administration)."""

    nominal_h: float = Field(gt=0)
    earliest_h: float = Field(gt=0)
    latest_h: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> TimePointWindow:
        if not self.earliest_h <= self.nominal_h <= self.latest_h:
            raise ValueError("need earliest_h <= nominal_h <= latest_h")
        return self


class ImagingProtocol(_Strict):
    """The trial's imaging protocol for one radionuclide and modality (``NM`` SPECT/CT, ``PT`` PET/CT).

    ``TrialConfig.protocol`` is the post-therapy SPECT/CT one; ``TrialConfig.imaging_protocols``
    adds others (TARE scouts and post-treatment imaging). A PET protocol uses the algorithm,
    iterations x subsets, matrix, voxel, corrections and time points, and ``time_of_flight``.
    """

    radionuclide: str = "Lu-177"
    modality: Literal["NM", "PT"] = "NM"
    time_of_flight: bool = False
    photopeak_windows: list[EnergyWindow] = Field(default_factory=list)
    scatter_windows: list[EnergyWindow] = Field(default_factory=list)
    energy_tolerance_pct: float = Field(2.0, ge=0)
    collimator: str = "MEGP"
    attenuation_correction: bool = True
    scatter_correction: bool = True
    algorithm: str = "OSEM"
    min_iterations_x_subsets: int = Field(48, ge=1)
    max_iterations_x_subsets: int = Field(480, ge=1)
    matrix_size: int = Field(128, ge=16)
    voxel_size_mm: float = Field(4.8, gt=0)
    voxel_tolerance_mm: float = Field(0.5, ge=0)
    max_post_filter_fwhm_mm: float = Field(0.0, ge=0)
    min_projections: int = Field(60, ge=1)
    min_time_per_projection_s: float = Field(10.0, gt=0)
    time_points: list[TimePointWindow] = Field(min_length=1)
    dosimetry_method: Literal["multi_time_point", "single_time_point"] = "multi_time_point"
    min_time_points_for_fit: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _windows(self) -> ImagingProtocol:
        if self.modality == "NM" and not self.photopeak_windows:
            raise ValueError("photopeak_windows: a SPECT (NM) protocol needs at least one")
        return self


class OrganLimit(_Strict):
    """A cumulative absorbed-dose (or BED) limit for an organ at risk."""

    dose_gy: float | None = Field(None, gt=0)
    bed_gy: float | None = Field(None, gt=0)


class Radiobiology(_Strict):
    """LQ-model parameters for one organ."""

    alpha_beta_gy: float = Field(gt=0)
    t_rep_h: float = Field(gt=0)


class CalibrationSettings(_Strict):
    """Cross-calibration policy."""

    validity_days: int = Field(180, ge=1)
    drift_tolerance_pct: float = Field(5.0, gt=0)
    reference_rc_band: dict[str, tuple[float, float]] = Field(default_factory=dict)
    phantom_patient_id_pattern: str = r"^QC[-_]"
    #: ``False`` takes vendor-quantified (Bq/mL) reconstructions at face value instead of
    #: correcting them by the site's phantom cross-calibration (for the analysis that shows
    #: what cross-calibration removes). Counts reconstructions still need the phantom
    #: sensitivity: without it they cannot be turned into activity at all.
    cross_calibration: bool = True

    @field_validator("phantom_patient_id_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class DosimetrySettings(_Strict):
    """Dose-engine choices."""

    engine: Literal["organ", "voxel_dpk", "voxel_led"] = "voxel_dpk"
    partial_volume_correction: bool = True


#: Radioembolisation devices (rows of seed 000's Table 1) and their radionuclide.
TARE_DEVICE_NUCLIDE = {name: limits.nuclide for name, limits in PRODUCTS.items()}


class TareArm(_Strict):
    """One radioembolisation (TARE) arm of the trial: its sites, device, scout and post-treatment imaging.

    Studies of the arm's sites are routed by radionuclide and activity
    (:meth:`study_role`): a 99mTc-MAA study, or one of the arm's radionuclide with at most
    ``scout_max_activity_mbq`` administered, is the scout; one above it is the post-treatment
    study.

    Attributes
    ----------
    id : str
        Arm name (e.g. ``TARE-HO166``).
    device : {"SIR-Spheres", "TheraSphere", "QuiremSpheres"}
        Microsphere product: its limits and conversion factor (``rntflow.dosimetry.tare.PRODUCTS``).
    scout_agent : {"Tc-99m-MAA", "Ho-166-scout"}
        What the scout (work-up) study images: 99mTc-macroaggregated albumin, or a low
        activity of the treatment's own 166Ho microspheres (QuiremScout).
    sites : list of str
        Site ids whose patient studies belong to this arm.
    post_imaging : {"spect", "pet"}
        Post-treatment imaging: 166Ho (or 90Y bremsstrahlung) SPECT/CT, or 90Y TOF PET/CT.
    scout_max_activity_mbq : float
        A study of the arm's radionuclide with at most this administered activity (MBq) is a
        scout (166Ho scout ~250 MBq against >= 1 GBq for treatment).
    cf_convention : {"product", "icrp107"}
        Dose conversion factor convention (``rntflow.dosimetry.tare``).
    treatment : {"standard", "ablative"}
        Whole-liver/lobar, or radiation segmentectomy.
    planned_tumour_dose_gy : float or None
        Mean tumour dose the plan aims at (Gy); ``None``: the lower end of the device's
        Table 1 tumour target.
    pretreated_liver : bool
        Use the device's limit for pre-treated/compromised liver.
    lung_mass_kg : float
        Lung mass of the partition model when no lung VOI gives one (kg).
    max_lung_shunt_fraction : float or None
        Trial's lung shunt cap (0-1), checked whatever the lung dose; ``None``: off.
    lung_cumulative_limit_gy : float or None
        Trial's cumulative lung dose limit over treatments (Gy); ``None``: off.
    residual_tolerance_pct : float
        Accepted difference (%) between the activity the post-treatment image shows and the
        activity administered (vial residual, calibration).
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{2,32}$")
    device: Literal["SIR-Spheres", "TheraSphere", "QuiremSpheres"]
    scout_agent: Literal["Tc-99m-MAA", "Ho-166-scout"]
    sites: list[str] = Field(min_length=1)
    post_imaging: Literal["spect", "pet"] = "spect"
    scout_max_activity_mbq: float = Field(1000.0, gt=0)
    cf_convention: Literal["product", "icrp107"] = "product"
    treatment: Literal["standard", "ablative"] = "standard"
    planned_tumour_dose_gy: float | None = Field(None, gt=0)
    pretreated_liver: bool = False
    lung_mass_kg: float = Field(1.0, gt=0)
    max_lung_shunt_fraction: float | None = Field(None, gt=0, le=1)
    lung_cumulative_limit_gy: float | None = Field(None, gt=0)
    residual_tolerance_pct: float = Field(10.0, gt=0)

    @property
    def radionuclide(self) -> str:
        """The treatment radionuclide of :attr:`device` (``Y-90`` or ``Ho-166``)."""
        return TARE_DEVICE_NUCLIDE[self.device]

    @property
    def scout_radionuclide(self) -> str:
        """``Tc-99m`` for MAA, else the treatment radionuclide."""
        return "Tc-99m" if self.scout_agent == "Tc-99m-MAA" else self.radionuclide

    @model_validator(mode="after")
    def _consistent(self) -> TareArm:
        if self.scout_agent == "Ho-166-scout" and self.radionuclide != "Ho-166":
            raise ValueError(f"scout_agent Ho-166-scout needs a 166Ho device, not {self.device}")
        if self.post_imaging == "pet" and self.radionuclide != "Y-90":
            raise ValueError("post_imaging pet: only 90Y is imaged by PET")
        return self

    def study_role(self, radionuclide: str | None, administered_mbq: float | None) -> str | None:
        """``"scout"``, ``"post_treatment"`` or ``None`` (the study does not belong to this arm).

        Parameters
        ----------
        radionuclide : str or None
            The study's radionuclide, normalised (``Tc-99m``, ``Y-90``, ``Ho-166``).
        administered_mbq : float or None
            Administered activity (MBq) as the header states it (unit already resolved).
        """
        if radionuclide == "Tc-99m" and self.scout_agent == "Tc-99m-MAA":
            return "scout"
        if radionuclide != self.radionuclide:
            return None
        if self.scout_agent == "Ho-166-scout" and administered_mbq is not None:
            return "scout" if administered_mbq <= self.scout_max_activity_mbq else "post_treatment"
        return "post_treatment"


class TrialConfig(_Strict):
    """A whole trial: sites, listener, protocol, limits and paths."""

    trial_id: str = Field(pattern=r"^[A-Za-z0-9_-]{2,32}$")
    listener: ListenerSettings = ListenerSettings()
    paths: PathSettings = PathSettings()
    sites: list[SiteSettings] = Field(min_length=1)
    protocol: ImagingProtocol
    dose_limits: dict[str, OrganLimit] = Field(default_factory=dict)
    radiobiology: dict[str, Radiobiology] = Field(default_factory=dict)
    voi_name_map: dict[str, str] = Field(default_factory=dict)
    calibration: CalibrationSettings = CalibrationSettings()
    dosimetry: DosimetrySettings = DosimetrySettings()
    tare_arms: list[TareArm] = Field(default_factory=list)
    warehouse_storage: WarehouseStorageSettings = WarehouseStorageSettings()
    #: Protocols of further radionuclides and modalities (TARE: 99mTc-MAA, 166Ho SPECT, 90Y PET).
    imaging_protocols: list[ImagingProtocol] = Field(default_factory=list)
    config_dir: Path = Path(".")

    @model_validator(mode="after")
    def _unique(self) -> TrialConfig:
        ids = [s.id for s in self.sites]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate site id(s): {sorted(dup)}")
        aes = [ae for s in self.sites for ae in s.calling_ae_titles]
        dup_ae = {a for a in aes if aes.count(a) > 1}
        if dup_ae:
            raise ValueError(f"calling AE title(s) given to more than one site: {sorted(dup_ae)}")
        arm_sites = [s for arm in self.tare_arms for s in arm.sites]
        unknown = sorted(set(arm_sites) - set(ids))
        if unknown:
            raise ValueError(f"tare_arms: site(s) {unknown} are not in sites")
        twice = sorted({s for s in arm_sites if arm_sites.count(s) > 1})
        if twice:
            raise ValueError(f"tare_arms: site(s) {twice} belong to more than one arm")
        return self

    def resolve(self, path: Path) -> Path:
        """Return ``path`` made absolute against the config file's folder."""
        return path if path.is_absolute() else (self.config_dir / path).resolve()

    @property
    def spool_dir(self) -> Path:
        return self.resolve(self.paths.spool)

    @property
    def warehouse_dir(self) -> Path:
        return self.resolve(self.paths.warehouse)

    @property
    def warehouse_root(self) -> str:
        """The root ``rntflow.warehouse`` opens: the S3 URL (endpoint, region as query) or ``warehouse_dir``."""
        st = self.warehouse_storage
        if st.url is None:
            return str(self.warehouse_dir)
        query = {"endpoint_override": (st.endpoint_url or "").rstrip("/"), "region": st.region or ""}
        text = "&".join(f"{k}={v}" for k, v in query.items() if v)
        return st.url.rstrip("/") + (f"?{text}" if text else "")

    @property
    def keys_dir(self) -> Path:
        return self.resolve(self.paths.keys_path)

    @property
    def enrolment_file(self) -> Path:
        return self.resolve(self.paths.enrolment)

    @property
    def phantom_fills_file(self) -> Path:
        return self.resolve(self.paths.phantom_fills)

    @property
    def prefect_home(self) -> Path:
        return self.resolve(self.paths.prefect_home)

    @property
    def arms_dir(self) -> Path:
        """Analysis arms (the trial re-processed under another policy): beside the warehouse."""
        return self.warehouse_dir.parent / "arms"

    @property
    def products_dir(self) -> Path:
        """Intermediate images of the flows (quantified SPECT, CT, VOI masks, transforms)."""
        return self.resolve(self.paths.products)

    def imaging_protocol(self, radionuclide: str | None, modality: str = "NM") -> ImagingProtocol | None:
        """``protocol`` or the first of ``imaging_protocols`` for a radionuclide (``Ho-166``) and modality."""
        nuc = (radionuclide or "").upper()
        return next(
            (
                p
                for p in [self.protocol, *self.imaging_protocols]
                if p.radionuclide.upper() == nuc and p.modality == modality
            ),
            None,
        )

    def site_for_ae(self, calling_ae: str) -> SiteSettings | None:
        """The site that owns ``calling_ae``, or ``None``."""
        for site in self.sites:
            if calling_ae.strip() in site.calling_ae_titles:
                return site
        return None

    def tare_arm(self, site_id: str) -> TareArm | None:
        """The TARE arm whose sites include ``site_id``, or ``None`` (a 177Lu site)."""
        return next((a for a in self.tare_arms if site_id in a.sites), None)

    def site(self, site_id: str) -> SiteSettings:
        for site in self.sites:
            if site.id == site_id:
                return site
        raise ConfigError(f"sites: no site with id {site_id!r}")

    def map_voi_name(self, name: str, site_id: str | None = None) -> str:
        """Map a VOI name as sent to its TG-263 name.

        Site-specific spellings come first, then the trial-wide table; a name already in
        TG-263 form (or ``Lesion_<n>``) passes unchanged. Anything else raises, so that a
        name is never guessed silently.
        """
        if site_id is not None:
            site_map = self.site(site_id).voi_name_map
            if name in site_map:
                return site_map[name]
        if name in self.voi_name_map:
            return self.voi_name_map[name]
        if name in TG263_NAMES or name in PROJECT_VOI_NAMES or re.fullmatch(r"Lesion_\d+", name):
            return name
        raise ConfigError(
            f"voi_name_map: VOI name {name!r}"
            + (f" from site {site_id}" if site_id else "")
            + " is neither TG-263 nor mapped in the trial config"
        )


#: TG-263 structure names the platform knows (AAPM TG-263, Table 4 subset).
TG263_NAMES = frozenset(
    {
        "Kidney_L",
        "Kidney_R",
        "Kidneys",
        "Liver",
        "Spleen",
        "Parotid_L",
        "Parotid_R",
        "Glnd_Submand_L",
        "Glnd_Submand_R",
        "Bone_Marrow",
        "Lungs",
        "Lung_L",
        "Lung_R",
        "Body",
        "External",
        "Bowel",
        "Bladder",
    }
)


#: Structures TG-263 has no name for, named by its Organ_Qualifier rule: the liver territory
#: a TARE injection perfuses (one or two lobes, from the scout's CBCT/SPECT).
PROJECT_VOI_NAMES = frozenset({"Liver_Perfused"})


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path) -> TrialConfig:
    """Read and validate a trial config file.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    TrialConfig
        The validated configuration, with ``config_dir`` set to the file's folder.

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, or fails validation (naming the key).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping of settings")
    if "config_dir" in raw:
        raise ConfigError(f"{path}: config_dir: is set by rntflow, not in the file")
    raw["config_dir"] = path.resolve().parent
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path))) from None
