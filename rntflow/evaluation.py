"""Pipeline doses against the simulator's ground truth (used by the demo, the tests and
``benchmarks/bench_vendor_accuracy.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rntflow.core.methods import method_rank
from rntflow.warehouse.catalog import ANALYSIS_ENGINES
from rntflow.warehouse.writer import read_latest


def compare_with_truth(
    warehouse_dir: str | Path, truth_csv: str | Path, engines: Sequence[str] = ANALYSIS_ENGINES
) -> pd.DataFrame:
    """One row per subject, cycle and VOI present in both: pipeline vs true dose.

    Parameters
    ----------
    warehouse_dir, truth_csv : str or Path
        The warehouse and the simulator's ``truth_voi_doses.csv``.
    engines : sequence of str
        Dose engines to compare; the default is the analysis engines (organ S-values for
        organs, the sphere model for lesions), ``("voxel_dpk",)`` the voxel engine. Per
        subject, cycle and VOI the best method wins (:mod:`rntflow.core.methods`), then the
        first engine in ``engines``.

    Returns columns ``subject_id, site_id, cycle, voi, engine, method, final, n_timepoints,
    dose_gy, true_dose_gy, error_pct, mass_g, true_mass_g, tia_mbq_h, true_tia_mbq_h,
    calibration_id``.
    """
    truth = pd.read_csv(truth_csv)
    got = read_latest(warehouse_dir, "voi_doses")
    if got.empty:
        return pd.DataFrame()
    got = got[got["engine"].isin(list(engines))]
    rank = -got["method"].map(method_rank) * (len(engines) + 1) + got["engine"].map(list(engines).index)
    got = got.assign(_rank=rank).sort_values(["_rank", "method"], kind="stable")
    got = got.drop_duplicates(["subject_id", "cycle", "voi"], keep="first").drop(columns="_rank")
    got = got.astype({"cycle": int})
    m = got.merge(
        truth.rename(
            columns={
                "dose_gy": "true_dose_gy",
                "mass_g": "true_mass_g",
                "tia_mbq_h": "true_tia_mbq_h",
                "method": "true_method",
                "site_id": "true_site_id",
            }
        ),
        on=["subject_id", "cycle", "voi"],
        how="inner",
    )
    m["error_pct"] = 100.0 * (m["dose_gy"] / m["true_dose_gy"] - 1.0)
    cols = [
        "subject_id",
        "site_id",
        "cycle",
        "voi",
        "engine",
        "method",
        "final",
        "n_timepoints",
        "dose_gy",
        "true_dose_gy",
        "error_pct",
        "mass_g",
        "true_mass_g",
        "tia_mbq_h",
        "true_tia_mbq_h",
        "calibration_id",
    ]
    return m.reindex(columns=cols).sort_values(["subject_id", "cycle", "voi"]).reset_index(drop=True)


#: Endpoints drawn from a logistic model by the simulator, with the measured dose column
#: that corresponds to the model's dose quantity (simulation/outcomes.py).
LOGISTIC_ENDPOINT_DOSE = {
    "nephrotoxicity": "cumulative_bed_gy",
    "xerostomia": "cumulative_dose_gy",
    "lesion_response": "cumulative_dose_gy",
}


def compare_tare_with_truth(warehouse_dir: str | Path, truth_csv: str | Path) -> pd.DataFrame:
    """Radioembolisation results against the simulator's truth (``truth_tare.csv``).

    One row per subject, treatment, VOI and quantity: ``predicted`` and ``delivered`` mean
    doses (Gy, ``error_pct``) from ``tare_predicted_delivered``, and the scout's
    ``lung_shunt_fraction`` (VOI ``Lungs``; ``error_pp``: percentage points) from ``tare_plans``.

    Returns columns ``subject_id, site_id, treatment, voi, quantity, value, true_value,
    error_pct, error_pp``; empty when the warehouse has no TARE results or no truth file.
    """
    truth_csv = Path(truth_csv)
    if not truth_csv.exists():
        return pd.DataFrame()
    truth = pd.read_csv(truth_csv)
    pvd = read_latest(warehouse_dir, "tare_predicted_delivered")
    plans = read_latest(warehouse_dir, "tare_plans")
    rows = []
    if not pvd.empty:
        m = pvd.astype({"treatment": int}).merge(
            truth.astype({"treatment": int}), on=["subject_id", "treatment", "voi"], suffixes=("", "_true")
        )
        for quantity in ("predicted", "delivered"):
            part = m[["subject_id", "site_id", "treatment", "voi"]].assign(
                quantity=quantity, value=m[f"{quantity}_dose_gy"], true_value=m[f"{quantity}_dose_gy_true"]
            )
            rows.append(part.assign(error_pct=100.0 * (part["value"] / part["true_value"] - 1.0)))
    if not plans.empty:
        lsf = truth.drop_duplicates(["subject_id", "treatment"])[
            ["subject_id", "treatment", "scout_lung_shunt_fraction"]
        ]
        m = plans.astype({"treatment": int}).merge(lsf.astype({"treatment": int}), on=["subject_id", "treatment"])
        part = m[["subject_id", "site_id", "treatment"]].assign(
            voi="Lungs",
            quantity="lung_shunt_fraction",
            value=m["lung_shunt_fraction"],
            true_value=m["scout_lung_shunt_fraction"],
        )
        rows.append(part.assign(error_pp=100.0 * (part["value"] - part["true_value"])))
    if not rows:
        return pd.DataFrame()
    cols = ["subject_id", "site_id", "treatment", "voi", "quantity", "value", "true_value", "error_pct", "error_pp"]
    out = pd.concat(rows, ignore_index=True)
    return out.reindex(columns=cols).sort_values(["subject_id", "treatment", "quantity", "voi"]).reset_index(drop=True)


def truth_targets(truth: dict) -> pd.DataFrame:
    """The simulator's true dose quantity behind each logistic outcome.

    Returns ``subject_id, site_id, endpoint, lesion_voi, true_gy``: cumulative kidney BED
    (nephrotoxicity), mean parotid dose (xerostomia), lesion dose (lesion response).
    """
    rows = []
    for sid, subj in truth["subjects"].items():
        dose, bed = subj["cumulative"]["dose_gy"], subj["cumulative"]["bed_gy"]
        site = subj["site_id"]
        rows.append(
            {
                "subject_id": sid,
                "site_id": site,
                "endpoint": "nephrotoxicity",
                "lesion_voi": "",
                "true_gy": bed["Kidneys"],
            }
        )
        rows.append(
            {
                "subject_id": sid,
                "site_id": site,
                "endpoint": "xerostomia",
                "lesion_voi": "",
                "true_gy": 0.5 * (dose["Parotid_L"] + dose["Parotid_R"]),
            }
        )
        rows += [
            {"subject_id": sid, "site_id": site, "endpoint": "lesion_response", "lesion_voi": voi, "true_gy": d}
            for voi, d in dose.items()
            if voi.startswith("Lesion_")
        ]
    return pd.DataFrame(rows)


def _summary_row(endpoint: str, arm: str, quantity: str, vals) -> dict | None:
    """Median and 95 % range of the finite values as an output row (``None`` when there are none)."""
    v = np.asarray(vals, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    return {
        "endpoint": endpoint,
        "arm": arm,
        "quantity": quantity,
        "n_rep": int(v.size),
        "median": float(np.median(v)),
        "p2_5": float(np.percentile(v, 2.5)),
        "p97_5": float(np.percentile(v, 97.5)),
    }


def _endpoint_units(targets: pd.DataFrame, arms: dict[str, pd.DataFrame], endpoint: str, dose_col: str) -> pd.DataFrame:
    """Outcome units of one endpoint with a positive true dose and every arm's dose (a column per arm)."""
    from rntflow.analysis.arm_comparison import OUTCOME_KEY, one_row_per_outcome

    units = targets[targets["endpoint"] == endpoint]
    for name, de in arms.items():
        d = one_row_per_outcome(de[de["endpoint"] == endpoint][list(OUTCOME_KEY) + [dose_col]])
        units = units.merge(d.rename(columns={dose_col: name}), on=list(OUTCOME_KEY))
    units = units.dropna()
    return units[units["true_gy"] > 0]


