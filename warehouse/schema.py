"""The warehouse schema, declared once.

(This module is longer than the ~600 lines kept elsewhere on purpose: it is the single
declaration of every table and column with its unit and meaning, read top to bottom.)

Every table is a :class:`Table` of :class:`Column` records. From this single declaration the
rest of the warehouse derives what it needs:

* the Arrow schema of the Parquet files (:meth:`Table.arrow_schema`),
* validation of a frame before it is written (:mod:`warehouse.writer`),
* the typed DuckDB views, including empty views for tables without files
  (:mod:`warehouse.catalog`),
* the column reference in ``docs/analyst.md`` (:func:`schema_markdown`).

Conventions
-----------
* Column names carry their unit as a suffix (``_gy``, ``_mbq``, ``_mbq_h``, ``_ml``, ``_g``,
  ``_h``, ``_cps_per_mbq``, ``_months``, ``_mm``, ``_pct``); the unit is also declared in
  :attr:`Column.unit` and a test checks that the two agree.
* Identifiers are trial pseudonyms (``subject_id``); no patient name, PatientID or birth
  date is ever a column (a test rejects such names).
* Every table carries ``trial_id`` and, where a site is meaningful, ``site_id``.
* Every table carries the bookkeeping columns ``result_version`` (1, 2, ... per natural
  key), ``input_hash`` (hash of the inputs the row was computed from; defaults to the row's
  content hash), ``row_hash`` (content hash used for idempotent upserts) and
  ``computed_at`` (UTC). Reference tables (sites, subjects ...) are versioned the same way,
  so a corrected site name is a new version rather than an overwrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pyarrow as pa

from rntflow.core.methods import METHOD_PREFERENCE
from rntflow.core.qa import SCOPES, STATUSES

#: Bookkeeping columns appended to every table by :func:`_table`.
BOOKKEEPING = ("result_version", "input_hash", "row_hash", "computed_at")

#: Unit suffixes and the unit each declares. Longest suffix first when matching.
UNIT_SUFFIXES: dict[str, str] = {
    "_cps_per_mbq": "cps/MBq",
    "_gy_per_gbq": "Gy/GBq",
    "_j_per_gbq": "J/GBq",
    "_gbq": "GBq",
    "_kg": "kg",
    "_fraction": "1",
    "_ratio": "1",
    "_mbq_h": "MBq h",
    "_months": "month",
    "_mbq": "MBq",
    "_gy": "Gy",
    "_ml": "mL",
    "_mm": "mm",
    "_pct": "%",
    "_h": "h",
    "_g": "g",
    "_s": "s",
}

#: Column names that would carry direct identifiers; never allowed in the warehouse.
FORBIDDEN_NAME_RE = re.compile(
    r"(patient_?name|patient_?id|birth|dob\b|^dob|mrn|accession|social_security|ssn|address|phone)",
    re.IGNORECASE,
)

_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One warehouse column.

    Attributes
    ----------
    name : str
        Column name, with the unit suffix when the value has a unit.
    arrow_type : pyarrow.DataType
        Storage type in Parquet/Arrow.
    unit : str or None
        Physical unit (``None`` for identifiers, categories, counts and text).
    description : str
        One sentence for analysts.
    nullable : bool
        Whether a missing value is allowed.
    allowed : tuple of str, optional
        Closed vocabulary for categorical text columns (validated on load).
    """

    name: str
    arrow_type: pa.DataType
    unit: str | None
    description: str
    nullable: bool = True
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """One warehouse table.

    Attributes
    ----------
    name : str
        Table (and view) name; also the folder under the warehouse.
    description : str
        What one row is.
    columns : tuple of Column
        All columns, bookkeeping included.
    natural_key : tuple of str
        Columns identifying a row across result versions.
    partition_by : tuple of str
        Hive partition columns (``trial_id`` and, where present and not null, ``site_id``).
    is_result : bool
        ``True`` for computed results, ``False`` for reference data (both are versioned).
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    natural_key: tuple[str, ...]
    partition_by: tuple[str, ...]
    is_result: bool = True

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema of the full table (partition columns included)."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns],
            metadata={"rntflow.table": self.name},
        )

    def file_schema(self) -> pa.Schema:
        """Arrow schema of one Parquet file: partition columns live in the path."""
        full = self.arrow_schema()
        return pa.schema([f for f in full if f.name not in self.partition_by], metadata=full.metadata)

    @property
    def content_columns(self) -> tuple[str, ...]:
        """Columns whose values define a row's content (for the content hash)."""
        return tuple(
            n for n in self.column_names if n not in ("result_version", "row_hash", "computed_at", "input_hash")
        )

    def with_column(self, column: Column) -> Table:
        """A copy with one more column (schema evolution: old files stay readable)."""
        return replace(self, columns=self.columns + (column,))


