"""The warehouse tables of the blood-based red-marrow dosimetry: blood samples and marrow doses.

Assembled in :mod:`rntflow.warehouse.schema`.
"""

from __future__ import annotations

import pyarrow as pa

from rntflow.warehouse.columns import CYCLE, SITE, SUBJECT, TRIAL, Table, col, table

#: The blood-based red-marrow dosimetry tables, in catalog order.
BLOOD_TABLES: tuple[Table, ...] = (
    table(
        "blood_samples",
        "One whole-blood activity concentration sample of a subject's cycle (imported from the "
        "trial's blood-sample CSV, `rntflow blood import`).",
        [
            TRIAL,
            SITE,
            SUBJECT,
            CYCLE,
            col("t_h", pa.float64(), "Sampling time after the start of administration.", nullable=False),
            col(
                "activity_per_ml_mbq",
                pa.float64(),
                "Activity concentration in whole blood: MBq in one mL (as measured, not decay-corrected).",
                nullable=False,
            ),
            col(
                "excluded",
                pa.bool_(),
                "True when a later import of the cycle no longer lists this sample (kept, not used).",
            ),
        ],
        ("trial_id", "subject_id", "cycle", "t_h"),
        is_result=False,
    ),
    table(
        "marrow_doses",
        "Red-marrow absorbed dose of one cycle by one method: blood-based (EANM, method blood) "
        "beside the image-based Bone_Marrow VOI dose of each engine (method image, copied from voi_doses).",
        [
            TRIAL,
            SITE,
            SUBJECT,
            CYCLE,
            col("method", pa.string(), "Marrow dosimetry method.", nullable=False, allowed=("blood", "image")),
            col(
                "engine",
                pa.string(),
                "blood: the blood method; image: the voi_doses engine of the Bone_Marrow dose.",
                nullable=False,
            ),
            col(
                "kinetics_model",
                pa.string(),
                "blood: the blood TAC model (mono_exp, bi_exp, trapezoid); image: the voi_doses kinetics method.",
            ),
            col("dose_gy", pa.float64(), "Red-marrow absorbed dose in this cycle.", nullable=False),
            col("dose_sd_gy", pa.float64(), "Standard uncertainty of the dose (blood: from the blood fit)."),
            col("self_dose_gy", pa.float64(), "blood: marrow self-dose (electrons absorbed locally)."),
            col("cross_dose_gy", pa.float64(), "blood: photon cross-dose from the remainder of body."),
            col("tiac_per_ml_mbq_h", pa.float64(), "blood: time-integrated activity in one mL of blood (MBq h/mL)."),
            col("tiac_sd_per_ml_mbq_h", pa.float64(), "blood: standard uncertainty of the blood TIAC (MBq h/mL)."),
            col("tia_mbq_h", pa.float64(), "Red-marrow TIA (blood: TIAC x RMBLR x mass; image: the VOI's TIA)."),
            col("remainder_tia_mbq_h", pa.float64(), "blood: remainder-of-body TIA of the cross-dose."),
            col(
                "whole_body_source",
                pa.string(),
                "blood: where the whole-body TIA came from.",
                allowed=("measured", "image_vois+blood_pool"),
            ),
            col("mass_g", pa.float64(), "Red-marrow (blood: ICRP 89 reference) or VOI (image) mass used."),
            col("blood_effective_half_life_h", pa.float64(), "blood: terminal effective half-life of the blood TAC."),
            col("n_samples", pa.int16(), "blood: blood samples fitted."),
            col("fallback_reason", pa.string(), "blood: why the blood TIAC is the conservative fallback, if it is."),
            col(
                "settings_json",
                pa.string(),
                "blood: RMBLR, reference sex, S(RM<-RB) (Gy per MBq h) and body mass used, as JSON text.",
            ),
            col("administered_activity_mbq", pa.float64(), "Activity administered in this cycle."),
            col(
                "final",
                pa.bool_(),
                "image: the voi_doses row's final flag; blood: the cycle's image doses' flag "
                "(their TIAs feed the whole-body TIA), True when the cycle has none.",
            ),
            col(
                "withdrawn",
                pa.bool_(),
                "blood: True when the cycle no longer has usable blood samples (kept for history, not used).",
            ),
        ],
        ("trial_id", "subject_id", "cycle", "method", "engine"),
    ),
)
