"""Dose methods (the ``voi_doses.method`` vocabulary) and which one gives a cycle's dose.

A cycle may hold several dose results for one VOI and engine: a provisional
single-time-point result written after the first scan and the multi-time-point result that
replaces it once the later scans have come, or both single-time-point variants. Its dose is
the result of the best method, in :data:`METHOD_PREFERENCE` order:

1. ``multi_time_point``: a fitted (or trapezoidal) time-activity curve over the cycle's
   scans (MIRD Pamphlet No. 16, Siegel et al. 1999, J Nucl Med 40:37S);
2. ``single_time_point_madsen``: one scan and the population effective half-life
   (Madsen et al. 2018, Med Phys 45:2318);
3. ``single_time_point_hanscheid``: one scan, ``TIA = A(t) 2 t / ln 2``, exact only when the
   scan was taken at the effective half-life (Hänscheid et al. 2018, J Nucl Med 59:75); it
   uses no half-life at all, so it ranks below Madsen's (see ``dosimetry/single_time_point.py``).

This module is the one home of that rule: Python callers use :func:`method_sort_key`,
:func:`best_method` or :func:`best_per_key`; the warehouse's SQL views use
:func:`method_rank_sql` / :func:`method_order_sql`, rendered from the same
:data:`METHOD_PREFERENCE`. A name outside the vocabulary ranks below every known method
(rank 0), and ties are broken by name, in Python and SQL alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Literal, TypeVar

from rntflow.core.errors import VocabularyError

MULTI_TIME_POINT = "multi_time_point"
SINGLE_TIME_POINT_MADSEN = "single_time_point_madsen"
SINGLE_TIME_POINT_HANSCHEID = "single_time_point_hanscheid"

#: A ``voi_doses.method`` value.
DoseMethod = Literal["multi_time_point", "single_time_point_madsen", "single_time_point_hanscheid"]

#: Dose methods, best first: a cycle's dose is the result of the first one present.
METHOD_PREFERENCE: tuple[DoseMethod, ...] = (MULTI_TIME_POINT, SINGLE_TIME_POINT_MADSEN, SINGLE_TIME_POINT_HANSCHEID)

#: Single-time-point methods (one scan and a population or assumed half-life).
SINGLE_TIME_POINT_METHODS: tuple[DoseMethod, ...] = (SINGLE_TIME_POINT_MADSEN, SINGLE_TIME_POINT_HANSCHEID)

R = TypeVar("R", bound=Mapping)


def method_rank(method: object) -> int:
    """Rank of a dose method: higher is better; 0 for a name outside :data:`METHOD_PREFERENCE`.

    Parameters
    ----------
    method : str or None
        A ``voi_doses.method`` value.

    Returns
    -------
    int
        ``len(METHOD_PREFERENCE)`` for the best method down to 1 for the last; 0 for any
        other value (None included).
    """
    if isinstance(method, str) and method in METHOD_PREFERENCE:
        return len(METHOD_PREFERENCE) - METHOD_PREFERENCE.index(method)
    return 0


def method_sort_key(method: object) -> tuple[int, str]:
    """Sort key putting the best method first (``sorted(methods, key=method_sort_key)``).

    Ties (names outside the vocabulary) are ordered by name, as :func:`method_order_sql` does.
    """
    return (-method_rank(method), method if isinstance(method, str) else "")


def best_method(methods: Iterable[object]) -> str:
    """The method whose result gives the cycle's dose, among ``methods``.

    Raises
    ------
    VocabularyError
        When ``methods`` is empty.
    """
    found = [m for m in methods]
    if not found:
        raise VocabularyError("no dose method to choose from")
    return str(min(found, key=method_sort_key))


def best_per_key(rows: Iterable[R], key: Sequence[str], method_column: str = "method") -> list[R]:
    """One row per ``key``: the row of the best method (the pure twin of ``voi_dose_cycle``).

    Parameters
    ----------
    rows : iterable of mappings
        Records, e.g. ``voi_doses`` rows.
    key : sequence of str
        Columns that identify one dose, e.g. ``("subject_id", "cycle", "voi", "engine")``.
    method_column : str
        Column holding the method.

    Returns
    -------
    list of mappings
        The chosen rows, in the order their key first appears in ``rows``.
    """
    chosen: dict[tuple[Hashable, ...], R] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in chosen or method_sort_key(row[method_column]) < method_sort_key(chosen[k][method_column]):
            chosen[k] = row
    return list(chosen.values())


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def method_rank_sql(column: str = "method") -> str:
    """SQL ``CASE`` expression giving :func:`method_rank` of ``column`` (higher is better).

    Parameters
    ----------
    column : str
        SQL expression of the method (a column name, optionally qualified: ``s.method``).
    """
    whens = " ".join(f"WHEN {_sql_literal(m)} THEN {method_rank(m)}" for m in METHOD_PREFERENCE)
    return f"CASE {column} {whens} ELSE 0 END"


def method_order_sql(column: str = "method") -> str:
    """SQL ``ORDER BY`` items putting the best method first, ties by name (:func:`method_sort_key`)."""
    return f"{method_rank_sql(column)} DESC, {column} ASC"
