"""The radioembolisation (TARE) subject report: scout, plan, post-treatment doses, predicted vs delivered.

One self-contained HTML page per TARE subject, in the style of the 177Lu subject report
(:mod:`rntflow.analysis.subject_report`): per treatment the scout's partition-model plan (lung
shunt, tumour-to-normal ratio, masses, planned activity and the Table 1 limits it breaks),
the post-treatment local-deposition doses per VOI with DVH metrics, and the predicted
(scout distribution x administered activity) against the delivered (post-treatment image)
mean doses, as a table and a figure; then QA and the site's calibrations of the treatment
radionuclide.

Units: activity GBq (plans, administered) or MBq (VOI activity), mass kg, dose Gy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rntflow.analysis.figures import PALETTE, DrawnFigure, svg_figure
from rntflow.analysis.report_page import (
    CAL_FIELDS,
    QA_COLS,
    SOFTWARE_NAME,
    FigureView,
    Table,
    calibration_table,
    header_rows,
    qa_table,
    render_page,
)
from rntflow.analysis.report_values import as_floats, general, is_missing, latest_versions, only_subject, with_columns

#: (column, header, format) of the plan table (``tare_plans``).
PLAN_FIELDS = (
    ("study_id", "scout study", None),
    ("scout_agent", "scout agent", None),
    ("lung_shunt_fraction", "lung shunt fraction", ".3f"),
    ("tumour_to_normal_ratio", "tumour/normal ratio", ".2f"),
    ("tumour_mass_kg", "tumour mass (kg)", ".3f"),
    ("normal_liver_mass_kg", "normal liver mass (kg)", ".3f"),
    ("lung_mass_kg", "lung mass (kg)", ".3f"),
    ("planned_tumour_dose_gy", "planned tumour dose (Gy)", ".1f"),
    ("planned_activity_gbq", "planned activity (GBq)", ".3f"),
    ("predicted_tumour_dose_gy", "tumour dose at plan (Gy)", ".1f"),
    ("predicted_normal_liver_dose_gy", "normal liver dose at plan (Gy)", ".1f"),
    ("predicted_lung_dose_gy", "lung dose at plan (Gy)", ".1f"),
    ("cf_j_per_gbq", "CF (J/GBq)", ".2f"),
    ("cf_convention", "CF convention", None),
    ("broken_limits", "limits broken", None),
    ("notes", "notes", None),
)
#: (column, header, format) of the post-treatment dose table (``tare_doses``).
DOSE_FIELDS = (
    ("voi", "VOI", None),
    ("activity_mbq", "activity at administration (MBq)", ".1f"),
    ("mass_kg", "mass (kg)", ".3f"),
    ("mean_dose_gy", "mean dose (Gy)", ".1f"),
    ("d2_gy", "D2 (Gy)", ".1f"),
    ("d50_gy", "D50 (Gy)", ".1f"),
    ("d70_gy", "D70 (Gy)", ".1f"),
    ("d98_gy", "D98 (Gy)", ".1f"),
)
#: (column, header, format) of the predicted-vs-delivered table (``tare_predicted_delivered``).
PVD_FIELDS = (
    ("voi", "VOI", None),
    ("planned_dose_gy", "planned (Gy)", ".1f"),
    ("predicted_dose_gy", "predicted (Gy)", ".1f"),
    ("delivered_dose_gy", "delivered (Gy)", ".1f"),
    ("delivered_to_predicted_ratio", "delivered / predicted", ".2f"),
)
_PLAN_COLS = ("subject_id", "treatment", "arm_id", "device", "radionuclide") + tuple(c for c, _, _ in PLAN_FIELDS)
_DOSE_COLS = ("subject_id", "treatment", "study_id", "administered_activity_gbq") + tuple(c for c, _, _ in DOSE_FIELDS)
_PVD_COLS = ("subject_id", "treatment", "scout_study_id", "post_study_id") + tuple(c for c, _, _ in PVD_FIELDS)


@dataclass(frozen=True)
class TreatmentView:
    """What the TARE report shows for one treatment."""

    treatment: int
    post_study_id: str | None
    administered_activity_gbq: str | None
    plan: Table
    doses: Table
    predicted_delivered: Table
    figure: FigureView | None


def fields_table(df: pd.DataFrame, fields: tuple[tuple[str, str, str | None], ...]) -> Table:
    """``df``'s ``fields`` columns as a table (formatted numbers, text as is)."""
    headers, numeric = tuple(h for _, h, _ in fields), tuple(f is not None for _, _, f in fields)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for col, _, fmt in fields:
            v = r.get(col)
            cells.append(general(v) if fmt is None or is_missing(v) else format(float(v), fmt))
        rows.append(cells)
    return Table(headers, rows, numeric)


