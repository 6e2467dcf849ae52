"""One subject-cycle, from registered quantitative time points to VOI doses (pure).

The steps a physicist follows for a 177Lu cycle (EANM, Sjögreen Gleisner 2022), on arrays
that the caller has already quantified (Bq/mL at acquisition start) and registered onto
the reference time point's SPECT grid:

1. VOI activity per time point, partial-volume corrected with the site's recovery curve
   and the background around the VOI (:mod:`rntflow.dosimetry.voi_activity`).
2. Kinetics per VOI: with two or more points a TAC fit with AICc
   model choice (:func:`dosimetry.kinetics.fit_tac`); with one point a single-time-point
   TIA (Madsen with a population effective half-life when one is given, else Hänscheid;
   :mod:`rntflow.dosimetry.cycle_kinetics`).
3. Dose per VOI: organ engine for organs, sphere model for ``Lesion_<n>``, and the trial's
   voxel engine on a hybrid voxel TIA map; ``Kidneys`` is derived from both kidneys.
4. BED per organ, DVH per VOI (voxel engine), uncertainty per EANM (steps 3-4:
   :mod:`rntflow.dosimetry.cycle_dose`).

This module runs the steps in order on checked inputs; the records in and out are in
:mod:`rntflow.dosimetry.cycle_types`.

Nothing here reads files or knows Prefect. Results are plain records whose keys are the
warehouse's column names (units in the names).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry.cycle_dose import dose_map_gy, kidneys_record, voi_dose_records
from rntflow.dosimetry.cycle_kinetics import voi_kinetics
from rntflow.dosimetry.cycle_types import CycleDosimetry, CycleSettings, TimePoint, Voi
from rntflow.dosimetry.kernel import VoxelKernel


def cycle_method(n_timepoints: int) -> str:
    """``multi_time_point`` from two points on (a fit, or a trapezoid when a fit is not
    possible), ``single_time_point`` with one."""
    if n_timepoints <= 0:
        raise DosimetryInputError("a cycle needs at least one quantified time point")
    return "multi_time_point" if n_timepoints >= 2 else "single_time_point"


def _checked_timepoints(timepoints: Sequence[TimePoint], vois: Sequence[Voi]) -> list[TimePoint]:
    """Time points sorted by ``t_h``; raises :class:`DosimetryInputError` on bad input."""
    tps = sorted(timepoints, key=lambda tp: tp.t_h)
    if not tps:
        raise DosimetryInputError("a cycle needs at least one quantified time point")
    shape = tps[0].bq_per_ml.shape
    for tp in tps:
        if tp.t_h <= 0:
            raise DosimetryInputError(f"time point {tp.study_id} at {tp.t_h:.2f} h is not after the administration")
        if tp.bq_per_ml.shape != shape:
            raise DosimetryInputError("time points are not on one grid: register and resample first")
    if not vois:
        raise DosimetryInputError("no VOIs for this cycle")
    return tps


def compute_cycle_dosimetry(
    timepoints: Sequence[TimePoint],
    vois: Sequence[Voi],
    settings: CycleSettings,
    *,
    kernel: VoxelKernel | np.ndarray | None = None,
    hu_on_spect: np.ndarray | None = None,
) -> CycleDosimetry:
    """Doses of one subject-cycle (see module docstring).

    Parameters
    ----------
    timepoints : sequence of TimePoint
        Registered onto one grid; any order (sorted by ``t_h`` here).
    vois : sequence of Voi
    settings : CycleSettings
    kernel : VoxelKernel or ndarray, optional
        Needed for ``voxel_dpk`` (the caller caches it per nuclide and voxel size).
    hu_on_spect : ndarray, optional
        Reference CT on the SPECT grid (HU), for local-deposition densities.

    Raises
    ------
    DosimetryInputError
        No time points, a time point before administration, grids that differ, a VOI
        with no voxel in the image.
    """
    tps = _checked_timepoints(timepoints, vois)
    voxel_ml = float(np.prod(settings.spacing_mm)) / 1000.0
    out = CycleDosimetry(method=cycle_method(len(tps)))
    cal_rel = max(tp.calibration_rel for tp in tps)
    cal_id = tps[-1].calibration_id
    tias = voi_kinetics(tps, vois, settings, out.method, voxel_ml, out)  # steps 1-2
    if settings.voxel_engine in ("voxel_dpk", "voxel_led"):
        out.dose_map_gy = dose_map_gy(tps, vois, tias, settings, voxel_ml, kernel, hu_on_spect)
    for voi in vois:  # steps 3-4
        if voi.name in tias:
            voi_dose_records(voi, tias[voi.name], settings, out.dose_map_gy, voxel_ml, cal_rel, cal_id, out)
    if not any(v.name == "Kidneys" for v in vois):
        kidneys = kidneys_record(out.voi_doses, settings, cal_id)
        if kidneys is not None:
            out.voi_doses.append(kidneys)
    for r in out.voi_doses:
        r.pop("_t_eff_h", None)
    return out
