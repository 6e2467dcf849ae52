"""A calibration series is (site, camera, radionuclide): a camera id is unique only within a site.

Two sites whose cameras report the same ``Manufacturer|Model|Serial`` (a blank or
vendor-default DeviceSerialNumber on the same model) must not share a registry: one site's
phantom never supersedes, versions or drifts against the other's, and a scan at one site is
never quantified with the other site's calibration. The warehouse ``calibrations`` key
already holds ``site_id``; these tests hold the registry logic (pure), the warehouse rows
(:func:`rntflow.tasks.common.calibration_rows`) and the registry read
(:func:`rntflow.tasks.common.calibration_history`) to it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rntflow.core.config import TrialConfig, load_config
from rntflow.harmonization.calibration import (
    Calibration,
    calibration_for,
    register_calibration,
    same_series,
    series_key,
)
from rntflow.tasks.common import calibration_history, calibration_rows
from rntflow.tasks.warehouse import load_rows
from tests.configs import demo_config_dict, write_config

#: What two sites' cameras report when the serial is blank: same manufacturer and model.
SHARED_CAM = "SIEMENS|Symbia Intevo Bold|"
OTHER_CAM = "SIEMENS|Symbia Intevo Bold|B-0002"
T0 = datetime(2026, 1, 10, 9, 0)
TOL_PCT = 5.0


def _cal(site: str, value: float, when: datetime, cam: str = SHARED_CAM, nuclide: str = "Lu-177") -> Calibration:
    return Calibration(
        site_id=site,
        camera_id=cam,
        radionuclide=nuclide,
        protocol="RNT-DEMO-LU177:Lu-177",
        valid_from=when,
        sensitivity_cps_per_mbq=value,
        sd=0.1,
        rc_fwhm_mm=13.0,
    )


def _register(cals: list[Calibration]) -> tuple[tuple[Calibration, ...], list[float | None]]:
    """Register in order; the history and each registration's drift (%)."""
    hist: tuple[Calibration, ...] = ()
    drifts = []
    for c in cals:
        hist, _flag, drift = register_calibration(hist, c, TOL_PCT)
        drifts.append(drift)
    return hist, drifts


@pytest.fixture
def config(tmp_path) -> TrialConfig:
    """The demo trial config with its paths in tmp."""
    cfg = demo_config_dict(tmp_path)
    return load_config(write_config(tmp_path, cfg))


# --------------------------------------------------------------------------- the registry (pure)


def test_series_key_holds_the_site():
    a, b = _cal("SITE01", 10.0, T0), _cal("SITE02", 10.0, T0, nuclide="177Lu")
    assert series_key(a) == ("SITE01", SHARED_CAM, "LU-177")
    assert series_key(a) != series_key(b)
    assert same_series(b, "SITE02", SHARED_CAM, "Lu177") and not same_series(b, "SITE01", SHARED_CAM, "Lu-177")


def test_same_camera_id_at_two_sites_keeps_two_series():
    # A at T0, B (30 % higher) at T0+30 d, A again (+2 %) at T0+60 d
    hist, drifts = _register(
        [
            _cal("SITE01", 10.0, T0),
            _cal("SITE02", 13.0, T0 + timedelta(days=30)),
            _cal("SITE01", 10.2, T0 + timedelta(days=60)),
        ]
    )
    a1, b1, a2 = hist
    assert (a1.version, b1.version, a2.version) == (1, 1, 2)  # versions count within a site
    assert drifts[1] is None  # B's first calibration: no drift against A's
    assert drifts[2] == pytest.approx(2.0)  # A's second against A's first, not against B's 13.0

    # between B's phantom and A's second one, a scan at A is still quantified with A's first
    scan = T0 + timedelta(days=45)
    assert calibration_for(hist, "SITE01", SHARED_CAM, "Lu-177", scan, 180) == (a1, "valid")
    assert calibration_for(hist, "SITE02", SHARED_CAM, "Lu-177", scan, 180) == (b1, "valid")
    # before B's phantom, a scan at B has no calibration (A's does not stand in for it)
    assert calibration_for(hist, "SITE02", SHARED_CAM, "Lu-177", T0 + timedelta(days=1), 180) == (None, "missing")
    # a site without any calibration of that camera id
    assert calibration_for(hist, "SITE03", SHARED_CAM, "Lu-177", scan, 180) == (None, "missing")


def test_expiry_is_not_rescued_by_the_other_site():
    hist, _ = _register([_cal("SITE01", 10.0, T0), _cal("SITE02", 10.0, T0 + timedelta(days=200))])
    cal, status = calibration_for(hist, "SITE01", SHARED_CAM, "Lu-177", T0 + timedelta(days=210), 180)
    assert status == "expired" and cal.site_id == "SITE01"


