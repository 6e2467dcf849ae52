"""RT Structure Set: the closed planar contours of each ROI, checked against a frame of reference.

Reading only: the contours are returned in patient LPS (mm); turning them into masks on
an image grid is :func:`rntflow.dosimetry.vois.rasterise_contours`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from rntflow.core.errors import VoiError
from rntflow.dicomio.values import text


@dataclass
class RoiContours:
    """The closed planar contours of one ROI.

    Attributes
    ----------
    name : str
        ROIName as written (not yet mapped to TG-263), ``#<ROINumber>`` when unnamed.
    number : int
        ROINumber.
    contours_mm : list of numpy.ndarray (n, 3)
        One array of points (x, y, z; LPS, mm) per ``CLOSED_PLANAR`` contour.
    """

    name: str
    number: int
    contours_mm: list[np.ndarray]


@dataclass
class StructureSetContours:
    """The usable ROIs of one structure set, and the ROIs left out with the reason.

    Attributes
    ----------
    rois : list of RoiContours
        ROIs with at least one closed planar contour, in ROIContourSequence order, one
        per ROIName (the first).
    skipped : dict of str to str
        ROIName (or ``#<ROINumber>``; ``"<name> (ROINumber <n>)"`` for a duplicate name)
        -> reason.
    """

    rois: list[RoiContours] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def contour_points_mm(item: Dataset) -> np.ndarray:
    """ContourData of a ContourSequence item as an (n, 3) float array (mm).

    Parsed from the raw bytes when pydicom has not converted them yet (much faster than
    converting each decimal string to a ``DSfloat``).

    Raises
    ------
    VoiError
        When the number of values is not a multiple of 3.
    ValueError
        When a value is not a number.
    """
    if "ContourData" not in item:
        return np.zeros((0, 3))
    value = getattr(item.get_item("ContourData"), "value", None)  # raw bytes until first accessed
    if isinstance(value, (bytes, bytearray)):
        flat = np.array(bytes(value).replace(b"\\", b" ").decode("ascii", "replace").split(), dtype=float)
    else:
        flat = np.asarray(item.ContourData, dtype=float).ravel()
    if flat.size % 3:
        raise VoiError(f"ContourData holds {flat.size} numbers, not a multiple of 3")
    return flat.reshape(-1, 3)


def referenced_frames(rtstruct: Dataset) -> set[str]:
    """The FrameOfReferenceUIDs a structure set refers to (ReferencedFrameOfReferenceSequence)."""
    out = set()
    for item in rtstruct.get("ReferencedFrameOfReferenceSequence") or []:
        uid = text(item, "FrameOfReferenceUID")
        if uid:
            out.add(uid)
    return out


def rtstruct_contours(rtstruct: Dataset, frame_of_reference_uid: str | None = None) -> StructureSetContours:
    """The closed planar contours of every ROI of a structure set, and the ROIs left out.

    Parameters
    ----------
    rtstruct : pydicom.Dataset
        An RT Structure Set.
    frame_of_reference_uid : str, optional
        The FrameOfReferenceUID of the image the masks will be made on. When given, the
        structure set and its ROIs must refer to it.

    Returns
    -------
    StructureSetContours
        ``skipped`` holds ROIs without closed planar contours, with malformed ContourData,
        with a duplicated name, or on another frame of reference.

    Raises
    ------
    VoiError
        When the structure set refers to another frame of reference than
        ``frame_of_reference_uid`` (structures drawn on another CT: register first).
    """
    set_frames = referenced_frames(rtstruct)
    if frame_of_reference_uid and set_frames and frame_of_reference_uid not in set_frames:
        raise VoiError(
            f"RT Structure Set {text(rtstruct, 'StructureSetLabel') or ''} refers to frame(s) of reference "
            f"{sorted(set_frames)}, not the reference image's {frame_of_reference_uid}: "
            "register the images and map the structures first"
        )
    out = StructureSetContours()
    names: dict[int, str] = {}
    roi_frames: dict[int, str | None] = {}
    for item in rtstruct.get("StructureSetROISequence") or []:
        try:
            number = int(item.ROINumber)
        except Exception:  # absent or malformed ROINumber: the item cannot be referenced
            continue
        names[number] = text(item, "ROIName") or f"#{number}"
        roi_frames[number] = text(item, "ReferencedFrameOfReferenceUID")
    kept: dict[str, int] = {}
    contoured: set[int] = set()
    for rc in rtstruct.get("ROIContourSequence") or []:
        try:
            number = int(rc.ReferencedROINumber)
        except Exception:
            out.skipped[f"ROIContourSequence item {len(contoured) + 1}"] = "no ReferencedROINumber"
            continue
        contoured.add(number)
        name = names.get(number, f"#{number}")
        frame = roi_frames.get(number)
        if number not in names:
            out.skipped[name] = "ROIContourSequence item refers to no StructureSetROISequence item"
        elif name in kept:
            out.skipped[f"{name} (ROINumber {number})"] = f"duplicate ROIName (ROINumber {kept[name]} kept)"
        elif frame_of_reference_uid and frame and frame != frame_of_reference_uid:
            out.skipped[name] = f"on frame of reference {frame}, not the reference image's"
        else:
            contours, why = _closed_planar(rc)
            if why:
                out.skipped[name] = why
            else:
                out.rois.append(RoiContours(name, number, contours))
                kept[name] = number
    for number, name in names.items():
        if number not in contoured and name not in out.skipped:
            out.skipped[name] = "no ContourSequence"
    return out


def _closed_planar(rc: Dataset) -> tuple[list[np.ndarray], str | None]:
    """The CLOSED_PLANAR contours of one ROIContourSequence item, or why there are none."""
    contours = []
    other_types: Counter[str] = Counter()
    for c in rc.get("ContourSequence") or []:
        kind = (text(c, "ContourGeometricType") or "CLOSED_PLANAR").upper()
        if kind != "CLOSED_PLANAR":
            other_types[kind] += 1
            continue
        try:
            contours.append(contour_points_mm(c))
        except (ValueError, VoiError) as exc:
            return [], f"malformed ContourData: {exc}"
    if contours:
        return contours, None
    if not other_types:
        return [], "no ContourSequence"
    return [], f"no CLOSED_PLANAR contours ({', '.join(f'{n} {k}' for k, n in other_types.items())})"
