"""Radioembolisation (TARE) treatments of a subject: records, numbering, scout/post pairing, plans.

Pure (no Prefect, no I/O): a subject's quantified TARE studies (:class:`TareRecord`, one per
study, stored as JSON by :mod:`rntflow.tasks.tare`) in, its treatments out.

* **Numbering** (:func:`treatment_numbers`): post-treatment studies in acquisition order; a
  scout plans the first post-treatment study acquired after it (the next number when none
  is). The result depends on acquisition times only, not on the order the studies arrived.
* **Pairing** (:func:`pair_treatments`): each treatment's latest scout and its post-treatment
  study; earlier scouts of the same treatment are superseded (they keep their plan, but only
  the latest is compared with the delivered doses).
* **Plans** (:func:`plan_treatments`): the partition-model plan of every scout
  (:func:`rntflow.dosimetry.tare.plan_partition`) with the lung dose delivered by the earlier
  treatments, each lesion's dose at the planned activity, and the scout-predicted doses at
  the administered activity to compare with the delivered ones (:func:`predicted_vs_delivered`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

from rntflow.core.config import TareArm
from rntflow.dosimetry import tare_imaging as ti
from rntflow.dosimetry.tare import TarePlan, plan_partition
from rntflow.dosimetry.tare_checks import planned_lesion_notes, planned_tumour_dose_gy

#: Roles of a TARE study.
SCOUT, POST = "scout", "post_treatment"


@dataclass
class TareRecord:
    """What one quantified TARE study leaves for planning and comparison (pseudonymous).

    Attributes
    ----------
    site_id, subject_id, study_id : str
    role : {"scout", "post_treatment"}
    radionuclide : str
        Imaged radionuclide (``Tc-99m``, ``Ho-166``, ``Y-90``).
    acquisition_start, administration_datetime : datetime
        Naive, as de-identified (ISO text in the JSON).
    administered_activity_mbq : float or None
    camera_id : str or None
    activity : dict of str to float
        VOI -> activity: scout in the image's unit (counts), post-treatment in MBq at
        administration.
    shares : dict of str to float
        VOI -> share of the liver + lung activity.
    masses_kg, volumes_ml : dict of str to float
    lung_shunt_fraction : float
    mean_dose_gy : dict of str to float
        Post-treatment: delivered mean dose per VOI (empty for a scout).
    doses : list of dict
        Post-treatment: the ``tare_doses`` rows, without the treatment number (numbered
        when the subject's plans are made).
    cf_j_per_gbq : float or None
    calibration_id : str or None
        The camera calibration used: post-treatment its sensitivity or Bq/mL scale factor
        (and FWHM); a scout its recovery FWHM only, when the camera has one for the nuclide.
    calibration_value : float or None
        The registry value of that calibration (cps/MBq or scale factor) as used (``None``: a
        scout, or taken at face value): a re-analysed calibration changes it.
    fwhm_mm : float or None
    notes : list of str
    """

    site_id: str
    subject_id: str
    study_id: str
    role: str
    radionuclide: str
    acquisition_start: datetime
    administration_datetime: datetime
    administered_activity_mbq: float | None
    camera_id: str | None
    activity: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    masses_kg: dict[str, float] = field(default_factory=dict)
    volumes_ml: dict[str, float] = field(default_factory=dict)
    lung_shunt_fraction: float = 0.0
    mean_dose_gy: dict[str, float] = field(default_factory=dict)
    doses: list[dict] = field(default_factory=list)
    cf_j_per_gbq: float | None = None
    calibration_id: str | None = None
    calibration_value: float | None = None
    fwhm_mm: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        d = asdict(self)
        d["acquisition_start"] = self.acquisition_start.isoformat()
        d["administration_datetime"] = self.administration_datetime.isoformat()
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TareRecord:
        d = json.loads(text)
        d["acquisition_start"] = datetime.fromisoformat(d["acquisition_start"])
        d["administration_datetime"] = datetime.fromisoformat(d["administration_datetime"])
        return cls(**d)


def treatment_numbers(records: list[TareRecord]) -> dict[str, int]:
    """study_id -> treatment: post-treatment studies in acquisition order; a scout the first
    post-treatment study acquired after it (or the next number when none is)."""
    posts = sorted((r for r in records if r.role == POST), key=lambda r: r.acquisition_start)
    out = {r.study_id: i + 1 for i, r in enumerate(posts)}
    for r in records:
        if r.role == SCOUT:
            out[r.study_id] = 1 + sum(1 for p in posts if p.acquisition_start <= r.acquisition_start)
    return out


def pair_treatments(
    records: list[TareRecord], numbers: dict[str, int]
) -> dict[int, tuple[TareRecord | None, TareRecord | None]]:
    """treatment -> (latest scout planning it, its post-treatment study)."""
    out: dict[int, list] = {}
    for r in sorted(records, key=lambda r: r.acquisition_start):  # a later scout of a treatment replaces the earlier
        slot = out.setdefault(numbers[r.study_id], [None, None])
        slot[0 if r.role == SCOUT else 1] = r
    return {k: (v[0], v[1]) for k, v in out.items()}


def tumour_mass_kg(rec: TareRecord) -> float:
    """Mass of all the record's lesions (kg)."""
    return sum(rec.masses_kg[n] for n in ti.lesion_names(rec.masses_kg))


def plan_for_scout(arm: TareArm, scout: TareRecord, prior_lung_dose_gy: float) -> tuple[TarePlan, float, float]:
    """(partition-model plan, tumour-to-normal ratio, lung mass kg) of a scout record, with the
    lung dose (Gy) delivered by earlier treatments for the cumulative limit. Broken limits are
    recorded in the plan, not raised."""
    lung_mass = scout.masses_kg.get(ti.LUNGS) or arm.lung_mass_kg
    ratio = ti.tumour_to_normal_ratio(scout.activity, scout.masses_kg)
    plan = plan_partition(
        planned_tumour_dose_gy(arm),
        scout.masses_kg[ti.NORMAL],
        tumour_mass_kg(scout),
        ratio,
        scout.lung_shunt_fraction,
        product=arm.device,
        lung_mass_kg=lung_mass,
        pretreated=arm.pretreated_liver,
        cf_convention=arm.cf_convention,
        treatment=arm.treatment,
        prior_lung_dose_gy=prior_lung_dose_gy,
        lung_cumulative_limit_gy=arm.lung_cumulative_limit_gy,
        max_lung_shunt_fraction=arm.max_lung_shunt_fraction,
        raise_on_limit=False,
    )
    return plan, ratio, lung_mass


def planned_lesion_doses_gy(plan: TarePlan, scout: TareRecord, ratio: float) -> dict[str, float]:
    """Lesion -> mean dose (Gy) at the planned activity: the plan's tumour dose x the lesion's own
    tumour-to-normal ratio over the plan's ``ratio`` (the partition model's own split, so that a
    single lesion is exactly at the plan's tumour dose)."""
    return {
        n: plan.tumour_dose_gy * ti.tumour_to_normal_ratio(scout.activity, scout.masses_kg, [n]) / ratio
        for n in ti.lesion_names(scout.masses_kg)
    }


@dataclass
class ScoutPlan:
    """The plan of one scout.

    Attributes
    ----------
    scout : TareRecord
    plan : TarePlan
    tumour_to_normal_ratio : float
    lung_mass_kg : float
    lesion_dose_gy : dict of str to float
        Lesion -> mean dose at the planned activity (:func:`planned_lesion_doses_gy`).
    planned_dose_gy : dict of str to float
        VOI -> mean dose at the planned activity (scout shares).
    predicted_dose_gy : dict of str to float or None
        VOI -> mean dose at the administered activity of the treatment's post-treatment study
        (``None`` without one, or without its administered activity).
    compared : bool
        The latest scout of a treatment with a prediction: compared with the delivered doses.
    notes : list of str
        The plan's notes, the lesions planned below the target, the scout's own notes.
    """

    scout: TareRecord
    plan: TarePlan
    tumour_to_normal_ratio: float
    lung_mass_kg: float
    lesion_dose_gy: dict[str, float]
    planned_dose_gy: dict[str, float]
    predicted_dose_gy: dict[str, float] | None
    compared: bool
    notes: list[str]


@dataclass
class Treatment:
    """One treatment of a subject.

    Attributes
    ----------
    number : int
    post : TareRecord or None
        Its post-treatment study.
    prior_lung_dose_gy : float
        Lung dose delivered by the earlier treatments (Gy).
    delivered_cumulative_lung_dose_gy : float or None
        ``prior_lung_dose_gy`` plus this treatment's delivered lung dose (Gy; ``None`` without
        a post-treatment study).
    scouts : list of ScoutPlan
        The plans of its scouts, superseded ones included, by acquisition time.
    """

    number: int
    post: TareRecord | None
    prior_lung_dose_gy: float
    delivered_cumulative_lung_dose_gy: float | None
    scouts: list[ScoutPlan] = field(default_factory=list)


def plan_treatments(arm: TareArm, records: list[TareRecord]) -> tuple[dict[str, int], list[Treatment]]:
    """(study_id -> treatment number, the treatments in order) of a subject's records.

    Every scout is planned (:func:`plan_for_scout`) with the lung dose the post-treatment
    studies of earlier treatments delivered (0 Gy where a post-treatment study has no lung VOI).
    """
    records = sorted(records, key=lambda r: r.acquisition_start)
    numbers = treatment_numbers(records)
    pairs = pair_treatments(records, numbers)
    delivered_lung = {t: p.mean_dose_gy.get(ti.LUNGS, 0.0) for t, (_s, p) in pairs.items() if p is not None}
    out = []
    for t in sorted(pairs):
        latest, post = pairs[t]
        prior = sum(v for k, v in delivered_lung.items() if k < t)
        treatment = Treatment(t, post, prior, prior + delivered_lung[t] if post is not None else None)
        for r in records:
            if r.role != SCOUT or numbers[r.study_id] != t:
                continue
            plan, ratio, lung_mass = plan_for_scout(arm, r, prior)
            lesion_gy = planned_lesion_doses_gy(plan, r, ratio)
            predicted = (
                ti.predicted_doses_gy(r.shares, r.masses_kg, post.administered_activity_mbq / 1000.0, plan.cf_j_per_gbq)
                if post is not None and post.administered_activity_mbq
                else None
            )
            treatment.scouts.append(
                ScoutPlan(
                    r,
                    plan,
                    ratio,
                    lung_mass,
                    lesion_gy,
                    ti.predicted_doses_gy(r.shares, r.masses_kg, plan.activity_gbq, plan.cf_j_per_gbq),
                    predicted,
                    compared=predicted is not None and r is latest,
                    notes=plan.notes + planned_lesion_notes(arm, lesion_gy) + r.notes,
                )
            )
        out.append(treatment)
    return numbers, out


@dataclass(frozen=True)
class DoseComparison:
    """Scout-predicted against delivered mean dose of one VOI (Gy).

    Attributes
    ----------
    voi : str
    planned_dose_gy : float or None
        At the planned activity.
    predicted_dose_gy : float
        At the administered activity.
    delivered_dose_gy : float
        Measured on the post-treatment study.
    delivered_to_predicted_ratio : float or None
        ``None`` when nothing was predicted (0 Gy).
    """

    voi: str
    planned_dose_gy: float | None
    predicted_dose_gy: float
    delivered_dose_gy: float
    delivered_to_predicted_ratio: float | None


def predicted_vs_delivered(scout: ScoutPlan, post: TareRecord) -> list[DoseComparison]:
    """The VOIs both predicted by a compared scout and delivered in ``post``, by name."""
    if not scout.compared or scout.predicted_dose_gy is None:
        return []
    predicted = scout.predicted_dose_gy
    return [
        DoseComparison(
            voi,
            scout.planned_dose_gy.get(voi),
            predicted[voi],
            post.mean_dose_gy[voi],
            post.mean_dose_gy[voi] / predicted[voi] if predicted[voi] > 0 else None,
        )
        for voi in sorted(set(predicted) & set(post.mean_dose_gy))
    ]
