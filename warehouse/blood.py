"""Import of the trial's blood-sample CSV into the ``blood_samples`` table.

File format (the simulator writes the same), one header row, comma-separated::

    subject_id,cycle,t_h,activity_concentration_bq_per_ml

==================================  ==========================================================
column                              rule
==================================  ==========================================================
subject_id                          an enrolled subject (trial pseudonym)
cycle                               integer >= 1; when the warehouse holds administrations of
                                    the subject, one of its cycles
t_h                                 hours after the *start of administration*, > 0 and at most
                                    :data:`MAX_SAMPLE_H` (six weeks, a cycle's length)
activity_concentration_bq_per_ml    whole-blood activity concentration (Bq/mL) as measured at
                                    the sampling time (not decay-corrected), >= 0 (0: below
                                    detection; the fit leaves it out with a warning)
==================================  ==========================================================

Why ``t_h`` rather than clock times: the warehouse holds the administration times of the
de-identified DICOM, whose dates are shifted by the listener (trial-wide), so a laboratory's
clock time cannot be subtracted from them without the re-identification key, which the
warehouse never holds (nor should it: a real sampling date would be an identifier). Blood
sheets record the time after injection anyway.

``(subject_id, cycle, t_h)`` must not repeat. The whole file is validated before anything
is loaded: any problem raises :class:`~rntflow.core.errors.BloodImportError` listing every
problem with its line number (the header is line 1), and nothing is written.

Loading is idempotent (:func:`rntflow.warehouse.writer.load_table`): re-importing the same
file adds nothing; a changed concentration adds a result version. The file is the truth for
every (subject, cycle) it lists: a sample of such a cycle that the warehouse holds and the
file no longer lists is kept with ``excluded = True`` (a new version), so a corrected sampling
time replaces the old sample rather than adding to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from rntflow.core.csvfiles import read_csv_records
from rntflow.core.errors import WarehouseError
from rntflow.warehouse.writer import LoadReport, load_table, read_latest

BLOOD_COLUMNS = ("subject_id", "cycle", "t_h", "activity_concentration_bq_per_ml")
#: Latest plausible sampling time (h after administration): six weeks, one cycle.
MAX_SAMPLE_H = 1008.0
#: Columns of the ``blood_samples`` table that the import fills.
TABLE_COLUMNS = ("trial_id", "site_id", "subject_id", "cycle", "t_h", "activity_per_ml_mbq", "excluded")


class BloodImportError(WarehouseError):
    """A blood-sample CSV that cannot be imported (every problem listed, nothing written)."""


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class BloodRow(BaseModel):
    """The blood-sample file's row model: cells as text, checked by :func:`_blood_problems`."""

    subject_id: str | None = None
    cycle: str | None = None
    t_h: str | None = None
    activity_concentration_bq_per_ml: str | None = None


def _blood_problems(row: BloodRow, known: set[str], cycles: Mapping[str, set[int]]) -> list[str]:
    """Every problem of one row (rules in the module docstring)."""
    bad = []
    if not row.subject_id:
        bad.append("subject_id is empty")
    elif row.subject_id not in known:
        bad.append(f"unknown subject_id {row.subject_id!r} (not enrolled)")
    cycle = _number(row.cycle)
    if cycle is None or cycle != int(cycle) or cycle < 1:
        bad.append(f"cycle {row.cycle or ''!r} is not an integer >= 1")
    elif row.subject_id in cycles and int(cycle) not in cycles[row.subject_id]:
        have = ", ".join(str(c) for c in sorted(cycles[row.subject_id]))
        bad.append(f"cycle {int(cycle)} has no administration in the warehouse (cycles {have})")
    t = _number(row.t_h)
    if t is None or not 0.0 < t <= MAX_SAMPLE_H:
        bad.append(f"t_h {row.t_h or ''!r} is not a number of hours > 0 and <= {MAX_SAMPLE_H:g}")
    conc = _number(row.activity_concentration_bq_per_ml)
    if conc is None or conc < 0:
        bad.append(
            f"activity_concentration_bq_per_ml {row.activity_concentration_bq_per_ml or ''!r} is not a number >= 0"
        )
    return bad


