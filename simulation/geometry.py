"""Analytic shapes of the synthetic anatomy and phantoms (all lengths in mm).

Every shape lives in an *anatomy frame* (LPS: +x patient left, +y posterior, +z superior)
and is axis-aligned there. A :class:`Pose` maps the anatomy frame into the scanner frame
of one imaging session (a rotation about z plus a translation), which is how a patient
lies a little differently on the couch at every time point.

Because poses only rotate about z, the intersection of any shape with a transverse
slice is an ellipse (or nothing), so contours are exact polygons, not traced masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pose:
    """Rigid placement of the anatomy in the scanner: ``x_s = R_z(angle) x_a + t``.

    Attributes
    ----------
    angle_deg : float
        Rotation about the scanner z axis (degrees).
    translation_mm : tuple of float
        Translation (mm), LPS.
    """

    angle_deg: float = 0.0
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def rotation(self) -> np.ndarray:
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def to_scanner(self, pts_mm: np.ndarray) -> np.ndarray:
        """Map (..., 3) anatomy points to scanner points."""
        return pts_mm @ self.rotation.T + np.asarray(self.translation_mm)

    def to_anatomy(self, pts_mm: np.ndarray) -> np.ndarray:
        """Map (..., 3) scanner points to anatomy points."""
        return (pts_mm - np.asarray(self.translation_mm)) @ self.rotation


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid (a sphere when the three semi-axes are equal)."""

    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]

    @property
    def volume_ml(self) -> float:
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.asarray(self.center_mm), np.asarray(self.semi_axes_mm)
        return c - s, c + s

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        cx, cy, cz = self.center_mm
        a, b, c = self.semi_axes_mm
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0

    def section(self, z_mm: float) -> tuple[float, float, float, float] | None:
        """Transverse section at ``z_mm`` as (cx, cy, semi_x, semi_y), or None."""
        cx, cy, cz = self.center_mm
        a, b, c = self.semi_axes_mm
        u = (z_mm - cz) / c
        if abs(u) >= 1.0:
            return None
        s = math.sqrt(1.0 - u * u)
        return cx, cy, a * s, b * s

    def surface_points(self, n: int = 400) -> np.ndarray:
        """Quasi-uniform points on the surface (for containment checks)."""
        k = np.arange(n) + 0.5
        phi = np.arccos(1 - 2 * k / n)
        theta = math.pi * (1 + 5**0.5) * k
        unit = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], -1)
        return np.asarray(self.center_mm) + unit * np.asarray(self.semi_axes_mm)


@dataclass(frozen=True)
class EllipticCylinder:
    """Elliptic cylinder along z, from ``z0_mm`` to ``z1_mm``."""

    center_xy_mm: tuple[float, float]
    semi_axes_mm: tuple[float, float]
    z0_mm: float
    z1_mm: float

    @property
    def volume_ml(self) -> float:
        a, b = self.semi_axes_mm
        return math.pi * a * b * (self.z1_mm - self.z0_mm) / 1000.0

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        (cx, cy), (a, b) = self.center_xy_mm, self.semi_axes_mm
        return np.array([cx - a, cy - b, self.z0_mm]), np.array([cx + a, cy + b, self.z1_mm])

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        (cx, cy), (a, b) = self.center_xy_mm, self.semi_axes_mm
        return (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0) & (z >= self.z0_mm) & (z <= self.z1_mm)

    def section(self, z_mm: float) -> tuple[float, float, float, float] | None:
        if not self.z0_mm <= z_mm <= self.z1_mm:
            return None
        return (*self.center_xy_mm, *self.semi_axes_mm)

    def surface_points(self, n: int = 400) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        zs = np.linspace(self.z0_mm, self.z1_mm, max(2, n // 40))
        (cx, cy), (a, b) = self.center_xy_mm, self.semi_axes_mm
        tt, zz = np.meshgrid(t, zs)
        return np.stack([cx + a * np.cos(tt), cy + b * np.sin(tt), zz], -1).reshape(-1, 3)


Shape = Ellipsoid | EllipticCylinder


def any_inside(shapes: tuple[Shape, ...], pts_mm: np.ndarray) -> np.ndarray:
    """True where a point (..., 3) lies inside any of ``shapes``."""
    return any_inside_xyz(shapes, pts_mm[..., 0], pts_mm[..., 1], pts_mm[..., 2])


def any_inside_xyz(shapes: tuple[Shape, ...], x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """True where ``(x, y, z)`` (mm; arrays that broadcast together) lies inside any of ``shapes``.

    On a grid, pass the axes as ``x[None, None, :]``, ``y[None, :, None]``, ``z[:, None, None]``:
    the shapes' arithmetic then runs per axis and broadcasts, with the same floating-point
    results as on the full point array.
    """
    out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), dtype=bool)
    for s in shapes:
        out |= s.inside(x, y, z)
    return out


def section_polygon(shape: Shape, z_anat_mm: float, pose: Pose, n_points: int = 48) -> np.ndarray | None:
    """Closed planar contour of ``shape`` on the scanner slice matching ``z_anat_mm``.

    Returns an (n_points, 3) array of scanner coordinates (mm), or None when the slice
    misses the shape.
    """
    sec = shape.section(z_anat_mm)
    if sec is None:
        return None
    cx, cy, a, b = sec
    if a < 0.5 or b < 0.5:
        return None
    t = np.linspace(0, 2 * math.pi, n_points, endpoint=False)
    pts = np.stack([cx + a * np.cos(t), cy + b * np.sin(t), np.full_like(t, z_anat_mm)], -1)
    return pose.to_scanner(pts)


@dataclass(frozen=True)
class Grid:
    """A regular image grid in scanner coordinates (axis-aligned, LPS).

    Attributes
    ----------
    shape : tuple of int
        (nz, ny, nx) voxels.
    spacing_mm : tuple of float
        (dz, dy, dx) voxel size (mm).
    origin_mm : tuple of float
        (x, y, z) centre of voxel [0, 0, 0] (mm).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]

    @property
    def voxel_ml(self) -> float:
        dz, dy, dx = self.spacing_mm
        return dz * dy * dx / 1000.0

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along z, y, x (mm)."""
        nz, ny, nx = self.shape
        dz, dy, dx = self.spacing_mm
        ox, oy, oz = self.origin_mm
        return oz + dz * np.arange(nz), oy + dy * np.arange(ny), ox + dx * np.arange(nx)

    def points_mm(self) -> np.ndarray:
        """(nz, ny, nx, 3) voxel centres as (x, y, z)."""
        z, y, x = self.axes_mm()
        zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
        return np.stack([xx, yy, zz], -1)

    @staticmethod
    def centred(
        shape: tuple[int, int, int], spacing_mm: tuple[float, float, float], centre_mm: tuple[float, float, float]
    ) -> Grid:
        """A grid whose geometric centre is ``centre_mm`` (x, y, z)."""
        nz, ny, nx = shape
        dz, dy, dx = spacing_mm
        cx, cy, cz = centre_mm
        origin = (cx - dx * (nx - 1) / 2, cy - dy * (ny - 1) / 2, cz - dz * (nz - 1) / 2)
        return Grid(shape, spacing_mm, origin)
