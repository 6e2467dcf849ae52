"""The warehouse tables of the 177Lu dosimetry and the clinical outcomes, and the dose views.

Time points, TAC fits, VOI doses and DVHs, the outcomes, and the derived views of the
catalog built on them (``voi_dose_cycle`` ... ``dose_effect``); assembled in
:mod:`rntflow.warehouse.schema`.
"""

from __future__ import annotations

import pyarrow as pa

from rntflow.core.methods import METHOD_PREFERENCE
from rntflow.warehouse.columns import CYCLE, SITE, SITE_OPT, SUBJECT, TRIAL, VOI, DerivedView, Table, col, table

_ENDPOINTS = ("nephrotoxicity", "xerostomia", "liver_toxicity", "lesion_response", "pfs")
_RESPONSES = ("CR", "PR", "SD", "PD")

#: The 177Lu dosimetry tables and the clinical outcomes, in catalog order.
DOSIMETRY_TABLES: tuple[Table, ...] = (
    table(
        "voi_timepoints",
        "Quantified activity in one VOI at one time point.",
        [
            TRIAL,
            SITE,
            SUBJECT,
            CYCLE,
            VOI,
            col("study_id", pa.string(), "Study of this time point."),
            col("t_h", pa.float64(), "Time after administration.", nullable=False),
            col("activity_mbq", pa.float64(), "Activity in the VOI (decay-corrected to nothing: as imaged)."),
            col("activity_sd_mbq", pa.float64(), "Standard uncertainty of the activity."),
            col("volume_ml", pa.float64(), "VOI volume."),
            col("mass_g", pa.float64(), "VOI mass (CT density or reference density)."),
            col("recovery_coefficient", pa.float64(), "Partial-volume recovery applied (1 = none)."),
            col("calibration_id", pa.string(), "Calibration used to quantify."),
        ],
        ("trial_id", "subject_id", "cycle", "voi", "t_h"),
    ),
    table(
        "tac_fits",
        "Time-activity curve fit and time-integrated activity of one VOI in one cycle.",
        [
            TRIAL,
            SITE,
            SUBJECT,
            CYCLE,
            VOI,
            col(
                "model",
                pa.string(),
                "TAC model chosen (mono_exp, bi_exp, tri_exp, trapezoid, hanscheid, madsen ...).",
                nullable=False,
            ),
            col("params_json", pa.string(), "Fitted parameters as JSON text, with units in the keys."),
            col("n_timepoints", pa.int16(), "Time points used."),
            col("aicc", pa.float64(), "AICc of the chosen model."),
            col("r2", pa.float64(), "Coefficient of determination."),
            col("tia_mbq_h", pa.float64(), "Time-integrated activity, 0 to infinity.", nullable=False),
            col("tia_sd_mbq_h", pa.float64(), "Standard uncertainty of the TIA."),
            col("effective_half_life_h", pa.float64(), "Effective half-life of the terminal phase."),
            col("fallback_reason", pa.string(), "Why a simpler model was used, if it was."),
        ],
        ("trial_id", "subject_id", "cycle", "voi"),
    ),
    table(
        "voi_doses",
        "Mean absorbed dose (and BED) to one VOI in one cycle by one engine/method.",
        [
            TRIAL,
            SITE,
            SUBJECT,
            CYCLE,
            VOI,
            col(
                "engine",
                pa.string(),
                "Dose engine.",
                nullable=False,
                allowed=("organ", "sphere", "voxel_dpk", "voxel_led"),
            ),
            col("method", pa.string(), "Kinetics method.", nullable=False, allowed=tuple(sorted(METHOD_PREFERENCE))),
            col("dose_gy", pa.float64(), "Mean absorbed dose in this cycle.", nullable=False),
            col("dose_sd_gy", pa.float64(), "Standard uncertainty of the dose."),
            col("bed_gy", pa.float64(), "Biologically effective dose (LQ model) in this cycle."),
            col("mass_g", pa.float64(), "VOI mass used."),
            col("tia_mbq_h", pa.float64(), "TIA used."),
            col("administered_activity_mbq", pa.float64(), "Activity administered in this cycle."),
            col("calibration_id", pa.string(), "Calibration used."),
            col(
                "final",
                pa.bool_(),
                "True when the cycle's last protocol time point has arrived or data collection closed.",
            ),
        ],
        ("trial_id", "subject_id", "cycle", "voi", "engine", "method"),
    ),
    table(
        "dvhs",
        "Cumulative dose-volume histogram of one VOI, one row per dose bin.",
        [
            TRIAL,
            SITE,
            SUBJECT,
            CYCLE,
            VOI,
            col("engine", pa.string(), "Dose engine.", nullable=False),
            col(
                "bin_index",
                pa.int16(),
                "Index of the dose bin, 0 = 0 Gy (a recomputed DVH replaces every bin: "
                "the bin edges follow the VOI's maximum dose).",
                nullable=False,
            ),
            col("dose_bin_gy", pa.float64(), "Lower edge of the dose bin.", nullable=False),
            col(
                "volume_fraction",
                pa.float64(),
                "Fraction of the VOI volume receiving at least dose_bin_gy (0-1).",
                nullable=False,
            ),
        ],
        ("trial_id", "subject_id", "cycle", "voi", "engine", "bin_index"),
    ),
    table(
        "outcomes",
        "One clinical outcome assessment (imported from the trial's outcomes CSV).",
        [
            TRIAL,
            SITE_OPT,
            SUBJECT,
            col("endpoint", pa.string(), "Endpoint.", nullable=False, allowed=_ENDPOINTS),
            col("lesion_voi", pa.string(), "Lesion VOI (Lesion_<n>) for lesion_response, else null."),
            col("grade", pa.int8(), "CTCAE grade 0-5 for toxicity endpoints."),
            col("response", pa.string(), "RECIST-like response for lesion_response.", allowed=_RESPONSES),
            col("event", pa.int8(), "1 = progression or death, 0 = censored (pfs)."),
            col("time_to_event_months", pa.float64(), "Time to event or censoring (pfs)."),
            col("assessed_months", pa.float64(), "Time of assessment after the first cycle."),
        ],
        ("trial_id", "subject_id", "endpoint", "lesion_voi"),
        site_partitioned=False,
        is_result=False,
    ),
)


