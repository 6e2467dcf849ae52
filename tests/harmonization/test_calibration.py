"""Calibration registry: versions, drift and validity."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rntflow.core.errors import CalibrationError
from rntflow.harmonization.calibration import Calibration, calibration_for, register_calibration

CAM = "SIEMENS|Symbia Intevo Bold|1234"
T0 = datetime(2026, 1, 10, 9, 0)


def _cal(value: float, when: datetime, cam: str = CAM, nuclide: str = "Lu-177") -> Calibration:
    return Calibration(
        site_id="SITE01",
        camera_id=cam,
        radionuclide=nuclide,
        protocol="RNT-DEMO-LU177",
        valid_from=when,
        sensitivity_cps_per_mbq=value,
        sd=0.1,
        rc_fwhm_mm=13.0,
    )


def test_register_first_then_drift():
    hist, flag, drift = register_calibration((), _cal(10.0, T0), 5.0)
    assert len(hist) == 1 and hist[0].version == 1 and flag is False and drift is None
    hist, flag, drift = register_calibration(hist, _cal(10.3, T0 + timedelta(days=90)), 5.0)
    assert hist[-1].version == 2 and drift == pytest.approx(3.0) and flag is False
    hist, flag, drift = register_calibration(hist, _cal(9.0, T0 + timedelta(days=180)), 5.0)
    assert drift == pytest.approx(100 * (9.0 - 10.3) / 10.3) and flag is True
    assert [c.sensitivity_cps_per_mbq for c in hist] == [10.0, 10.3, 9.0]  # superseded values kept


def test_other_camera_does_not_drift_or_version():
    hist, _, _ = register_calibration((), _cal(10.0, T0), 5.0)
    hist, flag, drift = register_calibration(hist, _cal(20.0, T0, cam="GE|670|9"), 5.0)
    assert drift is None and flag is False and hist[-1].version == 1


def test_calibration_for_valid_expired_missing():
    hist, _, _ = register_calibration((), _cal(10.0, T0), 5.0)
    hist, _, _ = register_calibration(hist, _cal(11.0, T0 + timedelta(days=100)), 5.0)
    cal, status = calibration_for(hist, "SITE01", CAM, "Lu177", T0 + timedelta(days=50), 180)
    assert status == "valid" and cal.sensitivity_cps_per_mbq == 10.0
    cal, status = calibration_for(hist, "SITE01", CAM, "177Lu", T0 + timedelta(days=150), 180)
    assert status == "valid" and cal.sensitivity_cps_per_mbq == 11.0
    cal, status = calibration_for(hist, "SITE01", CAM, "Lu-177", T0 + timedelta(days=400), 180)
    assert status == "expired" and cal.version == 2
    assert calibration_for(hist, "SITE01", CAM, "Lu-177", T0 - timedelta(days=1), 180) == (None, "missing")
    assert calibration_for(hist, "SITE01", "other|cam|1", "Lu-177", T0, 180) == (None, "missing")
    assert calibration_for(hist, "SITE01", None, "Lu-177", T0, 180) == (None, "missing")
    assert calibration_for(hist, "SITE01", CAM, "Tc-99m", T0 + timedelta(days=1), 180) == (None, "missing")


def test_reanalysis_same_day_latest_version_wins():
    hist, _, _ = register_calibration((), _cal(10.0, T0), 5.0)
    hist, _, drift = register_calibration(hist, _cal(10.2, T0), 5.0)
    cal, status = calibration_for(hist, "SITE01", CAM, "Lu-177", T0 + timedelta(days=1), 180)
    assert cal.version == 2 and cal.sensitivity_cps_per_mbq == 10.2 and drift == pytest.approx(2.0)


def test_calibration_needs_exactly_one_value():
    with pytest.raises(CalibrationError):
        Calibration("S", CAM, "Lu-177", "p", T0)
    with pytest.raises(CalibrationError):
        Calibration("S", CAM, "Lu-177", "p", T0, sensitivity_cps_per_mbq=1.0, vendor_scale_factor=1.0)
    with pytest.raises(CalibrationError):
        Calibration("S", CAM, "Lu-177", "p", T0, vendor_scale_factor=-1.0)