# --------------------------------------------------------------------------- warehouse rows


def _by_site(rows: list[dict]) -> dict[tuple[str, datetime], dict]:
    return {(r["site_id"], r["valid_from"].replace(tzinfo=None)): r for r in rows}


def test_calibration_rows_supersede_and_drift_within_a_site_only(config):
    hist, _ = _register(
        [
            _cal("SITE01", 10.0, T0),
            _cal("SITE02", 13.0, T0 + timedelta(days=30)),
            _cal("SITE01", 10.2, T0 + timedelta(days=60)),
        ]
    )
    rows = _by_site(calibration_rows(config, list(hist)))
    a1, b1, a2 = (
        rows[("SITE01", T0)],
        rows[("SITE02", T0 + timedelta(days=30))],
        rows[("SITE01", T0 + timedelta(days=60))],
    )
    assert a1["superseded_by"] == a2["calibration_id"]  # A's first is superseded by A's second ...
    assert a1["valid_until"].replace(tzinfo=None) == T0 + timedelta(days=60)  # ... at its valid_from, not B's
    assert b1["superseded_by"] is None and b1["drift_pct"] is None and b1["drift_flag"] is None
    days = config.calibration.validity_days
    assert b1["valid_until"].replace(tzinfo=None) == T0 + timedelta(days=30 + days)
    assert a2["drift_pct"] == pytest.approx(2.0) and a2["drift_flag"] is False
    assert len({r["calibration_id"] for r in rows.values()}) == 3


def test_same_id_at_two_sites_behaves_as_two_camera_ids(config):
    """Law: whether two sites' cameras happen to report the same id must not matter."""
    plan = [("SITE01", 10.0, 0), ("SITE02", 13.0, 30), ("SITE01", 10.2, 60), ("SITE02", 11.0, 90)]

    def rows(cam_of: dict[str, str]) -> list[dict]:
        cals = [_cal(s, v, T0 + timedelta(days=d), cam=cam_of[s]) for s, v, d in plan]
        hist, _ = _register(cals)
        return calibration_rows(config, list(hist))

    shared = _by_site(rows({"SITE01": SHARED_CAM, "SITE02": SHARED_CAM}))
    distinct = _by_site(rows({"SITE01": SHARED_CAM, "SITE02": OTHER_CAM}))
    ids = ("camera_id", "calibration_id", "superseded_by")
    assert shared.keys() == distinct.keys()
    for k in shared:
        assert {c: v for c, v in shared[k].items() if c not in ids} == {
            c: v for c, v in distinct[k].items() if c not in ids
        }, k
        assert (shared[k]["superseded_by"] is None) == (distinct[k]["superseded_by"] is None), k
    # the drifts are those of each site alone: (10.2 - 10) / 10 and (11 - 13) / 13
    assert shared[("SITE01", T0 + timedelta(days=60))]["drift_pct"] == pytest.approx(2.0)
    assert shared[("SITE02", T0 + timedelta(days=90))]["drift_pct"] == pytest.approx(100 * (11.0 - 13.0) / 13.0)


# --------------------------------------------------------------------------- registry read


def test_calibration_history_filters_on_the_site(config):
    hist, _ = _register([_cal("SITE01", 10.0, T0), _cal("SITE02", 13.0, T0 + timedelta(days=30))])
    for site in ("SITE01", "SITE02"):
        mine = [c for c in hist if c.site_id == site]
        context = {"trial_id": config.trial_id, "site_id": site}
        load_rows.fn(str(config.warehouse_dir), "calibrations", calibration_rows(config, mine), context)

    both = calibration_history(config, SHARED_CAM)
    assert sorted(c.site_id for c in both) == ["SITE01", "SITE02"]
    only_a = calibration_history(config, SHARED_CAM, "SITE01")
    assert [(c.site_id, c.sensitivity_cps_per_mbq, c.valid_from) for c in only_a] == [("SITE01", 10.0, T0)]
    assert [c.site_id for c in calibration_history(config, site_id="SITE02")] == ["SITE02"]
    assert calibration_history(config, OTHER_CAM, "SITE01") == []
    # read back, the series stay apart: a scan at SITE01 after SITE02's phantom uses SITE01's
    cal, status = calibration_for(both, "SITE01", SHARED_CAM, "Lu-177", T0 + timedelta(days=45), 180)
    assert status == "valid" and cal.site_id == "SITE01" and cal.sensitivity_cps_per_mbq == 10.0
