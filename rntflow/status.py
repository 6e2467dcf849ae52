"""``rntflow status``: the coordinator's view of what arrived, per site."""

from __future__ import annotations

import argparse
import json

from rntflow.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("status", help="per site: instances, studies pending/handed off, held, quarantined")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from listener.status import format_status, inbox_status

    status = inbox_status(load_config(args.config))
    print(json.dumps(status, indent=1, default=str) if args.json else format_status(status))
    return 0
