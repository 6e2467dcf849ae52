"""The SOP classes the study reader sorts objects by (PS3.6 Annex A, "Registry of DICOM
Unique Identifiers"), from :mod:`pydicom.uid` where pydicom names them."""

from __future__ import annotations

from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    NuclearMedicineImageStorage,
    RTStructureSetStorage,
    SegmentationStorage,
)

#: Nuclear Medicine Image Storage (Retired), PS3.6; pydicom 3.0 has no constant for it.
NuclearMedicineImageStorageRetired = UID("1.2.840.10008.5.1.4.1.1.5")
#: Label Map Segmentation Storage (PS3.6, 2024); pydicom 3.0 has no constant for it.
#: highdicom lists it in ``highdicom.seg.SOP_CLASS_UIDS`` (tests check the two agree), but
#: importing highdicom costs ~1.6 s, paid only when a study holds a SEG.
LabelMapSegmentationStorage = UID("1.2.840.10008.5.1.4.1.1.66.7")

#: NM objects (current and retired SOP class).
NM_SOP_CLASSES = frozenset({NuclearMedicineImageStorage, NuclearMedicineImageStorageRetired})
#: Single-frame CT slices (the only CT the reader stacks).
CT_SOP_CLASSES = frozenset({CTImageStorage})
#: Multi-frame CT: recognised, reported as not supported.
ENHANCED_CT_SOP_CLASSES = frozenset({EnhancedCTImageStorage})
RTSTRUCT_SOP_CLASSES = frozenset({RTStructureSetStorage})
SEG_SOP_CLASSES = frozenset({SegmentationStorage, LabelMapSegmentationStorage})
