"""Image files: write atomically, read back, describe the geometry.

Formats are SimpleITK's, chosen by the file name: ``.nii.gz`` and ``.mha`` compressed,
``.nii`` not. ``.mha`` keeps geometry in double precision and the metadata (the frame of
reference); NIfTI stores geometry in single precision (sub-micrometre differences) and
drops the metadata.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rntflow.core.errors import StorageError
from rntflow.core.files import TMP_SUFFIX, atomic_write
from rntflow.dicomio.values import image_frame_of_reference

#: File name endings :func:`write_image` accepts.
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".mha")


def image_meta_dict(img: sitk.Image) -> dict:
    """JSON-ready geometry of an image.

    Returns
    -------
    dict
        ``size_xyz``, ``shape_zyx``, ``spacing_mm`` (x, y, z), ``origin_mm`` (x, y, z; centre
        of voxel 0), ``direction`` (9 numbers, row-major, columns = axes in LPS),
        ``voxel_ml``, ``pixel_type``, and ``frame_of_reference_uid`` when recorded.
    """
    size = [int(v) for v in img.GetSize()]
    spacing = [float(v) for v in img.GetSpacing()]
    out = {
        "size_xyz": size,
        "shape_zyx": size[::-1],
        "spacing_mm": spacing,
        "origin_mm": [float(v) for v in img.GetOrigin()],
        "direction": [float(v) for v in img.GetDirection()],
        "voxel_ml": float(np.prod(spacing)) / 1000.0,
        "pixel_type": img.GetPixelIDTypeAsString(),
    }
    frame = image_frame_of_reference(img)
    if frame:
        out["frame_of_reference_uid"] = frame
    return out


def write_image(img: sitk.Image, path: str | Path, *, durable: bool = True) -> Path:
    """Write an image atomically as ``.nii.gz``, ``.nii`` or ``.mha``.

    SimpleITK picks the format from the file name, so the image is first written under
    its own name in a private temporary folder beside ``path``, then copied into place
    by :func:`rntflow.core.files.atomic_write` (fsync, rename, folder fsync): a reader
    sees the old file or the new one, never a torn one.

    Parameters
    ----------
    img : SimpleITK.Image
    path : str or Path
        The destination; its folder is created if needed.
    durable : bool
        fsync the file and its folder (default); see :func:`~rntflow.core.files.atomic_write`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    StorageError
        For another extension or when writing fails.
    """
    path = Path(path)
    ext = next((e for e in IMAGE_EXTENSIONS if path.name.endswith(e)), None)
    if ext is None:
        raise StorageError(f"{path}: image files must end in {', '.join(IMAGE_EXTENSIONS)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent) as tmp:
            staged = Path(tmp) / path.name
            sitk.WriteImage(img, str(staged), useCompression=ext != ".nii")
            with open(staged, "rb") as src, atomic_write(path, "wb", durable=durable) as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except (OSError, RuntimeError) as exc:  # RuntimeError: SimpleITK's writer
        raise StorageError(f"{path}: could not write image: {exc}") from exc
    return path


def read_image(path: str | Path) -> sitk.Image:
    """Read an image written by :func:`write_image` (any format SimpleITK reads).

    Raises
    ------
    StorageError
        When the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: image file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise StorageError(f"{path}: could not read image: {exc}") from exc