def _virtual_cohort_samples(
    units: pd.DataFrame,
    ratios: dict[str, np.ndarray],
    endpoint: str,
    rng: np.random.Generator,
    *,
    n_per_site: int,
    n_rep: int,
    dose_span: float,
    exclude_from_pool: Sequence[str],
) -> dict[tuple[str, str], list[float]]:
    """Per-repetition D50 ratios of each arm, keyed by (arm, quantity), on virtual cohorts for one endpoint."""
    from rntflow.analysis.dose_logistic import logistic_d50_point
    from rntflow.analysis.site_effect import per_site_d50
    from rntflow.physics.ntcp import logistic_ntcp
    from rntflow.simulation.outcomes import OUTCOME_MODELS

    model = OUTCOME_MODELS[endpoint]
    d50, g50 = model["d50_gy"], model["gamma50"]
    site_units = units.groupby("site_id", sort=True).indices
    site_names = np.repeat(list(site_units), n_per_site)
    pooled = ~np.isin(site_names, list(exclude_from_pool))
    pool_sites = [s for s in site_units if s not in exclude_from_pool]
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(n_rep):
        true = d50 * np.exp(rng.uniform(-math.log(dose_span), math.log(dose_span), site_names.size))
        pick = np.concatenate([rng.choice(ix, n_per_site) for ix in site_units.values()])
        y = (rng.random(true.size) < logistic_ntcp(true, d50, g50)).astype(float)
        d50_true = logistic_d50_point(true[pooled], y[pooled])
        for name in ratios:
            measured = true * ratios[name][pick]
            fit = logistic_d50_point(measured[pooled], y[pooled])
            samples.setdefault((name, "d50_over_model"), []).append(fit / d50)
            samples.setdefault((name, "d50_over_true_dose_fit"), []).append(fit / d50_true)
            sites = per_site_d50(measured, y, site_names)
            for s, v in sites.items():
                others = [math.log(w) for t, w in sites.items() if t != s and t in pool_sites]
                samples.setdefault((name, f"site_scale_{s}"), []).append(v / math.exp(np.mean(others)))
    return samples


