"""Subflows run without heartbeats; the flow run a process starts keeps its own (``flows/runners.py``)."""

from __future__ import annotations

from prefect import flow
from prefect.flow_engine import FlowRunEngine
from prefect.settings import get_current_settings

from rntflow.flows.runners import subflows_without_heartbeats


@flow
def _noop() -> None:
    return None


def test_subflows_started_in_the_block_send_no_heartbeats():
    outside = FlowRunEngine(flow=_noop).heartbeat_seconds
    assert outside is not None and outside >= 30  # Prefect's default: every flow run beats (180 s)
    with subflows_without_heartbeats():
        assert FlowRunEngine(flow=_noop).heartbeat_seconds is None
        settings = get_current_settings()
        with subflows_without_heartbeats():  # nested: no second settings copy
            assert get_current_settings() is settings
    assert FlowRunEngine(flow=_noop).heartbeat_seconds == outside  # scoped, not changed for the process
