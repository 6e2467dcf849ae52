"""Prefect task: blood-based red-marrow doses (load, call :mod:`rntflow.dosimetry.marrow`, save).

For every subject and cycle with blood samples in the warehouse (``blood_samples``, the
``excluded`` ones left out) and an administration, the blood TAC is fitted and the EANM
blood-based red-marrow dose computed; the image-based ``Bone_Marrow`` dose of each engine
(``voi_doses``, best kinetics method) is written beside it, so ``marrow_doses`` holds both,
labelled by ``method`` (``blood`` | ``image``) and ``engine``.

The whole-body TIA of the cross-dose is :func:`rntflow.dosimetry.marrow.whole_body_tia_estimate`
over the cycle's image-based TIAs (``tac_fits``). Reference masses follow the subject's
``sex`` in ``subjects`` (unknown: the ICRP 89 reference male, recorded in ``settings_json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import pandas as pd
from prefect import task

from rntflow.core.errors import KineticsError
from rntflow.core.methods import best_per_key
from rntflow.core.qa import CheckResult
from rntflow.dosimetry.kinetics import TacFit
from rntflow.dosimetry.marrow import (
    BLOOD_METHOD,
    DEFAULT_RMBLR,
    IMAGE_METHOD,
    BloodMarrowDose,
    blood_marrow_dose,
    prefer_blood_marrow,
    reference_values,
)
from rntflow.warehouse.schema import TABLES
from rntflow.warehouse.writer import load_table, read_latest

MARROW_VOI = "Bone_Marrow"


def _nan_to_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _is_true(x) -> bool:
    return bool(pd.notna(x) and bool(x))


def _in(subject_ids: Sequence[str] | None) -> tuple[str, list]:
    if not subject_ids:
        return "", []
    return " AND subject_id IN (" + ", ".join("?" for _ in subject_ids) + ")", list(subject_ids)


def _cycle_voi_doses(voi_doses: pd.DataFrame, subject_id: str, cycle: int) -> pd.DataFrame:
    """Rows of ``voi_doses`` of one subject's cycle."""
    return voi_doses[(voi_doses["subject_id"] == subject_id) & (voi_doses["cycle"].astype(int) == cycle)]


def _cycle_final(voi_doses: pd.DataFrame, subject_id: str, cycle: int) -> bool:
    """Whether any image-based dose of the cycle is final (True when the cycle has none)."""
    cycle_doses = _cycle_voi_doses(voi_doses, subject_id, cycle)
    return bool(cycle_doses["final"].fillna(False).astype(bool).any()) if len(cycle_doses) else True


def _blood_row(
    base: dict,
    dose: BloodMarrowDose,
    fit: TacFit,
    source: str,
    n_samples: int,
    settings: dict,
    admin_mbq: float,
    final: bool,
) -> dict:
    """The ``marrow_doses`` row of the blood-based dose of one cycle.

    Parameters
    ----------
    base : dict
        ``site_id``, ``subject_id`` and ``cycle`` of the row.
    dose : BloodMarrowDose
        Dose returned by :func:`rntflow.dosimetry.marrow.blood_marrow_dose`.
    fit : TacFit
        Blood-TAC fit returned with it.
    source : str
        Where the whole-body TIA of the cross-dose came from.
    n_samples : int
        Number of blood samples used.
    settings : dict
        Written, key-sorted, as ``settings_json``.
    admin_mbq : float
        Administered activity (MBq).
    final : bool
        Whether the cycle's doses are final.

    Returns
    -------
    dict
    """
    return {
        **base,
        "method": BLOOD_METHOD,
        "engine": BLOOD_METHOD,
        "kinetics_model": fit.model,
        "dose_gy": dose.dose_gy,
        "dose_sd_gy": _nan_to_none(dose.dose_sd_gy),
        "self_dose_gy": dose.self_dose_gy,
        "cross_dose_gy": dose.cross_dose_gy,
        "tiac_per_ml_mbq_h": dose.tiac_mbq_h_per_ml,
        "tiac_sd_per_ml_mbq_h": _nan_to_none(dose.tiac_sd_mbq_h_per_ml),
        "tia_mbq_h": dose.red_marrow_tia_mbq_h,
        "remainder_tia_mbq_h": dose.remainder_tia_mbq_h,
        "whole_body_source": source,
        "mass_g": dose.red_marrow_mass_g,
        "blood_effective_half_life_h": _nan_to_none(fit.effective_half_life_h),
        "n_samples": n_samples,
        "fallback_reason": fit.fallback_reason,
        "settings_json": json.dumps(settings, sort_keys=True),
        "administered_activity_mbq": admin_mbq,
        "final": final,
    }


