"""Session-wide fixtures (one small simulated trial shared by the tests that read it) and tiers.

Two tiers: ``make check`` runs ``pytest -m "not slow"`` (pure code, tasks through ``.fn()``,
the import contract; under 2 minutes here), ``make test`` runs everything. A test is slow
when it simulates a trial, runs Prefect flows end to end, or pushes hundreds of instances:
the modules below are marked as a whole, single tests with ``@pytest.mark.slow``, and every
test that asks for the simulated trial or the Prefect harness is slow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
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


# --- a local S3-compatible server, for warehouse roots in object storage ------------------


@dataclass(frozen=True)
class MotoS3:
    """A moto S3 server on 127.0.0.1 holding the (empty) bucket ``bucket``.

    Any access key works; tests set :attr:`keys` as the AWS variables (``monkeypatch``) so
    the warehouse's pyarrow ``S3FileSystem`` finds credentials in the usual chain.
    """

    endpoint: str
    bucket: str = "rntflow-test"
    region: str = "us-east-1"
    keys: tuple[tuple[str, str], ...] = (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"))

    def filesystem(self):
        """A pyarrow ``S3FileSystem`` on the server (to look at the bucket as any reader would)."""
        import pyarrow.fs as pafs

        scheme, _, host = self.endpoint.partition("://")
        keys = dict(self.keys)
        return pafs.S3FileSystem(
            access_key=keys["AWS_ACCESS_KEY_ID"],
            secret_key=keys["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=host,
            scheme=scheme,
            region=self.region,
            allow_bucket_creation=True,
        )


@pytest.fixture(scope="session")
def moto_s3():
    """One moto S3 server (``moto[server]``, the ``test`` extra) per session, on a free port.

    Nothing is mocked in-process: the code under test talks HTTP to the server. Tests keep
    apart by writing under their own prefix of the shared bucket.
    """
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = MotoS3(endpoint=f"http://{host}:{port}")
        s3.filesystem().create_dir(s3.bucket)
        yield s3
    finally:
        server.stop()


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
