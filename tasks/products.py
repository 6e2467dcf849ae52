"""The flows' product store: what one quantified time point leaves for the dosimetry flow.

Layout (``config.products_dir``; pseudonymous names only)::

    <site_id>/<subject_id>/<study_id>/meta.json        TimePointMeta
                                     spect_bqml.nii.gz Bq/mL at acquisition start
                                     ct_hu.nii.gz      CT (HU)
                                     vois/<VOI>.nii.gz VOI masks on the CT grid (reference time points)
                                     reg_<ref>.tfm     rigid transform to a reference time point

A time point is written into a temporary folder and renamed into place, so a reader sees
a whole time point or none; writing the same time point again replaces it whole.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rntflow.core.files import write_text_atomic
from rntflow.dicomio.images import read_image, write_image

META = "meta.json"


@dataclass(frozen=True)
class TimePointMeta:
    """What is known of one quantified patient time point (pseudonymous).

    Attributes
    ----------
    site_id, subject_id, study_id : str
    camera_id : str or None
    acquisition_start, administration_datetime : datetime
        Naive date-times as de-identified (one trial-wide date shift, so intervals are exact);
        ISO text in ``meta.json``.
    administered_activity_mbq : float or None
    radionuclide : str
    t_h : float
        Acquisition start after administration (h).
    cycle : int
        1-based order of the administration among the subject's administrations.
    calibration_id : str or None
    calibration_status : str
        ``valid``, ``expired`` or ``missing``.
    calibration_rel : float
        Relative standard uncertainty of the calibration factor.
    rc_fwhm_mm : float or None
        Recovery FWHM of the camera's calibration (mm).
    protocol_compliant : bool
    voi_names : list of str
        TG-263 names of the VOIs stored with this time point (empty: none).
    ct_frame_of_reference_uid : str or None
    rc_fwhm_source : str or None
        Where ``rc_fwhm_mm`` came from (``nema``, ``configured``, ``cylinder_edge``).
    calibration_value : float or None
        The registry calibration's value when the time point was quantified (cps/MBq, or the
        vendor scale factor): a re-analysed phantom that changes it re-processes the time point.
    """

    site_id: str
    subject_id: str
    study_id: str
    camera_id: str | None
    acquisition_start: datetime
    administration_datetime: datetime
    administered_activity_mbq: float | None
    radionuclide: str
    t_h: float
    cycle: int
    calibration_id: str | None
    calibration_status: str
    calibration_rel: float
    rc_fwhm_mm: float | None
    protocol_compliant: bool
    voi_names: list[str] = field(default_factory=list)
    ct_frame_of_reference_uid: str | None = None
    calibration_value: float | None = None
    rc_fwhm_source: str | None = None

    @property
    def administered_at(self) -> datetime:
        return self.administration_datetime

    def to_json(self) -> str:
        """``meta.json`` text (date-times as ISO 8601)."""
        d = asdict(self)
        d["acquisition_start"] = self.acquisition_start.isoformat()
        d["administration_datetime"] = self.administration_datetime.isoformat()
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TimePointMeta:
        """Read ``meta.json`` (see :meth:`to_json`)."""
        d = json.loads(text)
        d["acquisition_start"] = datetime.fromisoformat(d["acquisition_start"])
        d["administration_datetime"] = datetime.fromisoformat(d["administration_datetime"])
        return cls(**d)


class ProductStore:
    """Read and write time-point products under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def study_path(self, site_id: str, subject_id: str, study_id: str) -> Path:
        return self.root / site_id / subject_id / study_id

    def save_timepoint(
        self,
        meta: TimePointMeta,
        spect_bq_per_ml: sitk.Image,
        ct_hu: sitk.Image | None,
        vois: dict[str, np.ndarray] | None = None,
    ) -> Path:
        """Write one time point atomically (temporary folder, then rename)."""
        final = self.study_path(meta.site_id, meta.subject_id, meta.study_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{meta.study_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            write_image(sitk.Cast(spect_bq_per_ml, sitk.sitkFloat32), tmp / "spect_bqml.nii.gz")
            if ct_hu is not None:
                write_image(sitk.Cast(ct_hu, sitk.sitkInt16), tmp / "ct_hu.nii.gz")
            if vois:
                (tmp / "vois").mkdir()
                for name, mask in vois.items():
                    img = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
                    img.CopyInformation(ct_hu)
                    write_image(img, tmp / "vois" / f"{name}.nii.gz")
            (tmp / META).write_text(meta.to_json())
            old_ct, new_ct = final / "ct_hu.nii.gz", tmp / "ct_hu.nii.gz"
            if old_ct.exists() and new_ct.exists() and old_ct.read_bytes() == new_ct.read_bytes():
                for reg in final.glob("reg_*.json"):  # same CT: its registrations still hold
                    shutil.copy2(reg, tmp / reg.name)
            if final.exists():
                old = final.parent / f".old-{meta.study_id}-{uuid.uuid4().hex[:8]}"
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def timepoints(self, site_id: str, subject_id: str) -> list[TimePointMeta]:
        """Every stored time point of a subject, by acquisition time."""
        folder = self.root / site_id / subject_id
        out = []
        for meta in sorted(folder.glob(f"*/{META}")) if folder.exists() else []:
            if meta.parent.name.startswith("."):
                continue
            out.append(TimePointMeta.from_json(meta.read_text()))
        return sorted(out, key=lambda m: m.acquisition_start)

    def all_timepoints(self) -> list[TimePointMeta]:
        """Every stored time point of the trial."""
        out = []
        for meta in sorted(self.root.glob(f"*/*/*/{META}")) if self.root.exists() else []:
            if not meta.parent.name.startswith("."):
                out.append(TimePointMeta.from_json(meta.read_text()))
        return out

    def spect(self, m: TimePointMeta) -> sitk.Image:
        return read_image(self.study_path(m.site_id, m.subject_id, m.study_id) / "spect_bqml.nii.gz")

    def ct(self, m: TimePointMeta) -> sitk.Image | None:
        p = self.study_path(m.site_id, m.subject_id, m.study_id) / "ct_hu.nii.gz"
        return sitk.Cast(read_image(p), sitk.sitkFloat32) if p.exists() else None

    def vois(self, m: TimePointMeta) -> dict[str, sitk.Image]:
        folder = self.study_path(m.site_id, m.subject_id, m.study_id) / "vois"
        return {p.name[: -len(".nii.gz")]: read_image(p) for p in sorted(folder.glob("*.nii.gz"))}

    def transform_path(self, m: TimePointMeta, reference_study_id: str) -> Path:
        return self.study_path(m.site_id, m.subject_id, m.study_id) / f"reg_{reference_study_id}.json"

    def load_transform(self, m: TimePointMeta, reference_study_id: str) -> tuple[sitk.Transform, dict] | None:
        """A cached rigid transform (reference -> this time point) and its quality record."""
        p = self.transform_path(m, reference_study_id)
        if not p.exists():
            return None
        rec = json.loads(p.read_text())
        tf = sitk.Euler3DTransform()
        tf.SetFixedParameters(rec["fixed_parameters"])
        tf.SetParameters(rec["parameters"])
        return tf, rec

    def save_transform(
        self, m: TimePointMeta, reference_study_id: str, transform: sitk.Transform, quality: dict
    ) -> None:
        p = self.transform_path(m, reference_study_id)
        rec = {
            "fixed_parameters": list(transform.GetFixedParameters()),
            "parameters": list(transform.GetParameters()),
            **quality,
        }
        write_text_atomic(p, json.dumps(rec, indent=1, sort_keys=True))
