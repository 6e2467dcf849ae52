"""Admission limits come from the trial config (``listener.admission``), are validated,
and the running listener enforces a configured limit over real sockets.

Run alone: ``.venv/bin/pytest tests/listener/test_admission_config.py -q``
"""

from __future__ import annotations

import pytest
import yaml

from rntflow.core.config import AdmissionSettings, load_config
from rntflow.core.errors import ConfigError
from rntflow.listener.app import start_listener
from rntflow.listener.front import AdmissionLimits
from tests.listener.conftest import FakeDispatcher, wait_until, write_config
from tests.listener.test_front import HOSTILE, closed_by_peer, connect, push_ok


def test_limits_default_to_the_config_defaults():
    assert AdmissionLimits() == AdmissionLimits.from_settings(AdmissionSettings())
    assert AdmissionLimits.from_settings(AdmissionSettings(max_per_address=3)).max_per_address == 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_per_address", 0),
        ("max_pending", -1),
        ("max_associations", 2.5),
        ("max_associations", True),
        ("max_request_bytes", 100),
        ("request_timeout_s", 0),
        ("idle_timeout_s", -5),
        ("request_timeout_s", ".inf"),
        ("no_such_limit", 3),
    ],
)
def test_invalid_admission_settings_are_refused_by_name(tmp_path, field, value):
    path = write_config(tmp_path)
    text = path.read_text().replace("listener:\n", f"listener:\n  admission:\n    {field}: {value}\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"listener.admission.{field}"):
        load_config(path)


def test_configured_per_address_limit_is_enforced_on_real_sockets(tmp_path):
    """``max_per_address: 2`` in the config: a third connection from one address is
    closed at once while two are open; the configured site still pushes; the default (16)
    would have admitted it."""
    path = write_config(tmp_path, admission={"max_per_address": 2, "request_timeout_s": 30})
    cfg = load_config(path)
    assert cfg.listener.admission.max_per_address == 2
    assert AdmissionSettings().max_per_address > 3
    srv = start_listener(cfg, FakeDispatcher(), block=False, run_worker=False)
    held = []
    try:
        assert srv.server.limits.max_per_address == 2
        held = [connect(srv.port) for _ in range(2)]
        wait_until(lambda: srv.server.book.open_count(HOSTILE) == 2)
        third = connect(srv.port)
        assert closed_by_peer(third, 10.0)  # long before the 30 s request timeout
        third.close()
        assert srv.server.book.open_count(HOSTILE) == 2
        assert not any(closed_by_peer(s, 0.5) for s in held)  # the first two are kept
        assert push_ok(srv.port, 2) == [0, 0]  # another address is not affected
    finally:
        for s in held:
            s.close()
        srv.shutdown()


def test_configured_association_cap_and_idle_timeout_reach_pynetdicom(tmp_path):
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["listener"]["admission"] = {"max_associations": 3, "idle_timeout_s": 7.5}
    path.write_text(yaml.safe_dump(raw))
    srv = start_listener(load_config(path), FakeDispatcher(), block=False, run_worker=False)
    try:
        ae = srv.server.ae
        assert ae.maximum_associations == 3
        assert ae.network_timeout == 7.5
        assert push_ok(srv.port, 1) == [0]
    finally:
        srv.shutdown()
