"""Warehouse benchmark: 1,000,000 synthetic VOI-dose rows across 50 sites.

Measures: load time of the whole frame (one ``load_table`` call, which also writes the
``latest/`` files and the materialised ``voi_dose_cumulative``), idempotent re-load time,
an incremental load (one subject-cycle into the full table), catalog refresh, file count,
size on disk, and the latency of a pooled ``dose_effect`` query on the analysts' catalog
against a plain Parquet scan + join peer, side by side in one run (median of repeats).
Prints a markdown table for BENCHMARKS.md.

Usage::

    .venv/bin/python benchmarks/bench_warehouse.py [--rows 1000000] [--sites 50] [--dir /tmp/wh]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rntflow.warehouse.catalog import connect, refresh_catalog  # noqa: E402
from rntflow.warehouse.writer import load_table  # noqa: E402

TRIAL = "BENCH"
ORGANS = (
    "Kidney_L",
    "Kidney_R",
    "Liver",
    "Spleen",
    "Parotid_L",
    "Parotid_R",
    "Glnd_Submand_L",
    "Glnd_Submand_R",
    "Bone_Marrow",
    "Lungs",
)
N_LESIONS = 10
N_CYCLES = 4
VOIS = ORGANS + tuple(f"Lesion_{i}" for i in range(1, N_LESIONS + 1))
GY_PER_GBQ = {
    "Kidney_L": 0.43,
    "Kidney_R": 0.43,
    "Liver": 0.1,
    "Spleen": 0.3,
    "Parotid_L": 0.63,
    "Parotid_R": 0.63,
    "Glnd_Submand_L": 0.5,
    "Glnd_Submand_R": 0.5,
    "Bone_Marrow": 0.034,
    "Lungs": 0.02,
}


def synthetic_doses(n_rows: int, n_sites: int, seed: int = 1) -> pd.DataFrame:
    """``n_rows`` voi_doses rows: subjects x 4 cycles x 20 VOIs, spread over ``n_sites``."""
    rng = np.random.default_rng(seed)
    per_subject = N_CYCLES * len(VOIS)
    n_subjects = int(np.ceil(n_rows / per_subject))
    subj = np.repeat(np.arange(n_subjects), per_subject)[:n_rows]
    cycle = np.tile(np.repeat(np.arange(1, N_CYCLES + 1), len(VOIS)), n_subjects)[:n_rows]
    voi_idx = np.tile(np.arange(len(VOIS)), n_subjects * N_CYCLES)[:n_rows]
    site = subj % n_sites
    gbq = 7.4
    per_gbq = np.array([GY_PER_GBQ.get(v, 4.0) for v in VOIS])[voi_idx]
    dose = per_gbq * gbq * rng.lognormal(0, 0.35, n_rows)
    return pd.DataFrame(
        {
            "trial_id": TRIAL,
            "site_id": pd.Categorical.from_codes(site, [f"SITE{i:03d}" for i in range(n_sites)]).astype(str),
            "subject_id": np.char.add("SUBJ-", subj.astype(str)),
            "cycle": cycle.astype(np.int16),
            "voi": np.array(VOIS, dtype=object)[voi_idx],
            "engine": "organ",
            "method": "multi_time_point",
            "dose_gy": dose,
            "dose_sd_gy": 0.1 * dose,
            "bed_gy": dose * (1 + dose / 2.6 * 0.05),
            "mass_g": 150.0,
            "administered_activity_mbq": gbq * 1000,
        }
    ), n_subjects


def synthetic_outcomes(n_subjects: int, n_sites: int, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sid = np.char.add("SUBJ-", np.arange(n_subjects).astype(str))
    site = np.array([f"SITE{i % n_sites:03d}" for i in range(n_subjects)])
    base = {"trial_id": TRIAL, "subject_id": sid, "site_id": site}
    tox = pd.DataFrame({**base, "endpoint": "nephrotoxicity", "grade": rng.integers(0, 4, n_subjects)})
    xer = pd.DataFrame({**base, "endpoint": "xerostomia", "grade": rng.integers(0, 3, n_subjects)})
    pfs = pd.DataFrame(
        {
            **base,
            "endpoint": "pfs",
            "event": rng.integers(0, 2, n_subjects),
            "time_to_event_months": rng.exponential(18, n_subjects),
        }
    )
    les = pd.DataFrame(
        {
            **base,
            "endpoint": "lesion_response",
            "lesion_voi": "Lesion_1",
            "response": rng.choice(["CR", "PR", "SD", "PD"], n_subjects),
        }
    )
    out = pd.concat([tox, xer, pfs, les], ignore_index=True)
    out["grade"] = out["grade"].astype("Int8")
    out["event"] = out["event"].astype("Int8")
    return out


POOLED_QUERY = """
SELECT endpoint, count(*) AS n, avg(effect) AS effect_rate, avg(cumulative_dose_gy) AS mean_dose_gy
FROM dose_effect WHERE engine = 'organ' AND method = 'multi_time_point'
GROUP BY endpoint ORDER BY endpoint
"""


#: Peer: the same pooled answer straight from the Parquet files, ignoring result versions,
#: single-time-point rows and derived targets (only Kidneys/Parotids/Lesion_1 as stored):
#: what the catalog's versioning and target logic cost on top of a plain scan and join.
RAW_QUERY = """
WITH d AS (SELECT subject_id, voi, sum(dose_gy) AS dose_gy
           FROM read_parquet('{root}/voi_doses/*/*/*.parquet', hive_partitioning = true)
           WHERE engine = 'organ' GROUP BY subject_id, voi),
