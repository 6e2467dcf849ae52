"""Radioembolisation (TARE) subjects in the coordinator's status: scout, plan, post-treatment, predicted vs delivered.

A TARE subject has treatments, not cycles with time points: per treatment the scout's plan
(lung shunt, planned activity, the Table 1 limits it breaks), the post-treatment study with
its delivered doses, and how the delivered tumour dose compares with the scout's prediction.
A treatment is complete when both studies were processed and the comparison exists; until
then the coordinator sees which study is still missing.
"""

from __future__ import annotations

from typing import Any

from rntflow.status.values import int_or_none

#: What the status reads from the TARE tables (trial-filtered; ``?`` is the trial id).
TARE_QUERIES: dict[str, str] = {
    "tare_plans": "SELECT site_id, subject_id, treatment, study_id, lung_shunt_fraction, planned_activity_gbq,"
    " predicted_tumour_dose_gy, predicted_normal_liver_dose_gy, predicted_lung_dose_gy, broken_limits"
    " FROM tare_plans WHERE trial_id = ? ORDER BY subject_id, treatment",
    "tare_doses": "SELECT site_id, subject_id, treatment, study_id, voi, administered_activity_gbq, mean_dose_gy"
    " FROM tare_doses WHERE trial_id = ? ORDER BY subject_id, treatment, voi",
    "tare_predicted_delivered": "SELECT site_id, subject_id, treatment, voi, predicted_dose_gy, delivered_dose_gy"
    " FROM tare_predicted_delivered WHERE trial_id = ? ORDER BY subject_id, treatment, voi",
}
#: The tables behind :data:`TARE_QUERIES`.
TARE_TABLES = tuple(TARE_QUERIES)


def _treatment(by: dict[tuple[str, int], dict[str, Any]], row: dict[str, Any], n: int) -> dict[str, Any]:
    key = (row["subject_id"], n)
    if key not in by:
        by[key] = {
            "site_id": row.get("site_id"),
            "treatment": n,
            "scout_study_id": None,
            "lung_shunt_fraction": None,
            "planned_activity_gbq": None,
            "broken_limits": "",
            "post_study_id": None,
            "administered_activity_gbq": None,
            "delivered_gy": {},
            "predicted_gy": {},
        }
    return by[key]


def _mean_lesions(doses: dict[str, float]) -> float | None:
    vals = [v for k, v in doses.items() if k.startswith("Lesion_") and v is not None]
    return sum(vals) / len(vals) if vals else None


def tare_treatments(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Subject id -> its treatments (in order), from the rows of :data:`TARE_QUERIES`.

    Each treatment: ``site_id``, ``treatment``, ``scout_study_id``, ``lung_shunt_fraction``,
    ``planned_activity_gbq`` (GBq), ``broken_limits``, ``post_study_id``,
    ``administered_activity_gbq`` (GBq), ``delivered_gy`` and ``predicted_gy`` (VOI -> mean
    dose, Gy; ``Lesions_mean`` added), ``complete`` and ``missing`` (what has not arrived),
    ``non_compliant`` (its scout and post-treatment studies whose reconstruction failed the
    protocol of their radionuclide: ``studies.protocol_compliant`` false, when ``rows`` has
    ``studies``).
    """
    compliant = {(s.get("subject_id"), s.get("study_id")): s.get("protocol_compliant") for s in rows.get("studies", [])}
    by: dict[tuple[str, int], dict[str, Any]] = {}
    for p in rows.get("tare_plans", []):
        n = int_or_none(p.get("treatment"))
        if n is None:
            continue
        t = _treatment(by, p, n)
        t.update(
            scout_study_id=p.get("study_id"),
            lung_shunt_fraction=p.get("lung_shunt_fraction"),
            planned_activity_gbq=p.get("planned_activity_gbq"),
            broken_limits=p.get("broken_limits") or "",
        )
    for d in rows.get("tare_doses", []):
        n = int_or_none(d.get("treatment"))
        if n is None:
            continue
        t = _treatment(by, d, n)
        t["post_study_id"] = d.get("study_id")
        t["administered_activity_gbq"] = d.get("administered_activity_gbq")
        t["delivered_gy"][d["voi"]] = d.get("mean_dose_gy")
    for r in rows.get("tare_predicted_delivered", []):
        n = int_or_none(r.get("treatment"))
        if n is None:
            continue
        _treatment(by, r, n)["predicted_gy"][r["voi"]] = r.get("predicted_dose_gy")
    out: dict[str, list[dict[str, Any]]] = {}
    for (subject_id, _), t in sorted(by.items()):
        for doses in (t["delivered_gy"], t["predicted_gy"]):
            mean = _mean_lesions(doses)
            if mean is not None:
                doses["Lesions_mean"] = mean
        t["missing"] = [
            what
            for what, present in (
                ("scout", t["scout_study_id"]),
                ("post-treatment study", t["post_study_id"]),
                ("predicted vs delivered", t["predicted_gy"]),
            )
            if not present
        ]
        t["complete"] = not t["missing"]
        t["non_compliant"] = [
            sid
            for sid in (t["scout_study_id"], t["post_study_id"])
            if sid is not None and compliant.get((subject_id, sid)) is False
        ]
        out.setdefault(subject_id, []).append(t)
    return out


def _gy(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def tare_lines(treatments: list[dict[str, Any]]) -> list[str]:
    """The status lines of one TARE subject's treatments (indented under the subject)."""
    lines = []
    for t in treatments:
        lsf = t["lung_shunt_fraction"]
        plan = (
            f"scout {t['scout_study_id']}: LSF {lsf * 100:.1f} %, plan {t['planned_activity_gbq']:.2f} GBq"
            if t["scout_study_id"] and lsf is not None and t["planned_activity_gbq"] is not None
            else "scout: not processed yet"
        )
        if t["broken_limits"]:
            plan += f" (limits: {t['broken_limits']})"
        d, p = t["delivered_gy"], t["predicted_gy"]
        post = (
            f"post {t['post_study_id']}: {t['administered_activity_gbq']:.2f} GBq; delivered tumour "
            f"{_gy(d.get('Lesions_mean'))} Gy (predicted {_gy(p.get('Lesions_mean'))}), normal liver "
            f"{_gy(d.get('Liver_Normal'))} Gy (predicted {_gy(p.get('Liver_Normal'))}), lungs {_gy(d.get('Lungs'))} Gy"
            if t["post_study_id"] and t["administered_activity_gbq"] is not None
            else "post-treatment: not processed yet"
        )
        lines.append(f"    treatment {t['treatment']}: {plan}")
        lines.append(f"      {post}")
        if t["missing"]:
            lines.append(f"      waiting for: {', '.join(t['missing'])}")
        if t.get("non_compliant"):
            lines.append(
                f"      reconstruction not protocol-compliant: {', '.join(t['non_compliant'])} (doses flagged; see QA)"
            )
    return lines
