"""``rntflow status``: the trial coordinator's view.

Per site: subjects enrolled, studies received / pending / held / quarantined (listener
inbox), processed (warehouse), QA failures, calibrations due, expired or missing, failed
flow runs. Per subject and cycle: protocol time points received, missing or pending,
whether a dose exists. ``--json`` prints the same as one JSON document for scripts
(see :func:`rntflow.status.model.coordinator_status` for its keys and for the clock that
deadlines are measured against).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from rntflow.core.config import load_config


def iso_datetime_utc(text: str) -> datetime:
    """Parse ``--as-of`` (ISO 8601; a time without zone is taken as UTC)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``status`` sub-command."""
    p = subparsers.add_parser(
        "status",
        help="coordinator's view: per site studies, QA, calibrations; per subject time points",
        description="The trial coordinator's view: per site, studies received, processed, held and "
        "quarantined, QA failures, calibrations due/expired/missing, failed flow runs; "
        "per subject and cycle, protocol time points received, missing or pending.",
    )
    p.add_argument("--config", required=True, help="trial YAML")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--as-of",
        type=iso_datetime_utc,
        default=None,
        metavar="DATETIME",
        help="reference time on the warehouse's de-identified clock (ISO 8601, UTC if no "
        "zone); default: today, moved onto that clock by the trial's date shift",
    )
    p.add_argument(
        "--due-within-days",
        type=int,
        default=None,
        metavar="DAYS",
        help="report calibrations expiring within DAYS as due (default 30)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the coordinator's status; returns 0."""
    from rntflow.status import DUE_WITHIN_DAYS, coordinator_status, format_coordinator_status

    due = getattr(args, "due_within_days", None)
    status = coordinator_status(
        load_config(args.config),
        now=getattr(args, "as_of", None),
        due_within_days=DUE_WITHIN_DAYS if due is None else due,
    )
    print(json.dumps(status, indent=1) if args.json else format_coordinator_status(status))
    return 0
