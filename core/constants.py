"""Physical constants and reference tissue data, each with its source.

Nuclide data are not here: they come from data packages (:mod:`rntflow.physics.nuclides`).
"""

from dataclasses import dataclass

#: Joules per MeV (CODATA 2018: 1 eV = 1.602176634e-19 J exactly).
J_PER_MEV = 1.602176634e-13
#: Decays in one MBq·h (1e6 Bq x 3600 s), by definition.
DECAYS_PER_MBQ_H = 3.6e9
#: Seconds per hour.
S_PER_H = 3600.0

#: The one default density (g/cm3) of every dose engine (voxel kernels, organ and lesion
#: self-dose, LED without CT, VOI masses without CT): soft tissue, ICRU Report 44 (1989,
#: "Tissue Substitutes in Radiation Dosimetry and Measurement"), whose adult soft tissues
#: span 1.04-1.06 g/cm3 by composition. 1.04 g/cm3 is also the soft tissue of the Monte
#: Carlo voxel S-value tables of Lanconelli et al 2012 (Phys Med Biol 57:517) that the
#: kernels are compared with, so kernel and reference are like for like.
SOFT_TISSUE_DENSITY_G_PER_ML = 1.04

#: Mass densities (g/cm3) of reference adult tissues, ICRP Publication 89 (2002), Table 2.4 /
#: ICRU Report 46. Used to turn VOI volumes into masses where CT is not used. Soft tissue
#: (and lesions, which the sphere model treats as soft tissue) take the one default above.
TISSUE_DENSITY_G_PER_ML = {
    "soft_tissue": SOFT_TISSUE_DENSITY_G_PER_ML,
    "Kidney": 1.05,
    "Liver": 1.06,
    "Spleen": 1.06,
    "Salivary": 1.03,  # parotid and submandibular glands
    "Bone_Marrow": 1.03,  # red marrow
    "Lung": 0.26,  # inflated lung (ICRP 89 Table 2.4, 0.26-0.30 g/cm3 in vivo)
    "Lesion": SOFT_TISSUE_DENSITY_G_PER_ML,  # sphere model in soft tissue (OLINDA/EXM's uses 1.00)
    "Bone_Trabecular": 1.18,  # ICRU 46 spongiosa
}

#: HU of reference tissues at 120 kVp (typical CT values; Schneider et al 1996, PMB 41:111).
TISSUE_HU = {
    "air": -1000.0,
    "lung": -800.0,
    "fat": -100.0,
    "soft_tissue": 40.0,
    "Kidney": 30.0,
    "Liver": 55.0,
    "Spleen": 45.0,
    "Salivary": 20.0,
    "Bone_Trabecular": 250.0,
    "Lesion": 35.0,
}

#: TARE dose conversion factors (J/GBq) in the convention the product dose limits of Table 1
#: of de Wit-van der Veen et al, "Current status of clinical dosimetry and personalized
#: radionuclide therapy" (NKI review) were written in, its partition-model equation: 90Y 49.67,
#: 166Ho 15.85 J/GBq (15.87 J/GBq is also in use for QuiremSpheres).
#: The ICRP-107 alternative is computed from the decay data (rntflow.dosimetry.tare).
TARE_PRODUCT_CF_J_PER_GBQ = {
    "Y-90": 49.67,
    "Ho-166": 15.85,
}

#: Reference adult masses by sex (g), ICRP Publication 89 (2002, "Basic anatomical and
#: physiological data for use in radiological protection: reference values"), as used in
#: the ICRP 110 reference computational phantoms (Table 4.1 there): active (red) marrow
#: 1170 g male, 900 g female; whole body 73 kg male, 60 kg female; blood volume 5.3 L male,
#: 3.9 L female. (OLINDA/EXM 1.x's Cristy-Eckerman adult female phantom has 1050 g of red
#: marrow; pass a mass explicitly to use another reference.) Used by the blood-based
#: red-marrow dosimetry (rntflow.dosimetry.marrow) and the simulator's truth of it.
RED_MARROW_MASS_G = {"M": 1170.0, "F": 900.0}
BODY_MASS_G = {"M": 73000.0, "F": 60000.0}
BLOOD_VOLUME_ML = {"M": 5300.0, "F": 3900.0}

