"""The report sections of ``bench_tare.py``: accuracy, agreement, dose-effect, QA, runs.

Pure reading of a finished run (the warehouse, the simulator's truth files); split from the
benchmark's driver, which simulates, pushes and runs the flows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LESIONS = "Lesions"
#: Relative tolerance of the acceptance criterion on mean doses (%).
DOSE_TOLERANCE_PCT = 10.0
#: Absolute floor of the lung-dose tolerance (Gy): a 10 % criterion at lung doses of 1-2 Gy
#: asks for 0.1-0.2 Gy, below the counting noise of a lung region holding ~1-4 % of the
#: activity (90Y PET: 32 positrons per million decays); 0.5 Gy is 1.7 % of the 30 Gy
#: single-treatment lung limit, the only decision the lung dose feeds.
LUNG_ABS_TOLERANCE_GY = 0.5
#: Lung shunt tolerance (percentage points).
LSF_TOLERANCE_PP = 2.0


def md_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    if df is None or df.empty:
        return "(none)"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in df.itertuples(index=False):
        cells = []
        for v in r:
            if isinstance(v, float | np.floating):
                cells.append("" if np.isnan(v) else format(float(v), floatfmt))
            else:
                cells.append(str(v).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def voi_group(voi: str) -> str:
    return LESIONS if voi.startswith("Lesion_") else voi


def agreement(ratios: pd.Series) -> dict:
    """Mean, SD and 95 % limits of agreement (mean +- 1.96 SD) of delivered/predicted ratios."""
    x = ratios.dropna().to_numpy(float)
    if len(x) == 0:
        return {"n": 0}
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
    m = float(np.mean(x))
    return {"n": len(x), "mean": m, "sd": sd, "loa_low": m - 1.96 * sd, "loa_high": m + 1.96 * sd}


# --------------------------------------------------------------------------- report sections


def tare_compliance(wh: Path) -> pd.DataFrame:
    """Per TARE patient study: ``site_id, subject_id, study_id, protocol_compliant`` and the
    names of its failed reconstruction checks (latest ``studies`` and ``qa_checks`` rows)."""
    from rntflow.warehouse.writer import read_latest

    studies = read_latest(wh, "studies", "kind = 'patient' AND site_id IN ('SITE04', 'SITE05')")
    if studies.empty:
        return pd.DataFrame(columns=["site_id", "subject_id", "study_id", "protocol_compliant", "failed_checks"])
    qa = read_latest(wh, "qa_checks", "status = 'fail' AND scope = 'study'")
    failed = qa.groupby(["subject_id", "study_id"])["check_name"].apply(lambda s: ", ".join(sorted(set(s))))
    studies = studies[["site_id", "subject_id", "study_id", "protocol_compliant"]].copy()
    studies["failed_checks"] = [failed.get((a, b), "") for a, b in zip(studies["subject_id"], studies["study_id"])]
    return studies


def section_compliance(wh: Path) -> list[str]:
    """Protocol compliance of the TARE studies per site (the "compliant sites" of the criterion)."""
    c = tare_compliance(wh)
    out = ["## Protocol compliance of the TARE studies", ""]
    if c.empty:
        return out + ["No TARE patient studies in the warehouse.", ""]
    g = (
        c.assign(
            compliant=c["protocol_compliant"].eq(True),
            non_compliant=c["protocol_compliant"].eq(False),
            unchecked=c["protocol_compliant"].isna(),
        )
        .groupby("site_id")
        .agg(
            studies=("study_id", "size"),
            compliant=("compliant", "sum"),
            non_compliant=("non_compliant", "sum"),
            unchecked=("unchecked", "sum"),
        )
        .reset_index()
    )
    out += [
        "`studies.protocol_compliant` of every TARE scout and post-treatment study, from the checks against the "
        "config's `imaging_protocols` (99mTc-MAA and 166Ho SPECT/CT, 90Y TOF PET/CT); unchecked = no protocol "
        "for the study's radionuclide and modality.",
        "",
        md_table(g, ".0f"),
        "",
    ]
    bad = c[c["protocol_compliant"].ne(True)]
    if not bad.empty:
        out += ["Non-compliant or unchecked studies:", "", md_table(bad), ""]
    return out


def acceptance(dose: pd.DataFrame, lsf: pd.DataFrame) -> pd.DataFrame:
    """The issue's acceptance criterion per quantity and VOI group, on the rows given.

    Doses: |error| <= 10 %; lungs: <= max(10 %, 0.5 Gy); lung shunt: <= 2 percentage points.
    """
    rows = []
    for (quantity, group), d in dose.groupby(["quantity", "group"]):
        abs_gy = (d["value"] - d["true_value"]).abs()
        tol_gy = DOSE_TOLERANCE_PCT / 100.0 * d["true_value"].abs()
        rule = f"{DOSE_TOLERANCE_PCT:g} %"
        if group == "Lungs":
            tol_gy = tol_gy.clip(lower=LUNG_ABS_TOLERANCE_GY)
            rule += f" or {LUNG_ABS_TOLERANCE_GY:g} Gy"
        rows.append(
            {
                "quantity": quantity,
                "group": group,
                "n": len(d),
                "criterion": rule,
                "max_abs_err_pct": float(d["error_pct"].abs().max()),
                "max_abs_err_gy": float(abs_gy.max()),
                "within": int((abs_gy <= tol_gy + 1e-12).sum()),
                "verdict": "pass" if bool((abs_gy <= tol_gy + 1e-12).all()) else "FAIL",
            }
        )
    if not lsf.empty:
        ok = lsf["error_pp"].abs() <= LSF_TOLERANCE_PP
        rows.append(
            {
                "quantity": "scout",
                "group": "lung_shunt_fraction",
                "n": len(lsf),
                "criterion": f"{LSF_TOLERANCE_PP:g} pp",
                "max_abs_err_pct": float("nan"),
                "max_abs_err_gy": float("nan"),
                "within": int(ok.sum()),
                "verdict": "pass" if bool(ok.all()) else "FAIL",
            }
        )
    return pd.DataFrame(rows)


def section_accuracy(wh: Path, trial: Path) -> list[str]:
    from rntflow.evaluation import compare_tare_with_truth

    cmp = compare_tare_with_truth(wh, trial / "truth_tare.csv")
    out = ["## (a) Accuracy against the simulator's truth", ""]
    if cmp.empty:
        return out + ["No TARE results in the warehouse (or no truth file).", ""]
    comp = tare_compliance(wh)
    non_compliant = set(comp.loc[comp["protocol_compliant"].ne(True), "subject_id"])
    n_all = cmp["subject_id"].nunique()
    cmp = cmp[~cmp["subject_id"].isin(non_compliant)].copy()
    out += [
        f"Subjects whose scout and post-treatment studies are protocol-compliant: {cmp['subject_id'].nunique()} "
        f"of {n_all} (the others are left out of the accuracy figures).",
        "",
    ]
    cmp["group"] = cmp["voi"].map(voi_group)
    dose = cmp[cmp["quantity"].isin(["predicted", "delivered"])].copy()
    dose["abs_err"] = dose["error_pct"].abs()
    agg = {
        "n": ("abs_err", "size"),
        "median_abs_err_pct": ("abs_err", "median"),
        "max_abs_err_pct": ("abs_err", "max"),
        "mean_signed_err_pct": ("error_pct", "mean"),
    }
    order = {LESIONS: 0, "Liver_Normal": 1, "Lungs": 2, "Liver_Perfused": 3, "Liver": 4}
    g = dose.groupby(["quantity", "group"]).agg(**agg).reset_index()
    g = g.sort_values(
        ["quantity", "group"], key=lambda s: s.map(order) if s.name == "group" else s, ascending=[False, True]
    )
    out += [
        "Mean doses (Gy) from `tare_predicted_delivered` vs `truth_tare.csv` (predicted = scout shares x "
        "administered activity; delivered = post-treatment image, local deposition). |error| in %.",
        "",
        "### Per VOI group, both sites",
        "",
        md_table(g),
        "",
        "### Per site and VOI group",
        "",
    ]
    gs = dose.groupby(["site_id", "quantity", "group"]).agg(**agg).reset_index()
    gs = gs.sort_values(
        ["site_id", "quantity", "group"],
        key=lambda s: s.map(order) if s.name == "group" else s,
        ascending=[True, False, True],
    )
    out += [md_table(gs), ""]
    lsf = cmp[cmp["quantity"] == "lung_shunt_fraction"].copy()
    lsf["abs_pp"] = lsf["error_pp"].abs()
    lg = (
        lsf.groupby("site_id")
        .agg(
            n=("abs_pp", "size"),
            median_abs_err_pp=("abs_pp", "median"),
            max_abs_err_pp=("abs_pp", "max"),
            mean_signed_err_pp=("error_pp", "mean"),
        )
        .reset_index()
    )
    out += ["### Scout lung shunt fraction (percentage points)", "", md_table(lg), ""]
    dose["abs_err_gy"] = (dose["value"] - dose["true_value"]).abs()
    worst = dose.sort_values("abs_err", ascending=False).head(5)[
        ["subject_id", "site_id", "voi", "quantity", "value", "true_value", "error_pct", "abs_err_gy"]
    ]
    out += ["Largest dose errors:", "", md_table(worst), ""]
    out += [
        "### Acceptance criterion (compliant studies)",
        "",
        f"Mean doses within {DOSE_TOLERANCE_PCT:g} % of the truth; lung dose within {DOSE_TOLERANCE_PCT:g} % or "
        f"{LUNG_ABS_TOLERANCE_GY:g} Gy, whichever is larger; scout lung shunt within {LSF_TOLERANCE_PP:g} "
        "percentage points.",
        "",
        md_table(acceptance(dose, lsf)),
        "",
    ]
    return out


def section_agreement(wh: Path, trial: Path, scout_of_site: dict[str, str]) -> list[str]:
    from rntflow.warehouse.writer import read_latest

    out = ["## (b) Predicted vs delivered per scout agent", ""]
    pvd = read_latest(wh, "tare_predicted_delivered")
    truth = pd.read_csv(trial / "truth_tare.csv")
    truth["ratio"] = truth["delivered_dose_gy"] / truth["predicted_dose_gy"]
    rows = []
    for group, sel in ((LESIONS, lambda v: v.str.startswith("Lesion_")), ("Lungs", lambda v: v == "Lungs")):
        for site, agent in sorted(scout_of_site.items()):
            t = truth[(truth["site_id"] == site) & sel(truth["voi"])]
            p = pvd[(pvd["site_id"] == site) & sel(pvd["voi"])] if not pvd.empty else pd.DataFrame()
            pipe = agreement(p["delivered_to_predicted_ratio"]) if not p.empty else {"n": 0}
            tru = agreement(t["ratio"])
            same = t.merge(p[["subject_id", "voi"]], on=["subject_id", "voi"]) if not p.empty else t.iloc[:0]
            both = agreement(same["ratio"])
            for source, a in (("pipeline", pipe), ("truth, same VOIs", both), ("truth, all subjects", tru)):
                rows.append({"VOI": group, "scout": agent, "site": site, "source": source, **a})
    tab = pd.DataFrame(rows)
    out += [
        "delivered / predicted mean-dose ratio (predicted from the scout at the administered activity); "
        "mean, SD and 95 % limits of agreement (mean +- 1.96 SD). The truth rows are the simulator's "
        "own ratios (166Ho scout: tumour-to-normal ratio x lognormal SD 5 %, shunt x lognormal 10 %; "
        "99mTc-MAA: ratio x lognormal 20 %, shunt x 0.7 x lognormal 10 %).",
        "",
        md_table(
            tab.reindex(columns=["VOI", "scout", "site", "source", "n", "mean", "sd", "loa_low", "loa_high"]), ".3f"
        ),
        "",
    ]
    les = tab[(tab["VOI"] == LESIONS) & (tab["source"] == "pipeline")].set_index("scout")
    if len(les) == 2 and les["n"].min() > 1:
        ho = next(a for a in les.index if "Ho" in a)
        maa = next(a for a in les.index if "MAA" in a)
        w_ho = les.loc[ho, "loa_high"] - les.loc[ho, "loa_low"]
        w_maa = les.loc[maa, "loa_high"] - les.loc[maa, "loa_low"]
        verdict = "reproduces" if w_ho < w_maa else "does NOT reproduce"
        out += [
            f"Lesions, pipeline: width of the 95 % limits of agreement {w_ho:.3f} ({ho}) vs {w_maa:.3f} ({maa}): "
            f"the pipeline {verdict} the finding that the 166Ho scout predicts the treatment better than "
            "99mTc-MAA.",
            "",
        ]
    return out


def _truth_fits(trial: Path, scout_site_device: dict[str, str]) -> pd.DataFrame:
    """The same logistic fits on the simulator's true delivered doses (sampling noise alone)."""
    from rntflow.analysis.site_effect import dose_response_by_site

    truth = pd.read_csv(trial / "truth_tare.csv")
    outc = pd.read_csv(trial / "outcomes.csv")
    outc = outc[outc["subject_id"].isin(truth["subject_id"])]
    rows = []
    les = outc[outc["endpoint"] == "lesion_response"].merge(
        truth[["subject_id", "site_id", "voi", "delivered_dose_gy"]],
        left_on=["subject_id", "lesion_voi"],
        right_on=["subject_id", "voi"],
    )
    les["effect"] = les["response"].isin(["CR", "PR"]).astype(int)
    tox = outc[outc["endpoint"] == "liver_toxicity"].merge(
        truth[truth["voi"] == "Liver_Normal"][["subject_id", "site_id", "delivered_dose_gy"]], on="subject_id"
    )
    tox["effect"] = (tox["grade"] >= 3).astype(int)
    for endpoint, part in (("lesion_response", les), ("liver_toxicity", tox)):
        if part["effect"].nunique() < 2:
            note = f"{len(part)} outcomes, {int(part['effect'].sum())} events: not estimable"
            rows.append(pd.DataFrame([{"endpoint": endpoint, "site_id": "pooled", "note": note}]))
            continue
        try:
            t = dose_response_by_site(part, dose_col="delivered_dose_gy")
        except (ValueError, ZeroDivisionError) as exc:
            rows.append(pd.DataFrame([{"endpoint": endpoint, "site_id": "pooled", "note": str(exc)}]))
            continue
        rows.append(t.assign(endpoint=endpoint, n_events=t["n_events"]))
    return pd.concat(rows, ignore_index=True)


