"""Flow tests: one session-wide Prefect test harness (an ephemeral API and SQLite database).

The harness takes ~10 s to start, so it starts once, and only for the tests that ask for
``prefect_harness`` (tests of pure code and of tasks through ``.fn()`` do not need it).
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_TELEMETRY_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
