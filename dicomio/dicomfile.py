"""One ``.dcm`` file of a study folder: its path, its name in reports, its header."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from rntflow.core.errors import DicomInputError

#: Elements larger than this are read from disk only when accessed (large pixel data), so
#: reading the headers of a whole study stays cheap.
DEFER_SIZE = "256 KB"


@dataclass
class DicomFile:
    """A DICOM file read with large elements deferred.

    Attributes
    ----------
    path : Path
        The file.
    rel : str
        Its path relative to the study folder (how reports name it).
    ds : pydicom.Dataset
        Its dataset; elements over :data:`DEFER_SIZE` are read on access.
    """

    path: Path
    rel: str
    ds: Dataset


def read_header(path: Path, rel: str) -> DicomFile:
    """Read ``path`` with large elements deferred.

    Raises
    ------
    DicomInputError
        When the file is not readable DICOM (the message says why).
    """
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except Exception as exc:  # any parse failure: this file is unusable, the study is not
        raise DicomInputError(f"not readable DICOM ({type(exc).__name__}: {exc})") from exc
    return DicomFile(path, rel, ds)


def read_whole(f: DicomFile) -> Dataset:
    """Re-read a file with nothing deferred (the dataset no longer needs the file).

    Raises
    ------
    DicomInputError
        When the file (or its pixel data) is not readable.
    """
    try:
        ds = pydicom.dcmread(f.path)
        if "PixelData" in ds:
            _ = ds.PixelData
    except Exception as exc:
        raise DicomInputError(f"not readable DICOM ({type(exc).__name__}: {exc})") from exc
    return ds
