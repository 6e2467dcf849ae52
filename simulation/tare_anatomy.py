"""Anatomy of a radioembolisation (TARE) subject: liver lobes, tumours, perfused territory, lungs.

Anatomy frame LPS (+x patient left, +y posterior, +z superior), in mm, as
:mod:`rntflow.simulation.anatomy`. The liver is two non-overlapping ellipsoids, a right
lobe (~1.3 L) and a left lobe (~0.35 L), 1.4-1.8 L together; the perfused territory is the
right lobe or the whole liver (both lobes). 1-3 spherical tumours of 35-70 mm diameter lie
inside the perfused territory (>= 6 mm inside its surface, >= 5 mm apart). The lungs are two
ellipsoids (~1.5 L each) whose bases lie 30-40 mm above the liver dome, so that the blurred
liver counts spill little into the lung VOIs. Nothing else holds activity.

Masses follow the TARE contract: liver and tumours 1.04 g/mL
(:data:`rntflow.core.constants.SOFT_TISSUE_DENSITY_G_PER_ML`), lungs 0.30 g/mL. The CT
numbers are chosen so that the pipeline's HU-to-density calibration
(:data:`rntflow.core.constants.HU_DENSITY_CALIBRATION`, as the pipeline reads it) maps them back to exactly those
densities (40 HU -> 1.04 g/mL; -756.8 HU -> 0.30 g/mL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rntflow.core.constants import HU_DENSITY_CALIBRATION, SOFT_TISSUE_DENSITY_G_PER_ML
from rntflow.simulation.anatomy import Anatomy, Compartment
from rntflow.simulation.geometry import Ellipsoid, EllipticCylinder, any_inside

LIVER_DENSITY_G_PER_ML = SOFT_TISSUE_DENSITY_G_PER_ML
LUNG_DENSITY_G_PER_ML = 0.30
#: Perfused territories a subject can have.
TERRITORIES = ("right_lobe", "whole_liver")


def hu_for_density(density_g_per_ml: float) -> float:
    """The CT number that the default HU-to-density calibration maps to ``density_g_per_ml``
    (inverse of its piecewise-linear curve)."""
    cal = np.asarray(HU_DENSITY_CALIBRATION, dtype=float)
    return float(np.interp(density_g_per_ml, cal[:, 1], cal[:, 0]))


SOFT_TISSUE_HU = hu_for_density(LIVER_DENSITY_G_PER_ML)  # 40 HU
LUNG_HU = hu_for_density(LUNG_DENSITY_G_PER_ML)  # -756.8 HU


@dataclass(frozen=True)
class TareAnatomy:
    """One TARE subject's geometry.

    Attributes
    ----------
    body : EllipticCylinder
        Body outline (trunk).
    right_lobe, left_lobe : Ellipsoid
        The liver lobes (tumours included).
    lungs : tuple of Ellipsoid
        Right and left lung.
    territory : {"right_lobe", "whole_liver"}
        The perfused territory (the injection's lobe(s)).
    tumours : tuple of Ellipsoid
        ``Lesion_1`` ... in order, all inside the perfused territory.
    tumour_lobes : tuple of str
        ``"right"`` or ``"left"`` per tumour.
    """

    body: EllipticCylinder
    right_lobe: Ellipsoid
    left_lobe: Ellipsoid
    lungs: tuple[Ellipsoid, Ellipsoid]
    territory: str
    tumours: tuple[Ellipsoid, ...]
    tumour_lobes: tuple[str, ...]

    @property
    def perfused_lobes(self) -> tuple[Ellipsoid, ...]:
        return (self.right_lobe,) if self.territory == "right_lobe" else (self.right_lobe, self.left_lobe)

    @property
    def lesion_names(self) -> list[str]:
        return [f"Lesion_{i + 1}" for i in range(len(self.tumours))]

    def volumes_ml(self) -> dict[str, float]:
        """Analytic volumes (mL) of the contract's VOIs and of each lobe's normal part."""
        les = {n: t.volume_ml for n, t in zip(self.lesion_names, self.tumours)}
        perfused = sum(s.volume_ml for s in self.perfused_lobes)
        out = {
            "Liver": self.right_lobe.volume_ml + self.left_lobe.volume_ml,
            "Liver_Perfused": perfused,
            "Liver_Normal": perfused - sum(les.values()),
            "Lungs": sum(s.volume_ml for s in self.lungs),
            **les,
        }
        for lobe, shape in (("right", self.right_lobe), ("left", self.left_lobe)):
            inside = sum(t.volume_ml for t, tl in zip(self.tumours, self.tumour_lobes) if tl == lobe)
            out[f"normal_{lobe}_lobe"] = shape.volume_ml - inside
        return out

    def masses_kg(self) -> dict[str, float]:
        """Truth masses (kg): analytic volume x density (liver, tumours 1.04; lungs 0.30 g/mL)."""
        vol = self.volumes_ml()
        out = {}
        for voi in ("Liver", "Liver_Perfused", "Liver_Normal", "Lungs", *self.lesion_names):
            rho = LUNG_DENSITY_G_PER_ML if voi == "Lungs" else LIVER_DENSITY_G_PER_ML
            out[voi] = vol[voi] * rho / 1000.0
        return out

    def label_anatomy(self) -> Anatomy:
        """Compartments in label order: 2 right lobe, 3 left lobe, 4 lungs, 5.. tumours
        (tumours last so that they overwrite the lobe they sit in)."""
        comps = [
            Compartment("Liver_RightLobe", (self.right_lobe,), "soft_tissue"),
            Compartment("Liver_LeftLobe", (self.left_lobe,), "soft_tissue"),
            Compartment("Lungs", self.lungs, "Lung"),
        ]
        comps += [Compartment(n, (t,), "Lesion") for n, t in zip(self.lesion_names, self.tumours)]
        return Anatomy(body=(self.body,), compartments=tuple(comps))

    def hu_lut(self) -> np.ndarray:
        """HU per label: air, body, lobes, lungs, tumours."""
        lut = [-1000.0, SOFT_TISSUE_HU, SOFT_TISSUE_HU, SOFT_TISSUE_HU, LUNG_HU]
        lut += [SOFT_TISSUE_HU] * len(self.tumours)
        return np.asarray(lut, dtype=np.float32)

    def rois(self) -> list[tuple[str, str, Compartment]]:
        """RTSTRUCT ROIs of the contract: Liver, Liver_Perfused, Lesion_n, Lungs."""
        out = [
            ("Liver", "ORGAN", Compartment("Liver", (self.right_lobe, self.left_lobe), "soft_tissue")),
            ("Liver_Perfused", "TREATED_VOLUME", Compartment("Liver_Perfused", self.perfused_lobes, "soft_tissue")),
        ]
        out += [(n, "GTV", Compartment(n, (t,), "Lesion")) for n, t in zip(self.lesion_names, self.tumours)]
        out.append(("Lungs", "ORGAN", Compartment("Lungs", self.lungs, "Lung")))
        return out


def _inside_with_margin(sphere: Ellipsoid, container: Ellipsoid, margin_mm: float) -> bool:
    r = sphere.semi_axes_mm[0] + margin_mm
    grown = Ellipsoid(sphere.center_mm, (r, r, r))
    return bool(any_inside((container,), grown.surface_points(300)).all())


def _apart(sphere: Ellipsoid, others: list[Ellipsoid], gap_mm: float) -> bool:
    c, r = np.asarray(sphere.center_mm), sphere.semi_axes_mm[0]
    return all(np.linalg.norm(c - np.asarray(o.center_mm)) >= r + o.semi_axes_mm[0] + gap_mm for o in others)


def sample_tare_anatomy(
    rng: np.random.Generator,
    territory: str,
    n_tumours: int,
    max_diameter_mm: float = 70.0,
) -> TareAnatomy:
    """Draw one TARE subject's anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        The TARE arm's generator.
    territory : {"right_lobe", "whole_liver"}
    n_tumours : int
        1-3 tumours of 35-``max_diameter_mm`` mm; with a whole-liver territory the last
        tumour of two or more goes into the left lobe.
    """
    if territory not in TERRITORIES:
        raise ValueError(f"territory={territory!r}: must be one of {TERRITORIES}")
    s = float(np.clip(rng.lognormal(0.0, 0.03), 0.95, 1.03))  # liver 1.41-1.80 L
    right = Ellipsoid((-62.0 + rng.normal(0, 3), -5.0 + rng.normal(0, 3), 60.0), (80.0 * s, 66.0 * s, 60.0 * s))
    left_semi = (46.0 * s, 42.0 * s, 40.0 * s)
    left_x = right.center_mm[0] + right.semi_axes_mm[0] + left_semi[0] + 3.0
    left = Ellipsoid((left_x, -20.0, 62.0), left_semi)
    dome = max(right.center_mm[2] + right.semi_axes_mm[2], left.center_mm[2] + left.semi_axes_mm[2])
    ls = float(rng.lognormal(0.0, 0.04))
    lung_semi = (58.0 * ls, 68.0 * ls, 85.0 * ls)
    z_lung = dome + float(rng.uniform(30.0, 40.0)) + lung_semi[2]
    lungs = (Ellipsoid((-82.0, 10.0, z_lung), lung_semi), Ellipsoid((82.0, 10.0, z_lung), lung_semi))
    body = EllipticCylinder((0.0, 0.0), (172.0, 115.0), -130.0, 380.0)
    tumours: list[Ellipsoid] = []
    lobes: list[str] = []
    for i in range(n_tumours):
        lobe = "left" if (territory == "whole_liver" and n_tumours > 1 and i == n_tumours - 1) else "right"
        container = left if lobe == "left" else right
        for _attempt in range(2000):
            shrink = 1.0 - 0.15 * (_attempt // 400)  # smaller tumours when none fits
            d = float(rng.uniform(35.0, max_diameter_mm)) * shrink
            d = max(d, 35.0)
            c = np.asarray(container.center_mm) + rng.uniform(-1, 1, 3) * np.asarray(container.semi_axes_mm) * 0.6
            sph = Ellipsoid(tuple(float(v) for v in c), (d / 2,) * 3)
            if _inside_with_margin(sph, container, 6.0) and _apart(sph, tumours, 5.0):
                tumours.append(sph)
                lobes.append(lobe)
                break
        else:  # pragma: no cover - the lobes have room for three 35 mm tumours
            raise RuntimeError("simulator: no room for a tumour in the perfused territory")
    return TareAnatomy(body, right, left, lungs, territory, tuple(tumours), tuple(lobes))


def tumour_diameters_mm(anat: TareAnatomy) -> list[float]:
    return [2.0 * t.semi_axes_mm[0] for t in anat.tumours]


def sphere_volume_ml(diameter_mm: float) -> float:
    return math.pi * diameter_mm**3 / 6.0 / 1000.0
