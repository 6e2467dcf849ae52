"""Per-site dose error on the demo trial, by vendor profile (issue 13).

Reads a processed demo (the warehouse and the simulator's truth files) and prints, per
site: its vendor profile (``siemens``, ``ge_hermes``, ``mediso``: simulation/sites.py, as
recorded in ``truth.json``), its recovery route (``calibrations.rc_fwhm_source`` of the
calibrations its doses used: NEMA RC curve, cylinder edge FWHM, configured FWHM), whether
every patient study passed the reconstruction checks (``studies.protocol_compliant``), and
per VOI class (kidneys, liver, spleen, lesions >= 10 mL, lesions < 10 mL) the organ-engine
(organ S-values; sphere model for lesions) and voxel-engine dose error against the truth:
mean (min to max) %, n.

Run after ``make demo`` (or on any demo data folder)::

    .venv/bin/python benchmarks/bench_vendor_accuracy.py data
    .venv/bin/python benchmarks/bench_vendor_accuracy.py --warehouse W --trial T

``data`` holds ``warehouse/`` and ``trial/`` (``truth.json``, ``truth_voi_doses.csv``) as
``deployments/trial.example.yaml`` lays them out. Only cycles with >= 3 scans count by
default (issue 5's accuracy criterion); ``--min-timepoints 1`` takes every cycle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rntflow.evaluation import accuracy_markdown, vendor_accuracy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", help="demo data folder holding warehouse/ and trial/")
    p.add_argument("--warehouse", type=Path, help="warehouse folder (default DATA/warehouse)")
    p.add_argument("--trial", type=Path, help="simulated trial folder with the truth (default DATA/trial)")
    p.add_argument("--voxel-engine", default="voxel_dpk", help="voxel engine (voi_doses.engine; default voxel_dpk)")
    p.add_argument("--min-timepoints", type=int, default=3, help="only cycles with this many scans (default 3)")
    p.add_argument("--csv", type=Path, help="also write the long table here")
    args = p.parse_args(argv)
    if args.data is None and (args.warehouse is None or args.trial is None):
        p.error("give DATA or both --warehouse and --trial")
    warehouse = args.warehouse or Path(args.data) / "warehouse"
    trial = args.trial or Path(args.data) / "trial"
    truth = json.loads((trial / "truth.json").read_text())
    table = vendor_accuracy(
        warehouse, truth, trial / "truth_voi_doses.csv", args.voxel_engine, min_timepoints=args.min_timepoints
    )
    if table.empty:
        print(f"no doses to compare in {warehouse}", file=sys.stderr)
        return 1
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(
        f"Dose error vs truth (%), cycles with >= {args.min_timepoints} scans: mean (min to max), n; "
        f"organ/sphere engine and {args.voxel_engine}\n"
    )
    print(accuracy_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