_PER_CYCLE = (
    TRIAL,
    SITE,
    SUBJECT,
    CYCLE,
    VOI,
    col("engine", pa.string(), "Dose engine.", nullable=False),
    col("method", pa.string(), "Kinetics method of the cycle's dose."),
    col("dose_gy", pa.float64(), "Mean absorbed dose in this cycle."),
    col("dose_sd_gy", pa.float64(), "Standard uncertainty of the dose."),
    col("bed_gy", pa.float64(), "Biologically effective dose in this cycle."),
    col("final", pa.bool_(), "True when the cycle's dose is final."),
)
_CUMULATIVE = (
    TRIAL,
    SITE,
    SUBJECT,
    VOI,
    col("engine", pa.string(), "Dose engine.", nullable=False),
    col("method", pa.string(), "The cycles' common kinetics method, or mixed."),
    col("n_cycles", pa.int64(), "Cycles summed."),
    col("dose_gy", pa.float64(), "Absorbed dose summed over cycles."),
    col("dose_sd_gy", pa.float64(), "Standard uncertainty of the sum (cycles independent, quadrature)."),
    col("bed_gy", pa.float64(), "BED summed over cycles."),
    col("all_final", pa.bool_(), "True when every cycle's dose is final."),
)
_N_VOIS = col("n_vois", pa.int64(), "VOIs averaged into the target (1 for a stored VOI).")

#: Derived views of the catalog, in the order they are defined.
DOSE_VIEWS: tuple[DerivedView, ...] = (
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
        tuple(col("target_voi", pa.string(), "VOI or derived target.") if c.name == "voi" else c for c in _CUMULATIVE)
        + (_N_VOIS,),
        materialised=True,
    ),
    DerivedView(
        "dose_effect",
        "One outcome joined to its dose target, per engine.",
        (
            TRIAL,
            SITE_OPT,
            SUBJECT,
            col("endpoint", pa.string(), "Endpoint."),
            col("lesion_voi", pa.string(), "Lesion VOI for lesion_response."),
            col("target_voi", pa.string(), "Dose target of the endpoint."),
            col("engine", pa.string(), "Dose engine."),
            col("method", pa.string(), "The cycles' common kinetics method, or mixed."),
            col("n_cycles", pa.int64(), "Cycles summed."),
            _N_VOIS,
            col("cumulative_dose_gy", pa.float64(), "Target's absorbed dose summed over cycles."),
            col("cumulative_dose_sd_gy", pa.float64(), "Standard uncertainty of the cumulative dose."),
            col("cumulative_bed_gy", pa.float64(), "Target's BED summed over cycles."),
            col("all_final", pa.bool_(), "True when every cycle's dose is final."),
            col("grade", pa.int8(), "CTCAE grade (toxicity endpoints)."),
            col("response", pa.string(), "Response (lesion_response)."),
            col("event", pa.int8(), "1 = progression or death, 0 = censored (pfs)."),
            col("time_to_event_months", pa.float64(), "Time to event or censoring (pfs)."),
            col("assessed_months", pa.float64(), "Time of assessment after the first cycle."),
            col(
                "effect",
                pa.int32(),
                "1 = event (toxicity at or above the endpoint's grade, CR/PR, PFS event), else 0.",
            ),
        ),
    ),
)