def _c(
    name: str,
    arrow_type: pa.DataType,
    description: str,
    unit: str | None = None,
    nullable: bool = True,
    allowed: tuple[str, ...] = (),
) -> Column:
    if unit is None:
        unit = unit_from_name(name)
    return Column(name, arrow_type, unit, description, nullable, allowed)


def unit_from_name(name: str) -> str | None:
    """The unit declared by a column name's suffix, or ``None``."""
    for suffix in sorted(UNIT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return UNIT_SUFFIXES[suffix]
    return None


_TRIAL = _c("trial_id", pa.string(), "Trial identifier (from the trial config).", nullable=False)
_SITE = _c("site_id", pa.string(), "Site identifier (from the trial config).", nullable=False)
_SITE_OPT = _c("site_id", pa.string(), "Site identifier, when the row belongs to one site.")
_SUBJECT = _c("subject_id", pa.string(), "Trial pseudonym of the subject (never a PatientID).", nullable=False)
_CYCLE = _c("cycle", pa.int16(), "Therapy cycle number, 1-based.", nullable=False)
_VOI = _c("voi", pa.string(), "VOI name, TG-263 for organs, Lesion_<n> for lesions.", nullable=False)
_STUDY = _c("study_id", pa.string(), "Pseudonymised StudyInstanceUID (as de-identified by the listener).")
_RADIONUCLIDE = _c("radionuclide", pa.string(), "Radionuclide, e.g. Lu-177.")
_TREATMENT = _c("treatment", pa.int16(), "TARE treatment number of the subject, 1-based.", nullable=False)
_ARM = _c("arm_id", pa.string(), "TARE arm of the trial config.")
_DEVICE = _c("device", pa.string(), "Microsphere product.", allowed=("SIR-Spheres", "TheraSphere", "QuiremSpheres"))


def _bookkeeping() -> tuple[Column, ...]:
    return (
        _c(
            "result_version",
            pa.int32(),
            "Version of this row's natural key: 1, 2 ... (latest wins in the main view).",
            nullable=False,
        ),
        _c(
            "input_hash",
            pa.string(),
            "Hash of the inputs the row was computed from (defaults to the content hash).",
            nullable=False,
        ),
        _c("row_hash", pa.string(), "Content hash of the row's values (idempotent upsert).", nullable=False),
        _c("computed_at", _TS, "When the row was computed/loaded (UTC).", nullable=False),
    )


def _table(
    name: str,
    description: str,
    columns: list[Column],
    key: tuple[str, ...],
    *,
    site_partitioned: bool = True,
    is_result: bool = True,
) -> Table:
    partition = ("trial_id", "site_id") if site_partitioned else ("trial_id",)
    return Table(name, description, tuple(columns) + _bookkeeping(), key, partition, is_result)


_STATUS = STATUSES
_ENDPOINTS = ("nephrotoxicity", "xerostomia", "liver_toxicity", "lesion_response", "pfs")
_RESPONSES = ("CR", "PR", "SD", "PD")

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _table(
            "sites",
            "One participating hospital.",
            [
                _TRIAL,
                _SITE,
                _c("site_name", pa.string(), "Human-readable site name."),
            ],
            ("trial_id", "site_id"),
            is_result=False,
        ),
        _table(
            "cameras",
            "One SPECT/CT camera at a site.",
            [
                _TRIAL,
                _SITE,
                _c("camera_id", pa.string(), "Camera identifier (site-unique).", nullable=False),
                _c("manufacturer", pa.string(), "DICOM Manufacturer."),
                _c("model", pa.string(), "DICOM ManufacturerModelName."),
                _c("crystal_thickness_mm", pa.float64(), "NaI crystal thickness."),
            ],
            ("trial_id", "site_id", "camera_id"),
            is_result=False,
        ),
        _table(
            "calibrations",
            "A camera's calibration for one radionuclide and protocol; superseded ones are kept.",
            [
                _TRIAL,
                _SITE,
                _c("camera_id", pa.string(), "Camera the calibration belongs to.", nullable=False),
                _c("radionuclide", pa.string(), "Radionuclide, e.g. Lu-177.", nullable=False),
                _c("protocol", pa.string(), "Trial imaging protocol name.", nullable=False),
                _c("valid_from", _TS, "Start of validity (phantom scan time, UTC).", nullable=False),
                _c("valid_until", _TS, "End of validity: expiry or the next calibration (UTC)."),
                _c("sensitivity_cps_per_mbq", pa.float64(), "System sensitivity in the photopeak window."),
                _c("sensitivity_sd_cps_per_mbq", pa.float64(), "Standard uncertainty of the sensitivity."),
                _c("bqml_scale_factor", pa.float64(), "Scale applied to a vendor Bq/mL reconstruction (1 = exact)."),
                _c(
                    "harmonising_filter_fwhm_mm",
                    pa.float64(),
                    "Gaussian post-filter FWHM bringing the site onto the reference RC band.",
                ),
                _c(
                    "rc_fwhm_mm",
                    pa.float64(),
                    "Recovery FWHM that drives partial-volume correction (see rc_fwhm_source).",
                ),
                _c(
                    "rc_fwhm_source",
                    pa.string(),
                    "Where rc_fwhm_mm came from: the NEMA IEC phantom's RC curve, the "
                    "camera profile's configured system_fwhm_mm, or the uniform cylinder's edge.",
                    allowed=("nema", "configured", "cylinder_edge"),
                ),
                _c("superseded_by", pa.string(), "calibration_id of the calibration that replaced this one."),
                _c("calibration_id", pa.string(), "Identifier of this calibration.", nullable=False),
                _c("drift_pct", pa.float64(), "Change of sensitivity against the previous calibration."),
                _c("drift_flag", pa.bool_(), "True when |drift_pct| exceeds the trial's drift tolerance."),
            ],
            ("trial_id", "site_id", "camera_id", "radionuclide", "protocol", "valid_from"),
        ),
        _table(
            "phantom_results",
            "Recovery coefficient of one NEMA IEC sphere in one phantom scan.",
            [
                _TRIAL,
                _SITE,
                _c("calibration_id", pa.string(), "Calibration this phantom scan produced.", nullable=False),
                _c("camera_id", pa.string(), "Camera scanned.", nullable=False),
                _c("sphere_diameter_mm", pa.float64(), "Inner sphere diameter.", nullable=False),
                _c("sphere_volume_ml", pa.float64(), "Inner sphere volume."),
                _c("recovery_coefficient", pa.float64(), "Measured / true activity concentration (dimensionless)."),
                _c("recovery_coefficient_harmonised", pa.float64(), "RC after the harmonising filter."),
                _c("in_reference_band", pa.bool_(), "Whether the RC lies in the trial's reference band."),
            ],
            ("trial_id", "site_id", "calibration_id", "sphere_diameter_mm"),
        ),
        _table(
            "subjects",
            "One enrolled subject (pseudonym only).",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _c("enrolled_on", pa.date32(), "Enrolment date."),
                _c("sex", pa.string(), "Administrative sex (M/F/O) if the trial collects it."),
            ],
            ("trial_id", "subject_id"),
            is_result=False,
        ),
        _table(
            "administrations",
            "One therapy administration (cycle).",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _CYCLE,
                _RADIONUCLIDE,
                _c(
                    "administered_activity_mbq",
                    pa.float64(),
                    "Net administered activity at administration time.",
                    nullable=False,
                ),
                _c("administration_datetime", _TS, "Administration time (UTC).", nullable=False),
            ],
            ("trial_id", "subject_id", "cycle"),
            is_result=False,
        ),
        _table(
            "studies",
            "One received SPECT/CT study (a patient time point or a phantom scan).",
            [
                _TRIAL,
                _SITE,
                _c("study_id", pa.string(), "Pseudonymised StudyInstanceUID.", nullable=False),
                _c("subject_id", pa.string(), "Trial pseudonym (null for phantom scans)."),
                _c("cycle", pa.int16(), "Therapy cycle (null for phantoms)."),
                _c("kind", pa.string(), "What the study is.", allowed=("patient", "phantom", "segmentation")),
                _c("camera_id", pa.string(), "Camera that acquired it."),
                _c("acquired_at", _TS, "Acquisition start (UTC)."),
                _c("t_h", pa.float64(), "Acquisition time after administration."),
                _c("n_instances", pa.int32(), "Instances received."),
                _c("protocol_compliant", pa.bool_(), "All reconstruction checks passed."),
            ],
            ("trial_id", "study_id"),
            is_result=False,
        ),
        _table(
            "qa_checks",
            "One QA check result.",
            [
                _TRIAL,
                _SITE,
                _c(
                    "check_name",
                    pa.string(),
                    "Check name, e.g. energy_window, fit_r2, calibration_age.",
                    nullable=False,
                ),
                _c("scope", pa.string(), "What was checked.", nullable=False, allowed=SCOPES),
                _c(
                    "scope_id",
                    pa.string(),
                    "Identifier within the scope (e.g. study_id or subject_id/cycle/voi).",
                    nullable=False,
                ),
                _c("subject_id", pa.string(), "Trial pseudonym when the check concerns a subject."),
                _c("study_id", pa.string(), "Study when the check concerns one."),
                _c("cycle", pa.int16(), "Cycle when the check concerns one."),
                _c("status", pa.string(), "Outcome of the check.", nullable=False, allowed=_STATUS),
                _c("value_found", pa.string(), "Value found (as text, with unit in the message)."),
                _c("value_expected", pa.string(), "Value or range expected."),
                _c("message", pa.string(), "One sentence for the coordinator."),
            ],
            ("trial_id", "site_id", "check_name", "scope", "scope_id"),
        ),
        _table(
            "voi_timepoints",
            "Quantified activity in one VOI at one time point.",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _CYCLE,
                _VOI,
                _c("study_id", pa.string(), "Study of this time point."),
                _c("t_h", pa.float64(), "Time after administration.", nullable=False),
                _c("activity_mbq", pa.float64(), "Activity in the VOI (decay-corrected to nothing: as imaged)."),
                _c("activity_sd_mbq", pa.float64(), "Standard uncertainty of the activity."),
                _c("volume_ml", pa.float64(), "VOI volume."),
                _c("mass_g", pa.float64(), "VOI mass (CT density or reference density)."),
                _c("recovery_coefficient", pa.float64(), "Partial-volume recovery applied (1 = none)."),
                _c("calibration_id", pa.string(), "Calibration used to quantify."),
            ],
            ("trial_id", "subject_id", "cycle", "voi", "t_h"),
        ),
        _table(
            "tac_fits",
            "Time-activity curve fit and time-integrated activity of one VOI in one cycle.",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _CYCLE,
                _VOI,
                _c(
                    "model",
                    pa.string(),
                    "TAC model chosen (mono_exp, bi_exp, tri_exp, trapezoid, hanscheid, madsen ...).",
                    nullable=False,
                ),
                _c("params_json", pa.string(), "Fitted parameters as JSON text, with units in the keys."),
                _c("n_timepoints", pa.int16(), "Time points used."),
                _c("aicc", pa.float64(), "AICc of the chosen model."),
                _c("r2", pa.float64(), "Coefficient of determination."),
                _c("tia_mbq_h", pa.float64(), "Time-integrated activity, 0 to infinity.", nullable=False),
                _c("tia_sd_mbq_h", pa.float64(), "Standard uncertainty of the TIA."),
                _c("effective_half_life_h", pa.float64(), "Effective half-life of the terminal phase."),
                _c("fallback_reason", pa.string(), "Why a simpler model was used, if it was."),
            ],
            ("trial_id", "subject_id", "cycle", "voi"),
        ),
        _table(
            "voi_doses",
            "Mean absorbed dose (and BED) to one VOI in one cycle by one engine/method.",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _CYCLE,
                _VOI,
                _c(
                    "engine",
                    pa.string(),
                    "Dose engine.",
                    nullable=False,
                    allowed=("organ", "sphere", "voxel_dpk", "voxel_led"),
                ),
                _c("method", pa.string(), "Kinetics method.", nullable=False, allowed=tuple(sorted(METHOD_PREFERENCE))),
                _c("dose_gy", pa.float64(), "Mean absorbed dose in this cycle.", nullable=False),
                _c("dose_sd_gy", pa.float64(), "Standard uncertainty of the dose."),
                _c("bed_gy", pa.float64(), "Biologically effective dose (LQ model) in this cycle."),
                _c("mass_g", pa.float64(), "VOI mass used."),
                _c("tia_mbq_h", pa.float64(), "TIA used."),
                _c("administered_activity_mbq", pa.float64(), "Activity administered in this cycle."),
                _c("calibration_id", pa.string(), "Calibration used."),
                _c(
                    "final",
                    pa.bool_(),
                    "True when the cycle's last protocol time point has arrived or data collection closed.",
                ),
            ],
            ("trial_id", "subject_id", "cycle", "voi", "engine", "method"),
        ),
        _table(
            "dvhs",
            "Cumulative dose-volume histogram of one VOI, one row per dose bin.",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _CYCLE,
                _VOI,
                _c("engine", pa.string(), "Dose engine.", nullable=False),
                _c(
                    "bin_index",
                    pa.int16(),
                    "Index of the dose bin, 0 = 0 Gy (a recomputed DVH replaces every bin: "
                    "the bin edges follow the VOI's maximum dose).",
                    nullable=False,
                ),
                _c("dose_bin_gy", pa.float64(), "Lower edge of the dose bin.", nullable=False),
                _c(
                    "volume_fraction",
                    pa.float64(),
                    "Fraction of the VOI volume receiving at least dose_bin_gy (0-1).",
                    nullable=False,
                ),
            ],
            ("trial_id", "subject_id", "cycle", "voi", "engine", "bin_index"),
        ),
        _table(
            "outcomes",
            "One clinical outcome assessment (imported from the trial's outcomes CSV).",
            [
                _TRIAL,
                _SITE_OPT,
                _SUBJECT,
                _c("endpoint", pa.string(), "Endpoint.", nullable=False, allowed=_ENDPOINTS),
                _c("lesion_voi", pa.string(), "Lesion VOI (Lesion_<n>) for lesion_response, else null."),
                _c("grade", pa.int8(), "CTCAE grade 0-5 for toxicity endpoints."),
                _c("response", pa.string(), "RECIST-like response for lesion_response.", allowed=_RESPONSES),
                _c("event", pa.int8(), "1 = progression or death, 0 = censored (pfs)."),
                _c("time_to_event_months", pa.float64(), "Time to event or censoring (pfs)."),
                _c("assessed_months", pa.float64(), "Time of assessment after the first cycle."),
            ],
            ("trial_id", "subject_id", "endpoint", "lesion_voi"),
            site_partitioned=False,
            is_result=False,
        ),
        _table(
            "tare_plans",
            "One radioembolisation (TARE) partition-model plan: one row per scout (work-up) study.",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _TREATMENT,
                _c("study_id", pa.string(), "The scout study planned from.", nullable=False),
                _ARM,
                _DEVICE,
                _c("radionuclide", pa.string(), "Treatment radionuclide (Y-90, Ho-166)."),
                _c("scout_agent", pa.string(), "Scout agent imaged.", allowed=("Tc-99m-MAA", "Ho-166-scout")),
                _c("lung_shunt_fraction", pa.float64(), "Scout lung activity / (lung + liver activity), 0-1."),
                _c(
                    "tumour_to_normal_ratio",
                    pa.float64(),
                    "Scout tumour / normal-liver activity per mass (all lesions).",
                ),
                _c("tumour_mass_kg", pa.float64(), "All lesions' mass (CT density)."),
                _c("normal_liver_mass_kg", pa.float64(), "Perfused non-tumoural liver (Liver_Normal) mass."),
                _c("lung_mass_kg", pa.float64(), "Lung mass (Lungs VOI, CT density; the arm's default without one)."),
                _c("planned_tumour_dose_gy", pa.float64(), "Mean tumour dose the plan aims at."),
                _c("planned_activity_gbq", pa.float64(), "Partition-model activity for the planned tumour dose."),
                _c(
                    "administered_activity_gbq",
                    pa.float64(),
                    "Activity administered at this treatment (null until its post-treatment study arrives).",
                ),
                _c("post_study_id", pa.string(), "The post-treatment study of this treatment, once known."),
                _c(
                    "predicted_tumour_dose_gy",
                    pa.float64(),
                    "Partition-model tumour dose (all lesions) at the planned activity; the doses at the "
                    "administered activity are in tare_predicted_delivered.",
                ),
                _c(
                    "predicted_normal_liver_dose_gy",
                    pa.float64(),
                    "Partition-model normal-liver dose at the planned activity.",
                ),
                _c("predicted_lung_dose_gy", pa.float64(), "Partition-model lung dose at the planned activity."),
                _c("prior_lung_dose_gy", pa.float64(), "Lung dose of the subject's earlier treatments."),
                _c("cf_j_per_gbq", pa.float64(), "Dose conversion factor used."),
                _c("cf_convention", pa.string(), "CF convention.", allowed=("product", "icrp107")),
                _c("broken_limits", pa.string(), "Limits the plan breaks, '; '-joined ('' if none)."),
                _c("notes", pa.string(), "Target checks and corrections, '; '-joined."),
            ],
            ("trial_id", "subject_id", "study_id"),
        ),
        _table(
            "tare_doses",
            "Delivered mean dose and DVH metrics of one VOI in one TARE post-treatment study "
            "(local deposition, activity decay-corrected to administration).",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _TREATMENT,
                _c("study_id", pa.string(), "The post-treatment study.", nullable=False),
                _VOI,
                _c("administered_activity_gbq", pa.float64(), "Activity administered (header)."),
                _c(
                    "activity_mbq", pa.float64(), "VOI activity at administration (spill-out/partial-volume corrected)."
                ),
                _c("mass_kg", pa.float64(), "VOI mass (CT density)."),
                _c("mean_dose_gy", pa.float64(), "Mean absorbed dose: activity x CF / mass.", nullable=False),
                _c("d2_gy", pa.float64(), "Minimum dose of the hottest 2 % (map as imaged)."),
                _c("d50_gy", pa.float64(), "Median dose (map as imaged)."),
                _c("d70_gy", pa.float64(), "Minimum dose of the hottest 70 % (map as imaged)."),
                _c("d98_gy", pa.float64(), "Minimum dose of the hottest 98 % (map as imaged)."),
                _c("recovery_coefficient", pa.float64(), "Partial-volume recovery applied (1 = none)."),
                _c("cf_j_per_gbq", pa.float64(), "Dose conversion factor used."),
                _c("calibration_id", pa.string(), "Calibration used to quantify."),
                _c("method", pa.string(), "Dose method.", allowed=("local_deposition",)),
            ],
            ("trial_id", "subject_id", "study_id", "voi"),
        ),
        _table(
            "tare_predicted_delivered",
            "Planned, scout-predicted and delivered mean dose of one VOI and TARE treatment.",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _TREATMENT,
                _VOI,
                _c("scout_study_id", pa.string(), "The scout study."),
                _c("post_study_id", pa.string(), "The post-treatment study."),
                _c("planned_dose_gy", pa.float64(), "Scout shares x planned activity."),
                _c("predicted_dose_gy", pa.float64(), "Scout shares x administered activity."),
                _c("delivered_dose_gy", pa.float64(), "From the post-treatment image."),
                _c("delivered_to_predicted_ratio", pa.float64(), "delivered_dose_gy / predicted_dose_gy."),
            ],
            ("trial_id", "subject_id", "treatment", "voi"),
        ),
        _table(
            "flow_runs",
            "One Prefect flow run, for the coordinator's status.",
            [
                _TRIAL,
                _SITE_OPT,
                _c("flow_run_id", pa.string(), "Prefect flow-run id.", nullable=False),
                _c("flow_name", pa.string(), "Flow name.", nullable=False),
                _c("state", pa.string(), "Final or current state name (Completed, Failed ...)."),
                _c("subject_id", pa.string(), "Subject concerned, if any."),
                _c("study_id", pa.string(), "Study concerned, if any."),
                _c("started_at", _TS, "Start (UTC)."),
                _c("ended_at", _TS, "End (UTC)."),
                _c("duration_s", pa.float64(), "Wall time."),
                _c("software_version", pa.string(), "rntflow version that ran."),
                _c("message", pa.string(), "Failure reason or summary."),
            ],
            ("trial_id", "flow_run_id"),
            site_partitioned=False,
        ),
        _table(
            "blood_samples",
            "One whole-blood activity concentration sample of a subject's cycle (imported from the "
            "trial's blood-sample CSV, `rntflow blood import`).",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _CYCLE,
                _c("t_h", pa.float64(), "Sampling time after the start of administration.", nullable=False),
                _c(
                    "activity_per_ml_mbq",
                    pa.float64(),
                    "Activity concentration in whole blood: MBq in one mL (as measured, not decay-corrected).",
                    nullable=False,
                ),
                _c(
                    "excluded",
                    pa.bool_(),
                    "True when a later import of the cycle no longer lists this sample (kept, not used).",
                ),
            ],
            ("trial_id", "subject_id", "cycle", "t_h"),
            is_result=False,
        ),
        _table(
            "marrow_doses",
            "Red-marrow absorbed dose of one cycle by one method: blood-based (EANM, method blood) "
            "beside the image-based Bone_Marrow VOI dose of each engine (method image, copied from voi_doses).",
            [
                _TRIAL,
                _SITE,
                _SUBJECT,
                _CYCLE,
                _c("method", pa.string(), "Marrow dosimetry method.", nullable=False, allowed=("blood", "image")),
                _c(
                    "engine",
                    pa.string(),
                    "blood: the blood method; image: the voi_doses engine of the Bone_Marrow dose.",
                    nullable=False,
                ),
                _c(
                    "kinetics_model",
                    pa.string(),
                    "blood: the blood TAC model (mono_exp, bi_exp, trapezoid); image: the voi_doses kinetics method.",
                ),
                _c("dose_gy", pa.float64(), "Red-marrow absorbed dose in this cycle.", nullable=False),
                _c("dose_sd_gy", pa.float64(), "Standard uncertainty of the dose (blood: from the blood fit)."),
                _c("self_dose_gy", pa.float64(), "blood: marrow self-dose (electrons absorbed locally)."),
                _c("cross_dose_gy", pa.float64(), "blood: photon cross-dose from the remainder of body."),
                _c("tiac_per_ml_mbq_h", pa.float64(), "blood: time-integrated activity in one mL of blood (MBq h/mL)."),
                _c("tiac_sd_per_ml_mbq_h", pa.float64(), "blood: standard uncertainty of the blood TIAC (MBq h/mL)."),
                _c("tia_mbq_h", pa.float64(), "Red-marrow TIA (blood: TIAC x RMBLR x mass; image: the VOI's TIA)."),
                _c("remainder_tia_mbq_h", pa.float64(), "blood: remainder-of-body TIA of the cross-dose."),
                _c(
                    "whole_body_source",
                    pa.string(),
                    "blood: where the whole-body TIA came from.",
                    allowed=("measured", "image_vois+blood_pool"),
                ),
                _c("mass_g", pa.float64(), "Red-marrow (blood: ICRP 89 reference) or VOI (image) mass used."),
                _c(
                    "blood_effective_half_life_h", pa.float64(), "blood: terminal effective half-life of the blood TAC."
                ),
                _c("n_samples", pa.int16(), "blood: blood samples fitted."),
                _c("fallback_reason", pa.string(), "blood: why the blood TIAC is the conservative fallback, if it is."),
                _c(
                    "settings_json",
                    pa.string(),
                    "blood: RMBLR, reference sex, S(RM<-RB) (Gy per MBq h) and body mass used, as JSON text.",
                ),
                _c("administered_activity_mbq", pa.float64(), "Activity administered in this cycle."),
                _c(
                    "final",
                    pa.bool_(),
                    "image: the voi_doses row's final flag; blood: the cycle's image doses' flag "
                    "(their TIAs feed the whole-body TIA), True when the cycle has none.",
                ),
                _c(
                    "withdrawn",
                    pa.bool_(),
                    "blood: True when the cycle no longer has usable blood samples (kept for history, not used).",
                ),
            ],
            ("trial_id", "subject_id", "cycle", "method", "engine"),
        ),
    )
}


