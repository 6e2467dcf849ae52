"""Read one de-identified study folder: the NM reconstruction, the PET, the CT (HU), RTSTRUCT and SEG.

The listener writes a stable study as ``<study_dir>/<series_key>/<sop_key>.dcm``;
:func:`load_study` accepts any depth (``rglob("*.dcm")``). Objects are sorted by SOP
class (:mod:`rntflow.dicomio.sop`); the NM reconstruction is chosen by
:func:`rntflow.dicomio.nm.choose_nm`, the PET series by :func:`rntflow.dicomio.pet.build_pet`,
the CT built by :func:`rntflow.dicomio.ct.build_ct`.

Robustness: one unreadable or unexpected file never fails a study; it is listed in
:attr:`LoadedStudy.unused` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import UID

from rntflow.core.errors import DicomInputError
from rntflow.dicomio.ct import build_ct
from rntflow.dicomio.dicomfile import DicomFile, read_header, read_whole
from rntflow.dicomio.nm import choose_nm
from rntflow.dicomio.pet import ENHANCED_PET_SOP_CLASSES, PET_SOP_CLASSES, PetSeries, build_pet
from rntflow.dicomio.sop import (
    CT_SOP_CLASSES,
    ENHANCED_CT_SOP_CLASSES,
    NM_SOP_CLASSES,
    RTSTRUCT_SOP_CLASSES,
    SEG_SOP_CLASSES,
)
from rntflow.dicomio.values import text


@dataclass
class LoadedStudy:
    """What one study folder holds, ready for the flows.

    Attributes
    ----------
    study_dir : Path
        The folder read.
    nm : pydicom.Dataset or None
        The NM reconstructed tomo (multi-frame, ImageType ``RECON TOMO``), pixel data
        loaded (read it with :func:`rntflow.harmonization.headers.nm_to_image`).
    ct : SimpleITK.Image or None
        The CT volume, float32 HU; spacing/origin/direction from the slices (LPS, mm).
        Its FrameOfReferenceUID is also stored as image metadata ``0020|0052``.
    ct_frame_of_reference_uid : str or None
    rtstructs : list of pydicom.Dataset
        Every RT Structure Set in the study (contours not yet rasterised).
    segs : list of pydicom.Dataset
        Every DICOM Segmentation in the study.
    unused : list of str
        ``"<file relative to study_dir>: <reason>"`` for every file not used (unreadable,
        other SOP class, other NM object, other CT series, bad slice ...).
    n_files : int
        Number of ``*.dcm`` files found.
    ct_series_uid : str or None
        SeriesInstanceUID of the CT used.
    study_instance_uid : str or None
        StudyInstanceUID of the first object read (the listener writes one study per folder).
    pet : PetSeries or None
        The PET series (PET Image Storage, one file per slice) with the most slices, its
        values float64 after each slice's RescaleSlope/Intercept (read it in Bq/mL at
        acquisition start with :func:`rntflow.harmonization.pet_headers.pet_at_acquisition_start`).
        Other PET series are listed in ``unused``.
    """

    study_dir: Path
    nm: Dataset | None = None
    ct: sitk.Image | None = None
    ct_frame_of_reference_uid: str | None = None
    rtstructs: list[Dataset] = field(default_factory=list)
    segs: list[Dataset] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    n_files: int = 0
    ct_series_uid: str | None = None
    study_instance_uid: str | None = None
    pet: PetSeries | None = None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:  # pragma: no cover - rglob yields paths under root
        return str(path)


def load_study(study_dir: str | Path) -> LoadedStudy:
    """Read a study folder into the objects the flows use.

    Parameters
    ----------
    study_dir : str or Path
        A study folder (``<series_key>/<sop_key>.dcm`` below it; any depth).

    Returns
    -------
    LoadedStudy
        The NM reconstruction, the PET series, the CT (float32 HU), every RTSTRUCT and
        SEG, and the files not used with the reason.

    Raises
    ------
    DicomInputError
        When ``study_dir`` is not a folder, or holds no usable object (no NM
        reconstruction, no PET, no CT, no RTSTRUCT and no SEG).

    Notes
    -----
    * Headers are read with large elements deferred (pixel data is decoded only for the
      CT series used); the NM, RTSTRUCT and SEG datasets returned are read whole, so they
      do not depend on the files afterwards.
    * NM: see :func:`rntflow.dicomio.nm.choose_nm`.
    * PET: see :func:`rntflow.dicomio.pet.build_pet` (largest series; an unusable one is
      listed in ``unused`` with the reason and the next largest is tried).
    * CT: see :func:`rntflow.dicomio.ct.build_ct` (largest series; irregular slice
      spacing or a gantry tilt make it unusable: ``ct`` is ``None``, the reason in ``unused``).
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise DicomInputError(f"{root}: study folder not found")
    paths = sorted(root.rglob("*.dcm"))
    study = LoadedStudy(study_dir=root, n_files=len(paths))
    files = _read_headers(paths, root, study)

    nm_files, ct_files, pet_files = [], [], []
    for f in files:
        sop_class = str(f.ds.SOPClassUID)
        if sop_class in NM_SOP_CLASSES:
            nm_files.append(f)
        elif sop_class in CT_SOP_CLASSES:
            ct_files.append(f)
        elif sop_class in PET_SOP_CLASSES:
            pet_files.append(f)
        elif sop_class in RTSTRUCT_SOP_CLASSES or sop_class in SEG_SOP_CLASSES:
            try:
                ds = read_whole(f)
            except DicomInputError as exc:
                study.unused.append(f"{f.rel}: {exc}")
                continue
            (study.rtstructs if sop_class in RTSTRUCT_SOP_CLASSES else study.segs).append(ds)
        elif sop_class in ENHANCED_CT_SOP_CLASSES:
            study.unused.append(f"{f.rel}: enhanced (multi-frame) CT is not supported")
        elif sop_class in ENHANCED_PET_SOP_CLASSES:
            study.unused.append(f"{f.rel}: enhanced (multi-frame) PET is not supported")
        else:
            study.unused.append(
                f"{f.rel}: SOP class not used ({UID(sop_class).name}, modality {text(f.ds, 'Modality')})"
            )

    study.nm, nm_unused = choose_nm(nm_files)
    study.unused += nm_unused
    study.pet, pet_unused = build_pet(pet_files)
    study.unused += pet_unused
    ct, ct_unused = build_ct(ct_files)
    study.unused += ct_unused
    if ct is not None:
        study.ct, study.ct_series_uid, study.ct_frame_of_reference_uid = (
            ct.image,
            ct.series_uid,
            ct.frame_of_reference_uid,
        )

    if study.nm is None and study.pet is None and study.ct is None and not study.rtstructs and not study.segs:
        shown = "; ".join(study.unused[:5]) + (" ..." if len(study.unused) > 5 else "")
        raise DicomInputError(
            f"{root}: no usable objects (no NM reconstruction, PET, CT, RTSTRUCT or SEG among "
            f"{study.n_files} .dcm files)" + (f": {shown}" if shown else "")
        )
    return study


def _read_headers(paths: list[Path], root: Path, study: LoadedStudy) -> list[DicomFile]:
    """Headers of the readable DICOM files with a SOP class, one per SOPInstanceUID."""
    files: list[DicomFile] = []
    seen_sop: dict[str, str] = {}
    for path in paths:
        rel = _rel(path, root)
        if not path.is_file():
            study.unused.append(f"{rel}: not a regular file")
            continue
        try:
            f = read_header(path, rel)
        except DicomInputError as exc:
            study.unused.append(f"{rel}: {exc}")
            continue
        if text(f.ds, "SOPClassUID") is None:
            study.unused.append(f"{rel}: DICOM without SOPClassUID")
            continue
        sop_uid = text(f.ds, "SOPInstanceUID")
        if sop_uid is not None and sop_uid in seen_sop:
            study.unused.append(f"{rel}: duplicate of {seen_sop[sop_uid]} (same SOPInstanceUID)")
            continue
        if sop_uid is not None:
            seen_sop[sop_uid] = rel
        if study.study_instance_uid is None:
            study.study_instance_uid = text(f.ds, "StudyInstanceUID")
        files.append(f)
    return files
