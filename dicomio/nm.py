"""Choose the NM reconstruction among a study's NM objects."""

from __future__ import annotations

from pydicom.dataset import Dataset

from rntflow.core.errors import DicomInputError
from rntflow.dicomio.dicomfile import DicomFile, read_whole
from rntflow.dicomio.values import image_type, n_frames


def choose_nm(nm_files: list[DicomFile]) -> tuple[Dataset | None, list[str]]:
    """The NM reconstructed tomo to quantify, read whole, and the NM files not used.

    Parameters
    ----------
    nm_files : list of DicomFile
        The study's NM Image Storage objects, in file order.

    Returns
    -------
    nm : pydicom.Dataset or None
        The ``RECON TOMO`` object: ``EMISSION`` preferred over other RECON TOMO objects,
        then the most frames, then file order; pixel data loaded. ``None`` when there is
        no readable reconstruction.
    unused : list of str
        ``"<file>: <reason>"`` for every other NM file (projections, other
        reconstructions, unreadable ones).
    """
    unused: list[str] = []
    recon = [f for f in nm_files if "RECON TOMO" in image_type(f.ds)]
    for f in nm_files:
        if f not in recon:
            types = "\\".join(image_type(f.ds)) or "none"
            unused.append(f"{f.rel}: NM object is not a reconstruction (ImageType {types})")
    recon.sort(key=lambda f: ("EMISSION" not in image_type(f.ds), -n_frames(f.ds)))
    chosen: Dataset | None = None
    while recon and chosen is None:
        f = recon.pop(0)
        try:
            chosen = read_whole(f)
        except DicomInputError as exc:
            unused.append(f"{f.rel}: {exc}")
    for f in recon:
        unused.append(f"{f.rel}: another NM RECON TOMO object ({n_frames(f.ds)} frames) than the one used")
    return chosen, unused
