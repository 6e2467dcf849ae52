"""Issue 12: the dose-limit QA and the dose_effect analysis use the same dose per cycle.

One subject whose cycles hold several methods' results: cycle 1 Madsen and Hänscheid,
cycle 2 all three methods, cycle 3 Hänscheid only. The warehouse writer loads them into a
temporary warehouse; the catalog's ``voi_dose_cycle`` / ``dose_effect`` views and the QA
flow's selection (:func:`rntflow.flows.qa.limit_doses_per_cycle`, fed as the flow feeds it)
must choose the same dose for every cycle, so the cumulative dose the limit is checked
against is the one the dose-effect analysis relates to toxicity.
"""

from __future__ import annotations

import pandas as pd
import pytest

from rntflow.core.methods import MULTI_TIME_POINT as MTP
from rntflow.core.methods import SINGLE_TIME_POINT_HANSCHEID as HAN
from rntflow.core.methods import SINGLE_TIME_POINT_MADSEN as MAD
from rntflow.dosimetry.limits import cumulative_limit_checks
from rntflow.flows.qa import LIMIT_ENGINE, limit_check, limit_doses_per_cycle
from rntflow.warehouse.catalog import connect, refresh_catalog
from rntflow.warehouse.writer import load_table, read_latest

TRIAL, SITE, SUBJECT = "T-METHODS", "SITE01", "SITE01-S01"

#: (cycle, method) -> dose_gy of Kidney_L; Kidney_R gets 1 Gy more. BED = 1.1 x dose.
DOSES = {(1, MAD): 8.0, (1, HAN): 7.0, (2, MTP): 9.0, (2, MAD): 6.0, (2, HAN): 5.0, (3, HAN): 4.0}
#: The dose each cycle must use: Madsen over Hänscheid, multi-time-point over both.
CHOSEN = {1: 8.0, 2: 9.0, 3: 4.0}


def _doses() -> pd.DataFrame:
    rows = []
    for (cycle, method), dose in DOSES.items():
        for voi, extra in (("Kidney_L", 0.0), ("Kidney_R", 1.0)):
            for engine in ("organ", "voxel_dpk"):  # the voxel engine's doses must not leak into the limits
                d = dose + extra + (0.5 if engine == "voxel_dpk" else 0.0)
                rows.append(
                    {
                        "trial_id": TRIAL,
                        "site_id": SITE,
                        "subject_id": SUBJECT,
                        "cycle": cycle,
                        "voi": voi,
                        "engine": engine,
                        "method": method,
                        "dose_gy": d,
                        "dose_sd_gy": 0.1 * d,
                        "bed_gy": 1.1 * d,
                        "final": method == MTP or cycle != 2,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    load_table(root, "voi_doses", _doses())
    load_table(
        root,
        "outcomes",
        pd.DataFrame(
            [{"trial_id": TRIAL, "site_id": SITE, "subject_id": SUBJECT, "endpoint": "nephrotoxicity", "grade": 2}]
        ).astype({"grade": "Int8"}),
    )
    refresh_catalog(root)
    return root


def _qa_doses(root) -> dict[str, dict[int, tuple[float, float | None]]]:
    """What qa_flow reads and selects (same query as the flow)."""
    doses = read_latest(root, "voi_doses", "trial_id = ? AND engine = ?", [TRIAL, LIMIT_ENGINE])
    return limit_doses_per_cycle(doses, SUBJECT)


def test_qa_selection_and_voi_dose_cycle_choose_the_same_dose_per_cycle(warehouse):
    with connect(warehouse) as con:
        view = con.execute(
            "SELECT voi, cycle, method, dose_gy, bed_gy FROM voi_dose_cycle "
            "WHERE subject_id = ? AND engine = ? ORDER BY voi, cycle",
            [SUBJECT, LIMIT_ENGINE],
        ).fetchall()
    qa = _qa_doses(warehouse)
    # the same stored values, so exactly equal
    assert {(voi, cycle): (dose, bed) for voi, cycle, _, dose, bed in view} == {
        (voi, cycle): v for voi, per in qa.items() for cycle, v in per.items()
    }
    assert [(c, m) for v, c, m, _, _ in view if v == "Kidney_L"] == [(1, MAD), (2, MTP), (3, HAN)]
    assert {c: d for c, (d, _) in qa["Kidney_L"].items()} == CHOSEN
    assert {c: d for c, (d, _) in qa["Kidney_R"].items()} == {c: d + 1.0 for c, d in CHOSEN.items()}


def test_limit_check_and_dose_effect_see_the_same_cumulative_dose(warehouse):
    qa = _qa_doses(warehouse)
    limits = {"Kidney_L": (30.0, 40.0), "Kidney_R": (30.0, None)}
    checks = {
        (lc.voi, lc.quantity): lc
        for lc in cumulative_limit_checks({voi: list(c.values()) for voi, c in qa.items()}, limits)
    }
    with connect(warehouse) as con:
        cum = {
            voi: (dose, bed)
            for voi, dose, bed in con.execute(
                "SELECT voi, dose_gy, bed_gy FROM voi_dose_cumulative WHERE subject_id = ? AND engine = ?",
                [SUBJECT, LIMIT_ENGINE],
            ).fetchall()
        }
        de = con.execute(
            "SELECT cumulative_dose_gy, n_cycles FROM dose_effect WHERE subject_id = ? "
            "AND endpoint = 'nephrotoxicity' AND engine = ?",
            [SUBJECT, LIMIT_ENGINE],
        ).fetchall()
    want_l = sum(CHOSEN.values())
    assert checks[("Kidney_L", "dose_gy")].cumulative == pytest.approx(cum["Kidney_L"][0]) == pytest.approx(want_l)
    assert checks[("Kidney_L", "bed_gy")].cumulative == pytest.approx(cum["Kidney_L"][1])
    assert checks[("Kidney_R", "dose_gy")].cumulative == pytest.approx(cum["Kidney_R"][0])
    kidneys_mean = (checks[("Kidney_L", "dose_gy")].cumulative + checks[("Kidney_R", "dose_gy")].cumulative) / 2
    assert de == [(pytest.approx(kidneys_mean), 3)]
    row = limit_check(checks[("Kidney_L", "dose_gy")])
    assert (row.check, row.status, row.value_found) == ("limit_dose_gy", "pass", f"{want_l:.2f} Gy")


def test_the_old_alphabetical_choice_would_disagree(warehouse):
    """The selection flows/qa.py used before (methods sorted by name) takes Hänscheid's
    cycle-1 dose; this is the disagreement the tests above rule out."""
    doses = read_latest(warehouse, "voi_doses", "trial_id = ? AND engine = ?", [TRIAL, LIMIT_ENGINE])
    part = doses[doses["voi"] == "Kidney_L"]
    old = part.sort_values("method").drop_duplicates("cycle", keep="first")
    assert dict(zip(old["cycle"].astype(int), old["dose_gy"])) != CHOSEN
    assert sum(d for d, _ in _qa_doses(warehouse)["Kidney_L"].values()) != pytest.approx(old["dose_gy"].sum())
