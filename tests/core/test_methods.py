"""Dose-method ranking (rntflow.core.methods): Python and the rendered SQL choose alike."""

from __future__ import annotations

import itertools
import random
from typing import get_args

import duckdb
import pytest

from rntflow.core.errors import VocabularyError
from rntflow.core.methods import (
    METHOD_PREFERENCE,
    MULTI_TIME_POINT,
    SINGLE_TIME_POINT_HANSCHEID,
    SINGLE_TIME_POINT_MADSEN,
    SINGLE_TIME_POINT_METHODS,
    DoseMethod,
    best_method,
    best_per_key,
    method_order_sql,
    method_rank,
    method_rank_sql,
    method_sort_key,
)
from rntflow.warehouse.schema import TABLES

#: Names outside the vocabulary, to check that Python and SQL also agree on them.
OTHERS = ("mixed", "single_time_point", "a'quote")


def test_preference_order():
    assert METHOD_PREFERENCE == (MULTI_TIME_POINT, SINGLE_TIME_POINT_MADSEN, SINGLE_TIME_POINT_HANSCHEID)
    assert set(get_args(DoseMethod)) == set(METHOD_PREFERENCE)
    assert set(SINGLE_TIME_POINT_METHODS) == set(METHOD_PREFERENCE) - {MULTI_TIME_POINT}
    ranks = [method_rank(m) for m in METHOD_PREFERENCE]
    assert ranks == sorted(ranks, reverse=True) and min(ranks) > 0


def test_the_warehouse_admits_exactly_these_methods():
    col = next(c for c in TABLES["voi_doses"].columns if c.name == "method")
    assert set(col.allowed) == set(METHOD_PREFERENCE)


@pytest.mark.parametrize(
    "methods, best",
    [
        ((SINGLE_TIME_POINT_HANSCHEID, SINGLE_TIME_POINT_MADSEN), SINGLE_TIME_POINT_MADSEN),
        ((SINGLE_TIME_POINT_HANSCHEID, MULTI_TIME_POINT), MULTI_TIME_POINT),
        ((SINGLE_TIME_POINT_HANSCHEID, SINGLE_TIME_POINT_MADSEN, MULTI_TIME_POINT), MULTI_TIME_POINT),
        ((SINGLE_TIME_POINT_HANSCHEID,), SINGLE_TIME_POINT_HANSCHEID),
        (("mixed", SINGLE_TIME_POINT_HANSCHEID), SINGLE_TIME_POINT_HANSCHEID),
        (("zeta", "alpha"), "alpha"),
    ],
)
def test_best_method_whatever_the_order(methods, best):
    for perm in itertools.permutations(methods):
        assert best_method(perm) == best
        assert sorted(perm, key=method_sort_key)[0] == best


def test_madsen_wins_where_alphabetical_order_would_not():
    """The rule flows/qa.py used to apply (sort by name) picked Hänscheid over Madsen."""
    pair = [SINGLE_TIME_POINT_MADSEN, SINGLE_TIME_POINT_HANSCHEID]
    assert sorted(pair)[0] == SINGLE_TIME_POINT_HANSCHEID
    assert best_method(pair) == SINGLE_TIME_POINT_MADSEN


def test_unknown_and_missing_rank_below_every_method():
    for other in (*OTHERS, None, 3.0):
        assert method_rank(other) == 0
        assert all(method_sort_key(m) < method_sort_key(other) for m in METHOD_PREFERENCE)


def test_best_method_of_nothing_raises():
    with pytest.raises(VocabularyError):
        best_method([])


def test_best_per_key_one_row_per_key_first_seen_order():
    rows = [
        {"cycle": 2, "voi": "Liver", "method": SINGLE_TIME_POINT_HANSCHEID, "dose_gy": 1.0},
        {"cycle": 1, "voi": "Liver", "method": SINGLE_TIME_POINT_HANSCHEID, "dose_gy": 2.0},
        {"cycle": 1, "voi": "Liver", "method": SINGLE_TIME_POINT_MADSEN, "dose_gy": 3.0},
        {"cycle": 2, "voi": "Liver", "method": MULTI_TIME_POINT, "dose_gy": 4.0},
        {"cycle": 2, "voi": "Liver", "method": SINGLE_TIME_POINT_MADSEN, "dose_gy": 5.0},
        {"cycle": 1, "voi": "Spleen", "method": SINGLE_TIME_POINT_HANSCHEID, "dose_gy": 6.0},
    ]
    got = best_per_key(rows, ("cycle", "voi"))
    assert [(r["cycle"], r["voi"], r["dose_gy"]) for r in got] == [
        (2, "Liver", 4.0),
        (1, "Liver", 3.0),
        (1, "Spleen", 6.0),
    ]
    assert best_per_key([], ("cycle",)) == []


def test_rank_sql_gives_the_python_rank():
    names = [*METHOD_PREFERENCE, *OTHERS]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (method VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[n] for n in names] + [[None]])
    got = dict(con.execute(f"SELECT method, {method_rank_sql('method')} FROM t").fetchall())
    assert got == {n: method_rank(n) for n in [*names, None]}


def test_order_sql_picks_what_python_picks_for_every_subset():
    """Every non-empty subset of methods (in shuffled insertion order) per group: the SQL
    ``row_number() ... ORDER BY method_order_sql`` row is :func:`best_method`'s."""
    names = [*METHOD_PREFERENCE, *OTHERS]
    rng = random.Random(12)
    rows, want = [], {}
    for g, subset in enumerate(s for k in range(1, len(names) + 1) for s in itertools.combinations(names, k)):
        order = list(subset)
        rng.shuffle(order)
        rows += [(g, m) for m in order]
        want[g] = best_method(subset)
    con = duckdb.connect()
    con.execute("CREATE TABLE d (g INTEGER, method VARCHAR)")
    con.executemany("INSERT INTO d VALUES (?, ?)", rows)
    got = dict(
        con.execute(
            f"SELECT g, method FROM d QUALIFY row_number() OVER "
            f"(PARTITION BY g ORDER BY {method_order_sql('d.method')}) = 1"
        ).fetchall()
    )
    assert len(want) == 2 ** len(names) - 1
    assert got == want
