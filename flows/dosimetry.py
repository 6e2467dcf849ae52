"""The ``dosimetry`` flow: one subject-cycle's doses, whenever its time points allow.

A cycle is computed as soon as it has enough time points for the protocol's method (the
protocol's ``min_time_points_for_fit``; one late scan suffices for a single-time-point
estimate), again when a later time point arrives (a new result version), and is marked
final when the protocol's last time point has arrived or data collection is closed.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from rntflow.core.config import TrialConfig
from rntflow.core.locks import named_lock
from rntflow.core.protocol import last_time_point_reached
from rntflow.flows.runners import task_runner
from rntflow.tasks.common import Context, artifact_key, product_store, trial_config
from rntflow.tasks.dosimetry import CycleDosimetryResult, cycle_dosimetry, cycle_timepoints
from rntflow.tasks.products import TimePointMeta
from rntflow.tasks.warehouse import load_rows, read_table

#: A single scan earlier than this (h) is too early for a single-time-point estimate:
#: Hänscheid's error stays below ~10% only from 0.75 T_eff on (kidney T_eff ~ 40-50 h).
SINGLE_TIME_POINT_EARLIEST_H = 48.0


def cycle_readiness(metas: list[TimePointMeta], config: TrialConfig, close_out: bool = False) -> tuple[bool, bool, str]:
    """(run now, final, why) for a cycle's quantified time points."""
    if not metas:
        return False, False, "no quantified time point"
    final = close_out or last_time_point_reached([m.t_h for m in metas], config.protocol.time_points)
    n = len(metas)
    need = config.protocol.min_time_points_for_fit
    if config.protocol.dosimetry_method == "single_time_point" or n == 1:
        ok = max(m.t_h for m in metas) >= SINGLE_TIME_POINT_EARLIEST_H or close_out
        return ok, final, f"1 time point at {metas[-1].t_h:.0f} h" if ok else "single scan too early"
    if n >= need or close_out:
        return True, final, f"{n} time points"
    return False, False, f"{n} of {need} time points"


def subject_summary_markdown(subject_id: str, cycle: int, final: bool, result: CycleDosimetryResult) -> str:
    """The coordinator's summary of one cycle: doses with uncertainty and BED, then QA findings."""
    lines = [
        f"# {subject_id}, cycle {cycle} ({'final' if final else 'provisional'}, {result.method})",
        "",
        "| VOI | engine | method | dose (Gy) | SD (Gy) | BED (Gy) | TIA (MBq h) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(result.voi_doses, key=lambda r: (r["voi"], r["engine"])):
        bed = f"{r['bed_gy']:.2f}" if r.get("bed_gy") is not None else ""
        lines.append(
            f"| {r['voi']} | {r['engine']} | {r['method']} | {r['dose_gy']:.2f} | {r['dose_sd_gy']:.2f} | "
            f"{bed} | {r['tia_mbq_h']:.0f} |"
        )
    issues = [c for c in result.checks if c["status"] != "pass"]
    lines += ["", f"QA: {len(issues)} finding(s)" + (":" if issues else "")]
    lines += [f"- {c['status']}: {c['check_name']} ({c['scope_id']}): {c['message']}" for c in issues]
    lines += [
        "",
        "Dose-effect report: `<warehouse>/reports/dose_effect.md`; all rows: DuckDB `voi_doses`, `qa_checks`.",
    ]
    return "\n".join(lines)


@flow(name="dosimetry", flow_run_name="dosimetry {subject_id} cycle {cycle}", task_runner=task_runner())
def dosimetry_flow(config_path: str | None, site_id: str, subject_id: str, cycle: int, close_out: bool = False) -> dict:
    """Register the cycle's time points, fit the kinetics, compute and store the doses."""
    config = trial_config(config_path)
    log = get_run_logger()
    # one cycle at a time across workers: the run that waits reads the time points after the
    # other has loaded its rows, so the latest rows come from the most inputs (core/locks.py)
    with named_lock(
        config.warehouse_dir / ".locks", "dosimetry", config.trial_id, site_id, subject_id, cycle
    ) as waited:
        if waited > 1.0:
            log.info("cycle %s of %s: waited %.1f s for another run of this cycle", cycle, subject_id, waited)
        metas = cycle_timepoints(product_store(config), site_id, subject_id, cycle)
        run, final, why = cycle_readiness(metas, config, close_out)
        if not run:
            log.info("cycle %s of %s waits: %s", cycle, subject_id, why)
            return {"status": "waiting", "reason": why}
        result = cycle_dosimetry.submit(config, site_id, subject_id, cycle).result()  # RNTFLOW_TASK_RUNNER
        if not result.done:
            log.info("cycle %s of %s waits: %s", cycle, subject_id, result.reason)
            return {"status": result.status, "reason": result.reason, "study_ids": result.study_ids}
        ctx = Context(config.trial_id, site_id, subject_id).cols(cycle=cycle)
        wh = config.warehouse_root
        if not final:  # a cycle once closed stays closed (re-running the same inputs changes nothing)
            done = read_table(
                wh,
                "voi_doses",
                "trial_id = ? AND subject_id = ? AND cycle = ? AND final",
                [config.trial_id, subject_id, cycle],
            )
            final = not done.empty
        voi_doses = [{**r, "final": final} for r in result.voi_doses]
        tables = {
            "voi_timepoints": result.voi_timepoints,
            "tac_fits": result.tac_fits,
            "voi_doses": voi_doses,
            "dvhs": result.dvhs,
        }
        loads = {t: load_rows(wh, t, rows, ctx) for t, rows in tables.items()}
        load_rows(wh, "qa_checks", result.checks, Context(config.trial_id, site_id).cols())
        create_markdown_artifact(
            subject_summary_markdown(subject_id, cycle, final, result),
            key=f"subject-{artifact_key(subject_id)}-cycle-{cycle}",
            description=f"{subject_id} cycle {cycle}: doses, uncertainty, QA",
        )
        log.info(
            "cycle %s of %s: %s, %s (%s), %d VOI doses",
            cycle,
            subject_id,
            result.method,
            "final" if final else "provisional",
            why,
            len(voi_doses),
        )
        return {
            "status": "done",
            "final": final,
            "method": result.method,
            "loads": loads,
            "voi_doses": voi_doses,
            "checks": result.checks,
        }
