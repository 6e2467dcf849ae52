"""VOI rasterisation and resampling: laws on synthetic grids.

Tolerances
----------
* Pixelisation. A pixel counts as inside a polygon when its centre is. For a random
  placement this is unbiased, and the area error of one planar section is a boundary
  effect with standard deviation ``ALPHA * sqrt(P * d**3)`` (P perimeter, d pixel size).
  ALPHA = 0.28 was measured by Monte Carlo over 400 random placements of ellipses of
  5-40 mm on 1 and 3.2 mm pixels (0.23-0.29); we use 0.3 and allow 5 sigma. The rigorous
  worst case (every pixel cut by the boundary wrong) is ``P * d * sqrt(2)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from rntflow.core.errors import VoiError
from rntflow.dosimetry.vois import mask_volume_ml, rasterise_contours, resample_mask_fraction

ALPHA = 0.3  # pixelisation sigma = ALPHA * sqrt(P d^3), see the module docstring


# --------------------------------------------------------------------------- helpers


def _grid(
    size_xyz=(128, 128, 20), spacing_mm=(1.0, 1.0, 5.0), origin_mm=(-64.0, -64.0, -50.0), direction=None
) -> sitk.Image:
    img = sitk.Image([int(v) for v in size_xyz], sitk.sitkUInt8)
    img.SetSpacing(spacing_mm)
    img.SetOrigin(origin_mm)
    if direction is not None:
        img.SetDirection(np.asarray(direction, float).flatten().tolist())
    return img


def _ellipse(cx: float, cy: float, a: float, b: float, z: float, n: int = 720) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t), np.full_like(t, z)], -1)


def _square(x0: float, y0: float, side: float, z: float) -> np.ndarray:
    return np.array([[x0, y0, z], [x0 + side, y0, z], [x0 + side, y0 + side, z], [x0, y0 + side, z]])


def _area_mm2(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _perimeter_mm(p: np.ndarray) -> float:
    return float(np.sum(np.linalg.norm(np.roll(p[:, :2], -1, axis=0) - p[:, :2], axis=1)))


# --------------------------------------------------------------------------- rasterise: laws


def test_circles_on_5mm_slices_give_pi_r2_per_slice():
    ref = _grid()
    r_mm, d_mm = 20.0, 1.0
    contours = [_ellipse(0.3, -0.7, r_mm, r_mm, z) for z in (-30.0, -25.0, -20.0, -15.0)]
    mask = rasterise_contours(contours, ref)
    assert mask.dtype == np.bool_ and mask.shape == (20, 128, 128)
    per_slice = mask.sum(axis=(1, 2)) * d_mm * d_mm
    assert np.count_nonzero(per_slice) == 4 and np.all(per_slice[4:8] > 0)  # z = -30 is slice 4
    p = 2 * math.pi * r_mm
    sigma = ALPHA * math.sqrt(p * d_mm**3)
    for a in per_slice[4:8]:
        assert abs(a - math.pi * r_mm**2) <= min(5 * sigma, p * d_mm * math.sqrt(2))
    assert mask_volume_ml(mask, ref) == pytest.approx(4 * math.pi * r_mm**2 * 5.0 / 1000, abs=4 * 5 * sigma / 1000)


def test_centre_sampling_is_unbiased_over_random_placements():
    rng = np.random.default_rng(3)
    ref = _grid(size_xyz=(64, 64, 3), spacing_mm=(3.2, 3.2, 5.0), origin_mm=(-102.4, -102.4, -5.0))
    r_mm, d_mm, n = 12.0, 3.2, 200
    errors = []
    for _ in range(n):
        cx, cy = rng.uniform(-d_mm, d_mm, 2)
        mask = rasterise_contours([_ellipse(cx, cy, r_mm, r_mm, 0.0)], ref)
        errors.append(mask.sum() * d_mm * d_mm - math.pi * r_mm**2)
    sigma = ALPHA * math.sqrt(2 * math.pi * r_mm * d_mm**3)
    assert np.max(np.abs(errors)) <= 5 * sigma
    assert abs(np.mean(errors)) <= 4 * sigma / math.sqrt(n)  # no bias: ~0.5 % of 452 mm2 here


def test_square_with_square_hole_is_xor():
    ref = _grid()
    # edges on pixel boundaries (voxel centres at integers - 64 + 0.5 ... ) make centre sampling exact
    outer = _square(-20.5, -20.5, 40.0, 0.0)
    hole = _square(-10.5, -10.5, 20.0, 0.0)
    island = _square(-3.5, -3.5, 6.0, 0.0)
    far = _square(30.5, 30.5, 10.0, 0.0)
    k = 10  # z = 0 is slice 10
    m = rasterise_contours([outer, hole], ref)
    assert m[k].sum() == 1600 - 400 and not m[k, 64, 64] and m.sum() == m[k].sum()
    assert np.array_equal(rasterise_contours([hole, outer], ref), m)  # order does not matter
    m2 = rasterise_contours([outer, hole, island, far], ref)
    assert m2[k].sum() == 1600 - 400 + 36 + 100 and m2[k, 64, 64]


def test_non_axial_contour_raises():
    ref = _grid()
    c = _ellipse(0.0, 0.0, 30.0, 20.0, 0.0)
    tilt = math.radians(10.0)
    rot = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    with pytest.raises(VoiError, match="not parallel to the image slices"):
        rasterise_contours([c, c @ rot.T], ref)
    with pytest.raises(VoiError, match=r"\(n, 3\)"):
        rasterise_contours([np.zeros((5, 2))], ref)


def test_contours_in_the_plane_of_an_oblique_image():
    a = math.radians(30.0)
    direction = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    ref = _grid(direction=direction)
    # a circle in the image's slice 10 plane, written in patient coordinates
    local = _ellipse(0.0, 0.0, 20.0, 20.0, 0.0)
    centre = np.asarray(ref.TransformIndexToPhysicalPoint((64, 64, 10)))
    pts = centre + local @ direction.T
    mask = rasterise_contours([pts], ref)
    assert np.count_nonzero(mask.sum(axis=(1, 2))) == 1 and mask[10].sum() > 0
    assert abs(mask.sum() - math.pi * 400) <= 5 * ALPHA * math.sqrt(2 * math.pi * 20)


def test_finer_contour_planes_do_not_cancel_and_far_ones_are_dropped():
    ref = _grid()
    # contours every 2.5 mm on a 5 mm grid: two planes per slice; XOR of both would be empty
    contours = [_ellipse(0, 0, 15, 15, z) for z in np.arange(-10.0, 10.1, 2.5)]
    m = rasterise_contours(contours, ref)
    assert np.all(m.sum(axis=(1, 2))[8:13] > 600)
    outside = [_ellipse(0, 0, 15, 15, 500.0), _ellipse(0, 0, 15, 15, 0.0)[:2]]  # off-grid, degenerate
    assert not rasterise_contours(outside, ref).any()
    assert not rasterise_contours([], ref).any()


# --------------------------------------------------------------------------- resampling: laws


def test_fraction_is_exact_box_overlap_on_aligned_grids():
    ct = _grid(size_xyz=(128, 128, 100), spacing_mm=(3.2, 3.2, 5.0), origin_mm=(-203.2, -203.2, -97.5))
    spect = _grid(size_xyz=(80, 80, 104), spacing_mm=(4.8, 4.8, 4.8), origin_mm=(-189.6, -189.6, -97.2))
    z, y, x = np.meshgrid(
        np.arange(100) * 5 - 97.5, np.arange(128) * 3.2 - 203.2, np.arange(128) * 3.2 - 203.2, indexing="ij"
    )
    kidney = ((x - 70) / 28) ** 2 + ((y - 40) / 24) ** 2 + (z / 52) ** 2 <= 1
    frac = resample_mask_fraction(kidney, ct, spect)
    assert frac.dtype == np.float32 and frac.shape == (104, 80, 80)
    assert frac.min() >= 0 and frac.max() <= 1 and np.any((frac > 0) & (frac < 1))
    assert mask_volume_ml(frac, spect) == pytest.approx(mask_volume_ml(kidney, ct), rel=1e-5)
    # one source voxel exactly on one target voxel: fraction = volume ratio
    one = np.zeros_like(kidney)
    one[50, 64, 64] = True
    f1 = resample_mask_fraction(one, ct, ct)
    assert f1[50, 64, 64] == pytest.approx(1.0) and f1.sum() == pytest.approx(1.0)
    # a rotated target uses supersampling: still conserves volume within 1 %
    rot = sitk.Euler3DTransform()
    rot.SetRotation(0.1, 0.05, 0.3)
    tilted = _grid(
        size_xyz=(80, 80, 104),
        spacing_mm=(4.8, 4.8, 4.8),
        origin_mm=(-189.6, -189.6, -97.2),
        direction=np.asarray(rot.GetMatrix()).reshape(3, 3),
    )
    f2 = resample_mask_fraction(kidney, ct, tilted)
    assert mask_volume_ml(f2, tilted) == pytest.approx(mask_volume_ml(kidney, ct), rel=0.01)


def test_fraction_is_exact_for_flipped_and_permuted_axes():
    ct = _grid(size_xyz=(128, 120, 100), spacing_mm=(3.2, 3.0, 5.0), origin_mm=(-203.2, -190.0, -97.5))
    z, y, x = np.meshgrid(
        np.arange(100) * 5 - 97.5, np.arange(120) * 3.0 - 190, np.arange(128) * 3.2 - 203.2, indexing="ij"
    )
    mask = ((x - 70) / 28) ** 2 + ((y - 40) / 24) ** 2 + (z / 52) ** 2 <= 1
    spect = _grid(size_xyz=(80, 80, 104), spacing_mm=(4.8, 4.8, 4.8), origin_mm=(-189.6, -189.6, -97.2))
    expected = resample_mask_fraction(mask, ct, spect)
    # the same SPECT voxels with slices stacked feet-first
    feet_first = _grid(
        size_xyz=(80, 80, 104),
        spacing_mm=(4.8, 4.8, 4.8),
        origin_mm=(-189.6, -189.6, -97.2 + 4.8 * 103),
        direction=np.diag([1.0, 1.0, -1.0]),
    )
    np.testing.assert_allclose(resample_mask_fraction(mask, ct, feet_first)[::-1], expected, atol=1e-6)
    # the same mask on a source grid with x and y swapped, or y and z flipped
    src = sitk.GetImageFromArray(mask.astype(np.uint8))
    src.CopyInformation(ct)
    for moved in (sitk.PermuteAxes(src, [1, 0, 2]), sitk.Flip(src, [False, True, True])):
        got = resample_mask_fraction(sitk.GetArrayFromImage(moved).astype(bool), moved, spect)
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_fraction_shape_mismatch_raises():
    with pytest.raises(VoiError, match="does not match"):
        resample_mask_fraction(np.zeros((3, 4, 5), bool), _grid(), _grid())