o AS (SELECT * FROM read_parquet('{root}/outcomes/*/*.parquet', hive_partitioning = true))
SELECT o.endpoint, count(*) AS n, avg(CASE WHEN o.grade >= 2 OR o.response IN ('CR', 'PR') OR o.event = 1
                                      THEN 1 ELSE 0 END) AS effect_rate, avg(d.dose_gy) AS mean_dose_gy
FROM o JOIN d ON d.subject_id = o.subject_id
 AND d.voi = CASE o.endpoint WHEN 'nephrotoxicity' THEN 'Kidney_L' WHEN 'xerostomia' THEN 'Parotid_L'
                             ELSE 'Lesion_1' END
GROUP BY o.endpoint ORDER BY o.endpoint
"""


def timed(con, sql: str, repeats: int) -> tuple[list[tuple], list[float]]:
    """Run ``sql`` ``repeats`` times; the last result and each latency (s)."""
    lat, rows = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        lat.append(time.perf_counter() - t)
    return rows, lat


def du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sites", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="warehouse folder (default: a temporary one)")
    args = ap.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="rntflow-bench-wh-"))
    if root.exists():
        shutil.rmtree(root)
    results: list[tuple[str, str]] = []
    try:
        t = time.perf_counter()
        doses, n_subjects = synthetic_doses(args.rows, args.sites)
        outcomes = synthetic_outcomes(n_subjects, args.sites)
        results.append(("synthetic frame built", f"{time.perf_counter() - t:.1f} s"))

        t = time.perf_counter()
        rep = load_table(root, "voi_doses", doses)
        load_s = time.perf_counter() - t
        results.append(
            (
                f"load {rep.rows_in:,} voi_doses rows ({args.sites} sites)",
                f"{load_s:.1f} s ({rep.rows_in / load_s:,.0f} rows/s), {rep.files_written} files",
            )
        )
        t = time.perf_counter()
        rep2 = load_table(root, "voi_doses", doses)
        assert rep2.rows_unchanged == rep.rows_in and rep2.files_written == 0
        results.append(("re-load same frame (idempotent, 0 rows written)", f"{time.perf_counter() - t:.1f} s"))
        one = doses[(doses.subject_id == "SUBJ-0") & (doses.cycle == 1)].assign(dose_gy=lambda d: d.dose_gy * 1.01)
        t = time.perf_counter()
        rep3 = load_table(root, "voi_doses", one)
        assert rep3.rows_new_version == len(one)
        results.append(
            (f"incremental load: {len(one)} changed rows into the full table", f"{time.perf_counter() - t:.2f} s")
        )
        t = time.perf_counter()
        load_table(root, "outcomes", outcomes)
        results.append((f"load {len(outcomes):,} outcome rows", f"{time.perf_counter() - t:.1f} s"))
        t = time.perf_counter()
        refresh_catalog(root)
        results.append(("refresh_catalog", f"{time.perf_counter() - t:.2f} s"))

        files = list(root.rglob("*.parquet"))
        results.append(("Parquet files (history + latest/ + schema files)", f"{len(files)}"))
        results.append(("size on disk (all files)", f"{du_bytes(root) / 1e6:.1f} MB"))
        results.append(("bytes per voi_doses row", f"{du_bytes(root / 'voi_doses') / (rep.rows_in + len(one)):.1f}"))

        with connect(root) as con:
            rows, lat = timed(con, POOLED_QUERY, args.repeats)
            assert len(rows) == 4
            pooled_ms = statistics.median(lat) * 1000
            results.append(
                (
                    f"pooled dose_effect query (median of {args.repeats})",
                    f"{pooled_ms:.0f} ms (min {min(lat) * 1000:.0f} ms)",
                )
            )
            rows, lat = timed(con, RAW_QUERY.format(root=root.resolve()), args.repeats)
            assert len(rows) == 4
            raw_ms = statistics.median(lat) * 1000
            results.append(
                (
                    "peer: same pooled answer by a plain Parquet scan + join (no versions, no derived targets; median)",
                    f"{raw_ms:.0f} ms; dose_effect / peer = {pooled_ms / raw_ms:.2f}",
                )
            )
            rows, lat = timed(con, "SELECT count(*) FROM voi_doses", args.repeats)
            n = rows[0][0]
            assert n == rep.rows_in
            results.append(
                (f"latest-version view count(*) over {n:,} rows (median)", f"{statistics.median(lat) * 1000:.0f} ms")
            )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"### Warehouse ({args.rows:,} VOI-dose rows, {args.sites} sites)\n")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "`.venv/bin/python benchmarks/bench_warehouse.py`\n"
    )
    print("| measure | value |\n| --- | --- |")
    for k, v in results:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
