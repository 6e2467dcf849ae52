"""``rntflow tare-plan``: partition-model activity plan for radioembolisation."""

from __future__ import annotations

import argparse
import sys

from rntflow.core.constants import PRODUCTS
from rntflow.core.errors import RntflowError
from rntflow.dosimetry.tare import CF_CONVENTIONS, TREATMENTS, plan_partition


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tare-plan`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "tare-plan",
        help="partition-model TARE activity plan",
        description="Activity for a planned tumour dose (partition model; de Wit-van der Veen et al., NKI: 'Current status of clinical dosimetry and personalized radionuclide therapy').",
    )
    p.add_argument("--tumour-dose-gy", type=float, required=True, help="planned mean tumour dose (Gy)")
    p.add_argument("--normal-liver-mass-kg", type=float, required=True, help="perfused non-tumour liver mass (kg)")
    p.add_argument("--tumour-mass-kg", type=float, required=True, help="tumour mass (kg)")
    p.add_argument("--ratio", type=float, required=True, help="tumour-to-normal uptake ratio r")
    p.add_argument("--lung-shunt", type=float, required=True, help="lung shunt fraction L (0-1)")
    p.add_argument(
        "--product", choices=sorted(PRODUCTS), default="SIR-Spheres", help="microsphere product (default SIR-Spheres)"
    )
    p.add_argument("--lung-mass-kg", type=float, default=1.0, help="lung mass (kg, default 1.0)")
    p.add_argument("--pretreated", action="store_true", help="pre-treated/compromised liver limits")
    p.add_argument(
        "--cf-convention",
        choices=CF_CONVENTIONS,
        default="product",
        help="dose conversion factor: 'product' (default) is the convention the product's dose "
        "limits were written in (90Y 49.67, 166Ho 15.85 J/GBq); 'icrp107' is computed from "
        "ICRP-107 decay data (90Y 49.77, 166Ho 15.53 J/GBq). The plan prints which CF it used",
    )
    p.add_argument(
        "--treatment",
        choices=TREATMENTS,
        default="standard",
        help="'standard' (whole-liver/lobar: parenchyma limit, tumour target) or 'ablative' "
        "(radiation segmentectomy: ablative tumour target instead of the parenchyma limit)",
    )
    p.add_argument(
        "--prior-lung-dose-gy",
        type=float,
        default=0.0,
        help="lung dose of earlier TARE treatments (Gy, default 0), for the cumulative lung limit",
    )
    p.add_argument(
        "--lung-cumulative-limit-gy",
        type=float,
        default=None,
        help="trial's cumulative lung limit (Gy); not in the product table, so off unless given",
    )
    p.add_argument(
        "--max-lung-shunt",
        type=float,
        default=None,
        help="trial's lung shunt fraction cap (0-1), checked whatever the lung dose; off unless given",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the plan table; 0 if within limits, 2 on error or broken limit."""
    try:
        plan = plan_partition(
            args.tumour_dose_gy,
            args.normal_liver_mass_kg,
            args.tumour_mass_kg,
            args.ratio,
            args.lung_shunt,
            product=args.product,
            lung_mass_kg=args.lung_mass_kg,
            pretreated=args.pretreated,
            cf_convention=args.cf_convention,
            treatment=args.treatment,
            prior_lung_dose_gy=args.prior_lung_dose_gy,
            lung_cumulative_limit_gy=args.lung_cumulative_limit_gy,
            max_lung_shunt_fraction=args.max_lung_shunt,
            raise_on_limit=False,
        )
    except RntflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [
        ("product", plan.product),
        ("nuclide", plan.nuclide),
        ("cf_convention", plan.cf_convention),
        ("cf_j_per_gbq", f"{plan.cf_j_per_gbq:.2f}"),
        ("treatment", plan.treatment),
        ("activity_gbq", f"{plan.activity_gbq:.3f}"),
        ("tumour_dose_gy", f"{plan.tumour_dose_gy:.1f}"),
        ("normal_liver_dose_gy", f"{plan.normal_liver_dose_gy:.1f}"),
        ("lung_dose_gy", f"{plan.lung_dose_gy:.1f}"),
        ("lung_cumulative_gy", f"{plan.cumulative_lung_dose_gy:.1f}"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"| {'quantity'.ljust(w)} | value |")
    print(f"| {'-' * w} | ----- |")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    for note in plan.notes:
        print(f"note: {note}")
    if plan.broken_limits:
        print("error: plan breaks limit(s): " + "; ".join(plan.broken_limits), file=sys.stderr)
        return 2
    return 0
