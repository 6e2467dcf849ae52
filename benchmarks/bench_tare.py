"""Radioembolisation (TARE, issue 18) through the real path, against the simulator's truth.

Simulates a TARE-heavy trial (the 177Lu part as small as the simulator allows: one site,
``--lu-subjects`` subjects, one cycle; ``--tare-subjects`` subjects at each of the two TARE
sites: SITE04 QuiremSpheres with a 166Ho scout and 166Ho SPECT post-treatment, SITE05
SIR-Spheres with a 99mTc-MAA scout and 90Y PET post-treatment), writes a config for it (the
simulator's trial.yaml with every path under ``--out`` and a free listener port), then runs
every study through the real path (:func:`rntflow.demo.ingest_and_process`: listener, DICOM
push, ``process-study`` flows in the ingest worker) and :func:`rntflow.demo.close_out`
(final QA, outcomes import, dose-effect flow). Reports, as Markdown:

(a) accuracy against the truth (:func:`rntflow.evaluation.compare_tare_with_truth`), on the
    studies the pipeline found protocol-compliant (``studies.protocol_compliant``, from the
    TARE imaging protocols of the config), with the issue's acceptance criterion per quantity
    (lung dose: 10 % or :data:`LUNG_ABS_TOLERANCE_GY`, whichever is larger; see the notes);
(b) delivered/predicted lesion-dose ratio per scout agent, pipeline and truth (a 166Ho scout
    predicts the treatment better than 99mTc-MAA: Smits et al 2020, DOMAIN.md section 5);
(c) the TARE dose-effect fits (D50, 95 % CI) beside the simulator's models;
(d) every planted Table 1 breach and the tare_* QA flags raised for it;
(e) timings.

Run: ``.venv/bin/python benchmarks/bench_tare.py --tare-subjects 12`` (writes everything under
``/tmp/bench_tare``; the report goes to stdout and to ``/tmp/bench_tare/TARE_RESULTS.md``, copied into BENCHMARKS.md). A trial
already simulated under ``--out`` with the same sizes is reused (its simulate time is the one
recorded then) unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]

from tare_sections import (  # noqa: E402  (a sibling module of this script)
    md_table,
    section_accuracy,
    section_agreement,
    section_compliance,
    section_dose_effect,
    section_qa,
    section_runs,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tare-subjects", type=int, default=12, help="subjects per TARE site (default 12)")
    p.add_argument("--lu-subjects", type=int, default=1, help="177Lu subjects at the one 177Lu site (default 1)")
    p.add_argument("--seed", type=int, default=None, help="simulator seed (default: TrialSpec's)")
    p.add_argument("--out", default="/tmp/bench_tare", help="work folder (default /tmp/bench_tare)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="give up waiting for the flows after this")
    p.add_argument(
        "--results", default="/tmp/bench_tare/TARE_RESULTS.md", help="Markdown output (BENCHMARKS.md holds a copy)"
    )
    p.add_argument("--fresh", action="store_true", help="delete --out first (simulate again)")
    p.add_argument("--simulate-only", action="store_true", help="stop after simulating")
    p.add_argument(
        "--report-only", action="store_true", help="no run: rebuild the report from the last run under --out"
    )
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- run


def simulate(out: Path, args: argparse.Namespace, say) -> tuple[Path, float, dict]:
    """Simulate the trial into ``out/trial`` (or reuse it); (trial dir, seconds, spec)."""
    from rntflow.simulation.trial import TrialSpec, simulate_trial

    trial = out / "trial"
    spec_kw = {"n_sites": 1, "subjects_per_site": args.lu_subjects, "cycles": 1}
    spec_kw["tare_subjects_per_site"] = args.tare_subjects
    if args.seed is not None:
        spec_kw["seed"] = args.seed
    spec = TrialSpec(**spec_kw)
    record = out / "simulate.json"
    if (trial / "truth.json").exists() and record.exists():
        rec = json.loads(record.read_text())
        if rec["spec"] == spec.__dict__:
            say(f"reusing the trial simulated in {trial} ({rec['seconds']:.0f} s then)")
            return trial, rec["seconds"], rec["spec"]
    shutil.rmtree(trial, ignore_errors=True)
    say(f"simulating {spec} into {trial}")
    t = time.perf_counter()
    summary = simulate_trial(trial, spec, progress=say)
    secs = time.perf_counter() - t
    record.write_text(
        json.dumps({"spec": spec.__dict__, "seconds": secs, "n_studies": summary.n_studies, "n_files": summary.n_files})
    )
    return trial, secs, spec.__dict__


def write_config(out: Path, trial: Path) -> Path:
    """The simulator's trial.yaml with every path under ``out`` and a free listener port."""
    cfg = yaml.safe_load((trial / "trial.yaml").read_text())
    cfg["listener"]["port"] = free_port()
    cfg["paths"] = {
        "spool": str(out / "spool"),
        "warehouse": str(out / "wh"),
        "keys": str(out / "keys"),
        "enrolment": str(trial / "enrolment.csv"),
        "phantom_fills": str(trial / "phantom_fills.csv"),
        "prefect_home": str(out / "prefect"),
        "products": str(out / "products"),
    }
    path = out / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# --------------------------------------------------------------------------- report helpers