#: S(red marrow <- remainder of body) of 177Lu for the ICRP 89 reference adult male (Gy per
#: MBq h): no stored published (OLINDA/IDAC) value, so the documented approximation of
#: rntflow.dosimetry.marrow.s_rm_from_remainder_gy_per_mbq_h: photons only (the remainder's
#: electrons stay where they are emitted), the photon energy absorbed per decay in a
#: uniformly loaded unit-density body (self-absorbed fraction 0.43 of a 73 kg soft-tissue
#: sphere, Berger's mu_en point-kernel approximation) spread over the body mass. A sphere
#: absorbs more than a body-shaped phantom (whole-body photon fractions ~0.3), so this errs
#: high by about a third on a term that is ~5-10 % of the 177Lu marrow dose. The simulator's
#: truth uses this number; tests/dosimetry/test_marrow.py keeps it equal to the computation.
S_RM_FROM_RB_LU177_GY_PER_MBQ_H = 1.194e-7


@dataclass(frozen=True)
class ProductLimits:
    """Dose limits and targets of one microsphere product, Table 1 of de Wit-van der Veen,
    de Vries-Huizing and Stokkel, "Current status of clinical dosimetry and personalized radionuclide
    therapy"); ``None`` where Table 1 says "not mentioned".

    Attributes
    ----------
    nuclide : str
    parenchyma_limit_gy : float
        Normal liver parenchyma limit (Gy).
    parenchyma_pretreated_limit_gy : float or None
        Limit for pre-treated / compromised liver (Gy); None: the plain limit applies.
    lung_limit_gy : float
        Single-treatment lung limit (Gy).
    tumour_target_gy : tuple of float
        Tumour (HCC/mCRC) target range (Gy), Table 1 "Target dose, tumour".
    ablative_target_min_gy : float or None
        Minimum tumour dose of ablative TARE (radiation segmentectomy), Table 1
        "Ablative TARE" (Gy); None for QuiremSpheres ("not mentioned").
    """

    nuclide: str
    parenchyma_limit_gy: float
    parenchyma_pretreated_limit_gy: float | None
    lung_limit_gy: float
    tumour_target_gy: tuple[float, float]
    ablative_target_min_gy: float | None


#: Seed 000 Table 1. Table 1 gives no lung-shunt cap independent of the lung dose and no
#: cumulative lung limit: both are trial settings of :func:`rntflow.dosimetry.tare.plan_partition`
#: (``max_lung_shunt_fraction``, ``lung_cumulative_limit_gy``), off unless given.
PRODUCTS: dict[str, ProductLimits] = {
    "SIR-Spheres": ProductLimits("Y-90", 40.0, 30.0, 30.0, (100.0, 120.0), 150.0),
    "TheraSphere": ProductLimits("Y-90", 120.0, None, 30.0, (200.0, 250.0), 400.0),
    "QuiremSpheres": ProductLimits("Ho-166", 60.0, None, 30.0, (100.0, 150.0), None),
}


#: CT number to mass density: (HU, density g/cm3) knots of the piecewise-linear calibration,
#: Schneider, Bortfeld & Schlegel 1996 (Phys Med Biol 41:111), lung from ICRP 89
#: (rntflow.dosimetry.density.hu_to_density_g_per_ml; the simulator's CT numbers use it too).
HU_DENSITY_CALIBRATION: tuple[tuple[float, float], ...] = (
    (-1000.0, 0.00121),
    (-800.0, 0.26),
    (0.0, 1.00),
    (100.0, 1.10),
    (1500.0, 1.92),
)
