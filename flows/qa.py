"""The ``qa`` flow: per subject, the checks that span time points and cycles.

Cumulative organ doses and BED against the trial's limits (kidneys, marrow, salivary
glands; the red marrow's blood-based dose where blood samples were imported, see
:mod:`rntflow.tasks.marrow`), time points missing from the protocol for cycles that are complete, and, when
data collection is closed (``close_out``), the final dosimetry of every open cycle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from prefect import flow

from rntflow.core.methods import best_per_key
from rntflow.core.qa import CheckResult, qa_row, status_if
from rntflow.dosimetry.limits import LimitCheck, cumulative_limit_checks, missing_time_points
from rntflow.flows.dosimetry import dosimetry_flow
from rntflow.tasks.common import Context, product_store, trial_config
from rntflow.tasks.marrow import label_marrow_check, marrow_doses_task, marrow_limit_doses
from rntflow.tasks.warehouse import load_rows, read_table

#: Dose engine whose per-cycle doses the cumulative limits are checked on.
LIMIT_ENGINE = "organ"


def limit_doses_per_cycle(
    doses: pd.DataFrame, subject_id: str, engine: str = LIMIT_ENGINE
) -> dict[str, dict[int, tuple[float, float | None]]]:
    """The dose of each cycle of one subject that the limit checks sum, per VOI.

    Where a cycle holds results of several methods, the best method's
    (:func:`rntflow.core.methods.best_per_key`) is taken: the same choice as the warehouse's
    ``voi_dose_cycle`` view, so the limits see the doses the ``dose_effect`` analysis uses.

    Parameters
    ----------
    doses : DataFrame
        Latest ``voi_doses`` rows (columns subject_id, cycle, voi, engine, method, dose_gy, bed_gy).
    subject_id : str
        Trial pseudonym.
    engine : str
        Dose engine to use.

    Returns
    -------
    dict
        VOI -> {cycle: (dose_gy, bed_gy or None)}, cycles ascending.
    """
    mine = [r for r in doses.to_dict("records") if r["subject_id"] == subject_id and r["engine"] == engine]
    out: dict[str, dict[int, tuple[float, float | None]]] = {}
    for r in sorted(best_per_key(mine, ("voi", "cycle")), key=lambda r: (str(r["voi"]), int(r["cycle"]))):
        bed = r.get("bed_gy")
        bed_gy = None if bed is None or (isinstance(bed, float) and math.isnan(bed)) else float(bed)
        out.setdefault(str(r["voi"]), {})[int(r["cycle"])] = (float(r["dose_gy"]), bed_gy)
    return out


def time_points_check(t_h: Sequence[float], windows: Sequence[tuple[float, float, float]]) -> CheckResult:
    """Scans of a complete cycle (``t_h``, h) against the protocol windows ``(nominal, earliest, latest)`` (h)."""
    missing = missing_time_points(t_h, windows)
    return CheckResult(
        "time_points",
        status_if(not missing, "warn"),
        ", ".join(f"{x:.0f}h" for x in sorted(t_h)),
        ", ".join(f"{w[0]:g}h" for w in windows),
        f"missing protocol time point(s): {', '.join(f'{m:g} h' for m in missing)}"
        if missing
        else "all protocol time points acquired",
    )


def limit_check(lc: LimitCheck) -> CheckResult:
    """A cumulative dose (or BED) limit check as a QA result."""
    return CheckResult(f"limit_{lc.quantity}", lc.status, f"{lc.cumulative:.2f} Gy", f"<= {lc.limit:g} Gy", lc.message)


@flow(name="qa", flow_run_name="qa {subject_ids}")
def qa_flow(config_path: str | None, subject_ids: list[str] | None = None, close_out: bool = False) -> dict:
    """Run the cross-cycle QA of ``subject_ids`` (default: every subject with time points)."""
    config = trial_config(config_path)
    wh = config.warehouse_root
    metas = [m for m in product_store(config).all_timepoints() if subject_ids is None or m.subject_id in subject_ids]
    cycles = sorted({(m.site_id, m.subject_id, m.cycle) for m in metas})
    if close_out:
        for site_id, subject_id, cycle in cycles:
            dosimetry_flow(config_path, site_id, subject_id, cycle, close_out=True)
    doses = read_table(wh, "voi_doses", "trial_id = ? AND engine = ?", [config.trial_id, LIMIT_ENGINE])
    # blood-based red-marrow doses (subjects with blood samples): the marrow limit uses them
    blood = marrow_doses_task(wh, config.trial_id, subject_ids, config.protocol.radionuclide)
    final = {(r["subject_id"], int(r["cycle"])) for r in doses.to_dict("records") if r.get("final") is True}
    windows = [(w.nominal_h, w.earliest_h, w.latest_h) for w in config.protocol.time_points]
    limits = {k: (v.dose_gy, v.bed_gy) for k, v in config.dose_limits.items()}
    n_checks = 0
    for site_id, subject_id in sorted({(s, p) for s, p, _ in cycles}):
        rows = []
        for _, _, cycle in (c for c in cycles if c[1] == subject_id):
            t = [m.t_h for m in metas if m.subject_id == subject_id and m.cycle == cycle]
            if (subject_id, cycle) not in final or len(t) == 1:
                continue  # open cycle; a single-time-point cycle is one scan by design
            rows.append(qa_row(time_points_check(t, windows), "cycle", f"{subject_id}/{cycle}", cycle=cycle))
        per_cycle, blood_cycles = marrow_limit_doses(limit_doses_per_cycle(doses, subject_id), blood, subject_id)
        for lc in cumulative_limit_checks({voi: list(c.values()) for voi, c in per_cycle.items()}, limits):
            check = label_marrow_check(limit_check(lc), lc.voi, blood_cycles, lc.n_cycles)
            rows.append(qa_row(check, "subject", f"{subject_id}/{lc.voi}"))
        load_rows(wh, "qa_checks", rows, Context(config.trial_id, site_id).cols(subject_id=subject_id))
        n_checks += len(rows)
    return {"subjects": len({c[1] for c in cycles}), "checks": n_checks}
