"""Tolerant readers of DICOM element values, and the frame-of-reference image metadata key.

A malformed value never raises here: the readers return ``None`` (or a neutral value) and
the caller decides whether the object is still usable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

#: SimpleITK metadata key (GDCM convention ``gggg|eeee``) under which the study reader
#: records the CT's FrameOfReferenceUID on the image it returns.
FOR_METADATA_KEY = "0020|0052"


def text(ds: Dataset, keyword: str) -> str | None:
    """The element ``keyword`` as stripped text, or ``None`` when absent, empty or unreadable."""
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed element raises on access in pydicom
        return None
    if value is None:
        return None
    out = str(value).strip()
    return out or None


def image_type(ds: Dataset) -> list[str]:
    """ImageType values, upper case (``[]`` when absent or unreadable)."""
    try:
        value = ds.get("ImageType")
    except Exception:
        return []
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip().upper() for v in value.split("\\")]
    return [str(v).strip().upper() for v in value]


def n_frames(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent or malformed)."""
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def floats(value: Any, n: int) -> tuple[float, ...] | None:
    """``n`` finite numbers from a multi-valued element, or ``None``."""
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def image_frame_of_reference(img: sitk.Image) -> str | None:
    """The FrameOfReferenceUID recorded on an image under :data:`FOR_METADATA_KEY`, if any."""
    if img.HasMetaDataKey(FOR_METADATA_KEY):
        return img.GetMetaData(FOR_METADATA_KEY).strip() or None
    return None