def _image_rows(base: dict, voi_doses: pd.DataFrame, subject_id: str, cycle: int, admin_mbq: float) -> list[dict]:
    """``marrow_doses`` rows of the image-based ``Bone_Marrow`` doses (best kinetics per engine)."""
    cycle_doses = _cycle_voi_doses(voi_doses, subject_id, cycle)
    mine = cycle_doses[cycle_doses["voi"] == MARROW_VOI]
    return [
        {
            **base,
            "method": IMAGE_METHOD,
            "engine": r["engine"],
            "kinetics_model": r["method"],
            "dose_gy": float(r["dose_gy"]),
            "dose_sd_gy": _nan_to_none(r.get("dose_sd_gy")),
            "tia_mbq_h": _nan_to_none(r.get("tia_mbq_h")),
            "mass_g": _nan_to_none(r.get("mass_g")),
            "administered_activity_mbq": admin_mbq,
            "final": _nan_to_none(r.get("final")),
        }
        for r in best_per_key(mine.to_dict("records"), ("engine",))
    ]


def marrow_dose_rows(
    samples: pd.DataFrame,
    administrations: pd.DataFrame,
    tac_fits: pd.DataFrame,
    voi_doses: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    default_nuclide: str = "Lu-177",
    rmblr: float = DEFAULT_RMBLR,
) -> tuple[list[dict], list[str]]:
    """``marrow_doses`` rows (blood and image) of the cycles that have blood samples.

    Parameters are the latest rows of the warehouse tables of one trial. Returns the rows and
    one warning per cycle that could not be computed (no administration, a blood curve that
    cannot be fitted), which the caller logs.
    """
    rows: list[dict] = []
    warnings: list[str] = []
    if samples.empty:
        return rows, warnings
    used = samples[samples["excluded"].fillna(False).astype(bool) == False]  # noqa: E712
    admin = {(r["subject_id"], int(r["cycle"])): r for r in administrations.to_dict("records")}
    sex = {r["subject_id"]: r.get("sex") for r in subjects.to_dict("records")}
    for (site_id, subject_id, cycle), grp in used.groupby(["site_id", "subject_id", "cycle"], sort=True):
        cycle = int(cycle)
        adm = admin.get((subject_id, cycle))
        where = f"{subject_id} cycle {cycle}"
        if adm is None:
            warnings.append(f"{where}: blood samples but no administration in the warehouse yet; marrow not computed")
            continue
        nuc = adm.get("radionuclide") or default_nuclide
        fits = tac_fits[(tac_fits["subject_id"] == subject_id) & (tac_fits["cycle"].astype(int) == cycle)]
        voi_tia = {str(v): float(t) for v, t in zip(fits["voi"], fits["tia_mbq_h"]) if _nan_to_none(t) is not None}
        sex_used, _, body_g, blood_ml = reference_values(sex.get(subject_id))
        try:
            dose, fit, source = blood_marrow_dose(
                grp["t_h"].astype(float).tolist(),
                grp["activity_per_ml_mbq"].astype(float).tolist(),
                nuc,
                voi_tia_mbq_h=voi_tia,
                sex=sex_used,
                rmblr=rmblr,
            )
        except KineticsError as exc:
            warnings.append(f"{where}: blood curve not usable: {exc}")
            continue
        base = {"site_id": site_id, "subject_id": subject_id, "cycle": cycle}
        admin_mbq = float(adm["administered_activity_mbq"])
        settings = {
            "rmblr": dose.rmblr,
            "reference_sex": sex_used,
            "sex_known": sex.get(subject_id) in ("M", "F"),
            "s_rm_from_rb_gy_per_mbq_h": dose.s_rm_from_rb_gy_per_mbq_h,
            "body_mass_g": body_g,
            "blood_volume_ml": blood_ml,
            "self_dose": "electrons absorbed locally",
        }
        final = _cycle_final(voi_doses, subject_id, cycle)
        rows.append(_blood_row(base, dose, fit, source, len(grp), settings, admin_mbq, final))
        rows.extend(_image_rows(base, voi_doses, subject_id, cycle, admin_mbq))
    return rows, warnings


