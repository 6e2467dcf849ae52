"""VOI masks on a CT from the segmentation objects of a study (RTSTRUCT, SEG).

The glue between DICOM reading and the rasteriser: :mod:`rntflow.dicomio.rtstruct` reads
each ROI's contours, :func:`rntflow.dosimetry.vois.rasterise_contours` turns them into a
mask on the CT grid. SEG masks come whole from :func:`rntflow.dicomio.seg.seg_masks`
(re-exported here so the tasks find both in one place).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rntflow.core.errors import VoiError
from rntflow.dicomio.rtstruct import rtstruct_contours
from rntflow.dicomio.seg import seg_masks
from rntflow.dicomio.values import image_frame_of_reference
from rntflow.dosimetry.vois import rasterise_contours

__all__ = ["RoiMasks", "rtstruct_masks", "rtstruct_rois", "seg_masks"]

log = logging.getLogger(__name__)


@dataclass
class RoiMasks:
    """VOI masks of one structure set and the ROIs that gave none.

    Attributes
    ----------
    masks : dict of str to numpy.ndarray (bool, (z, y, x))
        ROIName as written -> mask on the reference grid.
    skipped : dict of str to str
        ROIName (or ``#<ROINumber>`` when unnamed) -> reason.
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def rtstruct_rois(rtstruct: Dataset, reference: sitk.Image, frame_of_reference_uid: str | None = None) -> RoiMasks:
    """Masks of every ROI of a structure set on ``reference``, with the ROIs skipped and why.

    Parameters
    ----------
    rtstruct : pydicom.Dataset
        An RT Structure Set.
    reference : SimpleITK.Image
        The image the masks are made on (the CT the structures were drawn on).
    frame_of_reference_uid : str, optional
        The reference image's FrameOfReferenceUID; defaults to the image metadata
        ``0020|0052`` that :func:`rntflow.dicomio.study.load_study` sets on its CT. When
        known, the ROIs must refer to it.

    Returns
    -------
    RoiMasks
        ``masks``: ROIName as written (not yet mapped to TG-263) -> bool (z, y, x).
        ``skipped``: the ROIs :func:`rntflow.dicomio.rtstruct.rtstruct_contours` leaves
        out, those whose contours the rasteriser rejects (e.g. non-axial: the
        :class:`~rntflow.core.errors.VoiError` message) and those outside the image.

    Raises
    ------
    VoiError
        When the structure set refers to another frame of reference than the image's
        (structures drawn on another CT: register first).
    """
    if frame_of_reference_uid is None:
        frame_of_reference_uid = image_frame_of_reference(reference)
    parsed = rtstruct_contours(rtstruct, frame_of_reference_uid)
    out = RoiMasks(skipped=dict(parsed.skipped))
    for roi in parsed.rois:
        try:
            mask = rasterise_contours(roi.contours_mm, reference)
        except VoiError as exc:  # e.g. a non-axial contour: this ROI cannot be used, the others can
            out.skipped[roi.name] = str(exc)
            continue
        if not mask.any():
            out.skipped[roi.name] = "contours lie outside the reference image (empty mask)"
            continue
        out.masks[roi.name] = mask
    return out


def rtstruct_masks(
    rtstruct: Dataset, reference: sitk.Image, frame_of_reference_uid: str | None = None
) -> dict[str, np.ndarray]:
    """ROIName (as written, not yet mapped) -> boolean mask (z, y, x) on ``reference``.

    ROIs that give no mask (no contours, outside the image, duplicate names ...) are
    left out and logged at WARNING; :func:`rtstruct_rois` returns them with reasons.
    See :func:`rtstruct_rois` for parameters and errors.
    """
    result = rtstruct_rois(rtstruct, reference, frame_of_reference_uid)
    for name, why in result.skipped.items():
        log.warning("RTSTRUCT ROI %s skipped: %s", name, why)
    return result.masks
