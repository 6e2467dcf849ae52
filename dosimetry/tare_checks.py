"""QA verdicts of radioembolisation (TARE): plans and post-treatment studies against the limits.

Pure (no Prefect, no I/O): numbers and the arm's settings in, :class:`rntflow.core.qa.CheckResult`
out; the tasks add the scope and write the ``qa_checks`` rows.

Which limit and target apply (de Wit-van der Veen et al, Table 1, in
:data:`rntflow.core.constants.PRODUCTS`, plus the arm's trial settings):

* lungs: the device's single-treatment limit; the trial's cumulative limit over treatments
  and lung shunt cap where set (:class:`rntflow.core.config.TareArm`);
* normal liver: the parenchyma limit, the pre-treated one for a pre-treated liver where the
  device has one (:func:`parenchyma_limit_gy`); not applied to an ablative treatment;
* tumour: the lower end of the device's target, the ablative minimum for an ablative
  treatment where the device gives one (:func:`tumour_target_gy`).

A plan is compared exactly (up to floating-point round-off,
:func:`rntflow.dosimetry.tare.exceeds` / :func:`rntflow.dosimetry.tare.falls_short`). A
delivered tumour dose is compared with the target less
:data:`DELIVERED_TARGET_TOLERANCE`: the administered activity is the planned one less the
vial residual, and the delivered dose is measured.
"""

from __future__ import annotations

from collections.abc import Mapping

from rntflow.core.config import TareArm
from rntflow.core.constants import PRODUCTS
from rntflow.core.qa import FAIL, PASS, WARN, CheckResult
from rntflow.dosimetry.tare import TarePlan, exceeds, falls_short
from rntflow.dosimetry.tare_imaging import LUNGS, NORMAL, lesion_names

#: Fraction below the tumour target a *delivered* tumour dose (post-treatment image) may fall
#: and still reach it: the administered activity is the planned one less a 2-5 % vial
#: residual, and the post-treatment quantification (calibration, partial-volume recovery)
#: is uncertain by several %. The plan's own target check stays exact.
DELIVERED_TARGET_TOLERANCE = 0.10


def parenchyma_limit_gy(arm: TareArm) -> float:
    """Normal-liver (parenchyma) limit (Gy) of the arm's device: the pre-treated limit for a
    pre-treated liver where Table 1 gives one, else the plain limit."""
    lim = PRODUCTS[arm.device]
    if arm.pretreated_liver and lim.parenchyma_pretreated_limit_gy:
        return lim.parenchyma_pretreated_limit_gy
    return lim.parenchyma_limit_gy


def tumour_target_gy(arm: TareArm) -> float:
    """The lower end of the device's tumour target (Gy; ablative: the ablative minimum where given)."""
    lim = PRODUCTS[arm.device]
    if arm.treatment == "ablative" and lim.ablative_target_min_gy is not None:
        return lim.ablative_target_min_gy
    return lim.tumour_target_gy[0]


def planned_tumour_dose_gy(arm: TareArm) -> float:
    """Mean tumour dose (Gy) the plan aims at: the arm's setting, else :func:`tumour_target_gy`."""
    return arm.planned_tumour_dose_gy or tumour_target_gy(arm)


def lung_shunt_ok(lung_shunt_fraction: float, cap: float | None) -> bool:
    """Whether a lung shunt fraction (0-1) is within the trial's cap (``None``: no cap)."""
    return cap is None or not exceeds(lung_shunt_fraction, cap)


def _lung_check(arm: TareArm, lung_gy: float, found: str, delivered: bool) -> CheckResult:
    limit = PRODUCTS[arm.device].lung_limit_gy
    ok = not exceeds(lung_gy, limit)
    what = "delivered lung dose" if delivered else "lung dose"
    above = "above the single-treatment limit" if delivered else "above the limit"
    return CheckResult(
        "tare_lung_dose",
        PASS if ok else FAIL,
        found,
        f"<= {limit:.0f} Gy per treatment ({arm.device})",
        f"{what} within the limit" if ok else f"{what} {above}",
    )


def _normal_liver_check(arm: TareArm, normal_gy: float, found: str, delivered: bool) -> CheckResult:
    par = parenchyma_limit_gy(arm)
    ok = not exceeds(normal_gy, par)
    what = "delivered normal-liver dose" if delivered else "normal-liver dose"
    return CheckResult(
        "tare_normal_liver_dose",
        PASS if ok else FAIL,
        found,
        f"<= {par:.0f} Gy ({arm.device})",
        f"{what} within the limit" if ok else f"{what} above the parenchyma limit",
    )