@dataclass(frozen=True)
class DerivedView:
    """A derived view of the catalog (defined in :mod:`warehouse.catalog`), for the dictionary.

    Attributes
    ----------
    name : str
        View name.
    description : str
        What one row is.
    columns : tuple of Column
        Its columns in order (a test checks them against the catalog's ``DESCRIBE``).
    materialised : bool
        ``True`` when the view reads a table materialised at load time under
        ``latest/<name>/`` (one file per trial and site) instead of computing it per query.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    materialised: bool = False

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema of the materialised files."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns],
            metadata={"rntflow.table": self.name},
        )


_PER_CYCLE = (
    _TRIAL,
    _SITE,
    _SUBJECT,
    _CYCLE,
    _VOI,
    _c("engine", pa.string(), "Dose engine.", nullable=False),
    _c("method", pa.string(), "Kinetics method of the cycle's dose."),
    _c("dose_gy", pa.float64(), "Mean absorbed dose in this cycle."),
    _c("dose_sd_gy", pa.float64(), "Standard uncertainty of the dose."),
    _c("bed_gy", pa.float64(), "Biologically effective dose in this cycle."),
    _c("final", pa.bool_(), "True when the cycle's dose is final."),
)
_CUMULATIVE = (
    _TRIAL,
    _SITE,
    _SUBJECT,
    _VOI,
    _c("engine", pa.string(), "Dose engine.", nullable=False),
    _c("method", pa.string(), "The cycles' common kinetics method, or mixed."),
    _c("n_cycles", pa.int64(), "Cycles summed."),
    _c("dose_gy", pa.float64(), "Absorbed dose summed over cycles."),
    _c("dose_sd_gy", pa.float64(), "Standard uncertainty of the sum (cycles independent, quadrature)."),
    _c("bed_gy", pa.float64(), "BED summed over cycles."),
    _c("all_final", pa.bool_(), "True when every cycle's dose is final."),
)
_N_VOIS = _c("n_vois", pa.int64(), "VOIs averaged into the target (1 for a stored VOI).")

#: Derived views of the catalog, in the order they are defined.
DERIVED: dict[str, DerivedView] = {
    v.name: v
    for v in (
        DerivedView(
            "voi_dose_cycle",
            "One dose per subject, cycle, VOI and engine: the multi-time-point result "
            "where the cycle has one, else its preferred single-time-point result.",
            _PER_CYCLE,
        ),
        DerivedView(
            "voi_dose_cumulative",
            "Dose, SD and BED summed over the cycles of voi_dose_cycle per subject, VOI and engine.",
            _CUMULATIVE,
            materialised=True,
        ),
        DerivedView(
            "dose_effect_targets",
            "voi_dose_cumulative plus the derived targets Kidneys, Parotids (means of the halves) and Lesions_mean.",
            tuple(
                _c("target_voi", pa.string(), "VOI or derived target.") if c.name == "voi" else c for c in _CUMULATIVE
            )
            + (_N_VOIS,),
            materialised=True,
        ),
        DerivedView(
            "dose_effect",
            "One outcome joined to its dose target, per engine.",
            (
                _TRIAL,
                _SITE_OPT,
                _SUBJECT,
                _c("endpoint", pa.string(), "Endpoint."),
                _c("lesion_voi", pa.string(), "Lesion VOI for lesion_response."),
                _c("target_voi", pa.string(), "Dose target of the endpoint."),
                _c("engine", pa.string(), "Dose engine."),
                _c("method", pa.string(), "The cycles' common kinetics method, or mixed."),
                _c("n_cycles", pa.int64(), "Cycles summed."),
                _N_VOIS,
                _c("cumulative_dose_gy", pa.float64(), "Target's absorbed dose summed over cycles."),
                _c("cumulative_dose_sd_gy", pa.float64(), "Standard uncertainty of the cumulative dose."),
                _c("cumulative_bed_gy", pa.float64(), "Target's BED summed over cycles."),
                _c("all_final", pa.bool_(), "True when every cycle's dose is final."),
                _c("grade", pa.int8(), "CTCAE grade (toxicity endpoints)."),
                _c("response", pa.string(), "Response (lesion_response)."),
                _c("event", pa.int8(), "1 = progression or death, 0 = censored (pfs)."),
                _c("time_to_event_months", pa.float64(), "Time to event or censoring (pfs)."),
                _c("assessed_months", pa.float64(), "Time of assessment after the first cycle."),
                _c(
                    "effect",
                    pa.int32(),
                    "1 = event (toxicity at or above the endpoint's grade, CR/PR, PFS event), else 0.",
                ),
            ),
        ),
    )
}


_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    _TS: "TIMESTAMPTZ",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    """DuckDB SQL type for an Arrow type used in the schema."""
    try:
        return _DUCKDB_TYPES[arrow_type]
    except KeyError as exc:  # pragma: no cover - guarded by a schema test
        raise ValueError(f"no DuckDB type for {arrow_type}") from exc


def schema_markdown(tables: dict[str, Table] | None = None) -> str:
    """Markdown reference of every table (generated into ``docs/analyst.md``)."""
    tables = TABLES if tables is None else tables
    out: list[str] = []
    for t in tables.values():
        out.append(
            f"### `{t.name}`\n\n{t.description} Natural key: "
            f"{', '.join(f'`{k}`' for k in t.natural_key)}; partitioned by "
            f"{', '.join(f'`{p}`' for p in t.partition_by)}.\n"
        )
        out.append("| column | type | unit | null | description |\n| --- | --- | --- | --- | --- |")
        for c in t.columns:
            desc = c.description + (f" One of {', '.join(c.allowed)}." if c.allowed else "")
            out.append(
                f"| `{c.name}` | {duckdb_type(c.arrow_type)} | {c.unit or ''} | "
                f"{'yes' if c.nullable else 'no'} | {desc} |"
            )
        out.append("")
    if tables is TABLES or tables is None:
        out.append("### Derived views\n\nComputed from the tables above (see *Derived views* earlier on this page).\n")
        for v in DERIVED.values():
            how = " Materialised at load time under `latest/" + v.name + "/`." if v.materialised else ""
            out.append(f"#### `{v.name}`\n\n{v.description}{how}\n")
            out.append("| column | type | unit | description |\n| --- | --- | --- | --- |")
            for c in v.columns:
                out.append(f"| `{c.name}` | {duckdb_type(c.arrow_type)} | {c.unit or ''} | {c.description} |")
            out.append("")
    return "\n".join(out)


SCHEMA_DOC_BEGIN = "<!-- schema:begin -->"
SCHEMA_DOC_END = "<!-- schema:end -->"


def render_docs(text: str, tables: dict[str, Table] | None = None) -> str:
    """``text`` with the section between the schema markers replaced by :func:`schema_markdown`."""
    head, _, rest = text.partition(SCHEMA_DOC_BEGIN)
    _, _, tail = rest.partition(SCHEMA_DOC_END)
    if not rest:
        raise ValueError(f"no {SCHEMA_DOC_BEGIN} marker")
    return f"{head}{SCHEMA_DOC_BEGIN}\n{schema_markdown(tables)}{SCHEMA_DOC_END}{tail}"


if __name__ == "__main__":  # python -m rntflow.warehouse.schema docs/analyst.md
    import sys
    from pathlib import Path

    doc = Path(sys.argv[1])
    doc.write_text(render_docs(doc.read_text()))
