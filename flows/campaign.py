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
is processed again when the calibration arrives). A study that fails does not stop the
others; the campaign ends *Failed* naming them. For several workers, split a campaign by
site into one run per worker (``rntflow.campaign_cli.shard_by_site``): sites share nothing
that a study's processing writes except per-cycle products, which the cycle lock guards.

The listener's per-study hand-off is unchanged: this flow is for bulk work only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from rntflow.flows.process_study import process_study
from rntflow.listener.handoff import StudyHandoff


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
    for h in handoffs:
        state = process_study(**h.parameters(config_path), return_state=True)
        if not state.is_completed():
            counts["failed"] += 1
            failed.append(f"{h.site_id}/{h.subject_id}/{h.study_key}: {state.message or state.name}"[:300])
        elif state.name == "Waiting":
            counts["waiting"] += 1
        else:
            counts["processed"] += 1
    data = {"n_studies": len(handoffs), **counts, "failed_studies": failed}
    if failed:
        return Failed(
            message=f"{len(failed)} of {len(handoffs)} studies failed: " + "; ".join(failed)[:2000], data=data
        )
    return Completed(
        message=f"{len(handoffs)} studies: {counts['processed']} processed, {counts['waiting']} waiting", data=data
    )
