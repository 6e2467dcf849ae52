"""Protocol compliance checks: one test per check, each failing on its own deviation."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import SimpleITK as sitk

from rntflow.core.config import load_config
from rntflow.core.qa import CheckResult
from rntflow.harmonization.headers import parse_nm_header
from rntflow.harmonization.recon_check import (
    ImageGeometry,
    check_counts_plausible,
    check_fov_covers_vois,
    check_reconstruction,
)

from .conftest import make_nm_dataset

CONFIG = Path(__file__).resolve().parents[2] / "deployments" / "trial.example.yaml"
ADMIN = datetime(2026, 3, 1, 10, 0, 0)


@pytest.fixture(scope="module")
def protocol():
    return load_config(CONFIG).protocol


def _by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def test_compliant_header_passes_every_check(protocol):
    results = check_reconstruction(parse_nm_header(make_nm_dataset()), protocol)
    assert {r.status for r in results} == {"pass"}, [r for r in results if r.status != "pass"]
    names = {r.check for r in results}
    assert names == {
        "pixel_units",
        "administered_activity",
        "radionuclide",
        "energy_window_photopeak",
        "energy_window_scatter",
        "collimator",
        "attenuation_correction",
        "scatter_correction",
        "algorithm",
        "iterations_x_subsets",
        "matrix",
        "voxel_size",
        "post_filter",
        "projections",
        "time_per_projection",
        "time_point",
    }
    assert _by_check(results)["time_point"].message == "time point 24 h"


DEVIATIONS = [
    (
        "energy_window_photopeak",
        dict(windows=[("Lu177_113", 101.7, 124.3), ("scatter_low", 161.5, 178.5), ("scatter_high", 237.5, 262.5)]),
    ),
    (
        "energy_window_scatter",
        dict(windows=[("Lu177_208", 187.2, 228.8), ("scatter_low", 150.0, 165.0), ("scatter_high", 237.5, 262.5)]),
    ),
    ("collimator", dict(collimator="LEHR")),
    ("attenuation_correction", dict(corrected=("SCAT", "DECY"))),
    ("scatter_correction", dict(corrected=("ATTN", "DECY"))),
    ("algorithm", dict(recon="FBP 1i1s")),
    ("iterations_x_subsets", dict(recon="OSEM 2i4s")),
    ("matrix", dict(matrix=128, spacing_mm=(4.8, 4.8, 4.8))),
    ("voxel_size", dict(spacing_mm=(3.3, 3.3, 3.3))),
    ("post_filter", dict(kernel="GAUSSIAN 8.0MM")),
    ("projections", dict(n_rot=16)),
    ("time_per_projection", dict(ms_per_proj=5000.0)),
    ("time_point", dict(acq_start=ADMIN + timedelta(hours=50))),
]


@pytest.mark.parametrize("check, kwargs", DEVIATIONS, ids=[d[0] for d in DEVIATIONS])
def test_each_check_fails_on_its_own_deviation(protocol, check, kwargs):
    results = _by_check(check_reconstruction(parse_nm_header(make_nm_dataset(**kwargs)), protocol))
    assert results[check].status == "fail", results[check]
    others = {k: r.status for k, r in results.items() if k != check and r.status != "pass"}
    if check == "algorithm":  # FBP 1i1s also has 1 iteration x subset
        others.pop("iterations_x_subsets", None)
    assert others == {}


def test_time_point_outside_every_window_message(protocol):
    r = _by_check(
        check_reconstruction(parse_nm_header(make_nm_dataset(acq_start=ADMIN + timedelta(hours=50))), protocol)
    )["time_point"]
    assert r.message == "outside every window" and "50.00 h" in r.value_found


@pytest.mark.parametrize("hours, nominal", [(3.0, 4), (100.0, 96), (170.0, 168)])
def test_time_point_identified(protocol, hours, nominal):
    r = _by_check(
        check_reconstruction(parse_nm_header(make_nm_dataset(acq_start=ADMIN + timedelta(hours=hours))), protocol)
    )["time_point"]
    assert r.status == "pass" and r.message == f"time point {nominal} h"


def test_missing_energy_window_is_not_stated_warning_not_crash(protocol):
    ds = make_nm_dataset()
    del ds.EnergyWindowInformationSequence
    results = _by_check(check_reconstruction(parse_nm_header(ds), protocol))
    assert results["energy_window_photopeak"].status == "warn"
    assert results["energy_window_photopeak"].value_found == "not stated"
    assert "EnergyWindowInformationSequence" in results["energy_window_photopeak"].message
    assert results["energy_window_scatter"].status == "warn"
    assert results["scatter_correction"].status == "pass"  # CorrectedImage SCAT


def test_scatter_windows_only_in_projections(protocol):
    # photopeak only in the reconstruction: SCAT evidences the correction -> warn, not fail
    r = _by_check(
        check_reconstruction(parse_nm_header(make_nm_dataset(windows=[("Lu177_208", 187.2, 228.8)])), protocol)
    )
    assert r["energy_window_scatter"].status == "warn" and "projections" in r["energy_window_scatter"].message
    assert r["scatter_correction"].status == "pass"
    # CorrectedImage without SCAT and no scatter windows: both fail
    r = _by_check(
        check_reconstruction(
            parse_nm_header(make_nm_dataset(windows=[("Lu177_208", 187.2, 228.8)], corrected=("ATTN",))), protocol
        )
    )
    assert r["energy_window_scatter"].status == "fail" and r["scatter_correction"].status == "fail"


def test_empty_header_fails_only_what_quantification_needs(protocol):
    import pydicom

    results = _by_check(check_reconstruction(parse_nm_header(pydicom.Dataset()), protocol))
    fails = {k for k, r in results.items() if r.status == "fail"}
    assert fails == {"pixel_units", "voxel_size", "time_point"}
    assert all(r.status == "warn" for k, r in results.items() if k not in fails)
    assert all(r.value_found == "not stated" for k, r in results.items() if k not in fails)


def test_same_energy_class_collimator_is_warning(protocol):
    r = _by_check(check_reconstruction(parse_nm_header(make_nm_dataset(collimator="ME")), protocol))["collimator"]
    assert r.status == "warn"


# ----------------------------------------------------------------------------- image checks


def _geometry() -> ImageGeometry:
    # 80 x 80 x 60 voxels of 4.8 mm, first voxel centre at (-189.6, -189.6, -100)
    return ImageGeometry((80, 80, 60), (4.8, 4.8, 4.8), (-189.6, -189.6, -100.0))


def test_fov_covers_vois_boxes():
    res = _by_check(
        check_fov_covers_vois(
            _geometry(),
            {
                "Kidney_L": ((10, 10, 0), (60, 60, 100)),
                "Parotid_L": ((10, 10, 150), (40, 40, 220)),  # FOV ends at -100 + 59.5 * 4.8 = 185.6 mm
                "Liver": ((-190, -50, 0), (0, 50, 50)),  # 2.4 mm inside the lower x face (-192)
            },
            margin_mm=10.0,
        )
    )
    assert res["fov_covers_Kidney_L"].status == "pass"
    assert res["fov_covers_Parotid_L"].status == "fail"
    assert res["fov_covers_Liver"].status == "warn"


def test_fov_covers_vois_masks_on_other_grid():
    geo = _geometry()
    mask = sitk.Image(100, 100, 50, sitk.sitkUInt8)
    mask.SetSpacing((1.0, 1.0, 3.0))
    mask.SetOrigin((0.0, 0.0, 150.0))
    inside = sitk.Image(mask)
    inside[10:20, 10:20, 0:5] = 1  # z 150 - 162 mm: inside
    outside = sitk.Image(mask)
    outside[10:20, 10:20, 20:30] = 1  # z 210 - 237 mm: outside
    res = _by_check(check_fov_covers_vois(geo, {"a": inside, "b": outside, "c": mask}))
    assert res["fov_covers_a"].status == "pass"
    assert res["fov_covers_b"].status == "fail"
    assert res["fov_covers_c"].status == "fail"  # empty mask


def test_counts_plausible():
    # 7400 MBq Lu-177 imaged at 24 h (decay factor exp(-ln2 * 24 / 159.5) = 0.901) for 20 min
    s_range = (8.0, 20.0)
    a_24 = 7400 * 0.5 ** (24 / (6.647 * 24))
    tau = 1200.0  # decay during 20 min is 0.04 %: use T
    ok = check_counts_plausible(0.3 * 15.0 * a_24 * tau, 7400.0, 24.0, 1200.0, s_range, "Lu177")
    assert ok.status == "pass"
    too_many = check_counts_plausible(1.2 * 20.0 * a_24 * tau, 7400.0, 24.0, 1200.0, s_range, "Lu-177")
    assert too_many.status == "fail"
    too_few = check_counts_plausible(0.001 * 8.0 * a_24 * tau, 7400.0, 24.0, 1200.0, s_range, "Lu-177")
    assert too_few.status == "warn"
    assert check_counts_plausible(1e6, None, 24.0, 1200.0, s_range, "Lu-177").status == "fail"
    assert check_counts_plausible(0.0, 7400.0, 24.0, 1200.0, s_range, "Lu-177").status == "fail"


# ----------------------------------------------------------------------------- camera profiles


def test_site_camera_profile_widens_vocabulary_from_example_config(protocol):
    cfg = load_config(CONFIG)
    site = cfg.site("SITE01")
    assert site.camera_profile("SIEMENS", "Symbia Intevo Bold") is not None
    assert site.camera_profile("GE MEDICAL SYSTEMS", "Discovery") is None
    ds = make_nm_dataset(recon="Flash3D 6i16s", collimator="MELP", kernel="XYZ Gauss 0.0")
    h = parse_nm_header(ds)
    plain = _by_check(check_reconstruction(h, protocol))
    assert plain["algorithm"].status == "fail" and plain["collimator"].status == "warn"
    assert plain["post_filter"].status == "pass"  # Gaussian 0 mm = no filter
    sited = _by_check(check_reconstruction(h, protocol, site.camera_profile(h.manufacturer, h.model)))
    assert {r.status for r in sited.values()} == {"pass"}, [r for r in sited.values() if r.status != "pass"]


def test_post_filter_verdicts(protocol):
    from rntflow.core.config import CameraProfile

    def verdict(kernel, camera=None):
        h = parse_nm_header(make_nm_dataset(kernel=kernel))
        return _by_check(check_reconstruction(h, protocol, camera))["post_filter"]

    bw = ["Butterworth", "0.48", "10"]  # ConvolutionKernel is SH (16 chars), VM 1-n
    assert verdict(bw).status == "fail"  # protocol allows no post-filter
    assert verdict(bw, CameraProfile(post_filters=["butterworth 0.48 10"])).status == "pass"
    r = verdict("B30f smooth")
    assert r.status == "warn" and "not understood" in r.message
    assert verdict("Gaussian 8 mm").status == "fail"
    assert verdict("Gauss 0.0").status == "pass"


def test_scatter_evidence_from_private_text_or_declaration(protocol):
    from rntflow.core.config import CameraProfile

    ds = make_nm_dataset(windows=[("Lu177_208", 187.2, 228.8)], corrected=("ATTN",))
    ds.private_block(0x0013, "VENDOR RECON", create=True).add_new(0x10, "LO", "MC scatter correction on")
    h = parse_nm_header(ds)
    assert _by_check(check_reconstruction(h, protocol))["scatter_correction"].status == "fail"
    text = CameraProfile(scatter_evidence=["text"], scatter_text_patterns=["scatter correction on"])
    r = _by_check(check_reconstruction(h, protocol, text))
    assert r["scatter_correction"].status == "pass" and "MC scatter" in r["scatter_correction"].value_found
    assert r["energy_window_scatter"].status == "warn"
    declared = CameraProfile(scatter_evidence=["declared"])
    assert _by_check(check_reconstruction(h, protocol, declared))["scatter_correction"].status == "pass"


def test_administered_activity_against_record():
    from rntflow.harmonization.protocol_checks import check_administered_activity

    h = parse_nm_header(make_nm_dataset(activity_mbq=7400.0))
    assert check_administered_activity(h, 7300.0).status == "pass"
    r = check_administered_activity(h, 6000.0)
    assert r.status == "warn" and "+23.3 %" in r.message
    assert check_administered_activity(parse_nm_header(make_nm_dataset(activity_mbq=None))).status == "warn"