def calibration_bias_study(
    arms: dict[str, pd.DataFrame],
    truth: dict,
    *,
    n_per_site: int = 200,
    n_rep: int = 200,
    dose_span: float = 3.0,
    exclude_from_pool: Sequence[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """Bias each arm's dosimetry puts into pooled and per-site D50s, on a virtual cohort.

    The demo trial is far too small for a dose-response fit (six subjects, a handful of
    distinct doses, mostly far below the toxicity D50s). This carries its *measured dose
    errors* over to a cohort that spans the dose-response curve: per repetition and site,
    ``n_per_site`` true doses are drawn log-uniformly over ``[D50/dose_span,
    D50*dose_span]``, each gets the measured/true ratio of one outcome unit of that site
    drawn at random (the same unit in every arm, so the arms differ by their dosimetry
    only), and an outcome drawn from the simulator's model on the true dose. Each arm's
    "measured" doses are then fitted to the same outcomes.

    Parameters
    ----------
    arms : dict of str to pandas.DataFrame
        ``dose_effect`` rows (organ/sphere engine) per arm, e.g. cross-calibrated and
        vendor face value.
    truth : dict
        The simulator's ``truth.json``.
    n_per_site, n_rep : int
        Virtual subjects per site per repetition; repetitions.
    dose_span : float
        True doses span ``D50 / dose_span`` to ``D50 * dose_span``.
    exclude_from_pool : sequence of str
        Sites left out of the pooled fits and of the other sites' reference in the site
        scale (e.g. a site whose reconstructions fail the protocol checks); their own site
        scale is still reported.
    seed : int
        Random seed.

    Returns
    -------
    pandas.DataFrame
        ``endpoint, arm, quantity, n_rep, median, p2_5, p97_5`` (over repetitions), where
        quantity is ``d50_over_model`` (pooled D50 / the model's D50), ``d50_over_true_dose_fit``
        (paired with the fit on the true doses) or ``site_scale_<site>`` (that site's D50
        over the geometric mean of the other pooled sites', common slope: 1 = no site effect).
        Also ``measured_over_true_<site>`` rows: the median measured/true dose ratio of the
        site's units in the trial itself.
    """
    rng = np.random.default_rng(seed)
    targets = truth_targets(truth)
    rows: list[dict | None] = []
    for endpoint, dose_col in LOGISTIC_ENDPOINT_DOSE.items():
        units = _endpoint_units(targets, arms, endpoint, dose_col)
        if units.empty or units["site_id"].nunique() < 2:
            continue
        ratios = {name: (units[name] / units["true_gy"]).to_numpy() for name in arms}
        for name in arms:
            for site, ix in units.groupby("site_id", sort=True).indices.items():
                rows.append(_summary_row(endpoint, name, f"measured_over_true_{site}", [np.median(ratios[name][ix])]))
        samples = _virtual_cohort_samples(
            units,
            ratios,
            endpoint,
            rng,
            n_per_site=n_per_site,
            n_rep=n_rep,
            dose_span=dose_span,
            exclude_from_pool=exclude_from_pool,
        )
        rows += [_summary_row(endpoint, name, quantity, vals) for (name, quantity), vals in samples.items()]
    return pd.DataFrame([r for r in rows if r is not None])


#: VOI classes of the per-site accuracy table, in table order.
VOI_CLASSES = ("kidneys", "liver", "spleen", "lesions >= 10 mL", "lesions < 10 mL")
#: Lesion volume (mL) separating the classes of the accuracy criterion (issue 5: lesions of
#: >= 10 mL within 20 % after partial-volume correction).
LESION_CLASS_VOLUME_ML = 10.0
#: How ``calibrations.rc_fwhm_source`` reads in the table.
RC_ROUTES = {"nema": "NEMA RC", "cylinder_edge": "cylinder edge FWHM", "configured": "configured FWHM"}


def voi_class(voi: str, volume_ml: float) -> str | None:
    """The accuracy-table class of a VOI (``None``: not in the table).

    Parameters
    ----------
    voi : str
        TG-263 VOI name (``Kidney_L``, ``Lesion_2`` ...); the derived ``Kidneys`` is not a
        class member (it would count each kidney twice).
    volume_ml : float
        True VOI volume (mL), which splits the lesions.
    """
    if voi in ("Kidney_L", "Kidney_R"):
        return "kidneys"
    if voi in ("Liver", "Spleen"):
        return voi.lower()
    if voi.startswith("Lesion_"):
        return VOI_CLASSES[3] if volume_ml >= LESION_CLASS_VOLUME_ML else VOI_CLASSES[4]
    return None


def _site_routes(warehouse_dir: str | Path, cmp: pd.DataFrame) -> dict[str, str]:
    """Per site, the recovery route(s) of the calibrations its doses used (``+``-joined)."""
    cals = read_latest(warehouse_dir, "calibrations")
    if cals.empty:
        return {}
    source = dict(zip(cals["calibration_id"], cals["rc_fwhm_source"]))
    out = {}
    for site, ids in cmp.groupby("site_id")["calibration_id"]:
        used = sorted({RC_ROUTES.get(source.get(i), "none") for i in ids.dropna()})
        out[site] = " + ".join(used) if used else "none"
    return out


def _site_compliance(warehouse_dir: str | Path) -> dict[str, str]:
    """Per site, ``yes`` when every patient study passed the reconstruction checks, else ``no (k/n)``."""
    st = read_latest(warehouse_dir, "studies", "kind = 'patient'")
    out = {}
    for site, flags in st.groupby("site_id")["protocol_compliant"]:
        ok = int(flags.fillna(False).astype(bool).sum())
        out[site] = "yes" if ok == len(flags) else f"no ({ok}/{len(flags)})"
    return out


def vendor_accuracy(
    warehouse_dir: str | Path,
    truth: dict,
    truth_csv: str | Path,
    voxel_engine: str = "voxel_dpk",
    min_timepoints: int = 3,
) -> pd.DataFrame:
    """Per site and VOI class, the organ- and voxel-engine dose errors against the truth.

    Parameters
    ----------
    warehouse_dir : str or Path
        The demo's warehouse.
    truth : dict
        The simulator's ``truth.json`` (sites' vendor profiles, true VOI volumes).
    truth_csv : str or Path
        The simulator's ``truth_voi_doses.csv``.
    voxel_engine : str
        The voxel engine's ``voi_doses.engine`` value.
    min_timepoints : int
        Only cycles with at least this many scans (3: issue 5's criterion; 1: every cycle).

    Returns
    -------
    pandas.DataFrame
        One row per site, VOI class and engine (``organ``: organ S-values for organs and the
        sphere model for lesions; ``voxel``): ``site_id, vendor, rc_route, compliant,
        voi_class, engine, n, mean_error_pct, min_error_pct, max_error_pct``.
    """
    parts = []
    for label, engines in (("organ", ANALYSIS_ENGINES), ("voxel", (voxel_engine,))):
        c = compare_with_truth(warehouse_dir, truth_csv, engines)
        if not c.empty:
            parts.append(c.assign(engine_group=label))
    cols = ["site_id", "vendor", "rc_route", "compliant", "voi_class", "engine", "n"]
    cols += ["mean_error_pct", "min_error_pct", "max_error_pct"]
    if not parts:
        return pd.DataFrame(columns=cols)
    cmp = pd.concat(parts, ignore_index=True)
    cmp = cmp[cmp["n_timepoints"] >= min_timepoints]
    vols = {(sid, v): d["volume_ml"] for sid, s in truth["subjects"].items() for v, d in s["vois"].items()}
    cmp = cmp.assign(
        voi_class=[voi_class(r.voi, vols.get((r.subject_id, r.voi), math.nan)) for r in cmp.itertuples()]
    ).dropna(subset=["voi_class"])
    g = (
        cmp.groupby(["site_id", "voi_class", "engine_group"])["error_pct"]
        .agg(n="size", mean_error_pct="mean", min_error_pct="min", max_error_pct="max")
        .reset_index()
        .rename(columns={"engine_group": "engine"})
    )
    routes, compliance = _site_routes(warehouse_dir, cmp), _site_compliance(warehouse_dir)
    sites = truth["sites"]
    g["vendor"] = g["site_id"].map(lambda s: sites.get(s, {}).get("vendor", {}).get("profile", "?"))
    g["rc_route"] = g["site_id"].map(lambda s: routes.get(s, "none"))
    g["compliant"] = g["site_id"].map(lambda s: compliance.get(s, "?"))
    g["_order"] = g["voi_class"].map(VOI_CLASSES.index)
    return g.sort_values(["site_id", "_order", "engine"])[cols].reset_index(drop=True)


def accuracy_markdown(table: pd.DataFrame) -> str:
    """The :func:`vendor_accuracy` table as Markdown: one row per site and VOI class,
    ``mean (min to max), n`` per engine (dose error vs truth, %)."""

    def cell(r) -> str:
        return f"{r.mean_error_pct:+.1f} ({r.min_error_pct:+.1f} to {r.max_error_pct:+.1f}), {r.n}"

    head = ["site", "vendor", "recovery", "compliant", "VOI class", "organ/sphere engine %", "voxel engine %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (site, cls), part in table.groupby(["site_id", "voi_class"], sort=False):
        r0 = part.iloc[0]
        by = {r.engine: cell(r) for r in part.itertuples()}
        row = [site, r0.vendor, r0.rc_route, r0.compliant, cls, by.get("organ", "-"), by.get("voxel", "-")]
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)
