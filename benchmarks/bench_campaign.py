"""A simulated multi-site campaign through the server path (issue 19).

PostgreSQL (a throw-away Debian cluster on its own port), ``prefect server start`` on it, the
deployments of ``deployments/prefect.yaml``, process workers on the ``rntflow-process`` pool,
and a load generator that hands studies to the server in one of two ways:

* **per-study** (the listener's path): every study is a run of the ``process-study``
  deployment (``run_deployment`` with the listener's hand-off parameters), so the process
  worker starts a new Python process per study;
* **campaign** (bulk work, ``flows/campaign.py``): the same hand-offs in one run of the
  ``campaign`` deployment per worker (sites split between the runs), each study a
  ``process-study`` subflow inside that one process.

Load generator: one simulated site (counts camera: two phantoms, one subject with four time
points of one cycle) is cloned into many sites and subjects under new identities: every clone
is de-identified with its own HMAC secret (``listener.deid``), so all its UIDs and study keys
are new and consistent (RTSTRUCT references resolve); the subject ids and the phantom fill-log
rows are the clone's. The clones keep the source camera's id (Manufacturer|Model|Serial), as
sites with the same camera model and a blank or default serial do: calibrations are kept per
(site, camera), so no clone's phantom touches another's. The DICOM listener is not in this
loop (its throughput: bench_listener.py).

Phases run in the same run, same Prefect server and database, each on its own sites
(``--phases per-study:1,per-study:2,campaign:1,campaign:2`` = path:workers; each worker
``--limit 1``: one flow run at a time). Per-study phases hand studies off in rounds as sites
scan them (all sites' cylinder phantoms, all NEMA phantoms, then each time point of every
subject), each round drained before the next (a camera is calibrated before its patients are
quantified); campaign phases give the same order inside each run.

Measures per phase: studies, drain time (first hand-off to last run final), throughput
(studies/min, and per worker) and, from Prefect's state history, per study: queue wait
(hand-off -> Pending), process start (Pending -> Running: the worker's subprocess, imports,
pull step; once per campaign run), flow wall time, time inside task runs (the whole subflow
tree), and two overheads per study:

* ``overhead/study`` = (process start + flow wall - time inside task runs), summed over the
  phase's root runs, divided by its studies: what orchestration adds to a study's work;
* ``drain overhead/study`` = drain x workers / studies - time inside task runs per study: the
  same plus queue waits and worker polling (everything a worker-second is spent on that is
  not a task).

At the end: the Prefect database size in PostgreSQL.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_campaign.py --sites-per-phase 2 --phases per-study:1,campaign:1
    .venv/bin/python benchmarks/bench_campaign.py --sites-per-phase 4 --subjects-per-site 1
    .venv/bin/python benchmarks/bench_campaign.py --dask-probe-only     # the Dask cost probe

Results: printed as Markdown, and written to ``<out>/campaign.json``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

POOL = "rntflow-process"
DEPLOYMENT = "process-study/process-study"
CAMPAIGN_DEPLOYMENT = "campaign/campaign"
SOURCE_SITE = "SITE01"


# --------------------------------------------------------------------------- the load


def simulate_source(out: Path) -> Path:
    from rntflow.simulation.trial import TrialSpec, simulate_trial

    src = out / "source"
    if not (src / "truth.json").exists():
        simulate_trial(src, TrialSpec(n_sites=1, subjects_per_site=1, cycles=1, seed=7))
    return src


def campaign_config(src: Path, out: Path, sites: list[str], subjects: int) -> tuple[Path, dict]:
    """Trial config with ``sites`` (clones of SITE01's settings), its fill log and enrolment."""
    cfg = yaml.safe_load((REPO / "deployments" / "trial.example.yaml").read_text())
    template = next(s for s in cfg["sites"] if s["id"] == SOURCE_SITE)
    cfg["sites"] = []
    cfg["tare_arms"] = []  # the clones are 177Lu sites of SITE01's kind; no TARE arm among them
    for site in sites:
        s = copy.deepcopy(template)
        s.update(id=site, name=f"campaign site {site}", calling_ae_titles=[f"{site}_PACS"[:16]])
        cfg["sites"].append(s)
    data = out / "data"
    fills_src = list(csv.DictReader((src / "phantom_fills.csv").open()))
    fills = out / "phantom_fills.csv"
    enrol = out / "enrolment.csv"
    with fills.open("w", newline="") as fh, enrol.open("w", newline="") as eh:
        fw = csv.DictWriter(fh, fieldnames=list(fills_src[0]))
        fw.writeheader()
        ew = csv.writer(eh)
        ew.writerow(["site_id", "patient_id", "subject_id", "kind"])
        for site in sites:
            for row in (r for r in fills_src if r["subject_id"].startswith(SOURCE_SITE)):
                fw.writerow(dict(row, subject_id=row["subject_id"].replace(SOURCE_SITE, site)))
            for kind in ("CYL", "NEMA"):
                ew.writerow([site, f"QC-{kind}-{site}", f"{site}-PH-{kind}", "phantom"])
            for j in range(subjects):
                ew.writerow([site, f"PAT-{site}-{j}", subject_id(site, j), "patient"])
    cfg["paths"].update(
        spool=str(data / "spool"),
        warehouse=str(data / "warehouse"),
        keys=str(out / "keys"),
        prefect_home=str(data / "prefect"),
        products=str(data / "products"),
        enrolment=str(enrol),
        phantom_fills=str(fills),
    )
    path = out / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, cfg


def subject_id(site: str, j: int) -> str:
    return f"RNT-{site}-{j:02d}"


def clone_study(study: Path, deid_root: Path, keys_dir: Path, site: str, subject: str, shift: int) -> dict:
    """De-identify one source study as ``site``/``subject`` with the clone's key store; its hand-off."""
    import pydicom

    from rntflow.listener.deid import DeidIdentity, KeyStore, deid_relpath, deidentify

    keys = KeyStore(keys_dir)
    try:
        files = sorted(study.rglob("*.dcm"))
        study_key = None
        for f in files:
            ds = pydicom.dcmread(f)
            if study_key is None:
                study_key = keys.key("study", str(ds.StudyInstanceUID), 16)
            rel = deid_relpath(site, subject, study_key, ds, keys)
            deidentify(ds, DeidIdentity(subject, shift), keys)
            dst = deid_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(dst, enforce_file_format=True)
    finally:
        keys.close()
    return {
        "site_id": site,
        "subject_id": subject,
        "kind": "phantom" if "-PH-" in subject else "patient",
        "study_key": study_key,
        "study_dir": str(deid_root / site / subject / study_key),
        "n_instances": len(files),
        "handoff_version": 1,
    }


def build_rounds(src: Path, out: Path, sites: list[str], subjects: int, shift: int) -> list[list[dict]]:
    """Hand-offs of ``sites`` in rounds: CYL phantoms, NEMA phantoms, then time point 1..4."""
    site_dir = src / "dicom" / SOURCE_SITE
    cyl = next(next(site_dir.glob("QC-CYL-*")).iterdir())
    nema = next(next(site_dir.glob("QC-NEMA-*")).iterdir())
    patient = next(d for d in site_dir.iterdir() if not d.name.startswith("QC-"))
    tps = sorted(patient.iterdir(), key=lambda p: int(p.name.rsplit("_", 1)[1].rstrip("H")))
    deid = out / "data" / "spool" / "deid"
    rounds: list[list[dict]] = [[], []] + [[] for _ in tps]
    for site in sites:
        rounds[0].append(clone_study(cyl, deid, out / "clone-keys" / site, site, f"{site}-PH-CYL", shift))
        rounds[1].append(clone_study(nema, deid, out / "clone-keys" / site, site, f"{site}-PH-NEMA", shift))
        for j in range(subjects):
            keys = out / "clone-keys" / f"{site}-{j}"  # a new secret per subject: new UIDs
            for k, tp in enumerate(tps):
                rounds[2 + k].append(clone_study(tp, deid, keys, site, subject_id(site, j), shift))
    return rounds


# --------------------------------------------------------------------------- measuring


def _all_flow_runs(client) -> list:
    out, offset = [], 0
    while True:
        page = client.read_flow_runs(limit=200, offset=offset)
        out += page
        if len(page) < 200:
            return out
        offset += 200


def _task_runs(client, flow_run_ids: list) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    out = []
    for i in range(0, len(flow_run_ids), 100):
        flt = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids[i : i + 100]))
        offset = 0
        while True:
            page = client.read_task_runs(flow_run_filter=flt, limit=200, offset=offset)
            out += page
            if len(page) < 200:
                break
            offset += 200
    return out


