"""Shared fixtures: a trial config in tmp_path, a running listener, a fake dispatcher."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import yaml

from rntflow.core.config import load_config
from rntflow.listener.app import start_listener
from rntflow.listener.faults import FaultInjector
from rntflow.listener.handoff import DispatchError, StudyHandoff
from rntflow.listener.stable import WorkerSettings
from tests.listener.dicomgen import FakePatient

PATIENT = FakePatient()
UNENROLLED = FakePatient(name="de Vries^Maria", patient_id="MRN77001234", birth_date="19611102", sex="F")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, **listener: object) -> Path:
    """A trial config with three sites under ``root``; returns the YAML path."""
    (root / "trial").mkdir(parents=True, exist_ok=True)
    cfg = {
        "trial_id": "TEST-LU177",
        "listener": {
            "ae_title": "RNTFLOW",
            "host": "127.0.0.1",
            "port": free_port(),
            "quiet_period_s": 0.5,
            "min_free_disk_mb": 1,
            **listener,
        },
        "paths": {
            "spool": "data/spool",
            "warehouse": "data/warehouse",
            "keys": "data/keys",
            "enrolment": "trial/enrolment.csv",
        },
        "sites": [
            {"id": "SITE01", "name": "A", "calling_ae_titles": ["SITE01_PACS"]},
            {"id": "SITE02", "name": "B", "calling_ae_titles": ["GEPACS02"]},
            {"id": "SITE03", "name": "C", "calling_ae_titles": ["ANYSCAN3"], "source_addresses": ["10.9.9.9"]},
        ],
        "protocol": {
            "photopeak_windows": [{"name": "p", "center_kev": 208, "width_pct": 20}],
            "time_points": [{"nominal_h": 24, "earliest_h": 18, "latest_h": 30}],
        },
    }
    path = root / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (root / "trial" / "enrolment.csv").write_text(
        "site_id,patient_id,subject_id,kind\n"
        f"SITE01,{PATIENT.patient_id},RNT-001-0001,patient\n"
        f"SITE02,{PATIENT.patient_id},RNT-002-0001,patient\n"
    )
    return path


class FakeDispatcher:
    """Records hand-offs; fails the first ``fail_n`` submissions."""

    def __init__(self, fail_n: int = 0) -> None:
        self.fail_n = fail_n
        self.calls = 0
        self.accepted: list[StudyHandoff] = []
        self.lock = threading.Lock()

    def submit(self, h: StudyHandoff) -> str:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_n:
                raise DispatchError("prefect unavailable (simulated)")
            self.accepted.append(h)
            return f"run-{len(self.accepted)}"


@pytest.fixture
def trial(tmp_path: Path):
    path = write_config(tmp_path)
    return load_config(path)


@pytest.fixture
def listener(trial):
    """A running listener (fast worker) with a fake dispatcher and a fault injector."""
    disp = FakeDispatcher()
    faults = FaultInjector()
    srv = start_listener(
        trial,
        disp,
        block=False,
        faults=faults,
        worker_settings=WorkerSettings(quiet_period_s=0.5, poll_s=0.05, backoff_base_s=0.05),
    )
    srv.dispatcher = disp
    srv.faults = faults
    yield srv
    srv.shutdown()


def wait_until(pred, timeout_s: float = 15.0, poll_s: float = 0.05):
    """Poll ``pred`` until truthy (returns its value) or fail after ``timeout_s``."""
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def scu(calling: str = "SITE01_PACS", contexts: tuple[str, ...] = ()):
    """A pynetdicom SCU AE requesting the given storage contexts (plus Verification)."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification

    from rntflow.listener.handlers import set_nodelay
    from rntflow.push import keep_responses_for_the_sender
    from tests.listener.dicomgen import CT, NM, RTSTRUCT

    class _NoDelayAE(AE):
        """Requests TCP_NODELAY on its sockets, as a tuned PACS would; its associations
        are guarded against pynetdicom's lost-response race, as ``rntflow push``'s are
        (:func:`rntflow.push.keep_responses_for_the_sender`)."""

        def associate(self, *args, **kwargs):
            kwargs.setdefault("evt_handlers", []).append((evt.EVT_CONN_OPEN, set_nodelay))
            assoc = super().associate(*args, **kwargs)
            keep_responses_for_the_sender(assoc)
            return assoc

    ae = _NoDelayAE(ae_title=calling)
    ae.add_requested_context(Verification)
    for uid in contexts or (CT, NM, RTSTRUCT):
        ae.add_requested_context(uid)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


PHI_STRINGS = (
    PATIENT.name.split("^")[0],
    PATIENT.patient_id,
    PATIENT.birth_date,
    UNENROLLED.name.split("^")[0].replace("de ", ""),
    UNENROLLED.patient_id,
    UNENROLLED.birth_date,
    "Keizersgracht",
    "Bakker",
)


def assert_no_phi(blob: bytes | str, where: str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for s in PHI_STRINGS:
        assert s.encode() not in data, f"{s!r} found in {where}"
