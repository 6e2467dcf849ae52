"""Finding 9: identified data (raw spool, quarantine, inbox) readable by the listener's
user only, whatever the umask; see deployments/README.md "File permissions".

Run alone: ``.venv/bin/pytest tests/listener/test_permissions.py -q``
"""

from __future__ import annotations

import os
import stat

from tests.listener.conftest import PATIENT, scu, wait_until
from tests.listener.dicomgen import ct_series


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identified_files_private(trial, listener):
    old = os.umask(0o022)
    try:
        assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
        assert assoc.send_c_store(ct_series(PATIENT, 1, size=16)[0]).Status == 0
        bad = ct_series(PATIENT, 1, size=16)[0]
        bad.BitsAllocated = 13
        assert assoc.send_c_store(bad).Status != 0
        assoc.release()
    finally:
        os.umask(old)
    spool = trial.spool_dir
    assert _mode(spool / "inbox.sqlite") == 0o600
    for suffix in ("-wal", "-shm"):
        f = spool / f"inbox.sqlite{suffix}"
        if f.exists():
            assert _mode(f) & 0o077 == 0, f
    raw = list((spool / "raw").rglob("*.dcm"))
    assert raw and all(_mode(f) == 0o600 for f in raw)
    for d in [spool / "raw", *(p for p in (spool / "raw").rglob("*") if p.is_dir())]:
        assert _mode(d) == 0o700, d
    quarantined = list((spool / "quarantine").rglob("*.*"))
    assert quarantined and all(_mode(f) == 0o600 for f in quarantined)
    assert _mode(spool / "quarantine") == 0o700
    assert _mode(spool / "quarantine" / "SITE01") == 0o700
    deid = wait_until(lambda: list((spool / "deid").rglob("*.dcm")))
    assert all(_mode(f) & 0o007 == 0 for f in deid)