@task(name="marrow-doses", retries=2, retry_delay_seconds=1)
def marrow_doses_task(
    warehouse_dir: str,
    trial_id: str,
    subject_ids: list[str] | None = None,
    default_nuclide: str = "Lu-177",
    rmblr: float = DEFAULT_RMBLR,
) -> pd.DataFrame:
    """Compute and upsert ``marrow_doses`` of ``subject_ids`` (default all) with blood samples.

    Returns the latest blood-based ``marrow_doses`` rows of those subjects (empty when no
    subject has blood samples), the input of :func:`marrow_limit_doses`.
    """
    return compute_marrow_doses(warehouse_dir, trial_id, subject_ids, default_nuclide, rmblr)


def compute_marrow_doses(
    warehouse_dir: str,
    trial_id: str,
    subject_ids: list[str] | None = None,
    default_nuclide: str = "Lu-177",
    rmblr: float = DEFAULT_RMBLR,
) -> pd.DataFrame:
    """The body of :func:`marrow_doses_task` (callable without Prefect, e.g. by the CLI)."""
    sub, params = _in(subject_ids)
    where, p = "trial_id = ?" + sub, [trial_id, *params]
    samples = read_latest(warehouse_dir, "blood_samples", where, p)
    if samples.empty:
        return pd.DataFrame(columns=list(TABLES["marrow_doses"].column_names))
    rows, warnings = marrow_dose_rows(
        samples,
        read_latest(warehouse_dir, "administrations", where, p),
        read_latest(warehouse_dir, "tac_fits", where, p),
        read_latest(warehouse_dir, "voi_doses", where, p),
        read_latest(warehouse_dir, "subjects", where, p),
        default_nuclide=default_nuclide,
        rmblr=rmblr,
    )
    if warnings:
        _log_warnings(warnings)
    blood_where, blood_p = where + " AND method = ?", [*p, BLOOD_METHOD]
    computed = {(r["subject_id"], r["cycle"]) for r in rows if r["method"] == BLOOD_METHOD}
    for r in rows:
        if r["method"] == BLOOD_METHOD:
            r["withdrawn"] = False
    # a blood-based dose whose cycle has no usable samples any more is kept, marked withdrawn
    held = read_latest(warehouse_dir, "marrow_doses", blood_where, blood_p)
    stale = held[
        [
            (s, int(c)) not in computed and not _is_true(w)
            for s, c, w in zip(held["subject_id"], held["cycle"], held["withdrawn"])
        ]
    ]
    frames = [pd.DataFrame(rows).assign(trial_id=trial_id)] if rows else []
    if len(stale):
        frames.append(
            stale.drop(columns=["result_version", "row_hash", "computed_at", "input_hash"]).assign(withdrawn=True)
        )
    if frames:
        load_table(warehouse_dir, "marrow_doses", pd.concat(frames, ignore_index=True))
    out = read_latest(warehouse_dir, "marrow_doses", blood_where, blood_p)
    return out[~out["withdrawn"].map(_is_true).astype(bool)].reset_index(drop=True)


def _log_warnings(warnings: list[str]) -> None:
    import logging

    try:
        from prefect import get_run_logger

        log = get_run_logger()
    except Exception:  # outside a flow or task run
        log = logging.getLogger(__name__)
    for w in warnings:
        log.warning(w)


def marrow_limit_doses(
    per_cycle: dict[str, dict[int, tuple[float, float | None]]], blood: pd.DataFrame, subject_id: str
) -> tuple[dict[str, dict[int, tuple[float, float | None]]], list[int]]:
    """``per_cycle`` (the QA limit's VOI -> cycle -> (dose, BED)) with the blood-based red-marrow
    dose in place of the image-based ``Bone_Marrow`` dose for the cycles that have one.

    Returns the new mapping and the cycles whose marrow dose is blood-based.
    """
    mine = blood[(blood["subject_id"] == subject_id) & (blood["method"] == BLOOD_METHOD)] if len(blood) else blood
    if mine is None or mine.empty:
        return per_cycle, []
    doses = {int(c): float(d) for c, d in zip(mine["cycle"], mine["dose_gy"])}
    marrow, used = prefer_blood_marrow(per_cycle.get(MARROW_VOI, {}), doses)
    return {**per_cycle, MARROW_VOI: marrow}, used


def label_marrow_check(result: CheckResult, voi: str, blood_cycles: list[int], n_cycles: int) -> CheckResult:
    """Say in a marrow limit check's message which cycles' doses are blood-based."""
    if voi != MARROW_VOI or not blood_cycles:
        return result
    if len(blood_cycles) == n_cycles:
        note = " (blood-based red-marrow dose, EANM method)"
    else:
        which = ", ".join(map(str, blood_cycles))
        note = f" (blood-based red-marrow dose for cycle(s) {which}; image-based Bone_Marrow VOI for the others)"
    return dataclasses.replace(result, message=result.message + note)
