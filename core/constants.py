"""Physical constants and reference tissue data, each with its source.

Nuclide data are not here: they come from data packages (:mod:`rntflow.physics.nuclides`).
"""

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
