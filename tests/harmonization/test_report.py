"""Harmonisation report: table and figure."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from rntflow.harmonization.filter import harmonising_filter
from rntflow.harmonization.nema import NemaTruth, analyse_nema_phantom
from rntflow.harmonization.report import REPORT_COLUMNS, SitePhantomResults, harmonisation_report

from .conftest import nema_phantom

BAND = {"37": (0.60, 0.95), "28": (0.50, 0.85), "22": (0.38, 0.72), "17": (0.25, 0.58)}


def test_report_table_and_figure(tmp_path):
    truth = NemaTruth(1000.0, 8000.0, 8.0)
    sites = []
    for site, fwhm in (("SITE01", 10.0), ("SITE02", 16.0)):
        img, _ = nema_phantom(fwhm, 8.0, 1000.0, np.random.default_rng(1), counts_per_unit=0.2)
        nema = analyse_nema_phantom(img, (4.8, 4.8, 4.8), truth)
        sites.append(
            SitePhantomResults(site, f"cam-{site}", nema, None, harmonising_filter(img, (4.8, 4.8, 4.8), nema, BAND))
        )
    table, fig = harmonisation_report(sites, BAND)
    assert list(table.columns) == list(REPORT_COLUMNS)
    assert len(table) == 12
    row = table[(table.site_id == "SITE01") & (table.sphere_diameter_mm == 37.0)].iloc[0]
    assert row.band_min_rc == 0.60 and row.band_max_rc == 0.95
    assert row.in_band == (0.60 <= row.rc <= 0.95)
    assert np.isnan(table[table.sphere_diameter_mm == 10.0].band_min_rc).all()
    # a sharper site recovers more
    rc37 = table[table.sphere_diameter_mm == 37.0].set_index("site_id").rc
    assert rc37["SITE01"] > rc37["SITE02"]
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "rc.png")
    assert (tmp_path / "rc.png").stat().st_size > 1000