def _part_of(part: pd.DataFrame, site: str) -> pd.DataFrame:
    if part is None or part.empty:
        return pd.DataFrame({"effect": []})
    return part if site == "pooled" else part[part["site_id"] == site]


def section_dose_effect(wh: Path, trial: Path, site_device: dict[str, str]) -> list[str]:
    from rntflow.analysis.site_effect import dose_response_by_site
    from rntflow.simulation.outcomes import TARE_OUTCOME_MODELS
    from rntflow.warehouse.catalog import TARE_ENGINE, dose_effect_frame

    out = ["## (c) TARE dose-effect fits", ""]
    report = wh / "reports" / "dose_effect.md"
    if report.exists():
        text = report.read_text()
        start = text.find("# Radioembolisation")
        end = text.find("## Progression-free", start)
        out += [
            f"As the dose-effect flow wrote them (`{report}`, TARE part):",
            "",
            "```",
            (text[start:end].strip() if start >= 0 else "(no radioembolisation section in the report)"),
            "```",
            "",
        ]
    else:
        out += [f"No dose-effect report at {report}.", ""]
    try:
        tare = dose_effect_frame(str(wh), engines=(TARE_ENGINE,))
    except Exception as exc:  # noqa: BLE001 - reported, not fixed
        out += [f"dose_effect_frame failed: {type(exc).__name__}: {exc}", ""]
        return out
    try:
        truth_fit = _truth_fits(trial, site_device)
    except Exception as exc:  # noqa: BLE001
        truth_fit = pd.DataFrame()
        out += [f"fit on true doses failed: {type(exc).__name__}: {exc}", ""]
    rows = []
    for endpoint in ("lesion_response", "liver_toxicity"):
        part = tare[(tare["endpoint"] == endpoint) & tare["cumulative_dose_gy"].notna()] if not tare.empty else tare
        fit = pd.DataFrame()
        if part is not None and len(part) >= 4 and part["effect"].nunique() == 2:
            try:
                fit = dose_response_by_site(part, dose_col="cumulative_dose_gy")
            except (ValueError, ZeroDivisionError) as exc:
                out += [f"{endpoint}: refit failed: {exc}", ""]
        model = TARE_OUTCOME_MODELS[endpoint]
        for site in ["pooled", *sorted(site_device)]:
            f = fit[fit["site_id"] == site] if not fit.empty else fit
            tf = (
                truth_fit[(truth_fit["endpoint"] == endpoint) & (truth_fit["site_id"] == site)]
                if not truth_fit.empty
                else truth_fit
            )
            dev = site_device.get(site)
            r = {
                "endpoint": endpoint,
                "fit": site if site == "pooled" else f"{site} ({dev})",
                "n": int(f["n"].iloc[0]) if len(f) else len(_part_of(part, site)),
                "events": int(f["n_events"].iloc[0]) if len(f) else int(_part_of(part, site)["effect"].sum()),
                "D50 (Gy) [95 % CI]": (
                    f"{f['d50_gy'].iloc[0]:.0f} [{f['d50_ci_low_gy'].iloc[0]:.0f}, {f['d50_ci_high_gy'].iloc[0]:.0f}]"
                    if len(f)
                    else ""
                ),
                "gamma50": float(f["gamma50"].iloc[0]) if len(f) else float("nan"),
                "same fit on true doses: D50 [95 % CI]": (
                    f"{tf['d50_gy'].iloc[0]:.0f} [{tf['d50_ci_low_gy'].iloc[0]:.0f}, {tf['d50_ci_high_gy'].iloc[0]:.0f}]"
                    if len(tf) and "d50_gy" in tf and pd.notna(tf["d50_gy"].iloc[0])
                    else ""
                ),
                "model D50 (Gy)": (
                    f"{model[dev]['d50_gy']:.0f}"
                    if dev
                    else "/".join(f"{model[d]['d50_gy']:.0f}" for d in sorted(set(site_device.values())))
                ),
                "model gamma50": (
                    f"{model[dev]['gamma50']:.1f}"
                    if dev
                    else "/".join(f"{model[d]['gamma50']:.1f}" for d in sorted(set(site_device.values())))
                ),
            }
            rows.append(r)
    if not truth_fit.empty and "note" in truth_fit:
        for r in truth_fit[truth_fit["note"].notna()].itertuples():
            out += [f"Fit on true doses, {r.endpoint}: {r.note}", ""]
    out += [
        "Refit of the same view with `dose_response_by_site` on `dose_effect_frame(wh, engines=(TARE_ENGINE,))` "
        "(pipeline doses), the same fit on the simulator's true delivered doses and outcomes (what the "
        "sample alone allows), and the simulator's models (`simulation/outcomes.py` TARE_OUTCOME_MODELS, "
        "per device; the pooled row mixes two devices, so its model column lists both: "
        f"{'/'.join(sorted(set(site_device.values())))}).",
        "",
        md_table(pd.DataFrame(rows), ".2f"),
        "",
    ]
    return out


