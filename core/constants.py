"""Physical constants and reference tissue data, each with its source.

Nuclide data are not here: they come from data packages (:mod:`rntflow.physics.nuclides`).
"""

#: Joules per MeV (CODATA 2018: 1 eV = 1.602176634e-19 J exactly).
J_PER_MEV = 1.602176634e-13
#: Decays in one MBq·h (1e6 Bq x 3600 s), by definition.
DECAYS_PER_MBQ_H = 3.6e9
#: Seconds per hour.
S_PER_H = 3600.0

#: Mass densities (g/cm3) of reference adult tissues, ICRP Publication 89 (2002), Table 2.4 /
#: ICRU Report 46. Used to turn VOI volumes into masses where CT is not used.
TISSUE_DENSITY_G_PER_ML = {
    "soft_tissue": 1.03,
    "Kidney": 1.05,
    "Liver": 1.06,
    "Spleen": 1.06,
    "Salivary": 1.03,   # parotid and submandibular glands
    "Bone_Marrow": 1.03,  # red marrow
    "Lung": 0.26,       # inflated lung (ICRP 89 Table 2.4, 0.26-0.30 g/cm3 in vivo)
    "Lesion": 1.00,     # unit-density sphere model (OLINDA/EXM 2.0 sphere model)
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