def cumulative_lung_check(arm: TareArm, cumulative_gy: float, found: str) -> CheckResult:
    """``tare_lung_dose_cumulative``: lung dose summed over treatments (Gy) against the trial's
    cumulative limit (pass when none is set); ``found`` describes what was summed."""
    limit = arm.lung_cumulative_limit_gy
    ok = limit is None or not exceeds(cumulative_gy, limit)
    return CheckResult(
        "tare_lung_dose_cumulative",
        PASS if ok else FAIL,
        found,
        f"<= {limit:.0f} Gy (trial setting)" if limit is not None else "no cumulative limit set",
        "cumulative lung dose within the limit" if ok else "cumulative lung dose above the trial limit",
    )


def delivered_cumulative_lung_check(arm: TareArm, cumulative_gy: float, treatment: int) -> CheckResult:
    """:func:`cumulative_lung_check` of the lung doses delivered over treatments 1 to ``treatment``."""
    return cumulative_lung_check(arm, cumulative_gy, f"{cumulative_gy:.1f} Gy delivered over treatments 1-{treatment}")


def delivered_dose_checks(arm: TareArm, mean_dose_gy: Mapping[str, float]) -> list[CheckResult]:
    """Lung and normal-liver checks of a post-treatment study's delivered mean doses (VOI -> Gy;
    a missing VOI is not checked). Ablative: the parenchyma limit is reported as not applied."""
    out = []
    lung = mean_dose_gy.get(LUNGS)
    if lung is not None:
        out.append(_lung_check(arm, lung, f"{lung:.1f} Gy (delivered)", delivered=True))
    normal = mean_dose_gy.get(NORMAL)
    if normal is not None and arm.treatment == "ablative":
        out.append(
            CheckResult(
                "tare_normal_liver_dose",
                PASS,
                f"{normal:.1f} Gy (delivered)",
                "not applied (ablative)",
                "ablative treatment: the parenchyma limit does not apply to the treated segment",
            )
        )
    elif normal is not None:
        out.append(_normal_liver_check(arm, normal, f"{normal:.1f} Gy (delivered)", delivered=True))
    return out


def delivered_tumour_checks(arm: TareArm, mean_dose_gy: Mapping[str, float]) -> dict[str, CheckResult]:
    """Lesion -> ``tare_tumour_dose`` of its delivered mean dose (Gy): pass at or above the
    target less :data:`DELIVERED_TARGET_TOLERANCE`, else warn."""
    target = tumour_target_gy(arm)
    floor = target * (1.0 - DELIVERED_TARGET_TOLERANCE)
    expected = (
        f">= {target:.0f} Gy ({arm.device} target) less {100 * DELIVERED_TARGET_TOLERANCE:.0f} % "
        "(vial residual, quantification)"
    )
    out = {}
    for les in lesion_names(mean_dose_gy):
        d = mean_dose_gy[les]
        if not falls_short(d, target):
            status, msg = PASS, "tumour dose reaches the target"
        elif d >= floor:
            status, msg = PASS, "tumour dose within the delivered-dose tolerance of the target"
        else:
            status, msg = WARN, "tumour dose below the product's target"
        out[les] = CheckResult("tare_tumour_dose", status, f"{d:.1f} Gy (delivered)", expected, msg)
    return out


def residual_activity_check(arm: TareArm, imaged_mbq: float, administered_mbq: float) -> CheckResult:
    """``tare_residual_activity``: the activity the post-treatment image shows at administration
    (MBq) against the administered activity (MBq), within the arm's ``residual_tolerance_pct``."""
    diff_pct = 100.0 * (imaged_mbq / administered_mbq - 1.0)
    ok = abs(diff_pct) <= arm.residual_tolerance_pct
    return CheckResult(
        "tare_residual_activity",
        PASS if ok else WARN,
        f"{imaged_mbq:.0f} MBq imaged at administration ({diff_pct:+.1f} %)",
        f"{administered_mbq:.0f} MBq administered +- {arm.residual_tolerance_pct:.0f} %",
        "imaged activity matches the administered activity"
        if ok
        else "imaged activity differs from the administered activity (vial residual, calibration?)",
    )


