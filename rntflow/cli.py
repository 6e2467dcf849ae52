"""The ``rntflow`` console script: one entry point for every user.

Sub-commands: ``simulate``, ``push``, ``listen``, ``status``, ``demo``, ``check-config``,
``outcomes import``, ``blood import``, ``tare-plan``. Errors the user can fix print as one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
import time
from pathlib import Path

from rntflow import __version__
from rntflow.core.errors import RntflowError

#: Sub-commands provided by other packages: module with ``add_parser(subparsers)`` and ``run(args)``.
PLUGGABLE = (
    "rntflow.listener.app",
    "rntflow.status_cli",
    "rntflow.demo",
    "rntflow.outcomes_cli",
    "rntflow.blood_cli",
    "rntflow.tare_cli",
    "rntflow.crosscal_cli",
    "rntflow.sql_cli",
    "rntflow.reprocess_cli",
    "rntflow.campaign_cli",
)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from rntflow.simulation.trial import TrialSpec, simulate_trial

    spec = TrialSpec(
        n_sites=args.sites,
        subjects_per_site=args.subjects_per_site,
        cycles=args.cycles,
        seed=args.seed,
        tare_subjects_per_site=args.tare_subjects_per_site,
    )
    t0 = time.perf_counter()
    summary = simulate_trial(args.out, spec, progress=lambda m: print(f"[{time.perf_counter() - t0:5.1f}s] {m}"))
    print(
        f"synthetic trial in {summary.out_dir}: {summary.n_sites} sites, {summary.n_subjects} subjects, "
        f"{summary.n_studies} studies, {summary.n_files} files, {summary.n_bytes / 1e6:.1f} MB "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    print(f"ground truth: {Path(args.out) / 'truth.json'}; trial config: {Path(args.out) / 'trial.yaml'}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from rntflow.push import push_tree

    report = push_tree(
        args.dir, args.host, args.port, args.calling_aet, args.called_aet, progress=None if args.quiet else print
    )
    for path in report.skipped_files:
        print(f"skipped (not DICOM): {path}")
    for f in report.failures:
        if not f.status.startswith("association "):
            print(f"FAILED {f.path}: {f.status}")
    for reason in report.rejections:
        print(
            f"rntflow push: association refused ({reason}); check --calling-aet, --called-aet and "
            f"the receiver's site list",
            file=sys.stderr,
        )
    print(
        f"{report.studies} studies, {report.sent} instances sent, {report.stored} stored, {len(report.failures)} failed"
    )
    return 0 if report.ok else 1


def config_problems(config_path: Path) -> tuple[str, list[str]]:
    """Validate a trial config and the files it points to; returns a summary and the problems.

    Checked: the YAML itself (raises :class:`ConfigError`), the enrolment table (exists,
    columns, every row valid, site ids known to the config) and the phantom fill log
    (exists, columns, every row valid, each row an enrolled phantom).
    """
    from rntflow.core.config import load_config
    from rntflow.core.enrolment import load_enrolment
    from rntflow.core.errors import CalibrationError, EnrolmentError
    from rntflow.core.fills import load_phantom_fills

    cfg = load_config(config_path)
    problems: list[str] = []
    sites = {s.id for s in cfg.sites}
    enrolled = []
    if not cfg.enrolment_file.exists():
        problems.append(f"paths.enrolment: {cfg.enrolment_file} does not exist")
    else:
        try:
            enrolled = load_enrolment(cfg.enrolment_file)
        except EnrolmentError as exc:
            problems.append(str(exc))
        unknown = sorted({e.site_id for e in enrolled} - sites)
        if unknown:
            problems.append(f"{cfg.enrolment_file}: site id(s) {', '.join(unknown)} are not in the config's sites")
    phantoms = {e.subject_id for e in enrolled if e.kind == "phantom"}
    if not cfg.phantom_fills_file.exists():
        problems.append(
            f"paths.phantom_fills: {cfg.phantom_fills_file} does not exist "
            "(phantom scans cannot be calibrated without it)"
        )
    else:
        try:
            fills = load_phantom_fills(cfg.phantom_fills_file)
            stray = sorted(set(fills) - phantoms) if enrolled else []
            if stray:
                problems.append(f"{cfg.phantom_fills_file}: {', '.join(stray)} not enrolled as phantom(s)")
        except CalibrationError as exc:
            problems.append(str(exc))
    summary = (
        f"trial {cfg.trial_id}, {len(cfg.sites)} sites, {len(enrolled)} enrolled, "
        f"listener {cfg.listener.ae_title}@{cfg.listener.host}:{cfg.listener.port}"
    )
    return summary, problems


def _cmd_check_config(args: argparse.Namespace) -> int:
    summary, problems = config_problems(args.config)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s); {summary}", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(f"{args.config}: valid; {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="rntflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rntflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a synthetic multicentre 177Lu trial with ground truth")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    p.add_argument("--subjects-per-site", type=int, default=2, help="subjects per site (default 2)")
    p.add_argument(
        "--tare-subjects-per-site",
        type=int,
        default=2,
        help="subjects per radioembolisation site (two TARE sites, 166Ho and 90Y; 0: none; default 2)",
    )
    p.add_argument(
        "--cycles",
        type=int,
        default=2,
        choices=range(1, 5),
        metavar="{1..4}",
        help="treatment cycles per subject (default 2)",
    )
    p.add_argument("--seed", type=int, default=20261123, help="random seed (default 20261123)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("push", help="send a tree of DICOM files by C-STORE, one association per study")
    p.add_argument("dir", type=Path, help="a folder (searched recursively) or one DICOM file")
    p.add_argument("--host", default="127.0.0.1", help="the receiver's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11112, help="the receiver's port (default 11112)")
    p.add_argument("--calling-aet", required=True, help="our AE title (the site's PACS AE title)")
    p.add_argument("--called-aet", default="RNTFLOW", help="the receiver's AE title (default RNTFLOW)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per study")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("check-config", help="validate a trial config, its enrolment table and phantom fill log")
    p.add_argument("--config", required=True, type=Path, help="trial YAML")
    p.set_defaults(func=_cmd_check_config)

    for name in PLUGGABLE:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not args.verbose:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except RntflowError as exc:
        print(f"rntflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
