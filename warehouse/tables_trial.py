"""The warehouse tables of the trial, its imaging and its QA.

Sites, cameras, calibrations and phantom results, subjects, administrations, studies and QA
checks, and the pipeline's own ``flow_runs``; assembled in :mod:`rntflow.warehouse.schema`.
"""

from __future__ import annotations

import pyarrow as pa

from rntflow.core.qa import SCOPES, STATUSES
from rntflow.warehouse.columns import CYCLE, RADIONUCLIDE, SITE, SITE_OPT, SUBJECT, TIMESTAMP, TRIAL, Table, col, table

_STATUS = STATUSES

#: The trial's reference, imaging and QA tables, in catalog order.
TRIAL_TABLES: tuple[Table, ...] = (
    table(
        "sites",
        "One participating hospital.",
        [
            TRIAL,
            SITE,
            col("site_name", pa.string(), "Human-readable site name."),
        ],
        ("trial_id", "site_id"),
        is_result=False,
    ),
    table(
        "cameras",
        "One SPECT/CT camera at a site.",
        [
            TRIAL,
            SITE,
            col("camera_id", pa.string(), "Camera identifier (site-unique).", nullable=False),
            col("manufacturer", pa.string(), "DICOM Manufacturer."),
            col("model", pa.string(), "DICOM ManufacturerModelName."),
            col("crystal_thickness_mm", pa.float64(), "NaI crystal thickness."),
        ],
        ("trial_id", "site_id", "camera_id"),
        is_result=False,
    ),
    table(
        "calibrations",
        "A camera's calibration for one radionuclide and protocol; superseded ones are kept.",
        [
            TRIAL,
            SITE,
            col("camera_id", pa.string(), "Camera the calibration belongs to.", nullable=False),
            col("radionuclide", pa.string(), "Radionuclide, e.g. Lu-177.", nullable=False),
            col("protocol", pa.string(), "Trial imaging protocol name.", nullable=False),
            col("valid_from", TIMESTAMP, "Start of validity (phantom scan time, UTC).", nullable=False),
            col("valid_until", TIMESTAMP, "End of validity: expiry or the next calibration (UTC)."),
            col("sensitivity_cps_per_mbq", pa.float64(), "System sensitivity in the photopeak window."),
            col("sensitivity_sd_cps_per_mbq", pa.float64(), "Standard uncertainty of the sensitivity."),
            col("bqml_scale_factor", pa.float64(), "Scale applied to a vendor Bq/mL reconstruction (1 = exact)."),
            col(
                "harmonising_filter_fwhm_mm",
                pa.float64(),
                "Gaussian post-filter FWHM bringing the site onto the reference RC band.",
            ),
            col(
                "rc_fwhm_mm",
                pa.float64(),
                "Recovery FWHM that drives partial-volume correction (see rc_fwhm_source).",
            ),
            col(
                "rc_fwhm_source",
                pa.string(),
                "Where rc_fwhm_mm came from: the NEMA IEC phantom's RC curve, the "
                "camera profile's configured system_fwhm_mm, or the uniform cylinder's edge.",
                allowed=("nema", "configured", "cylinder_edge"),
            ),
            col("superseded_by", pa.string(), "calibration_id of the calibration that replaced this one."),
            col("calibration_id", pa.string(), "Identifier of this calibration.", nullable=False),
            col("drift_pct", pa.float64(), "Change of sensitivity against the previous calibration."),
            col("drift_flag", pa.bool_(), "True when |drift_pct| exceeds the trial's drift tolerance."),
        ],
        ("trial_id", "site_id", "camera_id", "radionuclide", "protocol", "valid_from"),
    ),
    table(
        "phantom_results",
        "Recovery coefficient of one NEMA IEC sphere in one phantom scan.",
        [
            TRIAL,
            SITE,
            col("calibration_id", pa.string(), "Calibration this phantom scan produced.", nullable=False),
            col("camera_id", pa.string(), "Camera scanned.", nullable=False),
            col("sphere_diameter_mm", pa.float64(), "Inner sphere diameter.", nullable=False),
            col("sphere_volume_ml", pa.float64(), "Inner sphere volume."),
            col("recovery_coefficient", pa.float64(), "Measured / true activity concentration (dimensionless)."),
            col("recovery_coefficient_harmonised", pa.float64(), "RC after the harmonising filter."),
            col("in_reference_band", pa.bool_(), "Whether the RC lies in the trial's reference band."),
        ],
        ("trial_id", "site_id", "calibration_id", "sphere_diameter_mm"),
    ),
    table(
        "subjects",
        "One enrolled subject (pseudonym only).",
        [
            TRIAL,
            SITE,
            SUBJECT,
            col("enrolled_on", pa.date32(), "Enrolment date."),
            col("sex", pa.string(), "Administrative sex (M/F/O) if the trial collects it."),
        ],
        ("trial_id", "subject_id"),
        is_result=False,
    ),
    table(
        "administrations",
        "One therapy administration (cycle).",
        [
            TRIAL,
            SITE,
            SUBJECT,
            CYCLE,
            RADIONUCLIDE,
            col(
                "administered_activity_mbq",
                pa.float64(),
                "Net administered activity at administration time.",
                nullable=False,
            ),
            col("administration_datetime", TIMESTAMP, "Administration time (UTC).", nullable=False),
        ],
        ("trial_id", "subject_id", "cycle"),
        is_result=False,
    ),
    table(
        "studies",
        "One received SPECT/CT study (a patient time point or a phantom scan).",
        [
            TRIAL,
            SITE,
            col("study_id", pa.string(), "Pseudonymised StudyInstanceUID.", nullable=False),
            col("subject_id", pa.string(), "Trial pseudonym (null for phantom scans)."),
            col("cycle", pa.int16(), "Therapy cycle (null for phantoms)."),
            col("kind", pa.string(), "What the study is.", allowed=("patient", "phantom", "segmentation")),
            col("camera_id", pa.string(), "Camera that acquired it."),
            col("acquired_at", TIMESTAMP, "Acquisition start (UTC)."),
            col("t_h", pa.float64(), "Acquisition time after administration."),
            col("n_instances", pa.int32(), "Instances received."),
            col("protocol_compliant", pa.bool_(), "All reconstruction checks passed."),
        ],
        ("trial_id", "study_id"),
        is_result=False,
    ),
    table(
        "qa_checks",
        "One QA check result.",
        [
            TRIAL,
            SITE,
            col(
                "check_name",
                pa.string(),
                "Check name, e.g. energy_window, fit_r2, calibration_age.",
                nullable=False,
            ),
            col("scope", pa.string(), "What was checked.", nullable=False, allowed=SCOPES),
            col(
                "scope_id",
                pa.string(),
                "Identifier within the scope (e.g. study_id or subject_id/cycle/voi).",
                nullable=False,
            ),
            col("subject_id", pa.string(), "Trial pseudonym when the check concerns a subject."),
            col("study_id", pa.string(), "Study when the check concerns one."),
            col("cycle", pa.int16(), "Cycle when the check concerns one."),
            col("status", pa.string(), "Outcome of the check.", nullable=False, allowed=_STATUS),
            col("value_found", pa.string(), "Value found (as text, with unit in the message)."),
            col("value_expected", pa.string(), "Value or range expected."),
            col("message", pa.string(), "One sentence for the coordinator."),
        ],
        ("trial_id", "site_id", "check_name", "scope", "scope_id"),
    ),
)

#: The pipeline's own record of its flow runs.
FLOW_RUNS = table(
    "flow_runs",
    "One Prefect flow run, for the coordinator's status.",
    [
        TRIAL,
        SITE_OPT,
        col("flow_run_id", pa.string(), "Prefect flow-run id.", nullable=False),
        col("flow_name", pa.string(), "Flow name.", nullable=False),
        col("state", pa.string(), "Final or current state name (Completed, Failed ...)."),
        col("subject_id", pa.string(), "Subject concerned, if any."),
        col("study_id", pa.string(), "Study concerned, if any."),
        col("started_at", TIMESTAMP, "Start (UTC)."),
        col("ended_at", TIMESTAMP, "End (UTC)."),
        col("duration_s", pa.float64(), "Wall time."),
        col("software_version", pa.string(), "rntflow version that ran."),
        col("message", pa.string(), "Failure reason or summary."),
    ],
    ("trial_id", "flow_run_id"),
    site_partitioned=False,
)