def plan_checks(
    arm: TareArm, plan: TarePlan, lung_shunt_fraction: float, prior_lung_dose_gy: float
) -> list[CheckResult]:
    """The plan's checks at the planned activity: lung shunt (trial cap), lung dose (single and
    cumulative with ``prior_lung_dose_gy`` of earlier treatments), normal liver (not for an
    ablative treatment) and tumour target (all lesions, exact). The delivered doses are checked
    on the post-treatment study (:func:`delivered_dose_checks`)."""
    cap = arm.max_lung_shunt_fraction
    lsf_ok = lung_shunt_ok(lung_shunt_fraction, cap)
    lung, cum = plan.lung_dose_gy, prior_lung_dose_gy + plan.lung_dose_gy
    out = [
        CheckResult(
            "tare_lung_shunt",
            PASS if lsf_ok else FAIL,
            f"{100 * lung_shunt_fraction:.1f} %",
            f"<= {100 * cap:.0f} % (trial cap)" if cap is not None else "no trial cap (lung dose checked)",
            "lung shunt fraction within the trial cap" if lsf_ok else "lung shunt fraction above the trial cap",
        ),
        _lung_check(arm, lung, f"{lung:.1f} Gy (planned activity)", delivered=False),
        cumulative_lung_check(arm, cum, f"{cum:.1f} Gy (prior {prior_lung_dose_gy:.1f} Gy + this treatment)"),
    ]
    if arm.treatment != "ablative":
        normal = plan.normal_liver_dose_gy
        out.append(_normal_liver_check(arm, normal, f"{normal:.1f} Gy (planned activity)", delivered=False))
    target = tumour_target_gy(arm)
    ok = not falls_short(plan.tumour_dose_gy, target)
    out.append(
        CheckResult(
            "tare_tumour_dose",
            PASS if ok else WARN,
            f"{plan.tumour_dose_gy:.1f} Gy (planned activity, all lesions)",
            f">= {target:.0f} Gy ({arm.device} target)",
            "tumour dose reaches the target" if ok else "tumour dose below the product's target",
        )
    )
    return out


def planned_lesion_checks(arm: TareArm, lesion_dose_gy: Mapping[str, float]) -> dict[str, CheckResult]:
    """Lesion -> ``tare_tumour_dose`` of its dose at the planned activity (Gy; exact target)."""
    target = tumour_target_gy(arm)
    out = {}
    for les in lesion_names(lesion_dose_gy):
        d = lesion_dose_gy[les]
        ok = not falls_short(d, target)
        out[les] = CheckResult(
            "tare_tumour_dose",
            PASS if ok else WARN,
            f"{d:.1f} Gy (planned activity)",
            f">= {target:.0f} Gy ({arm.device} target)",
            f"{les} reaches the target" if ok else f"{les} below the product's target",
        )
    return out


def planned_lesion_notes(arm: TareArm, lesion_dose_gy: Mapping[str, float]) -> list[str]:
    """The plan notes of the lesions planned below the tumour target (Gy; exact target)."""
    target = tumour_target_gy(arm)
    return [
        f"{les} {lesion_dose_gy[les]:.1f} Gy planned, below the {target:.0f} Gy target"
        for les in lesion_names(lesion_dose_gy)
        if falls_short(lesion_dose_gy[les], target)
    ]


def study_role_check(
    arm: TareArm, radionuclide: str | None, administered_activity_mbq: float | None, modality: str
) -> tuple[str | None, CheckResult]:
    """(role, ``tare_study_role``) of a study imaging ``radionuclide`` after
    ``administered_activity_mbq`` (MBq) on ``modality`` (NM, PET): the arm's
    :meth:`rntflow.core.config.TareArm.study_role`; ``None`` and a fail when the study does not
    belong to the arm."""
    role = arm.study_role(radionuclide, administered_activity_mbq)
    expected = (
        f"{arm.scout_radionuclide} scout or {arm.radionuclide} post-treatment "
        f"(scout <= {arm.scout_max_activity_mbq:.0f} MBq)"
        if arm.scout_agent == "Ho-166-scout"
        else f"{arm.scout_radionuclide} scout or {arm.radionuclide} post-treatment"
    )
    found = f"{radionuclide or 'no radionuclide'}, {administered_activity_mbq or 0:.0f} MBq, {modality}"
    if role is None:
        msg = f"{radionuclide or 'an unknown radionuclide'} does not belong to arm {arm.id} ({arm.device})"
        return None, CheckResult("tare_study_role", FAIL, found, expected, msg)
    return role, CheckResult("tare_study_role", PASS, f"{role}: {found}", expected, f"{role} study of arm {arm.id}")
