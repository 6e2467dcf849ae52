"""Calibration registry logic (pure): records, drift on registration, look-up by scan time.

The history is an immutable tuple of :class:`Calibration` records; registering a new one
returns a new tuple with every earlier record kept (superseded values stay auditable).
Persistence (the warehouse table) is the caller's job. The rules of currency, validity and
drift are those of :mod:`rntflow.core.calibration_policy`; this module adds the record and
the series key: site, camera and radionuclide (whatever its spelling). The site is part of
the key because a camera id (``Manufacturer|Model|Serial`` from DICOM) is unique only within
a site: two sites whose cameras report the same id (a blank or vendor-default serial) keep
separate series, as the warehouse ``calibrations`` key (``site_id``, ``camera_id``, ...) does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rntflow.core.calibration_policy import calibration_drift, current_calibration, drift_flag, is_expired
from rntflow.core.errors import CalibrationError
from rntflow.harmonization.headers import normalise_radionuclide

CalibrationStatus = Literal["valid", "expired", "missing"]
#: Where a calibration's recovery FWHM (``rc_fwhm_mm``) came from, in order of precedence:
#: the NEMA IEC phantom's RC curve, the camera profile's ``system_fwhm_mm`` in the trial
#: config, the uniform cylinder's edge (:func:`rntflow.harmonization.cylinder.cylinder_edge_fwhm`).
RcFwhmSource = Literal["nema", "configured", "cylinder_edge"]
RC_FWHM_SOURCES: tuple[str, ...] = ("nema", "configured", "cylinder_edge")


@dataclass(frozen=True)
class Calibration:
    """One camera's cross-calibration for one radionuclide and protocol.

    Exactly one of ``sensitivity_cps_per_mbq`` (counts reconstructions) and
    ``vendor_scale_factor`` (vendor Bq/mL reconstructions, measured / true) is set;
    ``sd`` is the standard uncertainty of that value (same unit). ``rc_fwhm_mm`` (mm) drives
    partial-volume correction; ``rc_fwhm_source`` says where it came from
    (:data:`RC_FWHM_SOURCES`; ``None`` when there is no FWHM).
    """

    site_id: str
    camera_id: str
    radionuclide: str
    protocol: str
    valid_from: datetime
    sensitivity_cps_per_mbq: float | None = None
    vendor_scale_factor: float | None = None
    sd: float | None = None
    rc_fwhm_mm: float | None = None
    rc_amplitude: float | None = None
    rc_sbr: float | None = None
    filter_fwhm_mm: float | None = None
    version: int = 0
    rc_fwhm_source: RcFwhmSource | None = None

    def __post_init__(self) -> None:
        if (self.sensitivity_cps_per_mbq is None) == (self.vendor_scale_factor is None):
            raise CalibrationError("a calibration needs exactly one of sensitivity_cps_per_mbq or vendor_scale_factor")
        v = self.value
        if not v > 0:
            raise CalibrationError(f"calibration value must be positive, got {v!r}")

    @property
    def kind(self) -> str:
        return "sensitivity" if self.sensitivity_cps_per_mbq is not None else "vendor_scale_factor"

    @property
    def value(self) -> float:
        return self.sensitivity_cps_per_mbq if self.sensitivity_cps_per_mbq is not None else self.vendor_scale_factor  # type: ignore[return-value]


def same_series(c: Calibration, site_id: str, camera_id: str, radionuclide: str) -> bool:
    """Whether ``c`` belongs to the series of this site, camera and radionuclide (any spelling)."""
    return series_key(c) == (site_id, camera_id, _nuc(radionuclide))


def series_key(c: Calibration) -> tuple[str, str, str]:
    """The series a calibration belongs to: ``(site_id, camera_id, normalised radionuclide)``."""
    return c.site_id, c.camera_id, _nuc(c.radionuclide)


def _nuc(name: str) -> str:
    return (normalise_radionuclide(name) or name).upper()


def register_calibration(
    history: Sequence[Calibration], new: Calibration, drift_tolerance_pct: float
) -> tuple[tuple[Calibration, ...], bool, float | None]:
    """Add ``new`` to the history, flagging drift against the calibration it supersedes.

    Parameters
    ----------
    history : sequence of Calibration
    new : Calibration
        Its ``version`` is assigned here (previous highest version of the same site, camera
        and radionuclide + 1).
    drift_tolerance_pct : float
        ``TrialConfig.calibration.drift_tolerance_pct``.

    Returns
    -------
    new_history : tuple of Calibration
        The old records unchanged plus the versioned new one.
    drift_flag : bool
        ``|drift_pct| > drift_tolerance_pct``.
    drift_pct : float or None
        ``100 (new - previous) / previous`` against the latest earlier calibration of the
        same site, camera, radionuclide and kind; ``None`` for a first calibration.
    """
    same = [c for c in history if same_series(c, new.site_id, new.camera_id, new.radionuclide)]
    version = max((c.version for c in same), default=0) + 1
    rec = dataclasses.replace(new, version=version)
    drift = calibration_drift(same, rec)
    flag = bool(drift_flag(drift, drift_tolerance_pct))
    return tuple(history) + (rec,), flag, drift


def calibration_for(
    history: Sequence[Calibration],
    site_id: str,
    camera_id: str | None,
    radionuclide: str,
    scan_datetime: datetime,
    validity_days: int,
) -> tuple[Calibration | None, CalibrationStatus]:
    """The calibration to use for a scan, and whether it is valid.

    The latest record (highest version among equal ``valid_from``) of this site, camera and
    radionuclide with ``valid_from <= scan_datetime``. A calibration made only after the
    scan does not count (``missing``), nor does one of the same camera id at another site.

    Parameters
    ----------
    history : sequence of Calibration
        The registry (any sites, cameras and radionuclides).
    site_id : str
        The site that acquired the scan.
    camera_id : str or None
        The scan's camera (``None``: no calibration can apply).
    radionuclide : str
        Any spelling.
    scan_datetime : datetime
        Acquisition start (same clock as ``valid_from``).
    validity_days : int
        ``TrialConfig.calibration.validity_days`` (d).

    Returns
    -------
    (Calibration or None, status)
        ``valid`` when the scan is within ``validity_days`` of ``valid_from``, ``expired``
        otherwise (the record is still returned), ``missing`` when there is none.
    """
    if camera_id is None:
        return None, "missing"
    series = (c for c in history if same_series(c, site_id, camera_id, radionuclide))
    cal = current_calibration(series, scan_datetime)
    if cal is None:
        return None, "missing"
    if is_expired(cal.valid_from, scan_datetime, validity_days):
        return cal, "expired"
    return cal, "valid"
