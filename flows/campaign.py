"""The ``campaign`` flow: many studies processed in one flow run, for bulk work.

A re-processing campaign, a back-fill of a site's archive or a load test hands over hundreds
of studies at once. Started one by one on the ``process-study`` deployment, every study is a
flow run of its own, and a process worker starts a new Python process for each: ~5-9 CPU-s
of start-up and imports per study on this machine (BENCHMARKS.md, issue 19), more than the
study's own work. This flow takes a list of the listener's hand-offs and runs
``process-study`` for each as a subflow inside its own process, so the process start and
the imports are paid once per campaign and a study costs only its orchestration (the
subflow's and its task runs' API calls). Every study keeps its own ``process-study`` run, its
outcome (processed / waiting / failed) and its ``flow_runs`` row, exactly as when the listener
hands it off; the results are the same (``tests/flows/test_campaign.py``).

Studies run one after another in the order given (phantoms of a site before its time
points, as a site scans them: a time point given before its camera's calibration waits and
is processed again when the calibration arrives). A patient time point is quantified in its
own run, but its cycle's dosimetry and its subject's QA are deferred to the end of the
campaign and run once per cycle (and once for all its subjects), rather than once per time
point as the listener's path does: the latest doses are the same (the last per-study run
uses the same time points) and a four-time-point cycle's kinetics are fitted once instead
of at every arrival. A study that fails does not stop the others; the campaign ends
*Failed* naming them, and naming any cycle whose deferred dosimetry failed (that failure is
also a failed ``campaign-dosimetry`` run of the subject in ``flow_runs``, shown by
``rntflow status`` until a later run of it succeeds). For several workers, split a campaign by
site into one run per worker (``rntflow.campaign_cli.shard_by_site``): sites share nothing
that a study's processing writes except per-cycle products, which the cycle lock guards.

The listener's per-study hand-off is unchanged: this flow is for bulk work only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from rntflow.flows.dosimetry import dosimetry_flow
from rntflow.flows.process_study import process_study
from rntflow.flows.qa import qa_flow
from rntflow.flows.runners import subflows_without_heartbeats
from rntflow.listener.handoff import StudyHandoff
from rntflow.tasks.common import trial_config
from rntflow.tasks.warehouse import flow_run_row, load_rows

#: ``flow_runs.flow_name`` of a subject's deferred cycle work (dosimetry and QA) in a campaign.
CYCLE_WORK_FLOW_NAME = "campaign-dosimetry"


def read_manifest(manifest_path: str) -> list[dict[str, Any]]:
    """Hand-offs from a JSON file: a list of objects, or JSON Lines (one object a line).

    Each object has the hand-off fields of :class:`rntflow.listener.handoff.StudyHandoff`
    (``site_id``, ``subject_id``, ``kind``, ``study_key``, ``study_dir``, ``n_instances``,
    ``handoff_version``); pseudonymous values only, as the listener writes them.
    """
    text = Path(manifest_path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(stripped))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def campaign_handoffs(studies: list[dict[str, Any]]) -> list[StudyHandoff]:
    """The hand-offs, checked (unknown or missing fields raise ``TypeError``), in the order given."""
    out = []
    for s in studies:
        fields = {k: v for k, v in s.items() if k != "config_path"}
        out.append(StudyHandoff(**fields))
    return out


@flow(name="campaign", flow_run_name="campaign {name}")
def campaign_flow(
    config_path: str,
    studies: list[dict[str, Any]] | None = None,
    manifest_path: str | None = None,
    name: str = "campaign",
) -> State:
    """Run ``process-study`` for every hand-off of ``studies`` and/or ``manifest_path``.

    Parameters
    ----------
    config_path : str
        The trial YAML passed to every study's run.
    studies : list of dict, optional
        Hand-offs (the fields of :class:`~rntflow.listener.handoff.StudyHandoff`).
    manifest_path : str, optional
        A JSON (list) or JSON Lines file of hand-offs, processed after ``studies``; for
        campaigns too large for flow-run parameters.
    name : str
        Shown in the flow-run name (e.g. the shard: ``sites S001-S025``).

    Returns
    -------
    State
        *Completed* with counts per outcome in its data, or *Failed* naming the studies
        that failed (every other study was processed all the same).
    """
    log = get_run_logger()
    handoffs = campaign_handoffs(list(studies or []) + (read_manifest(manifest_path) if manifest_path else []))
    log.info("campaign %s: %d studies", name, len(handoffs))
    counts = {"processed": 0, "waiting": 0, "failed": 0}
    failed: list[str] = []
    cycles: set[tuple[str, str, int]] = set()
    with subflows_without_heartbeats():
        for h in handoffs:
            state = process_study(**h.parameters(config_path), defer_cycle_work=True, return_state=True)
            if not state.is_completed():
                counts["failed"] += 1
                failed.append(f"{h.site_id}/{h.subject_id}/{h.study_key}: {state.message or state.name}"[:300])
                continue
            counts["waiting" if state.name == "Waiting" else "processed"] += 1
            out = state.result(raise_on_failure=False)
            if isinstance(out, dict) and out.get("deferred_cycle") is not None:
                cycles.add((h.site_id, h.subject_id, int(out["deferred_cycle"])))
        failed_cycles = run_deferred_cycle_work(config_path, sorted(cycles))
    data = {
        "n_studies": len(handoffs),
        **counts,
        "failed_studies": failed,
        "cycles_computed": len(cycles),
        "failed_cycles": failed_cycles,
    }
    failed = failed + failed_cycles
    if failed:
        return Failed(
            message=f"{counts['failed']} of {len(handoffs)} studies failed"
            + (f", {len(failed_cycles)} cycles' dosimetry failed" if failed_cycles else "")
            + ": "
            + "; ".join(failed)[:2000],
            data=data,
        )
    return Completed(
        message=f"{len(handoffs)} studies: {counts['processed']} processed, {counts['waiting']} waiting; "
        f"{len(cycles)} cycles' dosimetry run",
        data=data,
    )


def run_deferred_cycle_work(config_path: str, cycles: list[tuple[str, str, int]]) -> list[str]:
    """The dosimetry of every ``(site_id, subject_id, cycle)``, then the QA of their subjects, once.

    Each subject's outcome is a ``campaign-dosimetry`` row in ``flow_runs`` (Failed naming the
    cycle and the next action, or Completed, which clears an earlier failure in status).

    Returns
    -------
    list of str
        ``"site/subject cycle N: reason"`` for every cycle whose dosimetry failed, and
        ``"subject QA: reason"`` if the subjects' QA failed.
    """
    if not cycles:
        return []
    config = trial_config(config_path)
    started = datetime.now(UTC)
    failures: dict[tuple[str, str], list[str]] = {}
    subjects = sorted({(site, subject) for site, subject, _ in cycles})
    with subflows_without_heartbeats():
        for site_id, subject_id, cycle in cycles:
            state = dosimetry_flow(config_path, site_id, subject_id, cycle, return_state=True)
            if not state.is_completed():
                failures.setdefault((site_id, subject_id), []).append(f"cycle {cycle}: {state.message or state.name}")
        qa = qa_flow(config_path, subject_ids=sorted({s for _, s in subjects}), return_state=True)
    qa_failed = [] if qa.is_completed() else [f"subject QA: {qa.message or qa.name}"]
    rows = []
    for site_id, subject_id in subjects:
        why = failures.get((site_id, subject_id), []) + qa_failed
        message = (
            "; ".join(why)[:500]
            + f"; fix the cause, then: rntflow campaign --config <trial.yaml> --subject {subject_id}"
            if why
            else "cycle dosimetry and subject QA done"
        )
        row = flow_run_row(
            CYCLE_WORK_FLOW_NAME,
            "Failed" if why else "Completed",
            started,
            subject_id=subject_id,
            site_id=site_id,
            message=message,
        )
        rows.append({**row, "flow_run_id": f"{row['flow_run_id']}/{subject_id}"})  # one row per subject of this run
    load_rows.fn(config.warehouse_root, "flow_runs", rows, {"trial_id": config.trial_id})
    return [f"{site}/{subject} {w}"[:300] for (site, subject), ws in failures.items() for w in ws] + qa_failed
