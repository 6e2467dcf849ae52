"""The ``qa`` flow: per subject, the checks that span time points and cycles.

Cumulative organ doses and BED against the trial's limits (kidneys, marrow, salivary
glands), time points missing from the protocol for cycles that are complete, and, when
data collection is closed (``close_out``), the final dosimetry of every open cycle.
"""

from __future__ import annotations

from prefect import flow

from rntflow.dosimetry.limits import cumulative_limit_checks, missing_time_points
from rntflow.flows.dosimetry import dosimetry_flow
from rntflow.tasks.common import Context, product_store, trial_config
from rntflow.tasks.warehouse import load_rows, read_table


@flow(name="qa", flow_run_name="qa {subject_ids}")
def qa_flow(config_path: str | None, subject_ids: list[str] | None = None, close_out: bool = False) -> dict:
    """Run the cross-cycle QA of ``subject_ids`` (default: every subject with time points)."""
    config = trial_config(config_path)
    wh = str(config.warehouse_dir)
    metas = [m for m in product_store(config).all_timepoints() if subject_ids is None or m.subject_id in subject_ids]
    cycles = sorted({(m.site_id, m.subject_id, m.cycle) for m in metas})
    if close_out:
        for site_id, subject_id, cycle in cycles:
            dosimetry_flow(config_path, site_id, subject_id, cycle, close_out=True)
    doses = read_table(wh, "voi_doses", "trial_id = ? AND engine = 'organ'", [config.trial_id])
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
            missing = missing_time_points(t, windows)
            rows.append({"check_name": "time_points", "scope": "cycle", "scope_id": f"{subject_id}/{cycle}",
                         "cycle": cycle, "status": "warn" if missing else "pass",
                         "value_found": ", ".join(f"{x:.0f}h" for x in sorted(t)),
                         "value_expected": ", ".join(f"{w[0]:g}h" for w in windows),
                         "message": f"missing protocol time point(s): {', '.join(f'{m:g} h' for m in missing)}"
                         if missing else "all protocol time points acquired"})
        mine = doses[doses["subject_id"] == subject_id]
        per_cycle: dict[str, list] = {}
        for voi, part in mine.groupby("voi"):
            # one dose per cycle: the multi-time-point result where there is one
            best = part.sort_values("method").drop_duplicates("cycle", keep="first")
            per_cycle[voi] = [(float(r["dose_gy"]), None if r["bed_gy"] is None or r["bed_gy"] != r["bed_gy"]
                               else float(r["bed_gy"])) for r in best.to_dict("records")]
        for lc in cumulative_limit_checks(per_cycle, limits):
            rows.append({"check_name": f"limit_{lc.quantity}", "scope": "subject", "scope_id": f"{subject_id}/{lc.voi}",
                         "status": lc.status, "value_found": f"{lc.cumulative:.2f} Gy",
                         "value_expected": f"<= {lc.limit:g} Gy", "message": lc.message})
        load_rows(wh, "qa_checks", rows, Context(config.trial_id, site_id).cols(subject_id=subject_id))
        n_checks += len(rows)
    return {"subjects": len({c[1] for c in cycles}), "checks": n_checks}
