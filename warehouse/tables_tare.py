"""The warehouse tables of the radioembolisation (TARE) arm: plans, doses, predicted vs delivered.

Assembled in :mod:`rntflow.warehouse.schema`.
"""

from __future__ import annotations

import pyarrow as pa

from rntflow.warehouse.columns import SITE, SUBJECT, TRIAL, VOI, Table, col, table

_TREATMENT = col("treatment", pa.int16(), "TARE treatment number of the subject, 1-based.", nullable=False)
_ARM = col("arm_id", pa.string(), "TARE arm of the trial config.")
_DEVICE = col("device", pa.string(), "Microsphere product.", allowed=("SIR-Spheres", "TheraSphere", "QuiremSpheres"))

#: The radioembolisation tables, in catalog order.
TARE_TABLES: tuple[Table, ...] = (
    table(
        "tare_plans",
        "One radioembolisation (TARE) partition-model plan: one row per scout (work-up) study.",
        [
            TRIAL,
            SITE,
            SUBJECT,
            _TREATMENT,
            col("study_id", pa.string(), "The scout study planned from.", nullable=False),
            _ARM,
            _DEVICE,
            col("radionuclide", pa.string(), "Treatment radionuclide (Y-90, Ho-166)."),
            col("scout_agent", pa.string(), "Scout agent imaged.", allowed=("Tc-99m-MAA", "Ho-166-scout")),
            col("lung_shunt_fraction", pa.float64(), "Scout lung activity / (lung + liver activity), 0-1."),
            col(
                "tumour_to_normal_ratio",
                pa.float64(),
                "Scout tumour / normal-liver activity per mass (all lesions).",
            ),
            col("tumour_mass_kg", pa.float64(), "All lesions' mass (CT density)."),
            col("normal_liver_mass_kg", pa.float64(), "Perfused non-tumoural liver (Liver_Normal) mass."),
            col("lung_mass_kg", pa.float64(), "Lung mass (Lungs VOI, CT density; the arm's default without one)."),
            col("planned_tumour_dose_gy", pa.float64(), "Mean tumour dose the plan aims at."),
            col("planned_activity_gbq", pa.float64(), "Partition-model activity for the planned tumour dose."),
            col(
                "administered_activity_gbq",
                pa.float64(),
                "Activity administered at this treatment (null until its post-treatment study arrives).",
            ),
            col("post_study_id", pa.string(), "The post-treatment study of this treatment, once known."),
            col(
                "predicted_tumour_dose_gy",
                pa.float64(),
                "Partition-model tumour dose (all lesions) at the planned activity; the doses at the "
                "administered activity are in tare_predicted_delivered.",
            ),
            col(
                "predicted_normal_liver_dose_gy",
                pa.float64(),
                "Partition-model normal-liver dose at the planned activity.",
            ),
            col("predicted_lung_dose_gy", pa.float64(), "Partition-model lung dose at the planned activity."),
            col("prior_lung_dose_gy", pa.float64(), "Lung dose of the subject's earlier treatments."),
            col("cf_j_per_gbq", pa.float64(), "Dose conversion factor used."),
            col("cf_convention", pa.string(), "CF convention.", allowed=("product", "icrp107")),
            col("broken_limits", pa.string(), "Limits the plan breaks, '; '-joined ('' if none)."),
            col("notes", pa.string(), "Target checks and corrections, '; '-joined."),
        ],
        ("trial_id", "subject_id", "study_id"),
    ),
    table(
        "tare_doses",
        "Delivered mean dose and DVH metrics of one VOI in one TARE post-treatment study "
        "(local deposition, activity decay-corrected to administration).",
        [
            TRIAL,
            SITE,
            SUBJECT,
            _TREATMENT,
            col("study_id", pa.string(), "The post-treatment study.", nullable=False),
            VOI,
            col("administered_activity_gbq", pa.float64(), "Activity administered (header)."),
            col("activity_mbq", pa.float64(), "VOI activity at administration (spill-out/partial-volume corrected)."),
            col("mass_kg", pa.float64(), "VOI mass (CT density)."),
            col("mean_dose_gy", pa.float64(), "Mean absorbed dose: activity x CF / mass.", nullable=False),
            col("d2_gy", pa.float64(), "Minimum dose of the hottest 2 % (map as imaged)."),
            col("d50_gy", pa.float64(), "Median dose (map as imaged)."),
            col("d70_gy", pa.float64(), "Minimum dose of the hottest 70 % (map as imaged)."),
            col("d98_gy", pa.float64(), "Minimum dose of the hottest 98 % (map as imaged)."),
            col("recovery_coefficient", pa.float64(), "Partial-volume recovery applied (1 = none)."),
            col("cf_j_per_gbq", pa.float64(), "Dose conversion factor used."),
            col("calibration_id", pa.string(), "Calibration used to quantify."),
            col("method", pa.string(), "Dose method.", allowed=("local_deposition",)),
        ],
        ("trial_id", "subject_id", "study_id", "voi"),
    ),
    table(
        "tare_predicted_delivered",
        "Planned, scout-predicted and delivered mean dose of one VOI and TARE treatment.",
        [
            TRIAL,
            SITE,
            SUBJECT,
            _TREATMENT,
            VOI,
            col("scout_study_id", pa.string(), "The scout study."),
            col("post_study_id", pa.string(), "The post-treatment study."),
            col("planned_dose_gy", pa.float64(), "Scout shares x planned activity."),
            col("predicted_dose_gy", pa.float64(), "Scout shares x administered activity."),
            col("delivered_dose_gy", pa.float64(), "From the post-treatment image."),
            col("delivered_to_predicted_ratio", pa.float64(), "delivered_dose_gy / predicted_dose_gy."),
        ],
        ("trial_id", "subject_id", "treatment", "voi"),
    ),
)
