"""System resolution from a uniform cylinder's edge (issue 13 part 3): the edge fit, the
calibration's recovery FWHM and where it came from."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import erf

from rntflow.core.errors import CalibrationError
from rntflow.harmonization.cylinder import cylinder_edge_fwhm, disc_edge_profile
from rntflow.physics.decay import activity_at, decay_integral_s
from rntflow.physics.recovery import FWHM_PER_SIGMA

from .conftest import LU177_HALF_LIFE_S

VOXEL_MM = 4.4


def cylinder_image(
    fwhm_mm: float,
    rng: np.random.Generator | None,
    *,
    voxel_mm: float = VOXEL_MM,
    shape=(60, 72, 72),
    radius_mm: float = 108.0,
    length_mm: float = 186.0,
    counts_per_voxel: float = 100.0,
    offset_yx_mm=(3.1, -5.7),
    sub: int = 4,
    sampling: str = "point",
) -> np.ndarray:
    """A uniform cylinder (axis along z) blurred by an isotropic Gaussian, in counts.

    The transaxial disc is blurred on a grid ``sub`` times finer and either sampled at the
    voxel centres (``point``, as the simulator's image model does) or averaged over each
    voxel (``box``); the axial profile is the exact erf of a blurred rectangle (a Gaussian
    is separable). Poisson noise when ``rng`` is given.
    """
    fine = voxel_mm / sub
    n = shape[1] * sub
    c = (np.arange(n) + 0.5) * fine - shape[1] * voxel_mm / 2
    yy, xx = np.meshgrid(c - offset_yx_mm[0], c - offset_yx_mm[1], indexing="ij")
    sigma = fwhm_mm / FWHM_PER_SIGMA
    disc = ndimage.gaussian_filter((yy**2 + xx**2 <= radius_mm**2).astype(float), sigma / fine, mode="constant")
    blocks = disc.reshape(shape[1], sub, shape[2], sub)
    mid = slice(sub // 2 - 1, sub // 2 + 1)  # the voxel centre lies between the two central fine samples
    plane = blocks[:, mid, :, mid].mean((1, 3)) if sampling == "point" else blocks.mean((1, 3))
    z = (np.arange(shape[0]) - (shape[0] - 1) / 2) * voxel_mm
    axial = 0.5 * (
        erf((length_mm / 2 - z) / (math.sqrt(2) * sigma)) + erf((length_mm / 2 + z) / (math.sqrt(2) * sigma))
    )
    img = axial[:, None, None] * plane[None] * counts_per_voxel
    return rng.poisson(img).astype(float) if rng is not None else img


def test_disc_edge_profile_limits():
    # law: on the axis of a disc much wider than sigma the blurred value is 1, far outside 0;
    # at the edge of a wide disc 1/2 (a straight edge), slightly less for a curved one
    r = np.array([0.0, 108.0, 200.0])
    p = disc_edge_profile(r, 108.0, 5.0)
    assert p[0] == pytest.approx(1.0, abs=1e-12) and p[2] == pytest.approx(0.0, abs=1e-12)
    assert 0.47 < p[1] < 0.5
    # a small disc loses height on its axis: 1 - exp(-R^2 / (2 sigma^2))
    assert disc_edge_profile(np.array([0.0]), 5.0, 5.0)[0] == pytest.approx(1 - math.exp(-0.5), rel=1e-9)


@pytest.mark.parametrize("fwhm_mm", [10.0, 13.0, 16.0])
def test_edge_fit_recovers_the_fwhm_within_10_percent(fwhm_mm):
    # issue 13 part 3: a simulated cylinder blurred with a known Gaussian, 4.4 mm voxels,
    # Poisson noise: the edge fit gives the FWHM within 10 % (measured: within 1 %)
    rng = np.random.default_rng(int(fwhm_mm))
    img = cylinder_image(fwhm_mm, rng)
    edge = cylinder_edge_fwhm(img, (VOXEL_MM,) * 3)
    assert edge.fwhm_mm == pytest.approx(fwhm_mm, rel=0.10)
    assert edge.fwhm_mm == pytest.approx(fwhm_mm, rel=0.02)
    assert edge.radius_mm == pytest.approx(108.0, abs=1.0)
    assert 0 < edge.fwhm_sd_mm < 0.05 * fwhm_mm
    centre = (img.shape[1] * VOXEL_MM / 2 - VOXEL_MM / 2 + 3.1, img.shape[2] * VOXEL_MM / 2 - VOXEL_MM / 2 - 5.7)
    assert edge.centre_yx_mm == pytest.approx(centre, abs=0.5)
    known = cylinder_edge_fwhm(img, (VOXEL_MM,) * 3, radius_mm=108.0)
    assert known.radius_mm == 108.0 and known.fwhm_mm == pytest.approx(fwhm_mm, rel=0.05)


def test_edge_fit_on_voxel_averaged_images_stays_within_10_percent():
    # a reconstruction's voxel is closer to an average than a sample: the box adds
    # voxel^2 / 12 of variance per axis, +4 % at 10 mm with 4.4 mm voxels
    for fwhm_mm in (10.0, 16.0):
        edge = cylinder_edge_fwhm(cylinder_image(fwhm_mm, np.random.default_rng(3), sampling="box"), (VOXEL_MM,) * 3)
        with_box = math.sqrt(fwhm_mm**2 + FWHM_PER_SIGMA**2 * VOXEL_MM**2 / 12)
        assert edge.fwhm_mm == pytest.approx(fwhm_mm, rel=0.10)
        assert edge.fwhm_mm == pytest.approx(with_box, rel=0.02)


def test_edge_fit_rejects_what_it_cannot_fit():
    with pytest.raises(CalibrationError, match="field of view"):
        cylinder_edge_fwhm(cylinder_image(12.0, None, shape=(60, 40, 40)), (VOXEL_MM,) * 3)
    with pytest.raises(CalibrationError):
        cylinder_edge_fwhm(np.zeros((10, 20, 20)), (VOXEL_MM,) * 3)


def _cylinder_study(tmp_path, fwhm_mm: float):
    """Header, image, spacing and fill row of a uniform cylinder written as a trial NM file."""
    import pydicom

    from rntflow.core.fills import PhantomFill
    from rntflow.harmonization.headers import nm_to_image, parse_nm_header
    from rntflow.harmonization.phantom import array_and_spacing

    from .conftest import make_nm_dataset

    ref = datetime(2026, 3, 1, 8, 0)
    acq = ref + timedelta(hours=3)
    a_ref_mbq, s_true = 800.0, 9.5
    counts = s_true * activity_at(a_ref_mbq, ref, acq, LU177_HALF_LIFE_S) * decay_integral_s(1200.0, LU177_HALF_LIFE_S)
    img = cylinder_image(fwhm_mm, None, voxel_mm=4.8, shape=(60, 70, 70), offset_yx_mm=(0.0, 0.0))
    img = np.random.default_rng(5).poisson(img * counts / img.sum()).astype(float)
    assert img.max() < 65535
    make_nm_dataset(
        img.astype(np.uint16), units="CNTS", acq_start=acq, admin=ref, activity_mbq=a_ref_mbq, matrix=70
    ).save_as(tmp_path / "cyl.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "cyl.dcm")
    fill = PhantomFill("SITE01-PH-CYL", "uniform_cylinder", a_ref_mbq, ref, math.pi * 108**2 * 186 / 1000)
    return (parse_nm_header(back), *array_and_spacing(nm_to_image(back)), fill)


def test_cylinder_calibration_records_the_edge_fwhm_or_the_configured_one(tmp_path):
    from rntflow.harmonization.phantom_study import calibrate_uniform_cylinder

    hdr, arr, sp, fill = _cylinder_study(tmp_path, 12.0)
    res = calibrate_uniform_cylinder(hdr, arr, sp, fill, site_id="SITE01", protocol_name="P")
    assert res.status == "pass", res.checks
    assert res.check("cylinder_edge_resolution").status == "pass"
    assert res.calibration.rc_fwhm_source == "cylinder_edge"
    assert res.calibration.rc_fwhm_mm == pytest.approx(12.0, rel=0.05)
    assert res.edge_resolution.fwhm_mm == res.calibration.rc_fwhm_mm
    # a configured FWHM takes precedence; the edge estimate still checks it
    conf = calibrate_uniform_cylinder(hdr, arr, sp, fill, site_id="SITE01", protocol_name="P", configured_fwhm_mm=12.5)
    assert (conf.calibration.rc_fwhm_mm, conf.calibration.rc_fwhm_source) == (12.5, "configured")
    assert conf.check("cylinder_edge_resolution").status == "pass"
    off = calibrate_uniform_cylinder(hdr, arr, sp, fill, site_id="SITE01", protocol_name="P", configured_fwhm_mm=8.0)
    assert off.calibration.rc_fwhm_source == "configured"
    assert off.check("cylinder_edge_resolution").status == "warn"
    assert "confirm" in off.check("cylinder_edge_resolution").message


def test_camera_profile_takes_a_system_fwhm():
    from pydantic import ValidationError

    from rntflow.core.config import CameraProfile

    assert CameraProfile(manufacturer="GE", system_fwhm_mm=12.5).system_fwhm_mm == 12.5
    assert CameraProfile().system_fwhm_mm is None
    with pytest.raises(ValidationError):
        CameraProfile(system_fwhm_mm=0.0)