def wait_final(client, run_ids: list, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        runs = [client.read_flow_run(r) for r in run_ids]
        if all(r.state is not None and r.state.is_final() for r in runs):
            return
        time.sleep(1.0)
    raise TimeoutError(f"{len(run_ids)} runs not final after {timeout_s} s")


def per_study(client, root_ids: set) -> list[dict]:
    """Timing of every process-study run in ``root_ids`` over its whole subflow tree."""
    runs = _all_flow_runs(client)
    by_id = {r.id: r for r in runs}
    tasks = _task_runs(client, list(by_id))
    task_flow = {t.id: t.flow_run_id for t in tasks}

    def root_of(fr) -> object:
        seen = 0
        while fr.parent_task_run_id is not None and seen < 20:
            parent = task_flow.get(fr.parent_task_run_id)
            if parent is None or parent not in by_id:
                break
            fr = by_id[parent]
            seen += 1
        return fr.id

    roots = {r.id: root_of(r) for r in runs}
    # a subflow call is also a task run of its parent (whose run time is the subflow's): the
    # subflow's own task runs are counted instead
    placeholders = {r.parent_task_run_id for r in runs if r.parent_task_run_id is not None}
    task_s: dict = {}
    n_tasks: dict = {}
    for t in tasks:
        if t.id in placeholders:
            continue
        rid = roots.get(t.flow_run_id)
        task_s[rid] = task_s.get(rid, 0.0) + (t.total_run_time or timedelta()).total_seconds()
        n_tasks[rid] = n_tasks.get(rid, 0) + 1
    out = []
    for rid in root_ids:
        fr = by_id[rid]
        states = {s.type.value: s.timestamp for s in client.read_flow_run_states(rid)}
        pending, running = states.get("PENDING"), states.get("RUNNING")
        wall = (fr.end_time - fr.start_time).total_seconds()
        start = (running - pending).total_seconds() if pending and running else float("nan")
        out.append(
            {
                "name": fr.name,
                "state": fr.state_name,
                "created": fr.created.timestamp(),
                "end": fr.end_time.timestamp(),
                "queue_wait_s": (pending - fr.created).total_seconds() if pending else float("nan"),
                "process_start_s": start,
                "wall_s": wall,
                "task_s": task_s.get(rid, 0.0),
                "n_task_runs": n_tasks.get(rid, 0),
                "overhead_s": start + wall - task_s.get(rid, 0.0),
            }
        )
    return out


def summarise(name: str, n_workers: int, t0: float, t1: float, rows: list[dict], n_studies: int) -> dict:
    """Phase figures; ``rows`` are the root runs (one per study, or one per campaign run)."""
    drain = t1 - t0
    total = lambda k: sum(r[k] for r in rows)  # noqa: E731
    task_per_study = total("task_s") / n_studies
    return {
        "phase": name,
        "workers": n_workers,
        "studies": n_studies,
        "root_runs": len(rows),
        "completed_root_runs": sum(r["state"] == "Completed" for r in rows),
        "drain_s": round(drain, 1),
        "studies_per_min": round(60 * n_studies / drain, 2),
        "studies_per_min_per_worker": round(60 * n_studies / drain / n_workers, 2),
        "mean_wall_s": round(total("wall_s") / n_studies, 2),
        "mean_task_s": round(task_per_study, 2),
        "mean_process_start_s": round(total("process_start_s") / n_studies, 2),
        "mean_overhead_s": round(total("overhead_s") / n_studies, 2),
        "median_root_overhead_s": round(statistics.median(r["overhead_s"] for r in rows), 2),
        "mean_in_flow_overhead_s": round((total("wall_s") - total("task_s")) / n_studies, 2),
        "drain_overhead_per_study_s": round(drain * n_workers / n_studies - task_per_study, 2),
        "task_runs_per_study": round(total("n_task_runs") / n_studies, 1),
    }


def shard_rounds(rounds: list[list[dict]], n: int) -> list[list[dict]]:
    """The hand-offs of ``rounds`` split by site into ``n`` campaign runs, round order kept."""
    from rntflow.campaign_cli import shard_by_site

    flat = [h for rnd in rounds for h in rnd]
    return [s for s in shard_by_site(flat, n) if s]


def run_phase(client, path: str, n_workers: int, rounds: list[list[dict]], cfg_path: Path, out: Path) -> tuple:
    """Hand the phase's studies to the server by ``path``; (t0, t1, root run ids)."""
    from prefect.deployments import run_deployment

    ids = []
    t0 = time.time()
    if path == "per-study":
        for rnd in rounds:
            rids = [
                run_deployment(DEPLOYMENT, parameters=dict(h, config_path=str(cfg_path)), timeout=0).id for h in rnd
            ]
            wait_final(client, rids, 3600)
            ids += rids
    else:
        for i, shard in enumerate(shard_rounds(rounds, n_workers)):
            manifest = out / f"manifest-{shard[0]['site_id']}-{i}.jsonl"
            manifest.write_text("".join(json.dumps(h) + "\n" for h in shard))
            sites = sorted({h["site_id"] for h in shard})
            params = {"config_path": str(cfg_path), "manifest_path": str(manifest), "name": f"{sites[0]}-{sites[-1]}"}
            ids.append(run_deployment(CAMPAIGN_DEPLOYMENT, parameters=params, timeout=0).id)
        wait_final(client, ids, 4 * 3600)
    return t0, time.time(), ids


# --------------------------------------------------------------------------- Dask probe


def dask_probe() -> dict:
    """What a DaskTaskRunner costs per flow run here, against the work it would take over."""
    import numpy as np
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect.testing.utilities import prefect_test_harness

    from rntflow.dosimetry.kernel import convolve_dose_gy, voxel_s_kernel

    @task
    def conv(seed: int) -> float:
        rng = np.random.default_rng(seed)
        tia = rng.random((128, 128, 128))
        k = voxel_s_kernel("Lu-177", (4.8, 4.8, 4.8))
        return float(convolve_dose_gy(tia, k).sum())

    out = {}
    t = time.perf_counter()
    conv.fn(0)
    out["one_128^3_convolution_s"] = round(time.perf_counter() - t, 3)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        return out | {"dask": "prefect-dask not installed"}
    with prefect_test_harness(server_startup_timeout=120):
        for label, runner in (
            ("thread", ThreadPoolTaskRunner()),
            ("dask_local_1w", DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1})),
            ("dask_local_2w", DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})),
        ):

            @flow(task_runner=runner)
            def four(n: int = 4) -> float:
                return sum(f.result() for f in [conv.submit(i) for i in range(n)])

            @flow(task_runner=runner)
            def empty() -> None:
                return None

            t = time.perf_counter()
            empty()
            out[f"{label}_empty_flow_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            four()
            out[f"{label}_four_convolutions_s"] = round(time.perf_counter() - t, 2)
    return out


# --------------------------------------------------------------------------- main


def parse_phases(text: str) -> list[tuple[str, int]]:
    """``per-study:1,campaign:2`` -> [("per-study", 1), ("campaign", 2)]."""
    out = []
    for item in text.split(","):
        path, _, n = item.strip().partition(":")
        if path not in ("per-study", "campaign") or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"phase {item!r}: expected per-study:N or campaign:N")
        out.append((path, int(n)))
    return out


