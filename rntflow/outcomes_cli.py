"""``rntflow outcomes import FILE.csv --config trial.yaml``: load clinical outcomes.

Outcomes that change the warehouse re-run the ``dose-effect`` flow (a Prefect flow run, like the
close-out's), so the dose-effect report and the subject reports include them; ``--no-analyse``
only loads them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rntflow.core.config import load_config
from rntflow.core.enrolment import load_enrolment
from rntflow.core.errors import RntflowError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``outcomes`` command (sub-command ``import``) to ``subparsers``."""
    parser = subparsers.add_parser("outcomes", help="clinical outcomes: import a CSV into the warehouse")
    sub = parser.add_subparsers(dest="outcomes_command", required=True)
    imp = sub.add_parser("import", help="validate an outcomes CSV and load it into the warehouse")
    imp.add_argument(
        "file",
        type=Path,
        metavar="FILE.csv",
        help="columns subject_id,endpoint,lesion_voi,grade,response,event,time_to_event_months,assessed_months",
    )
    imp.add_argument("--config", type=Path, required=True, help="trial config YAML")
    imp.add_argument(
        "--no-analyse",
        dest="analyse",
        action="store_false",
        help="load the outcomes only; do not re-run the dose-effect flow (run it later with the close-out)",
    )
    parser.set_defaults(command="outcomes", func=run)
    return parser


def known_subjects(config) -> dict[str, str]:
    """Subjects known to the trial: the warehouse ``subjects`` table, else the enrolment file.

    Returns
    -------
    dict
        subject_id -> site_id.
    """
    from rntflow.warehouse.outcomes import warehouse_subjects

    subjects = warehouse_subjects(config.warehouse_root)
    subjects = subjects[subjects["trial_id"] == config.trial_id]
    if len(subjects):
        return dict(zip(subjects["subject_id"], subjects["site_id"]))
    return {e.subject_id: e.site_id for e in load_enrolment(config.enrolment_file) if e.kind == "patient"}


def run(args: argparse.Namespace) -> int:
    """Run ``outcomes import``; returns the process exit code (0 ok, 1 invalid input)."""
    from rntflow.warehouse.catalog import refresh_catalog
    from rntflow.warehouse.outcomes import import_outcomes

    try:
        config = load_config(args.config)
        known = known_subjects(config)
        report = import_outcomes(config.warehouse_root, args.file, known, trial_id=config.trial_id)
        refresh_catalog(config.warehouse_root)
    except RntflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"outcomes: {report.rows_in} row(s) read, {report.rows_new} new, "
        f"{report.rows_new_version} changed (new version), {report.rows_unchanged} unchanged, "
        f"{report.files_written} file(s) written to {config.warehouse_root}"
    )
    if not args.analyse:
        print("dose-effect not re-run (--no-analyse): its report does not show these outcomes yet")
        return 0
    if report.rows_new + report.rows_new_version == 0:
        print("dose-effect not re-run: no outcome changed")
        return 0
    return rerun_dose_effect(config, str(Path(args.config).resolve()))


def rerun_dose_effect(config, config_path: str) -> int:
    """Run the ``dose-effect`` flow on the trial; 0 when it completed, 1 otherwise (with its message)."""
    from rntflow.demo import prefect_environment, quiet_logging

    quiet_logging()
    prefect_environment(config)
    from rntflow.flows.warehouse import dose_effect_flow

    state = dose_effect_flow(config_path, return_state=True)
    if not state.is_completed():
        print(f"dose-effect flow did not complete: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    print(f"dose-effect re-run: {result['n_outcome_rows']} outcome row(s) with doses; report {result['report']}")
    return 0
