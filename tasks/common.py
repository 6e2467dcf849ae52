"""What every task needs: the trial config, the product store, the calibration registry."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd

from rntflow.core.calibration_policy import calibration_timeline
from rntflow.core.config import TrialConfig, load_config
from rntflow.core.errors import ConfigError
from rntflow.harmonization.calibration import Calibration, series_key
from rntflow.harmonization.headers import normalise_radionuclide
from rntflow.tasks.products import ProductStore
from rntflow.warehouse.writer import read_latest


def artifact_key(text: str) -> str:
    """Prefect artifact keys: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


@lru_cache(maxsize=8)
def _config_cached(path: str, mtime_ns: int) -> TrialConfig:
    return load_config(path)


def trial_config(config_path: str | Path | None) -> TrialConfig:
    """The trial config a flow run works with (parsed once per file version).

    Each flow calls this once at its start and hands the typed :class:`TrialConfig` to its
    tasks. There is no default: a run without a config path is an error, never a silent
    fallback to the demo trial.

    Raises
    ------
    ConfigError
        No path given, or the file is missing or invalid.
    """
    if not config_path:
        raise ConfigError("no trial config: pass config_path (the listener and deployments always do)")
    p = Path(config_path).resolve()
    if not p.is_file():
        raise ConfigError(f"trial config {p} does not exist")
    return _config_cached(str(p), p.stat().st_mtime_ns)


def product_store(config: TrialConfig) -> ProductStore:
    return ProductStore(config.products_dir)


def protocol_name(config: TrialConfig, radionuclide: str | None = None) -> str:
    """The calibration protocol key: trial and radionuclide (``RNT-DEMO-LU177:Ho-166``).

    ``radionuclide`` is the phantom header's (any spelling, normalised: a 166Ho cylinder at
    a TARE site registers a 166Ho calibration); without one, the trial protocol's.
    """
    nuclide = (normalise_radionuclide(radionuclide) or radionuclide.strip()) if radionuclide else None
    return f"{config.trial_id}:{nuclide or config.protocol.radionuclide}"


def _none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT else x


def _naive(ts) -> datetime:
    """Warehouse timestamps are UTC; DICOM-derived date-times here are naive (scanner local, shifted)."""
    t = pd.Timestamp(ts).to_pydatetime()
    return t.replace(tzinfo=None) if t.tzinfo else t


def calibration_history(
    config: TrialConfig, camera_id: str | None = None, site_id: str | None = None
) -> list[Calibration]:
    """The calibration registry (every version kept) from the warehouse ``calibrations`` table.

    Parameters
    ----------
    config : TrialConfig
    camera_id : str, optional
        Only this camera id's records (at any site unless ``site_id`` is given).
    site_id : str, optional
        Only this site's records. A camera id is unique only within a site: pass both to get
        one camera's registry.
    """
    where, params = "trial_id = ?", [config.trial_id]
    if camera_id:
        where, params = where + " AND camera_id = ?", params + [camera_id]
    if site_id:
        where, params = where + " AND site_id = ?", params + [site_id]
    df = read_latest(config.warehouse_root, "calibrations", where, params)
    out = []
    for r in df.to_dict("records"):
        sens, vendor = _none(r.get("sensitivity_cps_per_mbq")), _none(r.get("bqml_scale_factor"))
        sd = _none(r.get("sensitivity_sd_cps_per_mbq"))
        out.append(
            Calibration(
                site_id=r["site_id"],
                camera_id=r["camera_id"],
                radionuclide=r["radionuclide"],
                protocol=r["protocol"],
                valid_from=_naive(r["valid_from"]),
                sensitivity_cps_per_mbq=sens,
                vendor_scale_factor=None if sens is not None else vendor,
                sd=sd,
                rc_fwhm_mm=_none(r.get("rc_fwhm_mm")),
                filter_fwhm_mm=_none(r.get("harmonising_filter_fwhm_mm")),
                # rows written before rc_fwhm_source existed had a FWHM only from a NEMA phantom
                rc_fwhm_source=_none(r.get("rc_fwhm_source")) or ("nema" if _none(r.get("rc_fwhm_mm")) else None),
                version=int(r.get("result_version") or 1),
            )
        )
    return out


def calibration_rows(config: TrialConfig, history: list[Calibration]) -> list[dict]:
    """Registry records -> ``calibrations`` rows, with validity ends, supersession and drift.

    The rules are :func:`rntflow.core.calibration_policy.calibration_timeline`'s, per series
    (site, camera and radionuclide, see :func:`rntflow.harmonization.calibration.series_key`):
    a calibration never supersedes, nor drifts against, one of another site.
    """
    rows = []
    by_series: dict[tuple[str, str, str], list[Calibration]] = {}
    for c in history:
        by_series.setdefault(series_key(c), []).append(c)
    for cals in by_series.values():
        for e in calibration_timeline(cals, config.calibration.validity_days, config.calibration.drift_tolerance_pct):
            c, nxt = e.calibration, e.superseded_by
            rows.append(
                {
                    "site_id": c.site_id,
                    "camera_id": c.camera_id,
                    "radionuclide": c.radionuclide,
                    "protocol": c.protocol,
                    "valid_from": c.valid_from.replace(tzinfo=UTC),
                    "valid_until": e.valid_until.replace(tzinfo=UTC),
                    "sensitivity_cps_per_mbq": c.sensitivity_cps_per_mbq,
                    "sensitivity_sd_cps_per_mbq": c.sd,
                    "bqml_scale_factor": c.vendor_scale_factor,
                    "harmonising_filter_fwhm_mm": c.filter_fwhm_mm,
                    "rc_fwhm_mm": c.rc_fwhm_mm,
                    "rc_fwhm_source": c.rc_fwhm_source,
                    "superseded_by": calibration_id(nxt) if nxt else None,
                    "calibration_id": calibration_id(c),
                    "drift_pct": e.drift_pct,
                    "drift_flag": e.drift_flag,
                }
            )
    return rows


def calibration_id(c: Calibration) -> str:
    """Readable, stable id: site, camera serial and the phantom scan time."""
    serial = (c.camera_id or "").split("|")[-1]
    return f"{c.site_id}-{serial}-{c.valid_from:%Y%m%dT%H%M}"


@dataclass(frozen=True)
class Context:
    """Columns every row of one subject carries."""

    trial_id: str
    site_id: str
    subject_id: str | None = None

    def cols(self, **extra) -> dict:
        out = {"trial_id": self.trial_id, "site_id": self.site_id}
        if self.subject_id is not None:
            out["subject_id"] = self.subject_id
        return {**out, **extra}
