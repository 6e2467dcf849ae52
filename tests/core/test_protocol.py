"""Protocol time-point rules (rntflow.core.protocol): examples and laws."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rntflow.core.config import TimePointWindow
from rntflow.core.protocol import (
    assign_to_windows,
    last_time_point_reached,
    last_window,
    match_window,
    missing_time_points,
    nominal_time_point,
    out_of_window_reason,
    time_point_deadline,
)

#: The demo trial's windows (deployments/trial.example.yaml).
DEMO = [
    TimePointWindow(nominal_h=4, earliest_h=2, latest_h=8),
    TimePointWindow(nominal_h=24, earliest_h=18, latest_h=30),
    TimePointWindow(nominal_h=96, earliest_h=72, latest_h=120),
    TimePointWindow(nominal_h=168, earliest_h=144, latest_h=192),
]
#: Two overlapping windows: 6-8 h lies in both.
OVERLAP = [
    TimePointWindow(nominal_h=4, earliest_h=2, latest_h=8),
    TimePointWindow(nominal_h=24, earliest_h=6, latest_h=30),
]


@st.composite
def windows(draw) -> list[TimePointWindow]:
    """1-5 valid windows (possibly overlapping, in any order)."""
    out = []
    for _ in range(draw(st.integers(1, 5))):
        nominal = draw(st.floats(1.0, 300.0))
        before = draw(st.floats(0.0, 50.0))
        after = draw(st.floats(0.0, 50.0))
        out.append(TimePointWindow(nominal_h=nominal, earliest_h=max(nominal - before, 0.01), latest_h=nominal + after))
    return out


times = st.one_of(st.none(), st.just(math.nan), st.floats(0.0, 400.0))


def test_demo_windows():
    assert [match_window(t, DEMO) for t in (2.0, 4.1, 8.0, 8.01, 23.8, 200.0)] == [0, 0, 0, None, 1, None]
    assert nominal_time_point(95.0, DEMO) == 96
    assert nominal_time_point(130.0, DEMO) is None
    assert [out_of_window_reason(t, DEMO) for t in (None, math.nan, 1.0, 10.0, 193.0)] == [
        "no_time",
        "no_time",
        "early",
        "between",
        "late",
    ]


def test_overlap_goes_to_the_nearest_nominal_and_fills_one_window():
    assert match_window(7.0, OVERLAP) == 0
    assert match_window(20.0, OVERLAP) == 1
    # one scan at 7 h is the 4 h time point only: 24 h is still missing
    assert missing_time_points([7.0], OVERLAP) == [24]
    assert missing_time_points([7.0, 20.0], OVERLAP) == []


def test_tie_goes_to_the_first_window():
    w = [
        TimePointWindow(nominal_h=10, earliest_h=5, latest_h=20),
        TimePointWindow(nominal_h=20, earliest_h=10, latest_h=30),
    ]
    assert match_window(15.0, w) == 0


def test_last_time_point():
    assert last_window(DEMO).nominal_h == 168
    assert not last_time_point_reached([4.0, 24.0, 96.0], DEMO)
    assert last_time_point_reached([4.0, 144.0], DEMO)  # the window's earliest bound counts
    assert last_time_point_reached([250.0], DEMO)  # a late scan: nothing later is expected
    assert not last_time_point_reached([None, math.nan], DEMO)
    with pytest.raises(ValueError):
        last_window([])


@given(windows(), times)
def test_a_match_holds_the_time_and_no_nearer_window_does(ws, t):
    i = match_window(t, ws)
    if i is None:
        assert t is None or t != t or not any(w.earliest_h <= t <= w.latest_h for w in ws)
        return
    assert ws[i].earliest_h <= t <= ws[i].latest_h
    assert all(abs(ws[i].nominal_h - t) <= abs(w.nominal_h - t) for w in ws if w.earliest_h <= t <= w.latest_h)


@given(windows(), times)
def test_out_of_window_reason_agrees_with_bounds(ws, t):
    if match_window(t, ws) is not None:
        return
    reason = out_of_window_reason(t, ws)
    if t is None or t != t:
        assert reason == "no_time"
    elif reason == "early":
        assert t < min(w.earliest_h for w in ws)
    elif reason == "late":
        assert t > max(w.latest_h for w in ws)
    else:
        assert reason == "between" and min(w.earliest_h for w in ws) <= t <= max(w.latest_h for w in ws)


@given(windows(), st.lists(times, max_size=8))
def test_assignment_is_a_partition(ws, ts):
    a = assign_to_windows(ts, ws)
    placed = sorted([k for slot in a.slots for k in slot] + list(a.out_of_window))
    assert placed == list(range(len(ts)))
    for i, slot in enumerate(a.slots):
        assert all(match_window(ts[k], ws) == i for k in slot)
    assert missing_time_points(ts, ws) == [ws[i].nominal_h for i in range(len(ws)) if not a.slots[i]]


@given(windows(), st.lists(times, max_size=8), times)
def test_adding_a_scan_never_adds_a_missing_time_point(ws, ts, extra):
    before = missing_time_points(ts, ws)
    after = missing_time_points([*ts, extra], ws)
    assert set(after) <= set(before) and len(before) - len(after) <= 1


@given(windows(), st.lists(times, max_size=8))
def test_order_of_scans_does_not_matter(ws, ts):
    assert missing_time_points(ts, ws) == missing_time_points(list(reversed(ts)), ws)
    assert last_time_point_reached(ts, ws) == last_time_point_reached(list(reversed(ts)), ws)


@given(windows(), st.lists(times, max_size=8))
def test_a_scan_in_the_last_window_means_the_last_time_point_arrived(ws, ts):
    last = ws.index(last_window(ws))
    if assign_to_windows(ts, ws).slots[last]:
        assert last_time_point_reached(ts, ws)


@given(windows(), st.integers(0, 10**6))
def test_deadline_is_administration_plus_latest_h(ws, minutes):
    admin = datetime(2024, 1, 1) + timedelta(minutes=minutes)
    for w in ws:
        assert (time_point_deadline(admin, w) - admin).total_seconds() == pytest.approx(3600 * w.latest_h)


@given(windows(), st.lists(st.floats(0.0, 400.0), max_size=8))
def test_dose_limit_qa_uses_the_same_rule(ws, ts):
    """``rntflow.dosimetry.limits.missing_time_points`` (tuples, as flows/qa.py passes them) agrees.

    Only known times: the dosimetry wrapper rejects unknown ones (DosimetryInputError).
    """
    from rntflow.dosimetry.limits import missing_time_points as qa_missing

    assert qa_missing(ts, [(w.nominal_h, w.earliest_h, w.latest_h) for w in ws]) == missing_time_points(ts, ws)