def run_phases(server, phases: list[tuple], cfg_path: Path, out: Path) -> tuple[list[dict], int]:
    """Run every phase on ``server`` (workers started as needed); (phase summaries, flow runs)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.flows.conftest_server import prefect_cmd

    def worker(i: int):
        return server.spawn(
            f"worker-{i}",
            prefect_cmd("--no-prompt", "worker", "start", "--pool", POOL, "--type", "process")
            + ["--name", f"worker-{i}", "--limit", "1"],
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="5",
            PREFECT_LOGGING_LEVEL="WARNING",
        )

    summaries = []
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            for name, path, n_workers, rounds in phases:
                while len(server.children) < n_workers:
                    worker(len(server.children) + 1)
                load0 = os.getloadavg()[0]
                t0, t1, ids = run_phase(client, path, n_workers, rounds, cfg_path, out)
                rows = per_study(client, set(ids))
                s = summarise(name, n_workers, t0, t1, rows, sum(len(r) for r in rounds))
                s["loadavg_1min_at_start"] = round(load0, 1)
                s["loadavg_1min_at_end"] = round(os.getloadavg()[0], 1)
                summaries.append(s)
                print(json.dumps(s), flush=True)
            return summaries, len(_all_flow_runs(client))


def print_table(phases: list[dict]) -> None:
    """The phases as a Markdown table."""
    print(
        "\n| phase | workers | studies | drain (s) | studies/min | per worker | wall/study (s) | in tasks (s) "
        "| process start (s) | overhead/study (s) | drain overhead/study (s) | load avg |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in phases:
        print(
            f"| {s['phase']} | {s['workers']} | {s['studies']} | {s['drain_s']} | {s['studies_per_min']} | "
            f"{s['studies_per_min_per_worker']} | {s['mean_wall_s']} | {s['mean_task_s']} | "
            f"{s['mean_process_start_s']} | {s['mean_overhead_s']} | {s['drain_overhead_per_study_s']} | "
            f"{s['loadavg_1min_at_start']}-{s['loadavg_1min_at_end']} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites-per-phase", type=int, default=4)
    ap.add_argument("--subjects-per-site", type=int, default=1)
    ap.add_argument(
        "--phases",
        type=parse_phases,
        default=parse_phases("per-study:1,per-study:2,campaign:1,campaign:2"),
        help="path:workers, comma separated (path: per-study or campaign)",
    )
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--dask-probe-only", action="store_true")
    ap.add_argument("--no-dask-probe", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_TELEMETRY_ENABLED", "false")

    results: dict = {}
    if args.dask_probe_only:
        print(json.dumps(dask_probe(), indent=1))
        return 0

    from tests.flows.conftest_server import run_prefect, start_postgres, start_prefect_server

    keep = args.out is not None
    out = args.out or Path(tempfile.mkdtemp(prefix="rntflow-campaign-"))
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    src = simulate_source(out)
    p = args.sites_per_phase
    sites = [f"S{i:03d}" for i in range(1, len(args.phases) * p + 1)]
    cfg_path, _cfg = campaign_config(src, out, sites, args.subjects_per_site)
    t = time.monotonic()
    phases = [
        (
            f"{path}, {n} worker{'s' if n > 1 else ''}",
            path,
            n,
            build_rounds(src, out, sites[i * p : (i + 1) * p], args.subjects_per_site, -500),
        )
        for i, (path, n) in enumerate(args.phases)
    ]
    n_studies = sum(len(r) for *_, rounds in phases for r in rounds)
    load_s = time.monotonic() - t
    print(f"load: {n_studies} studies on {len(sites)} sites generated in {load_s:.0f} s", flush=True)

    pg = start_postgres(out / "logs")
    server = None
    try:
        server = start_prefect_server(out / "server", database_url=pg.url)
        env = server.env()
        run_prefect(["work-pool", "create", POOL, "--type", "process"], env)
        run_prefect(
            ["deploy", "--prefect-file", str(REPO / "deployments" / "prefect.yaml"), "--all"],
            server.env(RNTFLOW_CONFIG=str(cfg_path)),
        )
        size0 = pg.size_bytes()

        summaries, n_flow_runs = run_phases(server, phases, cfg_path, out)
        size1 = pg.size_bytes()
        results = {
            "studies": n_studies,
            "sites": len(sites),
            "load_generation_s": round(load_s, 1),
            "phases": summaries,
            "flow_runs_total": n_flow_runs,
            "postgres_bytes_before": size0,
            "postgres_bytes_after": size1,
            "postgres_bytes_per_study": round((size1 - size0) / n_studies),
            "postgres_tables": pg.psql(
                "SELECT string_agg(relname || '=' || pg_total_relation_size(relid), ' ' ORDER BY "
                "pg_total_relation_size(relid) DESC) FROM (SELECT * FROM pg_statio_user_tables LIMIT 100) t"
            ),
            "wall_total_s": round(time.monotonic() - t_all, 1),
        }
    finally:
        if server is not None:
            server.stop()
        pg.stop()
    if not args.no_dask_probe:
        results["dask_probe"] = dask_probe()
    (out / "campaign.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    print_table(results["phases"])
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
