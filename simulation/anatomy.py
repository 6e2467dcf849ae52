"""Voxel phantoms of adult male patients with varied anatomy.

Organs are ellipsoids sized after ICRP Publication 89 reference masses (kidneys ~150 mL
each, liver ~1.7 L, spleen ~0.18 L, parotids ~22 mL, submandibular glands ~6 mL), with a
per-subject log-normal scale (CV ~8%) and a few mm of positional jitter. Vertebral bodies
(elliptic cylinders) carry the red marrow VOI; 1-5 spherical soft-tissue lesions (lymph
nodes) of 0.9-34 mL are placed where they touch no organ.

The anatomy frame is LPS with kidneys around z = 0 and parotids around z = +375 mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rntflow.core.constants import TISSUE_DENSITY_G_PER_ML, TISSUE_HU
from rntflow.simulation.geometry import Ellipsoid, EllipticCylinder, Grid, Shape, any_inside, any_inside_xyz


@dataclass(frozen=True)
class Compartment:
    """A region of uniform activity concentration and tissue.

    Attributes
    ----------
    voi : str
        TG-263 name (``Kidney_L`` ...) or ``Lesion_<n>``; ``Remainder`` for the rest of the body.
    shapes : tuple of Shape
        The union of these shapes (minus higher-priority compartments) is the region.
    tissue : str
        Key into the density and HU tables.
    """

    voi: str
    shapes: tuple[Shape, ...]
    tissue: str

    @property
    def volume_ml(self) -> float:
        """Analytic volume (mm3 / 1000). Shapes never overlap each other by construction."""
        return sum(s.volume_ml for s in self.shapes)

    @property
    def density_g_per_ml(self) -> float:
        return TISSUE_DENSITY_G_PER_ML[self.tissue]

    @property
    def mass_g(self) -> float:
        return self.volume_ml * self.density_g_per_ml


@dataclass(frozen=True)
class Anatomy:
    """One subject's anatomy: the body outline and its compartments.

    ``compartments`` are in label order: label ``i + 2`` in a label map is compartment
    ``i``; label 1 is the remainder of the body and 0 is air.
    """

    body: tuple[Shape, ...]
    compartments: tuple[Compartment, ...]
    lesion_diameters_mm: tuple[float, ...] = field(default=())

    def compartment(self, voi: str) -> Compartment:
        for c in self.compartments:
            if c.voi == voi:
                return c
        raise KeyError(voi)

    @property
    def body_volume_ml(self) -> float:
        # torso, neck and head pieces are built not to overlap (neck spans the gap)
        return sum(s.volume_ml for s in self.body)

    @property
    def remainder_volume_ml(self) -> float:
        return self.body_volume_ml - sum(c.volume_ml for c in self.compartments)

    def label_map(self, pts_mm: np.ndarray | Grid) -> np.ndarray:
        """Labels (uint8): 0 air, 1 remainder, i+2 compartment i.

        Parameters
        ----------
        pts_mm : ndarray or Grid
            Anatomy-frame points (..., 3), or a grid: labels at its voxel centres
            (nz, ny, nx), the same as at ``grid.points_mm()`` but computed per axis and,
            for each compartment, only inside its bounding box (:meth:`label_grid`).
        """
        if isinstance(pts_mm, Grid):
            return self.label_grid(pts_mm)
        labels = any_inside(self.body, pts_mm).astype(np.uint8)
        for i, comp in enumerate(self.compartments):
            lo = np.min([s.bounds_mm()[0] for s in comp.shapes], axis=0)
            hi = np.max([s.bounds_mm()[1] for s in comp.shapes], axis=0)
            sel = np.all((pts_mm >= lo) & (pts_mm <= hi), axis=-1)
            if not sel.any():
                continue
            sub = pts_mm[sel]
            hit = any_inside(comp.shapes, sub)
            idx = np.flatnonzero(sel.reshape(-1))[hit]
            labels.reshape(-1)[idx] = i + 2
        return labels

    def label_grid(self, grid: Grid) -> np.ndarray:
        """Labels (uint8, (nz, ny, nx)) at the voxel centres of ``grid`` (see :meth:`label_map`)."""
        z, y, x = grid.axes_mm()
        labels = any_inside_xyz(self.body, x[None, None, :], y[None, :, None], z[:, None, None]).astype(np.uint8)
        for i, comp in enumerate(self.compartments):
            lo = np.min([s.bounds_mm()[0] for s in comp.shapes], axis=0)
            hi = np.max([s.bounds_mm()[1] for s in comp.shapes], axis=0)
            box = tuple(_span(axis, lo[k], hi[k]) for axis, k in ((z, 2), (y, 1), (x, 0)))
            if any(b is None for b in box):
                continue
            zs, ys, xs = box
            hit = any_inside_xyz(comp.shapes, x[None, None, xs], y[None, ys, None], z[zs, None, None])
            labels[zs, ys, xs][hit] = i + 2
        return labels

    def hu_lut(self) -> np.ndarray:
        """HU per label (index = label)."""
        lut = [TISSUE_HU["air"], TISSUE_HU["soft_tissue"]]
        lut += [TISSUE_HU["lung"] if c.tissue == "Lung" else TISSUE_HU[c.tissue] for c in self.compartments]
        return np.asarray(lut, dtype=np.float32)


def _span(axis_mm: np.ndarray, lo_mm: float, hi_mm: float) -> slice | None:
    """The indices of an increasing axis with ``lo <= value <= hi`` as a slice (None: none)."""
    idx = np.flatnonzero((axis_mm >= lo_mm) & (axis_mm <= hi_mm))
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else None


#: Nominal organ geometry: (voi, tissue, centre mm, semi-axes mm).
_NOMINAL = (
    ("Kidney_L", "Kidney", (75.0, 40.0, 0.0), (28.0, 24.0, 52.0)),
    ("Kidney_R", "Kidney", (-75.0, 40.0, -25.0), (28.0, 24.0, 52.0)),
    ("Liver", "Liver", (-70.0, -5.0, 105.0), (95.0, 65.0, 62.0)),
    ("Spleen", "Spleen", (95.0, 45.0, 115.0), (35.0, 25.0, 50.0)),
    ("Parotid_L", "Salivary", (40.0, 10.0, 375.0), (12.0, 20.0, 22.0)),
    ("Parotid_R", "Salivary", (-40.0, 10.0, 375.0), (12.0, 20.0, 22.0)),
    ("Glnd_Submand_L", "Salivary", (30.0, -25.0, 340.0), (10.0, 12.0, 11.0)),
    ("Glnd_Submand_R", "Salivary", (-30.0, -25.0, 340.0), (10.0, 12.0, 11.0)),
)
_LUNG_CENTRES = ((75.0, 5.0, 255.0), (-75.0, 5.0, 255.0))
_LUNG_SEMI = (55.0, 60.0, 72.0)


def _body_shapes(scale_xy: float) -> tuple[Shape, ...]:
    torso = EllipticCylinder((0.0, 0.0), (170.0 * scale_xy, 110.0 * scale_xy), -130.0, 330.0)
    neck = EllipticCylinder((0.0, 0.0), (58.0, 58.0), 330.0, 352.0)
    head = EllipticCylinder((0.0, 5.0), (75.0, 90.0), 352.0, 420.0)
    return (torso, neck, head)


def _vertebrae(rng: np.random.Generator) -> tuple[Shape, ...]:
    semi = (20.0 * rng.lognormal(0, 0.05), 16.0 * rng.lognormal(0, 0.05))
    out = []
    for z0 in np.arange(-80.0, 300.0, 30.0):
        out.append(EllipticCylinder((0.0, 72.0), semi, float(z0), float(z0 + 24.0)))
    return tuple(out)


def sample_anatomy(rng: np.random.Generator, n_lesions: int) -> Anatomy:
    """Draw one subject's anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the trial seed decides everything).
    n_lesions : int
        Number of lesions, 1-5.

    Returns
    -------
    Anatomy
        Organs that lie inside the body and never overlap, and ``n_lesions`` lesions.
    """
    for _attempt in range(200):
        body = _body_shapes(float(rng.uniform(0.93, 1.07)))
        comps: list[Compartment] = []
        for voi, tissue, centre, semi in _NOMINAL:
            s = float(rng.lognormal(0.0, 0.08))
            c = tuple(float(v + rng.normal(0, 3.0)) for v in centre)
            comps.append(Compartment(voi, (Ellipsoid(c, tuple(a * s for a in semi)),), tissue))
        ls = float(rng.lognormal(0.0, 0.05))
        lungs = tuple(Ellipsoid(c, tuple(a * ls for a in _LUNG_SEMI)) for c in _LUNG_CENTRES)
        comps.append(Compartment("Lungs", lungs, "Lung"))
        comps.append(Compartment("Bone_Marrow", _vertebrae(rng), "Bone_Trabecular"))
        if _valid(body, comps):
            break
    else:  # pragma: no cover - the nominal layout is valid; jitter is small
        raise RuntimeError("could not draw a valid anatomy")
    lesions, diameters = _place_lesions(rng, body, comps, n_lesions)
    return Anatomy(body=body, compartments=tuple(comps + lesions), lesion_diameters_mm=diameters)


def _valid(body: tuple[Shape, ...], comps: list[Compartment], margin_mm: float = 4.0) -> bool:
    """Every organ inside the body and clear of every other organ."""
    for i, comp in enumerate(comps):
        for shape in comp.shapes:
            pts = shape.surface_points()
            if not any_inside(body, pts).all():
                return False
            grown = _grow(pts, shape, margin_mm)
            for j, other in enumerate(comps):
                if j != i and any_inside(other.shapes, grown).any():
                    return False
    return True


def _grow(pts: np.ndarray, shape: Shape, margin_mm: float) -> np.ndarray:
    centre = np.asarray(shape.center_mm if isinstance(shape, Ellipsoid) else (*shape.center_xy_mm, 0.0))
    d = pts - centre
    if isinstance(shape, EllipticCylinder):
        d[..., 2] = 0.0
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    return pts + margin_mm * d / np.maximum(n, 1e-9)


def _place_lesions(
    rng: np.random.Generator, body: tuple[Shape, ...], comps: list[Compartment], n: int
) -> tuple[list[Compartment], tuple[float, ...]]:
    lesions: list[Compartment] = []
    diameters: list[float] = []
    # lymph-node stations: para-aortic, iliac, mediastinal, supraclavicular (anatomy frame)
    region_lo = np.array([-120.0, -70.0, -70.0])
    region_hi = np.array([120.0, 60.0, 310.0])
    occupied = list(comps)
    while len(lesions) < n:
        d_mm = float(rng.uniform(12.0, 40.0)) if len(lesions) else float(rng.uniform(28.0, 40.0))
        r = d_mm / 2
        for _ in range(500):
            c = rng.uniform(region_lo, region_hi)
            sph = Ellipsoid(tuple(float(v) for v in c), (r, r, r))
            pts = sph.surface_points(200)
            if not any_inside(body, _grow(pts, sph, 15.0)).all():
                continue
            if any(any_inside(o.shapes, _grow(pts, sph, 6.0)).any() for o in occupied):
                continue
            comp = Compartment(f"Lesion_{len(lesions) + 1}", (sph,), "Lesion")
            lesions.append(comp)
            occupied.append(comp)
            diameters.append(d_mm)
            break
        else:  # pragma: no cover
            raise RuntimeError("no room for a lesion")
    return lesions, tuple(diameters)


def anatomy_grid(spacing_mm: float = 2.4) -> Grid:
    """The fine anatomy-frame grid on which activity is laid out before blurring."""

    def even(extent_mm: float) -> int:
        n = int(math.ceil(extent_mm / spacing_mm)) + 1
        return n + (n % 2)

    nx, ny, nz = even(380.0), even(260.0), even(560.0)
    return Grid.centred((nz, ny, nx), (spacing_mm,) * 3, (0.0, 0.0, 140.0))
