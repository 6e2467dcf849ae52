"""``rntflow reprocess``: process spooled studies again after a correction, without a re-push."""

from __future__ import annotations

import argparse
from pathlib import Path

from rntflow.core.config import load_config
from rntflow.status_cli import iso_datetime_utc


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``reprocess`` sub-command."""
    p = subparsers.add_parser(
        "reprocess",
        help="process spooled studies again (after a fill-log, config or calibration fix)",
        description="Run process-study again for the spooled (de-identified) studies that match every given "
        "filter, per site phantoms first; results are written as new versions. Without a filter, "
        "everything the listener handed off.",
    )
    p.add_argument("--config", required=True, type=Path, help="trial YAML")
    p.add_argument("--site", action="append", default=[], metavar="SITE_ID", help="only this site (repeatable)")
    p.add_argument(
        "--subject", action="append", default=[], metavar="SUBJECT_ID", help="only this subject (repeatable)"
    )
    p.add_argument(
        "--study",
        action="append",
        default=[],
        metavar="STUDY_KEY",
        help="only this study key, as shown by `rntflow status` (repeatable)",
    )
    p.add_argument(
        "--since",
        type=iso_datetime_utc,
        default=None,
        metavar="DATETIME",
        help="only studies that arrived at or after this time (ISO 8601, UTC if no zone)",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """List (``--dry-run``) or re-process the selected studies; 0 when every one completed."""
    from rntflow.demo import prefect_environment, quiet_logging
    from rntflow.tasks.reprocess import spooled_studies

    config_path = str(Path(args.config).resolve())
    config = load_config(config_path)
    studies = spooled_studies(
        config.spool_dir,
        site_ids=args.site,
        subject_ids=args.subject,
        study_keys=args.study,
        since=args.since,
    )
    for h in studies:
        print(
            f"{'would re-process' if args.dry_run else 're-process'} {h.site_id} {h.subject_id} {h.kind} "
            f"{h.study_key} ({h.n_instances} instances)"
        )
    if args.dry_run or not studies:
        print(f"{len(studies)} studies selected" + (" (dry run: nothing ran)" if args.dry_run else ""))
        return 0
    quiet_logging()
    prefect_environment(config)
    from rntflow.flows.reprocess import reprocess_flow

    state = reprocess_flow(config_path, args.site, args.subject, args.study, args.since, return_state=True)
    if state.is_completed():
        print(f"{len(studies)} studies re-processed")
        return 0
    print(f"rntflow reprocess: {state.message}")
    return 1
