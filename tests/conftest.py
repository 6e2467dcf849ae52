"""Session-wide fixtures: one small simulated trial shared by the tests that read it."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from rntflow.simulation.trial import TrialSpec, simulate_trial

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
