"""Site harmonisation report: a table and a figure of RC curves against the reference band.

The caller saves both (``table.to_parquet`` / ``fig.savefig``); nothing is written here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rntflow.harmonization.cylinder import UniformCylinderResult
from rntflow.harmonization.filter import HarmonisingFilter
from rntflow.harmonization.nema import NemaResult
from rntflow.harmonization.rc_curve import parse_rc_band
from rntflow.physics.recovery import sphere_volume_ml

REPORT_COLUMNS = (
    "site_id",
    "camera_id",
    "sphere_diameter_mm",
    "sphere_volume_ml",
    "rc",
    "rc_background_relative",
    "band_min_rc",
    "band_max_rc",
    "in_band",
    "rc_after_filter",
    "rc_fit_fwhm_mm",
    "rc_fit_amplitude",
    "filter_status",
    "filter_fwhm_mm",
    "sensitivity_cps_per_mbq",
    "vendor_scale_factor",
    "calibration_sd",
)


@dataclass(frozen=True)
class SitePhantomResults:
    """Everything one site's phantom scans produced."""

    site_id: str
    camera_id: str | None
    nema: NemaResult
    uniform: UniformCylinderResult | None = None
    filter: HarmonisingFilter | None = None


def harmonisation_report(
    site_results: Sequence[SitePhantomResults], reference_rc_band: Mapping
) -> tuple[pd.DataFrame, Figure]:
    """Per-site, per-sphere table and RC-curve figure.

    Parameters
    ----------
    site_results : sequence of SitePhantomResults
    reference_rc_band : mapping
        ``TrialConfig.calibration.reference_rc_band`` (diameter mm -> (min, max)).

    Returns
    -------
    table : pandas.DataFrame
        Columns :data:`REPORT_COLUMNS` (one row per site and sphere; band columns NaN
        for spheres outside the band definition).
    fig : matplotlib.figure.Figure
        RC against sphere volume (mL, log axis): per site the measured points and the
        fitted Gaussian-blurred-sphere curve; the band as vertical bars.
    """
    band = parse_rc_band(reference_rc_band) if reference_rc_band else {}
    rows = []
    for res in site_results:
        after = res.filter.rc_after if res.filter else {}
        for s in res.nema.spheres:
            b = next((v for d, v in band.items() if abs(d - s.diameter_mm) < 0.5), None)
            rows.append(
                {
                    "site_id": res.site_id,
                    "camera_id": res.camera_id,
                    "sphere_diameter_mm": s.diameter_mm,
                    "sphere_volume_ml": s.volume_ml,
                    "rc": s.rc,
                    "rc_background_relative": s.rc_background_relative,
                    "band_min_rc": b[0] if b else math.nan,
                    "band_max_rc": b[1] if b else math.nan,
                    "in_band": (b[0] <= s.rc <= b[1]) if b else None,
                    "rc_after_filter": next((v for d, v in after.items() if abs(d - s.diameter_mm) < 0.5), math.nan),
                    "rc_fit_fwhm_mm": res.nema.rc_curve.fwhm_mm,
                    "rc_fit_amplitude": res.nema.rc_curve.amplitude,
                    "filter_status": res.filter.status if res.filter else None,
                    "filter_fwhm_mm": res.filter.fwhm_mm if res.filter else math.nan,
                    "sensitivity_cps_per_mbq": res.uniform.sensitivity_cps_per_mbq if res.uniform else math.nan,
                    "vendor_scale_factor": res.uniform.vendor_scale_factor if res.uniform else math.nan,
                    "calibration_sd": res.uniform.standard_uncertainty if res.uniform else math.nan,
                }
            )
    table = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    for col in ("sensitivity_cps_per_mbq", "vendor_scale_factor", "filter_fwhm_mm", "rc_after_filter"):
        table[col] = pd.to_numeric(table[col], errors="coerce")

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for d, (lo, hi) in sorted(band.items()):
        v = float(sphere_volume_ml(d))
        ax.plot([v, v], [lo, hi], color="0.6", lw=6, alpha=0.5, solid_capstyle="butt")
    if band:
        ax.plot([], [], color="0.6", lw=6, alpha=0.5, label="reference band")
    vgrid = np.geomspace(0.3, 40.0, 60)
    for res in site_results:
        vols = [s.volume_ml for s in res.nema.spheres]
        line = ax.plot(
            vols,
            [s.rc for s in res.nema.spheres],
            "o",
            label=f"{res.site_id} (FWHM {res.nema.rc_curve.fwhm_mm:.1f} mm)",
        )[0]
        ax.plot(vgrid, res.nema.rc_curve(vgrid), "-", color=line.get_color(), lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("sphere volume (mL)")
    ax.set_ylabel("recovery coefficient (mean / true)")
    ax.set_ylim(0, 1.2)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("NEMA IEC recovery per site against the trial reference band")
    fig.tight_layout()
    return table, fig
