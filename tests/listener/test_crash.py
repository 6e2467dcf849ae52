"""Fault test: the listener SIGKILLed in the middle of a large push, restarted, push
repeated: every acknowledged instance is present, and none twice.

Run alone: ``.venv/bin/pytest tests/listener/test_crash.py -q``
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from rntflow.core.config import load_config
from tests.listener.conftest import PATIENT, scu, wait_until, write_config
from tests.listener.dicomgen import ct_series

REPO = Path(__file__).resolve().parents[2]


def _start(config_path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rntflow.listener.app", "listen", "--config", str(config_path)],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _echo_ok(port: int) -> bool:
    a = scu().associate("127.0.0.1", port, ae_title="RNTFLOW")
    if not a.is_established:
        return False
    ok = "Status" in a.send_c_echo()
    a.release()
    return ok


def test_sigkill_mid_push_loses_no_acknowledged_instance(tmp_path):
    config_path = write_config(tmp_path)
    cfg = load_config(config_path)
    port = cfg.listener.port
    log = tmp_path / "listener.log"
    datasets = ct_series(PATIENT, 300, size=128)
    acked: list[str] = []
    proc = _start(config_path, log)
    try:
        wait_until(lambda: _echo_ok(port), timeout_s=30, poll_s=0.2)
        assoc = scu().associate("127.0.0.1", port, ae_title="RNTFLOW")
        for i, ds in enumerate(datasets):
            if i == 120:
                os.kill(proc.pid, signal.SIGKILL)  # mid-push, between two C-STOREs
            rsp = assoc.send_c_store(ds)
            if "Status" in rsp and rsp.Status == 0:
                acked.append(str(ds.SOPInstanceUID))
            if not assoc.is_established:
                break
        proc.wait(timeout=10)
        assert 100 <= len(acked) < len(datasets)
        proc = _start(config_path, log)
        wait_until(lambda: _echo_ok(port), timeout_s=30, poll_s=0.2)
        assoc = scu().associate("127.0.0.1", port, ae_title="RNTFLOW")
        statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
        assoc.release()
        assert statuses == [0] * len(datasets)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    db = sqlite3.connect(cfg.spool_dir / "inbox.sqlite")
    rows = db.execute("SELECT sop_uid, COUNT(*) FROM instances GROUP BY sop_uid").fetchall()
    counts = dict(rows)
    assert all(counts.get(uid) == 1 for uid in acked)  # every ack present, once
    assert sorted(counts) == sorted(str(d.SOPInstanceUID) for d in datasets)
    assert set(counts.values()) == {1}  # nothing stored twice
    files = list((cfg.spool_dir / "raw").rglob("*.dcm"))
    assert len(files) == len(datasets)
    assert not list((cfg.spool_dir / "raw").rglob("*.tmp"))
