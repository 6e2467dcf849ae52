"""The records of one subject-cycle's dosimetry: its inputs and its results (pure data).

Inputs: quantified, registered time points (:class:`TimePoint`), VOIs on the reference
SPECT grid (:class:`Voi`) and what the trial config says about the cycle
(:class:`CycleSettings`). Results: the warehouse records of the cycle
(:class:`CycleDosimetry`, keys are the warehouse's column names) and its QA findings
(:class:`Finding`). :func:`rntflow.dosimetry.cycle.compute_cycle_dosimetry` turns the one
into the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LESION_RE = re.compile(r"^Lesion_\d+$")
#: Fraction of a voxel inside a VOI for the voxel to count in the DVH.
DVH_FRACTION_THRESHOLD = 0.5


@dataclass(frozen=True)
class TimePoint:
    """One quantified, registered time point.

    Attributes
    ----------
    study_id : str
        Pseudonymous study key.
    t_h : float
        Acquisition start after administration (h).
    bq_per_ml : numpy.ndarray (z, y, x)
        Activity concentration at acquisition start on the reference SPECT grid (Bq/mL).
    calibration_rel : float
        Relative standard uncertainty of the calibration used (fraction).
    calibration_id : str or None
    """

    study_id: str
    t_h: float
    bq_per_ml: np.ndarray
    calibration_rel: float = 0.0
    calibration_id: str | None = None


@dataclass(frozen=True)
class Voi:
    """One VOI on the reference SPECT grid.

    Attributes
    ----------
    name : str
        TG-263 name or ``Lesion_<n>``.
    fraction : numpy.ndarray (z, y, x)
        Fraction of each SPECT voxel inside the VOI (0-1).
    volume_ml, mass_g : float
        From the reference CT (mass with CT densities).
    """

    name: str
    fraction: np.ndarray
    volume_ml: float
    mass_g: float

    @property
    def is_lesion(self) -> bool:
        return bool(LESION_RE.match(self.name))


@dataclass(frozen=True)
class CycleSettings:
    """What the trial config says about one cycle's dosimetry.

    Attributes
    ----------
    nuclide_name : str
    administered_activity_mbq : float
    spacing_mm : (dz, dy, dx)
        SPECT voxel size (mm).
    voxel_engine : {"voxel_dpk", "voxel_led", "organ"}
        ``organ`` computes no dose map.
    partial_volume_correction : bool
    rc_fwhm_mm : float or None
        The site's recovery FWHM (mm); ``None``: no correction possible.
    rc_fwhm_rel_sd : float
        Relative standard uncertainty of ``rc_fwhm_mm`` (0 for a NEMA RC curve; see
        :data:`rntflow.dosimetry.uncertainty.RC_FWHM_REL_SD`): widens the dose SD of
        partial-volume corrected VOIs by the recovery uncertainty.
    radiobiology : mapping VOI -> (alpha_beta_gy, t_rep_h)
    population_t_eff_h : mapping VOI -> float
        Population effective half-lives for Madsen's single-time-point method.
    dvh_levels_gy : sequence of float
    """

    nuclide_name: str
    administered_activity_mbq: float
    spacing_mm: tuple[float, float, float]
    voxel_engine: str = "voxel_dpk"
    partial_volume_correction: bool = True
    rc_fwhm_mm: float | None = None
    rc_fwhm_rel_sd: float = 0.0
    radiobiology: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    population_t_eff_h: Mapping[str, float] = field(default_factory=dict)
    dvh_levels_gy: Sequence[float] = (5.0, 10.0, 20.0)


@dataclass(frozen=True)
class Finding:
    """A QA finding about the cycle (scope ``cycle`` or ``voi``)."""

    check_name: str
    scope: str
    scope_id: str
    status: str
    value_found: str
    value_expected: str
    message: str


@dataclass
class CycleDosimetry:
    """Records of one cycle, keyed by warehouse column names."""

    method: str
    voi_timepoints: list[dict] = field(default_factory=list)
    tac_fits: list[dict] = field(default_factory=list)
    voi_doses: list[dict] = field(default_factory=list)
    dvhs: list[dict] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    dose_map_gy: np.ndarray | None = None
