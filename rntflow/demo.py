"""``rntflow demo``: the whole platform on the synthetic demo trial, end to end.

Simulate the trial (unless it is there), start the listener, push every site's studies
over DICOM as its PACS would (phantoms first), let each stable study run the
``process-study`` Prefect flow (local runner, Prefect's embedded server under
``paths.prefect_home``), close data collection (final dosimetry and QA of every cycle),
import the outcomes, refresh the dose-effect analysis, and print doses against the
simulator's truth, QA findings and where to look next.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rntflow.core.config import SiteSettings, TrialConfig, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="simulate, ingest and process the demo trial end to end")
    p.add_argument("--config", default="deployments/trial.example.yaml", help="trial YAML (default: the demo trial)")
    p.add_argument("--fresh", action="store_true", help="delete previous demo data first")
    p.add_argument("--sites", type=int, default=3, help="sites to simulate (default 3)")
    p.add_argument("--subjects-per-site", type=int, default=2, help="subjects per site (default 2)")
    p.add_argument(
        "--tare-subjects-per-site",
        type=int,
        default=2,
        help="subjects per radioembolisation site (two TARE sites, 166Ho and 90Y; 0: none; default 2)",
    )
    p.add_argument("--cycles", type=int, default=2, help="treatment cycles per subject (default 2)")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="give up waiting for the flows after this")
    p.set_defaults(func=run)
    return p


def prefect_environment(config: TrialConfig) -> None:
    """Point Prefect at the trial's home (its SQLite database) before Prefect is imported."""
    os.environ.setdefault("PREFECT_HOME", str(config.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    Path(config.prefect_home).mkdir(parents=True, exist_ok=True)


def quiet_logging() -> None:
    """Warnings only from HTTP, Prefect and the listener: the commands' own lines say what happens."""
    import logging

    for noisy in ("httpx", "prefect", "rntflow.listener"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    from rntflow.simulation.trial import TrialSpec, simulate_trial

    quiet_logging()

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    config_path = str(Path(args.config).resolve())
    config = load_config(config_path)
    trial_dir = config.enrolment_file.parent
    if args.fresh:
        for d in (
            trial_dir,
            config.spool_dir,
            config.keys_dir,
            config.warehouse_dir,
            config.products_dir,
            config.prefect_home,
            config.arms_dir,
        ):
            shutil.rmtree(d, ignore_errors=True)
    prefect_environment(config)
    if not (trial_dir / "truth.json").exists():
        say(f"simulating the demo trial into {trial_dir}")
        simulate_trial(
            trial_dir,
            TrialSpec(
                trial_id=config.trial_id,
                n_sites=args.sites,
                subjects_per_site=args.subjects_per_site,
                cycles=args.cycles,
                tare_subjects_per_site=args.tare_subjects_per_site,
            ),
            progress=say,
        )
    failures, n_failed = ingest_and_process(config, config_path, trial_dir, args.timeout_s, say)
    close_out(config, config_path, trial_dir, say)
    print(summary(config, config_path, trial_dir))
    say("done")
    return 0 if failures == 0 and n_failed == 0 else 1


def ingest_and_process(
    config: TrialConfig,
    config_path: str,
    trial_dir: Path,
    timeout_s: float,
    say,
    order: Callable[[list[tuple[SiteSettings, Path]]], list] | None = None,
) -> tuple[int, int]:
    """Listener + push + flows until every study has been processed; (push failures, failed flows).

    The listener receives in this process; de-identification, stable-study detection and
    the flows run in its worker process (``rntflow listen``'s default), so that receiving
    and processing use both cores. Progress is read from the warehouse's ``flow_runs``.
    """
    from rntflow.listener.app import start_listener
    from rntflow.push import push_tree
    from rntflow.warehouse.writer import read_latest

    server = start_listener(
        config,
        block=False,
        config_path=config_path,
        worker_process=("local", config_path, "process-study/process-study"),
    )
    say(
        f"listener {config.listener.ae_title} on port {server.port}; flows run locally in the ingest worker "
        f"(Prefect home {config.prefect_home})"
    )
    failures = 0
    n_studies = sum(1 for _ in trial_dir.glob("dicom/*/*/*"))

    def progress() -> tuple[int, int]:
        runs = read_latest(config.warehouse_root, "flow_runs", "flow_name = 'process-study'")
        if runs.empty:
            return 0, 0
        latest = runs.sort_values("ended_at").drop_duplicates("study_id", keep="last")
        # a study waiting for something (e.g. its camera's calibration) is not done yet
        done = latest[latest["state"] != "Waiting"]
        return len(done), int((done["state"] == "Failed").sum())

    try:
        # by default per site, phantoms first, as a site scans them before treating patients;
        # ``order`` permutes the whole list (arrival order must not change the results)
        pushes = [
            (site, study_root)
            for site in config.sites
            if (trial_dir / "dicom" / site.id).exists()
            for study_root in sorted(
                (trial_dir / "dicom" / site.id).iterdir(), key=lambda p: (not p.name.startswith("QC-"), p.name)
            )
        ]
        for i, (site, study_root) in enumerate(order(pushes) if order else pushes):
            report = push_tree(
                study_root, "127.0.0.1", server.port, site.calling_ae_titles[0], config.listener.ae_title
            )
            failures += len(report.failures)
            if order is None and (i + 1 == len(pushes) or pushes[i + 1][0] is not site):
                say(f"{site.id}: pushed; flows: {progress()[0]}/{n_studies} studies processed")
        deadline = time.monotonic() + timeout_s
        last = (-1, -1)
        while time.monotonic() < deadline:
            done = progress()
            if done != last:
                say(f"flows: {done[0]}/{n_studies} studies processed ({done[1]} failed)")
                last = done
            if done[0] >= n_studies:
                break
            time.sleep(3.0)
        else:
            say(f"timed out after {timeout_s:.0f} s waiting for the flows")
    finally:
        server.shutdown()
    return failures, max(last[1], 0)


def close_out(config: TrialConfig, config_path: str, trial_dir: Path, say) -> None:
    """End of data collection: final dosimetry and QA, outcomes, dose-effect analysis."""
    from rntflow.core.enrolment import load_enrolment
    from rntflow.flows.qa import qa_flow
    from rntflow.flows.warehouse import dose_effect_flow
    from rntflow.warehouse.outcomes import import_outcomes

    say("closing data collection: final dosimetry and QA of every cycle")
    qa_flow(config_path, close_out=True)
    outcomes = trial_dir / "outcomes.csv"
    if outcomes.exists():
        enrolled = {e.subject_id: e.site_id for e in load_enrolment(config.enrolment_file) if e.kind == "patient"}
        rep = import_outcomes(config.warehouse_root, outcomes, enrolled, trial_id=config.trial_id)
        say(f"outcomes imported: {rep.rows_new} new, {rep.rows_unchanged} unchanged")
    blood = trial_dir / "blood_samples.csv"
    if blood.exists():
        from rntflow.blood_cli import import_blood

        rep, marrow = import_blood(config_path, blood)  # import, blood-based marrow doses, QA of those subjects
        say(
            f"blood samples imported: {rep.rows_new} new, {rep.rows_unchanged} unchanged; "
            f"blood-based red-marrow dose for {len(marrow)} cycle(s)"
        )
    res = dose_effect_flow(config_path)
    say(f"dose-effect report: {res['report']}")


def tare_summary_lines(warehouse_dir: str | Path, truth_csv: Path) -> list[str]:
    """Radioembolisation against the truth: predicted and delivered doses (%), lung shunt (points)."""
    from rntflow.evaluation import compare_tare_with_truth

    cmp = compare_tare_with_truth(warehouse_dir, truth_csv)
    if cmp.empty:
        return []
    cmp["group"] = cmp["voi"].where(~cmp["voi"].str.startswith("Lesion_"), "Lesions")
    cmp["abs_err"] = cmp["error_pct"].abs().fillna(cmp["error_pp"].abs())
    cmp["unit"] = cmp["quantity"].map(lambda q: "points" if q == "lung_shunt_fraction" else "%")
    g = (
        cmp.groupby(["quantity", "group", "unit"])
        .agg(n=("abs_err", "size"), median_abs_err=("abs_err", "median"), max_abs_err=("abs_err", "max"))
        .reset_index()
    )
    return [
        "",
        "== Radioembolisation against the simulator's truth (predicted: scout x administered activity) ==",
        g.round(1).to_string(index=False),
    ]


def vendor_accuracy_lines(warehouse_dir: str | Path, trial_dir: Path) -> list[str]:
    """Per site (vendor profile, recovery route, protocol compliance) and VOI class: dose errors
    of the organ/sphere and voxel engines against the truth (``benchmarks/bench_vendor_accuracy.py``)."""
    import json

    from rntflow.evaluation import accuracy_markdown, vendor_accuracy

    truth = json.loads((trial_dir / "truth.json").read_text())
    table = vendor_accuracy(warehouse_dir, truth, trial_dir / "truth_voi_doses.csv")
    if table.empty:
        return []
    return [
        "",
        "== Dose error (%) by site and vendor profile, cycles with >= 3 scans: mean (min to max), n ==",
        accuracy_markdown(table),
    ]


def summary(config: TrialConfig, config_path: str, trial_dir: Path) -> str:
    """Doses against truth, QA findings, dose-effect, and where to look next."""
    import pandas as pd

    from rntflow.evaluation import compare_with_truth
    from rntflow.warehouse.catalog import catalog_path
    from rntflow.warehouse.writer import read_latest

    lines = ["", "== Absorbed doses against the simulator's truth (organ / sphere engine) =="]
    cmp = compare_with_truth(config.warehouse_root, trial_dir / "truth_voi_doses.csv")
    if cmp.empty:
        lines.append("no doses in the warehouse")
    else:
        cmp["group"] = cmp["voi"].where(~cmp["voi"].str.startswith("Lesion_"), "Lesions")
        cmp["abs_err"] = cmp["error_pct"].abs()
        g = (
            cmp.groupby(["group", "method"])
            .agg(n=("abs_err", "size"), median_abs_err_pct=("abs_err", "median"), max_abs_err_pct=("abs_err", "max"))
            .reset_index()
        )
        lines.append(g.round(1).to_string(index=False))
        lines += vendor_accuracy_lines(config.warehouse_root, trial_dir)
    lines += tare_summary_lines(config.warehouse_root, trial_dir / "truth_tare.csv")
    qa = read_latest(config.warehouse_root, "qa_checks")
    lines += ["", "== QA findings (warn / fail) =="]
    if not qa.empty:
        bad = qa[qa["status"] != "pass"]
        counts = bad.groupby(["check_name", "status"]).size().rename("n").reset_index()
        lines.append(counts.to_string(index=False) if not counts.empty else "none")
    report = Path(config.warehouse_dir) / "reports" / "dose_effect.md"
    if report.exists():
        lines += ["", "== Dose-effect (from the report) =="]
        lines += [ln for ln in report.read_text().splitlines()[2:] if ln.strip()][:24]
    lines += [
        "",
        "== Where to look next ==",
        f"coordinator view:   rntflow status --config {config_path}",
        f"Prefect UI:         PREFECT_HOME={config.prefect_home} .venv/bin/prefect server start  "
        "# then http://127.0.0.1:4200",
        f"dose-effect report: {report}",
        f'DuckDB:             .venv/bin/duckdb -readonly {catalog_path(config.warehouse_root)} -c "SELECT subject_id, cycle, voi, '
        "round(dose_gy, 2) AS dose_gy, round(bed_gy, 2) AS bed_gy FROM voi_doses WHERE engine = 'organ' "
        "AND voi = 'Kidneys' ORDER BY 1, 2\"",
        f"truth:              {trial_dir / 'truth_voi_doses.csv'}",
    ]
    pd.set_option("display.width", 120)
    return "\n".join(lines)
