"""The coordinators' CSV files (enrolment, phantom fill log, outcomes): one reader, one validator.

Each file has a pydantic row model (its columns, types and per-row rules); this module
reads the file (UTF-8, a BOM accepted, blank lines skipped, cells stripped, empty cells
``None``), validates every row, checks that key columns are unique, and reports *every*
problem with its line number (the header is line 1) in one error of the caller's class,
naming the file: the coordinator fixes the file once, not once per run.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from rntflow.core.errors import RntflowError

Row = TypeVar("Row", bound=BaseModel)

#: At most this many problems are listed in one error (the count says how many more).
MAX_LISTED_PROBLEMS = 25


def dict_reader(fh: IO[str], required: Sequence[str]) -> tuple[csv.DictReader, list[str]]:
    """A :class:`csv.DictReader` over ``fh`` with its header names stripped of spaces.

    Returns the reader and the ``required`` columns the header lacks (empty when all are
    there).
    """
    reader = csv.DictReader(fh)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    return reader, [c for c in required if c not in header]


@dataclass
class CsvRecords(Generic[Row]):
    """What :func:`read_csv_records` found: valid rows and the problems of the others.

    Attributes
    ----------
    rows : list
        ``(line number, validated row)`` for every row without a problem.
    problems : list of str
        ``"line N (label): problem"`` for every problem, in file order.
    problems_by_label : dict
        The same problems keyed by the row's label (e.g. its subject_id), so that one bad
        row can fail only what it describes.
    """

    rows: list[tuple[int, Row]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problems_by_label: dict[str, list[str]] = field(default_factory=dict)

    def raise_if_problems(self, error: type[RntflowError], what: str) -> None:
        """Raise ``error`` listing every problem (at most :data:`MAX_LISTED_PROBLEMS`)."""
        if not self.problems:
            return
        listed = self.problems[:MAX_LISTED_PROBLEMS]
        more = len(self.problems) - len(listed)
        raise error(
            f"{what}: {len(self.problems)} problem(s):\n  "
            + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more else "")
        )


def _message(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"] if x != "__root__")
        if err.get("input") is None and err["type"] in ("missing", "string_type", "float_type", "int_type"):
            msg = "is empty"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc} {msg}" if loc else msg)
    return out


def read_csv_records(
    path: str | Path,
    model: type[Row],
    *,
    error: type[RntflowError],
    what: str,
    columns: Sequence[str],
    unique: Sequence[Sequence[str]] = (),
    label: Callable[[dict], str | None] | None = None,
    check: Callable[[Row], list[str]] | None = None,
    private: Sequence[str] = (),
) -> CsvRecords[Row]:
    """Read and validate a CSV file row by row.

    Parameters
    ----------
    path : str or Path
        The file.
    model : pydantic model class
        The row model; cells arrive as stripped strings or ``None`` (empty).
    error : RntflowError subclass
        Raised for file-level problems (missing, unreadable, not UTF-8, missing columns).
    what : str
        How messages name the file, e.g. ``"phantom fill log phantom_fills.csv"``.
    columns : sequence of str
        Columns the header must have (extra columns are ignored).
    unique : sequence of column tuples
        Each tuple's values must not repeat across rows.
    label : callable, optional
        The row's label in messages (default: its ``subject_id`` cell).
    check : callable, optional
        Further rules on a validated row (e.g. "subject is enrolled"); returns problems.
    private : sequence of str
        Columns whose values never appear in a message (identifiers such as PatientID).

    Returns
    -------
    CsvRecords
        Valid rows and every row problem; call :meth:`CsvRecords.raise_if_problems` to be
        strict.
    """
    p = Path(path)
    label = label or (lambda cells: cells.get("subject_id"))
    try:
        fh = p.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise error(f"{what}: cannot open {p} ({exc.strerror or exc})") from exc
    out: CsvRecords[Row] = CsvRecords()
    seen: dict[tuple, dict[tuple, int]] = {tuple(u): {} for u in unique}
    with fh:
        try:
            reader, missing = dict_reader(fh, columns)
            if missing:
                raise error(f"{what}: line 1: missing column(s) {', '.join(missing)}")
            for raw in reader:
                line = reader.line_num
                cells = {k: ((v or "").strip() or None) for k, v in raw.items() if k is not None}
                if not any(cells.values()):
                    continue
                name = label(cells)
                bad: list[str] = []
                row = None
                try:
                    row = model.model_validate(cells)
                except ValidationError as exc:
                    bad += _message(exc)
                if row is not None and check is not None:
                    bad += check(row)
                for cols, where in seen.items():
                    key = tuple(cells.get(c) for c in cols)
                    if any(k is not None for k in key):
                        if key in where:
                            shown = "/".join("<hidden>" if c in private else (v or "") for c, v in zip(cols, key))
                            bad.append(f"{', '.join(cols)} {shown} appears twice (first on line {where[key]})")
                        else:
                            where[key] = line
                tag = f"line {line}" + (f" ({name})" if name else "")
                for b in bad:
                    out.problems.append(f"{tag}: {b}")
                    out.problems_by_label.setdefault(name or "", []).append(f"{tag}: {b}")
                if not bad and row is not None:
                    out.rows.append((line, row))
        except csv.Error as exc:
            raise error(f"{what}, line {reader.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise error(f"{what}: not UTF-8 text ({exc.reason})") from exc
    return out
