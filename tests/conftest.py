"""Session-wide fixtures (one small simulated trial shared by the tests that read it) and tiers.

Two tiers: ``make check`` runs ``pytest -m "not slow"`` (pure code, tasks through ``.fn()``,
the import contract; under 2 minutes here), ``make test`` runs everything. A test is slow
when it simulates a trial, runs Prefect flows end to end, or pushes hundreds of instances:
the modules below are marked as a whole, single tests with ``@pytest.mark.slow``, and every
test that asks for the simulated trial or the Prefect harness is slow.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from rntflow.simulation.trial import TrialSpec, simulate_trial

#: Test modules that are slow as a whole (paths relative to tests/).
SLOW_MODULES = (
    "flows/test_pipeline.py",
    "flows/test_faults.py",
    "flows/test_server_path.py",
    "harmonization/test_simulated_trial.py",
    "listener/test_crash.py",
    "listener/test_real_clients.py",
    "test_push.py",
    "test_simulation.py",
)


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).parent
    slow = {root / m for m in SLOW_MODULES}
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if Path(item.fspath) in slow or "small_trial" in fixtures or "prefect_harness" in fixtures:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (ephemeral API, SQLite database) for the whole session.

    It takes ~10 s to start (a minute on a loaded machine), so it starts once, and only for
    the tests that ask for it: tests of pure code and of tasks through ``.fn()`` do not.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_TELEMETRY_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


#: Three sites (one per template: counts, vendor Bq/mL with scale error, off-protocol),
#: one subject each, one cycle: every kind of object the simulator writes.
SMALL_SPEC = TrialSpec(n_sites=3, subjects_per_site=1, cycles=1, seed=7)


@pytest.fixture(scope="session")
def small_trial(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trial")
    simulate_trial(out, SMALL_SPEC)
    return out


@pytest.fixture(scope="session")
def small_truth(small_trial) -> dict:
    return json.loads((small_trial / "truth.json").read_text())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
