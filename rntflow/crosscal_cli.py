"""``rntflow cross-calibration-effect``: the dose-effect fits with and without cross-calibration.

Runs the ``cross-calibration-effect`` flow on a trial whose studies the listener has
spooled (e.g. after ``make demo``). When the trial folder holds the simulator's
``truth.json`` (the demo), it also runs the virtual-cohort bias study of
:func:`rntflow.evaluation.calibration_bias_study` and writes it to
``<warehouse>/reports/cross_calibration_bias.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from rntflow.core.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cross-calibration-effect", help="re-process without cross-calibration and compare the dose-effect fits"
    )
    p.add_argument("--config", default="deployments/trial.example.yaml", help="trial YAML (default: the demo trial)")
    p.add_argument("--n-per-site", type=int, default=200, help="bias study: virtual subjects per site (default 200)")
    p.add_argument("--n-rep", type=int, default=200, help="bias study: repetitions (default 200)")
    p.set_defaults(func=run)
    return p


def _side_by_side(study: pd.DataFrame) -> pd.DataFrame:
    """One row per endpoint and quantity, one ``median [2.5 %, 97.5 %]`` column per arm."""
    cell = study.assign(
        value=[
            f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if n > 1 else f"{m:.3f}"
            for m, lo, hi, n in study[["median", "p2_5", "p97_5", "n_rep"]].itertuples(index=False)
        ]
    )
    order = {q: i for i, q in enumerate(dict.fromkeys(study["quantity"]))}
    wide = cell.pivot(index=["endpoint", "quantity"], columns="arm", values="value").reset_index()
    wide.columns.name = None
    return wide.sort_values(["endpoint", "quantity"], key=lambda c: c.map(order) if c.name == "quantity" else c)


def run(args: argparse.Namespace) -> int:
    from rntflow.demo import prefect_environment, quiet_logging

    quiet_logging()
    config_path = str(Path(args.config).resolve())
    config = load_config(config_path)
    prefect_environment(config)
    from rntflow.flows.cross_calibration import cross_calibration_effect_flow
    from rntflow.flows.warehouse import markdown_table

    res = cross_calibration_effect_flow(config_path)
    print(Path(res["report"]).read_text())
    truth_file = config.enrolment_file.parent / "truth.json"
    if not truth_file.exists():
        return 0 if res["n_failed"] == 0 else 1
    from rntflow.evaluation import calibration_bias_study
    from rntflow.tasks.common import trial_config
    from rntflow.tasks.reports import write_report
    from rntflow.warehouse.catalog import dose_effect_frame
    from rntflow.warehouse.writer import read_latest

    arms = {
        name: dose_effect_frame(trial_config(path).warehouse_root)
        for name, path in (("cross-calibrated", config_path), ("vendor face value", res["arm_config"]))
    }
    studies = read_latest(config.warehouse_root, "studies", "kind = 'patient'")
    compliant = studies.groupby("site_id")["protocol_compliant"].any()
    off_protocol = sorted(compliant.index[~compliant.astype(bool)])
    study = calibration_bias_study(
        arms,
        json.loads(truth_file.read_text()),
        n_per_site=args.n_per_site,
        n_rep=args.n_rep,
        exclude_from_pool=off_protocol,
    )
    text = "\n".join(
        [
            f"# Calibration bias study: {config.trial_id}",
            "",
            f"Virtual cohort of {args.n_per_site} subjects per site and repetition ({args.n_rep} repetitions): true "
            "doses spread over the dose-response curve, each given the measured/true dose ratio of one of the "
            "site's outcome units in this trial (the same unit in both arms), outcomes drawn from the simulator's "
            "model on the true dose (rntflow.evaluation.calibration_bias_study). Median and 95 % range over "
            "repetitions. Pooled fits leave out the site(s) whose reconstructions fail the protocol checks: "
            f"{', '.join(off_protocol) or 'none'}.",
            "",
            markdown_table(_side_by_side(study)),
            "",
        ]
    )
    write_report(Path(res["report"]).with_name("cross_calibration_bias.md"), text)
    print(text)
    return 0 if res["n_failed"] == 0 else 1
