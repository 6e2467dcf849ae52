"""``rntflow demo``: simulate the demo trial, start the listener, push every site as its PACS would.

At this stage the hand-offs of stable studies are recorded (the Prefect flows that consume
them are the next issue); the demo ends with the coordinator's status table.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

from rntflow.config import load_config


class _RecordingDispatcher:
    """Accepts hand-offs and remembers them (stand-in until the process-study flow lands)."""

    def __init__(self) -> None:
        self.handoffs: list = []
        self._lock = threading.Lock()

    def submit(self, h) -> str:
        with self._lock:
            self.handoffs.append(h)
            return f"recorded-{len(self.handoffs)}"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="simulate, listen and push the demo trial end to end")
    p.add_argument("--config", default="deployments/trial.example.yaml")
    p.add_argument("--fresh", action="store_true", help="delete previous demo data first")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from listener.app import start_listener
    from listener.status import format_status, inbox_status
    from rntflow.push import push_tree
    from simulation.trial import TrialSpec, simulate_trial

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    config = load_config(args.config)
    trial_dir = config.enrolment_file.parent
    if args.fresh:
        for d in (trial_dir, config.spool_dir, config.keys_dir, config.warehouse_dir):
            shutil.rmtree(d, ignore_errors=True)
    if not (trial_dir / "truth.json").exists():
        say(f"simulating the demo trial into {trial_dir}")
        simulate_trial(trial_dir, TrialSpec(trial_id=config.trial_id), progress=say)
    dispatcher = _RecordingDispatcher()
    server = start_listener(config, dispatcher, block=False, config_path=str(Path(args.config).resolve()))
    say(f"listener {config.listener.ae_title} on port {server.port}")
    try:
        failures = 0
        for site in config.sites:
            site_dir = trial_dir / "dicom" / site.id
            # phantoms first, as a site would scan them before treating patients
            for study_root in sorted(site_dir.iterdir(), key=lambda p: (not p.name.startswith("QC-"), p.name)):
                report = push_tree(study_root, "127.0.0.1", server.port, site.calling_ae_titles[0],
                                   config.listener.ae_title)
                failures += len(report.failures)
            say(f"{site.id}: pushed")
        n_studies = sum(1 for _ in trial_dir.glob("dicom/*/*/*"))
        deadline = time.monotonic() + 120 + config.listener.quiet_period_s
        while len({h.study_key for h in dispatcher.handoffs}) < n_studies and time.monotonic() < deadline:
            time.sleep(1.0)
        say(f"{len({h.study_key for h in dispatcher.handoffs})}/{n_studies} studies stable and handed off; "
            f"{failures} push failures")
    finally:
        server.shutdown()
    print(format_status(inbox_status(config)))
    print(f"\ntruth: {trial_dir / 'truth.json'}; de-identified studies under {config.spool_dir}")
    return 0 if failures == 0 else 1