class _DicomLog(logging.Handler):
    """pynetdicom warnings and errors (listener and sender share this process), with their time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {
                "utc": time.strftime("%H:%M:%S", time.gmtime(record.created)),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def instrument_push(pushes: list[dict], dicom_log: logging.Handler) -> None:
    """Record every push_tree report (the demo's ingest_and_process keeps only the failure count).

    Wraps :func:`rntflow.push.push_tree` (looked up by ingest_and_process at call time); the
    pushing itself is unchanged.
    """
    import rntflow.push as push

    real = push.push_tree

    def recorded(root, *a, **kw):
        # the listener configures pynetdicom's logging when it starts: attach (again) here
        lib = logging.getLogger("pynetdicom")  # its children propagate to it (it does not propagate)
        if dicom_log not in lib.handlers:
            lib.addHandler(dicom_log)
        t = time.time()
        rep = real(root, *a, **kw)
        pushes.append(
            {
                "study": "/".join(Path(root).parts[-3:]),
                "files": sum(1 for f in Path(root).rglob("*") if f.is_file()),
                "sent": rep.sent,
                "stored": rep.stored,
                "failures": [f"{Path(f.path).parent.name}/{Path(f.path).name}: {f.status}" for f in rep.failures],
                "seconds": time.time() - t,
            }
        )
        return rep

    push.push_tree = recorded


def section_delivery(out: Path, trial: Path, run: dict) -> list[str]:
    """Studies whose instances did not all reach the listener, and the push and DICOM log lines."""
    import sqlite3

    enrol = pd.read_csv(trial / "enrolment.csv")
    subject_of = dict(zip(enrol["patient_id"].astype(str), enrol["subject_id"]))
    con = sqlite3.connect(f"file:{out / 'spool' / 'inbox.sqlite'}?mode=ro", uri=True)
    inbox = pd.read_sql("SELECT site_id, subject_id, study_key, n_instances, first_at_s FROM studies", con)
    con.close()
    rows = []
    for study in sorted(trial.glob("dicom/*/*/*")):
        site, patient = study.parts[-3], study.parts[-2]
        n_files = sum(1 for f in study.rglob("*") if f.is_file())
        sub = subject_of.get(patient, patient)
        got = inbox[(inbox["site_id"] == site) & (inbox["subject_id"] == sub)].sort_values("first_at_s")
        rows.append({"site": site, "subject": sub, "study": study.name, "files": n_files})
    src = pd.DataFrame(rows)
    # the inbox has no study folder name: match a subject's studies in arrival (= push) order
    src["received"] = np.nan
    src["study_key"] = ""
    for (site, sub), part in src.groupby(["site", "subject"]):
        got = inbox[(inbox["site_id"] == site) & (inbox["subject_id"] == sub)].sort_values("first_at_s")
        idx = part.sort_values("study", key=lambda s: s.str.startswith("QC-")).index
        for i, g in zip(idx, got.itertuples()):
            src.loc[i, "received"] = g.n_instances
            src.loc[i, "study_key"] = g.study_key
    short = src[src["received"].fillna(-1) != src["files"]]
    lines = ["## DICOM delivery", ""]
    lines += [
        f"{int(src['files'].sum())} instances pushed in {len(src)} studies; {int(src['received'].sum())} reached the "
        "listener's inbox.",
        "",
    ]
    if not short.empty:
        lines += [
            "Studies not (completely) received by the listener:",
            "",
            md_table(short.astype({"received": "Int64"})),
            "",
        ]
    bad_push = [p for p in run.get("pushes", []) if p["failures"] or p["stored"] != p["files"]]
    if bad_push:
        tab = pd.DataFrame(
            [
                {
                    "pushed folder": p["study"],
                    "files": p["files"],
                    "C-STOREs sent": p["sent"],
                    "stored (acknowledged)": p["stored"],
                    "failures reported": "; ".join(map(str, p["failures"]))[:300],
                }
                for p in bad_push
            ]
        )
        lines += ["push_tree reports of those pushes:", "", md_table(tab), ""]
    if run.get("dicom_log"):
        lines += [
            "pynetdicom warnings and errors (listener and sender):",
            "",
            md_table(pd.DataFrame(run["dicom_log"])),
            "",
        ]
    return lines


# --------------------------------------------------------------------------- main


def run_pipeline(config, path: Path, trial: Path, args: argparse.Namespace, say) -> dict:
    """Push the trial through the listener and the flows, then close out; the run's record."""
    from rntflow.demo import close_out, ingest_and_process

    run = {"failures": [], "pushes": []}
    dicom_log = _DicomLog()
    instrument_push(run["pushes"], dicom_log)
    t = time.perf_counter()
    try:
        run["push_failures"], run["n_failed"] = ingest_and_process(config, str(path), trial, args.timeout_s, say)
    except Exception as exc:  # noqa: BLE001 - reported, not fixed
        run["push_failures"], run["n_failed"] = -1, -1
        run["failures"].append(f"ingest_and_process raised {type(exc).__name__}: {exc}")
    run["t_flows"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        close_out(config, str(path), trial, say)
    except Exception as exc:  # noqa: BLE001
        run["failures"].append(f"close_out raised {type(exc).__name__}: {exc}")
    run["t_close"] = time.perf_counter() - t
    run["dicom_log"] = dicom_log.records
    run["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run["load"] = os.getloadavg()[0]
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    trial, t_sim, spec = simulate(out, args, say)
    if args.simulate_only:
        return 0
    path = out / "trial.yaml"
    run_file = out / "run.json"
    if not args.report_only:
        for d in ("spool", "wh", "keys", "prefect", "products"):  # every run of the pipeline starts empty
            shutil.rmtree(out / d, ignore_errors=True)
        path = write_config(out, trial)
    # Prefect's home (its SQLite database) under --out, before Prefect is imported
    os.environ["PREFECT_HOME"] = str(out / "prefect")
    from rntflow.core.config import load_config
    from rntflow.demo import prefect_environment, quiet_logging

    config = load_config(path)
    prefect_environment(config)
    quiet_logging()
    n_studies = sum(1 for _ in trial.glob("dicom/*/*/*"))
    n_tare = sum(1 for _ in trial.glob("dicom/SITE0[45]/*/*"))
    run = json.loads(run_file.read_text()) if args.report_only else run_pipeline(config, path, trial, args, say)
    if not args.report_only:
        run_file.write_text(json.dumps(run, indent=1))
    failures, push_failures, n_failed = run["failures"], run["push_failures"], run["n_failed"]
    t_flows, t_close = run["t_flows"], run["t_close"]
    wh = Path(config.warehouse_dir)
    truth = json.loads((trial / "truth.json").read_text())
    sites = truth.get("tare_sites", {})
    scout_of_site = {s: v["scout_agent"] for s, v in sites.items()}
    device_of_site = {s: v["device"] for s, v in sites.items()}

    lines = [
        "# TARE (radioembolisation) through the real path, against the simulator's truth",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_tare.py --tare-subjects {args.tare_subjects} "
        f"--lu-subjects {args.lu_subjects}{f' --seed {args.seed}' if args.seed is not None else ''} --out {args.out} --fresh`",
        "",
        f"Trial: `TrialSpec({', '.join(f'{k}={v!r}' for k, v in spec.items())})`: "
        f"{n_studies} studies ({n_tare} at the two TARE sites, "
        + ", ".join(f"{s}: {device_of_site[s]}, {scout_of_site[s]} scout" for s in sorted(sites))
        + f"); {len(truth.get('tare', {}))} TARE subjects. Run finished {run['finished']} "
        f"on a {os.cpu_count()}-core machine shared with other jobs (1-min load average at the end "
        f"{run['load']:.1f}).",
        "",
    ]
    run_lines, n_done, n_failed_runs = section_runs(wh)
    lines += ["## Run", "", *run_lines]
    lines += [
        f"DICOM push failures: {push_failures}; failed flows (ingest_and_process): {n_failed}.",
        "",
    ]
    if failures:
        lines += ["**Failures:**", "", *[f"- {f}" for f in failures], ""]
    for section in (
        lambda: section_delivery(out, trial, run),
        lambda: section_compliance(wh),
        lambda: section_accuracy(wh, trial),
        lambda: section_agreement(wh, trial, scout_of_site),
        lambda: section_dose_effect(wh, trial, device_of_site),
        lambda: section_qa(wh, trial),
    ):
        try:
            lines += section()
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            lines += [f"(section failed: {type(exc).__name__}: {exc})", ""]
    per_min = n_done / (t_flows / 60.0) if t_flows > 0 else float("nan")
    timing = pd.DataFrame(
        [
            {"stage": "simulate the trial", "seconds": t_sim},
            {"stage": "listener + DICOM push + process-study flows (ingest_and_process)", "seconds": t_flows},
            {"stage": "close-out (final QA, outcomes import, dose-effect flow)", "seconds": t_close},
            {"stage": "total", "seconds": t_sim + t_flows + t_close},
        ]
    )
    lines += [
        "## (e) Timings",
        "",
        md_table(timing, ".0f"),
        "",
        f"{n_done}/{n_studies} studies processed in {t_flows:.0f} s: {per_min:.1f} studies per minute "
        "(push and flows overlap; the flows run in the listener's ingest worker).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.results).write_text(text + "\n")
    say(f"report written to {args.results}")
    return 0 if not failures and n_failed_runs == 0 and push_failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
