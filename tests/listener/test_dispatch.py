"""Local dispatch: a flow that never started (Prefect's server not ready) is retried; a flow that
ran and failed is not (it recorded its own failure); Prefect's home comes from the config."""

from __future__ import annotations

import os
import threading

from rntflow.listener.handoff import LocalDispatcher, StudyHandoff
from tests.listener.conftest import wait_until

H = StudyHandoff("SITE01", "RNT-001-0001", "patient", "k1", "/spool/deid/SITE01/RNT-001-0001/k1", 3, 1)


def _recording(failures: list[BaseException]):
    calls: list[dict] = []
    done = threading.Event()

    def flow(**params):
        calls.append(params)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        done.set()

    return flow, calls, done


def test_server_not_ready_is_retried_until_the_flow_runs():
    boom = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server")
    flow, calls, done = _recording([boom, ConnectionError("connection refused")])
    d = LocalDispatcher(flow, config_path="/t.yaml", retry_delay_s=0.01)
    d.submit(H)
    assert done.wait(10)
    assert len(calls) == 3 and calls[-1]["config_path"] == "/t.yaml"


def test_a_failure_inside_the_flow_is_not_retried():
    flow, calls, _ = _recording([ValueError("corrupt pixel data")] * 3)
    d = LocalDispatcher(flow, retry_delay_s=0.01)
    d.submit(H)
    wait_until(lambda: calls)
    d.close()
    assert len(calls) == 1


def test_prefect_home_from_the_config(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    monkeypatch.setattr(os, "environ", env)  # nothing leaks into the session's Prefect harness
    LocalDispatcher(lambda **_: None, prefect_home=tmp_path / "prefect")
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "180"
    assert (tmp_path / "prefect").stat().st_mode & 0o077 == 0
