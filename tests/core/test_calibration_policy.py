"""Calibration currency, validity and drift rules (rntflow.core.calibration_policy): examples and laws."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rntflow.core.calibration_policy import (
    calibration_drift,
    calibration_timeline,
    current_calibration,
    drift_flag,
    drift_reference,
    expires_at,
    is_expired,
    validity,
)

T0 = datetime(2024, 1, 1, 9, 0)


@dataclass(frozen=True)
class Cal:
    """A minimal calibration record (the policy needs only these fields)."""

    valid_from: datetime
    value: float
    version: int = 1
    kind: str = "sensitivity"


def days(n: float) -> timedelta:
    return timedelta(days=n)


@st.composite
def series(draw, min_size: int = 0) -> list[Cal]:
    """A camera's calibrations: distinct versions, kinds mixed, same-day re-analyses possible."""
    n = draw(st.integers(min_size, 6))
    offsets = draw(st.lists(st.integers(0, 400), min_size=n, max_size=n))
    values = draw(st.lists(st.floats(1.0, 20.0), min_size=n, max_size=n))
    kinds = draw(st.lists(st.sampled_from(["sensitivity", "vendor_scale_factor"]), min_size=n, max_size=n))
    return [Cal(T0 + days(o), v, version=i + 1, kind=k) for i, (o, v, k) in enumerate(zip(offsets, values, kinds))]


def test_current_is_the_latest_made_by_then():
    a, b = Cal(T0, 10.0, 1), Cal(T0 + days(100), 11.0, 2)
    assert current_calibration([a, b], T0 - days(1)) is None  # made only after: none
    assert current_calibration([a, b], T0) is a
    assert current_calibration([b, a], T0 + days(99)) is a  # superseded only from b's valid_from
    assert current_calibration([a, b], T0 + days(100)) is b
    assert current_calibration([a, b]) is b
    assert current_calibration([], T0) is None


def test_same_day_reanalysis_wins():
    a, a2 = Cal(T0, 10.0, 1), Cal(T0, 10.2, 2)
    assert current_calibration([a2, a], T0 + days(1)) is a2
    assert calibration_drift([a], a2) == pytest.approx(2.0)


def test_validity_boundaries():
    assert expires_at(T0, 180) == T0 + days(180)
    assert not is_expired(T0, T0 + days(180), 180)  # the expiry instant is still valid
    assert is_expired(T0, T0 + days(180) + timedelta(seconds=1), 180)
    assert validity(T0, T0 + days(100), 180, 30).status == "valid"
    assert validity(T0, T0 + days(150), 180, 30).status == "due"
    v = validity(T0, T0 + days(149), 180, 30)
    assert v.status == "valid" and v.days_left == pytest.approx(31.0)
    assert validity(T0, T0 + days(180), 180, 0).status == "due"
    v = validity(T0, T0 + days(200), 180, 30)
    assert v.status == "expired" and v.days_left == pytest.approx(-20.0) and v.expires_at == T0 + days(180)


def test_drift_against_the_last_of_the_same_kind():
    a = Cal(T0, 10.0, 1)
    v = Cal(T0 + days(30), 1.05, 2, kind="vendor_scale_factor")
    b = Cal(T0 + days(60), 9.0, 3)
    assert drift_reference([a, v], b) is a  # the vendor factor in between is skipped
    assert calibration_drift([a, v], b) == pytest.approx(-10.0)
    assert calibration_drift([a], v) is None  # first of its kind
    assert drift_flag(-10.0, 5.0) is True and drift_flag(5.0, 5.0) is False and drift_flag(None, 5.0) is None


def test_timeline_validity_ends_and_supersession():
    a, b = Cal(T0, 10.0, 1), Cal(T0 + days(100), 10.8, 2)
    ea, eb = calibration_timeline([b, a], 180, 5.0)
    assert (ea.calibration, ea.superseded_by, ea.valid_until, ea.drift_pct) == (a, b, T0 + days(100), None)
    assert (eb.calibration, eb.superseded_by, eb.valid_until) == (b, None, T0 + days(280))
    assert eb.drift_pct == pytest.approx(8.0) and eb.drift_flag is True
    c = Cal(T0 + days(400), 10.9, 3)
    assert calibration_timeline([a, c], 180, 5.0)[0].valid_until == T0 + days(180)  # expired before its successor


@given(series(), st.integers(-10, 500))
def test_current_is_made_by_then_and_nothing_later_made_by_then(cals, offset):
    at = T0 + days(offset)
    cur = current_calibration(cals, at)
    made = [c for c in cals if c.valid_from <= at]
    if cur is None:
        assert not made
        return
    assert cur.valid_from <= at
    assert all((c.valid_from, c.version) <= (cur.valid_from, cur.version) for c in made)


@given(series(), st.integers(0, 400), st.integers(0, 400))
def test_currency_never_goes_back_in_time(cals, a, b):
    t1, t2 = sorted((T0 + days(a), T0 + days(b)))
    c1, c2 = current_calibration(cals, t1), current_calibration(cals, t2)
    if c1 is not None:
        assert c2 is not None and (c2.valid_from, c2.version) >= (c1.valid_from, c1.version)


@given(series(), st.integers(0, 400))
def test_current_calibration_ignores_order_of_the_records(cals, offset):
    at = T0 + days(offset)
    assert current_calibration(cals, at) == current_calibration(list(reversed(cals)), at)


@given(st.integers(0, 500), st.integers(1, 400), st.integers(0, 60))
def test_validity_statuses_are_ordered_in_time(age, validity_days, due):
    v = validity(T0, T0 + days(age), validity_days, due)
    assert v.expires_at - T0 == days(validity_days)
    assert v.days_left == pytest.approx(validity_days - age)
    assert (v.status == "expired") == (age > validity_days)
    assert (v.status == "valid") == (validity_days - age > due)


@given(series(min_size=1), st.floats(0.5, 20.0))
def test_timeline_laws(cals, tolerance):
    tl = calibration_timeline(cals, 180, tolerance)
    assert sorted(e.calibration.version for e in tl) == sorted(c.version for c in cals)
    keys = [(e.calibration.valid_from, e.calibration.version) for e in tl]
    assert keys == sorted(keys)
    for i, (e, nxt) in enumerate(zip(tl, tl[1:] + [None])):
        assert e.superseded_by is (None if nxt is None else nxt.calibration)
        assert e.calibration.valid_from <= e.valid_until <= expires_at(e.calibration.valid_from, 180)
        same_kind_before = [x.calibration for x in tl[:i] if x.calibration.kind == e.calibration.kind]
        if not same_kind_before:
            assert e.drift_pct is None and e.drift_flag is None
        else:
            ref = same_kind_before[-1].value
            assert e.drift_pct == pytest.approx(100 * (e.calibration.value - ref) / ref)
            assert e.drift_flag == (abs(e.drift_pct) > tolerance)


@given(st.floats(0.1, 100.0), st.floats(0.1, 100.0))
def test_drift_sign_and_identity(ref, value):
    a, b = Cal(T0, ref, 1), Cal(T0 + days(1), value, 2)
    d = calibration_drift([a], b)
    assert (d > 0) == (value > ref) and (d < 0) == (value < ref)
    assert calibration_drift([a], Cal(T0 + days(1), ref, 2)) == 0.0
