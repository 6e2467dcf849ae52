"""Shared fixtures: a small synthetic warehouse (3 sites, 12 subjects, 2 cycles)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rntflow.warehouse.catalog import refresh_catalog
from rntflow.warehouse.writer import load_table

TRIAL = "T-TEST"
SITES = ("SITE01", "SITE02", "SITE03")
VOIS = {"Kidney_L": 4.0, "Kidney_R": 6.0, "Parotid_L": 3.0, "Parotid_R": 5.0, "Lesion_1": 30.0, "Lesion_2": 50.0}


def subjects_frame() -> pd.DataFrame:
    rows = [{"trial_id": TRIAL, "site_id": s, "subject_id": f"{s}-S{i:02d}"} for s in SITES for i in range(4)]
    return pd.DataFrame(rows)


def voi_doses_frame() -> pd.DataFrame:
    """Per-cycle doses: dose = base + subject index (deterministic, easy to sum by hand)."""
    rows = []
    for s in SITES:
        for i in range(4):
            for cycle in (1, 2):
                for voi, base in VOIS.items():
                    rows.append(
                        {
                            "trial_id": TRIAL,
                            "site_id": s,
                            "subject_id": f"{s}-S{i:02d}",
                            "cycle": cycle,
                            "voi": voi,
                            "engine": "organ",
                            "method": "multi_time_point",
                            "dose_gy": base + i,
                            "dose_sd_gy": 0.3,
                            "bed_gy": 1.2 * (base + i),
                            "mass_g": 150.0,
                        }
                    )
    return pd.DataFrame(rows)


def outcomes_frame() -> pd.DataFrame:
    rows = []
    for s in SITES:
        for i in range(4):
            sid = f"{s}-S{i:02d}"
            rows += [
                {"trial_id": TRIAL, "site_id": s, "subject_id": sid, "endpoint": "nephrotoxicity", "grade": i % 3},
                {"trial_id": TRIAL, "site_id": s, "subject_id": sid, "endpoint": "xerostomia", "grade": (i + 1) % 2},
                {
                    "trial_id": TRIAL,
                    "site_id": s,
                    "subject_id": sid,
                    "endpoint": "lesion_response",
                    "lesion_voi": "Lesion_1",
                    "response": ("CR", "PR", "SD", "PD")[i],
                },
                {
                    "trial_id": TRIAL,
                    "site_id": s,
                    "subject_id": sid,
                    "endpoint": "pfs",
                    "event": i % 2,
                    "time_to_event_months": 6.0 + 3 * i,
                },
            ]
    frame = pd.DataFrame(rows)
    frame["grade"] = frame["grade"].astype("Int8")
    frame["event"] = frame["event"].astype("Int8")
    return frame


def build_small_warehouse(root: Path) -> Path:
    """Load every reference table the docs use and refresh the catalog."""
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    load_table(
        root,
        "sites",
        pd.DataFrame({"trial_id": TRIAL, "site_id": list(SITES), "site_name": ["Amsterdam", "Krakow", "Wuerzburg"]}),
    )
    load_table(root, "subjects", subjects_frame())
    adm = subjects_frame().merge(pd.DataFrame({"cycle": [1, 2]}), how="cross")
    adm["radionuclide"] = "Lu-177"
    adm["administered_activity_mbq"] = 7400.0
    adm["administration_datetime"] = [t0 + timedelta(weeks=8 * (c - 1)) for c in adm["cycle"]]
    load_table(root, "administrations", adm)
    load_table(root, "voi_doses", voi_doses_frame())
    load_table(root, "outcomes", outcomes_frame())
    tac = voi_doses_frame()[["trial_id", "site_id", "subject_id", "cycle", "voi"]].copy()
    rng = np.random.default_rng(3)
    tac["model"] = "bi_exp"
    tac["tia_mbq_h"] = 1000.0
    tac["effective_half_life_h"] = rng.normal(50.0, 5.0, len(tac))
    load_table(root, "tac_fits", tac)
    qa = pd.DataFrame(
        {
            "trial_id": TRIAL,
            "site_id": ["SITE01", "SITE02"],
            "check_name": ["energy_window", "calibration_age"],
            "scope": ["study", "calibration"],
            "scope_id": ["ST1", "CAL7"],
            "status": ["pass", "fail"],
            "value_found": ["208 keV", "212 d"],
            "value_expected": ["208 keV +/- 2%", "<= 180 d"],
            "message": ["ok", "calibration expired"],
        }
    )
    load_table(root, "qa_checks", qa)
    refresh_catalog(root)
    return root


@pytest.fixture()
def small_warehouse(tmp_path: Path) -> Path:
    return build_small_warehouse(tmp_path / "wh")