def predicted_delivered_figure(pvd: pd.DataFrame, salt: str) -> DrawnFigure:
    """Delivered against predicted mean dose per VOI (Gy), with the line of identity."""
    from matplotlib.figure import Figure  # imported when a figure is drawn (~0.5 s)

    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    pred, deliv = as_floats(pvd["predicted_dose_gy"]), as_floats(pvd["delivered_dose_gy"])
    ok = np.isfinite(pred) & np.isfinite(deliv)
    top = float(max(pred[ok].max(), deliv[ok].max())) * 1.1 if ok.any() else 1.0
    ax.plot([0, top], [0, top], color="#777777", linewidth=0.8, linestyle="--", label="delivered = predicted")
    for i, (voi, p, d) in enumerate(zip(pvd["voi"], pred, deliv, strict=True)):
        if np.isfinite(p) and np.isfinite(d):
            ax.plot([p], [d], marker="o", linestyle="none", color=PALETTE[i % len(PALETTE)], label=str(voi))
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted mean dose (Gy), scout x administered activity")
    ax.set_ylabel("delivered mean dose (Gy), post-treatment image")
    ax.legend(fontsize=7, frameon=False)
    caption = (
        f"{int(ok.sum())} VOI(s). Predicted: the scout's distribution with the administered activity; "
        "delivered: the post-treatment image (local deposition)."
    )
    return DrawnFigure(svg_figure(fig, salt=salt), caption, ())


def _treatment_view(n: int, plans: pd.DataFrame, doses: pd.DataFrame, pvd: pd.DataFrame) -> TreatmentView:
    post = [s for s in doses["study_id"] if not is_missing(s)]
    act = [a for a in as_floats(doses["administered_activity_gbq"]) if np.isfinite(a)]
    figure = None
    if not pvd.empty:
        figure = FigureView.of(predicted_delivered_figure(pvd, f"{SOFTWARE_NAME}-tare-pvd-{n}"))
    return TreatmentView(
        treatment=n,
        post_study_id=post[0] if post else None,
        administered_activity_gbq=f"{act[0]:.3f}" if act else None,
        plan=fields_table(plans, PLAN_FIELDS),
        doses=fields_table(doses.sort_values("voi", kind="stable"), DOSE_FIELDS),
        predicted_delivered=fields_table(pvd.sort_values("voi", kind="stable"), PVD_FIELDS),
        figure=figure,
    )


def tare_subject_report_html(
    *,
    trial_id: str,
    site_id: str,
    subject_id: str,
    plans: pd.DataFrame,
    doses: pd.DataFrame,
    predicted_delivered: pd.DataFrame,
    qa_checks: pd.DataFrame,
    calibrations: pd.DataFrame,
    software_version: str,
    generated_at: str,
) -> str:
    """A TARE subject's report as one self-contained HTML page (module docstring).

    Parameters
    ----------
    trial_id, site_id, subject_id : str
        Identification (``subject_id`` is the trial pseudonym).
    plans, doses, predicted_delivered : pandas.DataFrame
        Rows of ``tare_plans``, ``tare_doses`` and ``tare_predicted_delivered`` (other
        subjects' rows are ignored; the latest ``result_version`` per key is used).
    qa_checks : pandas.DataFrame
        QA results (failures first in the table).
    calibrations : pandas.DataFrame
        The site's ``calibrations`` rows; those of the treatment radionuclide are listed.
    software_version, generated_at : str
        Shown in the header.

    Returns
    -------
    str
        The HTML document.
    """
    plans = latest_versions(only_subject(with_columns(plans, _PLAN_COLS), subject_id), ("subject_id", "study_id"))
    doses = latest_versions(
        only_subject(with_columns(doses, _DOSE_COLS), subject_id), ("subject_id", "study_id", "voi")
    )
    pvd = latest_versions(
        only_subject(with_columns(predicted_delivered, _PVD_COLS), subject_id), ("subject_id", "treatment", "voi")
    )
    treatments = sorted({int(t) for df in (plans, doses, pvd) for t in as_floats(df["treatment"]) if np.isfinite(t)})
    views = [
        _treatment_view(
            n,
            plans[as_floats(plans["treatment"]) == n],
            doses[as_floats(doses["treatment"]) == n],
            pvd[as_floats(pvd["treatment"]) == n],
        )
        for n in treatments
    ]
    arm = next((r for r in plans.to_dict("records")), {})
    nuclide = arm.get("radionuclide")
    cals = with_columns(calibrations, [c for c, _, _ in CAL_FIELDS])
    if nuclide and not is_missing(nuclide):
        cals = cals[cals["radionuclide"].map(lambda v: str(v) == str(nuclide))]
    used = sorted({str(c) for c in cals["calibration_id"] if not is_missing(c)})
    cal_table, _ = calibration_table(cals, used)
    qa, qa_summary = qa_table(only_subject(with_columns(qa_checks, QA_COLS), subject_id))
    return render_page(
        "tare_subject_report.html.j2",
        title=f"Radioembolisation dosimetry report \u2013 {trial_id} \u2013 {subject_id}",
        header=header_rows(
            [
                ("Trial", trial_id),
                ("Site", site_id),
                ("Subject (pseudonym)", subject_id),
                ("Arm", general(arm.get("arm_id"))),
                ("Device", f"{general(arm.get('device'))} ({general(nuclide)})"),
            ],
            software_version,
            generated_at,
        ),
        treatments=views,
        qa=qa,
        qa_summary=qa_summary,
        calibrations=cal_table,
        calibrations_listed=bool(used),
    )