def parse_blood_samples(
    csv_path: str | Path,
    known_subject_ids: Mapping[str, str],
    administered_cycles: Mapping[str, Iterable[int]] | None = None,
) -> pd.DataFrame:
    """Read and validate a blood-sample CSV.

    Parameters
    ----------
    csv_path : str or Path
        The file (format in the module docstring).
    known_subject_ids : mapping subject_id -> site_id
        Enrolled subjects.
    administered_cycles : mapping subject_id -> cycles, optional
        Cycles with an administration in the warehouse; a subject listed here may only have
        samples of these cycles (subjects not listed are not checked: their studies may not
        have arrived yet).

    Returns
    -------
    pandas.DataFrame
        Columns ``site_id, subject_id, cycle, t_h, activity_per_ml_mbq, excluded``.

    Raises
    ------
    BloodImportError
        Listing each problem with its line number; nothing is imported.
    """
    csv_path = Path(csv_path)
    sites = dict(known_subject_ids)
    cycles = {s: {int(c) for c in cs} for s, cs in (administered_cycles or {}).items()}
    found = read_csv_records(
        csv_path,
        BloodRow,
        error=BloodImportError,
        what=str(csv_path),
        columns=BLOOD_COLUMNS,
        unique=[("subject_id", "cycle", "t_h")],
        check=lambda row: _blood_problems(row, set(sites), cycles),
    )
    found.raise_if_problems(BloodImportError, f"{csv_path}: nothing imported")
    _check_numeric_duplicates(found.rows, csv_path)
    records = [
        {
            "site_id": sites[row.subject_id],
            "subject_id": row.subject_id,
            "cycle": int(float(row.cycle)),
            "t_h": float(row.t_h),
            "activity_per_ml_mbq": float(row.activity_concentration_bq_per_ml) / 1e6,
            "excluded": False,
        }
        for _, row in found.rows
    ]
    frame = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS[1:]))
    frame["cycle"] = frame["cycle"].astype("int16")
    return frame


def _check_numeric_duplicates(rows: list[tuple[int, BloodRow]], csv_path: Path) -> None:
    """``1`` and ``1.0`` are one time: the text-level uniqueness check cannot see that."""
    seen: dict[tuple, int] = {}
    bad = []
    for line, row in rows:
        key = (row.subject_id, int(float(row.cycle)), float(row.t_h))
        if key in seen:
            bad.append(f"line {line} ({row.subject_id}): subject_id, cycle, t_h repeat line {seen[key]}")
        else:
            seen[key] = line
    if bad:
        raise BloodImportError(f"{csv_path}: nothing imported: {len(bad)} problem(s):\n  " + "\n  ".join(bad))


def _withdrawn(warehouse_dir: str | Path, trial_id: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Samples in the warehouse of the file's cycles that the file no longer lists, as ``excluded`` rows."""
    held = read_latest(warehouse_dir, "blood_samples", "trial_id = ?", [trial_id])
    if held.empty:
        return frame.iloc[0:0]
    listed = set(zip(frame["subject_id"], frame["cycle"].astype(int), frame["t_h"].astype(float)))
    cycles = set(zip(frame["subject_id"], frame["cycle"].astype(int)))
    keep = [
        (s, int(c)) in cycles and (s, int(c), float(t)) not in listed
        for s, c, t in zip(held["subject_id"], held["cycle"], held["t_h"])
    ]
    gone = held.loc[keep, list(TABLE_COLUMNS[1:])].copy()
    gone["excluded"] = True
    return gone


def import_blood_samples(
    warehouse_dir: str | Path,
    csv_path: str | Path,
    known_subject_ids: Mapping[str, str],
    *,
    trial_id: str,
    administered_cycles: Mapping[str, Iterable[int]] | None = None,
) -> tuple[LoadReport, pd.DataFrame]:
    """Validate a blood-sample CSV completely, then upsert it into ``blood_samples``.

    Parameters
    ----------
    warehouse_dir : str or Path
        Warehouse root.
    csv_path : str or Path
        Blood-sample CSV (format in the module docstring).
    known_subject_ids : mapping subject_id -> site_id
        Enrolled subjects.
    trial_id : str
        Trial of the samples.
    administered_cycles : mapping subject_id -> cycles, optional
        See :func:`parse_blood_samples`.

    Returns
    -------
    (LoadReport, DataFrame)
        What was written (re-importing the same file adds nothing) and the rows loaded
        (``excluded`` rows included).

    Raises
    ------
    BloodImportError
        Naming row numbers and problems; nothing is loaded.
    """
    frame = parse_blood_samples(csv_path, known_subject_ids, administered_cycles)
    frame = pd.concat([frame, _withdrawn(warehouse_dir, trial_id, frame)], ignore_index=True)
    frame.insert(0, "trial_id", trial_id)
    return load_table(warehouse_dir, "blood_samples", frame), frame
