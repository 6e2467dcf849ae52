"""``rntflow blood import FILE.csv --config trial.yaml``: load blood samples, compute marrow doses.

Validates the whole file (:mod:`rntflow.warehouse.blood`; nothing is written on any
problem), upserts ``blood_samples``, then runs the ``qa`` flow for the subjects in the file:
it computes their blood-based red-marrow doses (``marrow_doses``, beside the image-based
ones) and checks the marrow limit on them. ``--no-qa`` computes the marrow doses without
Prefect and leaves the QA checks as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rntflow.core.config import load_config
from rntflow.core.errors import RntflowError

if TYPE_CHECKING:  # heavy imports stay out of every ``rntflow`` start-up
    import pandas as pd

    from rntflow.warehouse.writer import LoadReport


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``blood`` command (sub-command ``import``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "blood", help="blood samples: import a CSV, compute blood-based red-marrow doses and their QA"
    )
    sub = parser.add_subparsers(dest="blood_command", required=True)
    imp = sub.add_parser("import", help="validate a blood-sample CSV, load it and compute red-marrow doses")
    imp.add_argument(
        "file",
        type=Path,
        metavar="FILE.csv",
        help="columns subject_id,cycle,t_h,activity_concentration_bq_per_ml (t_h: hours after administration)",
    )
    imp.add_argument("--config", type=Path, required=True, help="trial config YAML")
    imp.add_argument(
        "--no-qa", action="store_true", help="compute the marrow doses without running the qa flow (no Prefect)"
    )
    parser.set_defaults(command="blood", func=run)
    return parser


def _administered_cycles(warehouse_dir: str, trial_id: str) -> dict[str, set[int]]:
    from rntflow.warehouse.writer import read_latest

    admins = read_latest(warehouse_dir, "administrations", "trial_id = ?", [trial_id])
    out: dict[str, set[int]] = {}
    for s, c in zip(admins["subject_id"], admins["cycle"]):
        out.setdefault(str(s), set()).add(int(c))
    return out


def import_blood(config_path: str | Path, csv_path: str | Path, *, qa: bool = True) -> tuple[LoadReport, pd.DataFrame]:
    """Import a blood-sample CSV, compute the blood-based red-marrow doses and (``qa``) run the qa flow.

    What ``rntflow blood import`` does, callable from Python (e.g. the demo's close-out, whose
    Prefect environment is already set up; the CLI sets it up first).

    Returns
    -------
    (LoadReport, DataFrame)
        The ``blood_samples`` load and the latest blood-based ``marrow_doses`` rows of the
        file's subjects (withdrawn ones left out).

    Raises
    ------
    RntflowError
        :class:`~rntflow.warehouse.blood.BloodImportError` listing every bad row (nothing is
        written), or a failed qa flow run.
    """
    from rntflow.outcomes_cli import known_subjects
    from rntflow.tasks.marrow import compute_marrow_doses
    from rntflow.warehouse.blood import import_blood_samples
    from rntflow.warehouse.catalog import refresh_catalog

    config_path = str(Path(config_path).resolve())
    config = load_config(config_path)
    report, frame = import_blood_samples(
        config.warehouse_root,
        csv_path,
        known_subjects(config),
        trial_id=config.trial_id,
        administered_cycles=_administered_cycles(config.warehouse_root, config.trial_id),
    )
    subjects = sorted(set(frame["subject_id"]))
    if qa:
        from rntflow.flows.qa import qa_flow

        state = qa_flow(config_path, subject_ids=subjects, return_state=True)
        if not state.is_completed():
            raise RntflowError(f"blood import: the qa flow failed: {state.message}")
    # computes what the qa flow did not (no-qa), else finds every row unchanged and reads them
    blood = compute_marrow_doses(config.warehouse_root, config.trial_id, subjects, config.protocol.radionuclide)
    refresh_catalog(config.warehouse_root)
    return report, blood


def run(args: argparse.Namespace) -> int:
    """Run ``blood import``; returns the process exit code (0 ok, 1 invalid input or failed QA run)."""
    if not args.no_qa:
        from rntflow.demo import prefect_environment, quiet_logging

        try:
            config = load_config(args.config)
        except RntflowError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        quiet_logging()
        prefect_environment(config)
    try:
        report, blood = import_blood(args.config, args.file, qa=not args.no_qa)
    except RntflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"blood samples: {report.rows_in} row(s) read, {report.rows_new} new, "
        f"{report.rows_new_version} changed (new version), {report.rows_unchanged} unchanged"
    )
    print(
        f"red marrow (blood-based): {len(blood)} cycle(s) of {blood['subject_id'].nunique() if len(blood) else 0} "
        f"subject(s) in marrow_doses" + ("" if args.no_qa else "; marrow limit checked on them (qa flow)")
    )
    return 0
