"""``rntflow outcomes import FILE.csv --config trial.yaml``: load clinical outcomes."""

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

    subjects = warehouse_subjects(config.warehouse_dir)
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
        report = import_outcomes(config.warehouse_dir, args.file, known, trial_id=config.trial_id)
        refresh_catalog(config.warehouse_dir)
    except RntflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"outcomes: {report.rows_in} row(s) read, {report.rows_new} new, "
        f"{report.rows_new_version} changed (new version), {report.rows_unchanged} unchanged, "
        f"{report.files_written} file(s) written to {config.warehouse_dir}"
    )
    return 0