#: planted VOI -> the QA check(s) that should flag it
EXPECTED_CHECKS = {"Lungs": ("tare_lung_dose",), "Liver_Normal": ("tare_normal_liver_dose",)}


def _truth_for_flag(truth: pd.DataFrame, r) -> str:
    """The simulator's value behind a tare_tumour_dose flag: the lesion's planned dose, or the
    mass-weighted delivered dose of all lesions (what the check's value is)."""
    t = truth[truth["subject_id"] == r.subject_id]
    if r.check_name != "tare_tumour_dose":
        return ""
    voi = str(r.scope_id).rsplit("/", 1)[-1]
    col = "planned_dose_gy" if "planned" in str(r.value_found) else "delivered_dose_gy"
    if voi.startswith("Lesion_"):
        row = t[t["voi"] == voi]
        return f"{row[col].iloc[0]:.1f} ({col.split('_')[0]})" if len(row) else ""
    les = t[t["voi"].str.startswith("Lesion_")]
    return f"{(les[col] * les['mass_kg']).sum() / les['mass_kg'].sum():.1f} ({col.split('_')[0]}, all lesions)"


def section_qa(wh: Path, trial: Path) -> list[str]:
    from rntflow.warehouse.writer import read_latest

    out = ["## (d) QA: planted Table 1 breaches", ""]
    truth = pd.read_csv(trial / "truth_tare.csv")
    planted = truth[truth["planted"].fillna("") != ""]
    qa = read_latest(wh, "qa_checks", "check_name LIKE 'tare_%'")
    bad = qa[qa["status"].isin(["fail", "warn"])] if not qa.empty else qa
    plans = read_latest(wh, "tare_plans")
    rows = []
    for r in planted.itertuples():
        expected = EXPECTED_CHECKS.get(r.voi, ("tare_tumour_dose",))
        mine = bad[(bad["subject_id"] == r.subject_id) & bad["check_name"].isin(expected)] if not bad.empty else bad
        if r.voi.startswith("Lesion_") and not mine.empty:
            mine = mine[mine["scope_id"].astype(str).str.endswith(f"/{r.voi}")]
        p = plans[plans["subject_id"] == r.subject_id] if not plans.empty else plans
        rows.append(
            {
                "subject": r.subject_id,
                "site": r.site_id,
                "VOI": r.voi,
                "planted (truth)": r.planted,
                "expected check": "/".join(expected),
                "flagged": "yes" if len(mine) else "NO",
                "flags (check status: value found)": "; ".join(
                    f"{m.check_name} {m.status}: {m.value_found}"
                    for m in mine.drop_duplicates("qa_id" if "qa_id" in mine else None).itertuples()
                )
                if len(mine)
                else "",
                "plan broken_limits / notes": (
                    "; ".join(str(x) for x in p["broken_limits"].fillna(""))
                    or "; ".join(str(x) for x in p["notes"].fillna(""))
                )
                if len(p)
                else "(no plan)",
            }
        )
    out += [md_table(pd.DataFrame(rows)), ""]
    planted_subjects = set(planted["subject_id"])
    others = bad[~bad["subject_id"].isin(planted_subjects)] if not bad.empty else bad
    if others is not None and not others.empty:
        c = others.groupby(["check_name", "status"]).agg(n=("subject_id", "size"), subjects=("subject_id", "nunique"))
        out += [
            "tare_* warn/fail on subjects without a planted breach (where the delivered dose, not the plan, "
            "crosses a limit, or false alarms):",
            "",
            md_table(c.reset_index()),
            "",
        ]
        detail = others[["subject_id", "study_id", "scope_id", "check_name", "status", "value_found", "message"]].copy()
        detail["truth (Gy)"] = [_truth_for_flag(truth, r) for r in detail.itertuples()]
        detail = detail.drop(columns="scope_id").sort_values(["subject_id", "check_name"])
        out += ["<details><summary>those flags</summary>", "", md_table(detail), "", "</details>", ""]
    else:
        out += ["No tare_* warn/fail on subjects without a planted breach.", ""]
    return out


def section_runs(wh: Path) -> tuple[list[str], int, int]:
    from rntflow.warehouse.writer import read_latest

    runs = read_latest(wh, "flow_runs", "flow_name = 'process-study'")
    if runs.empty:
        return ["No process-study flow runs recorded."], 0, 0
    latest = runs.sort_values("ended_at").drop_duplicates("study_id", keep="last")
    states = latest["state"].value_counts()
    out = [
        "process-study flow runs (latest per study): " + ", ".join(f"{k} {v}" for k, v in states.items()),
        "",
    ]
    not_ok = latest[latest["state"] != "Completed"]
    if not not_ok.empty:
        out += [md_table(not_ok[["site_id", "subject_id", "study_id", "state", "message"]]), ""]
    return out, len(latest), int((latest["state"] == "Failed").sum())
