"""DICOM Segmentation: one boolean mask per segment on a reference image (highdicom)."""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rntflow.core.errors import VoiError
from rntflow.dicomio.values import image_frame_of_reference, text

log = logging.getLogger(__name__)


def seg_masks(seg: Dataset, reference: sitk.Image, frame_of_reference_uid: str | None = None) -> dict[str, np.ndarray]:
    """SegmentLabel -> boolean mask (z, y, x) on ``reference`` from a DICOM Segmentation.

    Parameters
    ----------
    seg : pydicom.Dataset
        A Segmentation (BINARY, FRACTIONAL or LABELMAP).
    reference : SimpleITK.Image
        The image the masks are made on (usually the CT the SEG was derived from).
    frame_of_reference_uid : str, optional
        The reference's FrameOfReferenceUID (default: image metadata ``0020|0052``).

    Returns
    -------
    dict of str to numpy.ndarray (bool, (z, y, x))
        One entry per segment (label as written, not yet mapped); FRACTIONAL segments
        are thresholded at 0.5. Empty segments are left out (logged).

    Raises
    ------
    VoiError
        When the SEG is on another frame of reference, or is not a regularly spaced
        3-D volume that highdicom can read.

    Notes
    -----
    highdicom (``Segmentation.from_dataset`` then ``get_volume`` per segment) builds each
    segment's volume on the SEG's own grid; it is then resampled onto ``reference`` by
    nearest neighbour (exact when the SEG was made on the reference grid).
    """
    import highdicom as hd  # ~1.6 s to import; only SEG studies need it

    if frame_of_reference_uid is None:
        frame_of_reference_uid = image_frame_of_reference(reference)
    seg_frame = text(seg, "FrameOfReferenceUID")
    if frame_of_reference_uid and seg_frame and seg_frame != frame_of_reference_uid:
        raise VoiError(
            f"SEG is on frame of reference {seg_frame}, not the reference image's "
            f"{frame_of_reference_uid}: register the images first"
        )
    try:
        parsed = hd.seg.Segmentation.from_dataset(seg, copy=True)
        numbers = parsed.get_segment_numbers()
    except Exception as exc:  # highdicom raises many types for malformed SEGs
        raise VoiError(f"SEG not readable by highdicom: {type(exc).__name__}: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    for number in numbers:
        label = str(parsed.get_segment_description(number).segment_label or f"Segment_{number}")
        try:
            vol = parsed.get_volume(
                segment_numbers=[number], combine_segments=True, relabel=True, skip_overlap_checks=True
            )
        except Exception as exc:
            raise VoiError(
                f"SEG segment {number} ({label}): not a regularly spaced volume: {type(exc).__name__}: {exc}"
            ) from exc
        arr = np.asarray(vol.array)
        if arr.dtype.kind == "f":
            arr = arr >= 0.5
        vol = vol.with_array((arr > 0).astype(np.uint8))
        res = sitk.Resample(
            vol.to_simpleitk(), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
        mask = sitk.GetArrayFromImage(res).astype(bool)
        if not mask.any():
            log.warning("SEG segment %s (%s) skipped: empty on the reference image", number, label)
            continue
        if label in out:
            log.warning("SEG segment %s (%s) skipped: duplicate SegmentLabel", number, label)
            continue
        out[label] = mask
    return out
