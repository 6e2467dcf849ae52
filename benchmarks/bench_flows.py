"""Orchestration overhead per study and the time to drain a queue of studies.

Takes the de-identified studies that ``make demo`` left in the spool (50 studies of the
default demo trial), and runs ``process-study`` on each, one after another, as the local
runner would drain a queue of 50 hand-offs, into a fresh warehouse and product store.
Then reads every task run from Prefect's API: the overhead per study is the flow wall time
minus the time spent inside tasks (Prefect's ``total_run_time`` of each task run), i.e.
what flows, subflows, task-run bookkeeping and state changes cost around the compute.

Run: ``make demo`` once, then ``.venv/bin/python benchmarks/bench_flows.py`` (prints markdown).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    src_cfg = ROOT / "deployments" / "trial.example.yaml"
    cfg = yaml.safe_load(src_cfg.read_text())
    base = src_cfg.parent
    spool = (base / cfg["paths"]["spool"]).resolve() / "deid"
    studies = sorted(spool.glob("*/*/*"), key=lambda p: (p.parts[-3], "-PH-" not in p.parts[-2], p.name))
    if not studies:
        sys.exit("no de-identified studies: run `make demo` first")
    work = Path(tempfile.mkdtemp(prefix="rntflow-bench-"))
    for key in ("spool", "keys", "enrolment", "phantom_fills"):
        cfg["paths"][key] = str((base / cfg["paths"][key]).resolve())
    cfg["paths"].update(
        {"warehouse": str(work / "wh"), "products": str(work / "products"), "prefect_home": str(work / "prefect")}
    )
    path = work / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    os.environ.update(
        {
            "PREFECT_HOME": str(work / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        }
    )
    from prefect.client.orchestration import get_client

    from rntflow.flows.process_study import process_study

    walls = []
    t0 = time.perf_counter()
    for st in studies:
        kind = "phantom" if "-PH-" in st.parts[-2] else "patient"
        t = time.perf_counter()
        process_study(st.parts[-3], st.parts[-2], kind, st.name, str(st), 0, 1, str(path))
        walls.append(time.perf_counter() - t)
    drain = time.perf_counter() - t0
    with get_client(sync_client=True) as client:
        task_runs, offset = [], 0
        while True:
            page = client.read_task_runs(limit=200, offset=offset)
            task_runs += page
            offset += len(page)
            if len(page) < 200:
                break
    in_tasks = sum(tr.total_run_time.total_seconds() for tr in task_runs)
    n = len(studies)
    print(f"| measure ({n} studies, {len(task_runs)} task runs) | value |\n| --- | ---: |")
    print(f"| drain {n} queued studies (process-study, one after another) | {drain:.1f} s |")
    print(f"| mean flow wall time per study | {sum(walls) / n:.2f} s |")
    print(f"| mean time inside tasks per study | {in_tasks / n:.2f} s |")
    print(
        f"| orchestration overhead per study (wall - tasks) | {(sum(walls) - in_tasks) / n:.2f} s "
        f"({100 * (sum(walls) - in_tasks) / sum(walls):.0f}% of wall) |"
    )
    print(f"| overhead per task run | {1000 * (sum(walls) - in_tasks) / max(len(task_runs), 1):.0f} ms |")


if __name__ == "__main__":
    main()
