"""Real senders: dcmtk ``storescu`` and an Orthanc server forwarding stable studies.

Run alone: ``.venv/bin/pytest tests/listener/test_real_clients.py -q``
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request

import pytest

from rntflow.listener.status import inbox_status
from tests.listener.conftest import PATIENT, assert_no_phi, free_port, wait_until
from tests.listener.dicomgen import ct_series, nm_multiframe, rtstruct_for, write_files

STORESCU = shutil.which("storescu")
ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)


def storescu(port: int, files, calling: str = "SITE01_PACS", called: str = "RNTFLOW"):
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        [STORESCU, "-aet", calling, "-aec", called, "-nh", "127.0.0.1", str(port), *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.dcmtk
@pytest.mark.skipif(STORESCU is None, reason="dcmtk storescu not installed")
def test_dcmtk_storescu_push_and_resend(trial, listener, tmp_path):
    cts = ct_series(PATIENT, 20)
    study = str(cts[0].StudyInstanceUID)
    files = write_files(cts + [nm_multiframe(PATIENT, study_uid=study), rtstruct_for(PATIENT, cts)], tmp_path / "push")
    r = storescu(listener.port, files)
    assert r.returncode == 0, r.stderr
    st = inbox_status(trial)["sites"]["SITE01"]
    assert st["instances"] == 22
    r = storescu(listener.port, files)  # the PACS re-sends everything
    assert r.returncode == 0
    st = inbox_status(trial)["sites"]["SITE01"]
    assert (st["instances"], st["duplicates"]) == (22, 22)
    h = wait_until(lambda: listener.dispatcher.accepted)[0]
    assert h.n_instances == 22
    bad = storescu(listener.port, files[:1], calling="NOT_A_SITE")
    assert bad.returncode != 0 or "Rejected" in bad.stderr + bad.stdout


@pytest.mark.orthanc
@pytest.mark.skipif(ORTHANC is None or STORESCU is None, reason="Orthanc or dcmtk missing")
def test_orthanc_forwards_stable_study(trial, listener, tmp_path):
    """Orthanc as the hospital PACS (AET SITE01_PACS), the listener as a modality, and a
    Lua OnStableStudy that forwards each stable study, as a site would configure it."""
    dicom_port, http_port = free_port(), free_port()
    lua = tmp_path / "forward.lua"
    # (SendToModality from a study callback treats the id as an instance in Orthanc
    # 1.10, so the study is forwarded with the REST store job, as sites usually do.)
    lua.write_text(
        "function OnStableStudy(studyId, tags, metadata)\n"
        "  RestApiPost('/modalities/rntflow/store',\n"
        '    \'{"Resources": ["\' .. studyId .. \'"], "Synchronous": false}\')\n'
        "end\n"
    )
    cfg = {
        "Name": "site01-pacs",
        "StorageDirectory": str(tmp_path / "orthanc-storage"),
        "IndexDirectory": str(tmp_path / "orthanc-index"),
        "DicomAet": "SITE01_PACS",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "StableAge": 1,
        "DicomModalities": {"rntflow": ["RNTFLOW", "127.0.0.1", listener.port]},
        "LuaScripts": [str(lua)],
        "Plugins": [],
        "DicomAlwaysAllowStore": True,
        "HttpServerEnabled": True,
        "ConcurrentJobs": 1,
    }
    conf = tmp_path / "orthanc.json"
    conf.write_text(json.dumps(cfg))
    log = (tmp_path / "orthanc.log").open("w")
    proc = subprocess.Popen([ORTHANC, str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=1)
                return True
            except OSError:
                return False

        wait_until(up, timeout_s=20, poll_s=0.2)
        cts = ct_series(PATIENT, 8)
        files = write_files(
            cts + [nm_multiframe(PATIENT, study_uid=str(cts[0].StudyInstanceUID))], tmp_path / "modality"
        )
        r = storescu(dicom_port, files, calling="NMCT_SCANNER", called="SITE01_PACS")
        assert r.returncode == 0, r.stderr
        h = wait_until(lambda: listener.dispatcher.accepted, timeout_s=30)[0]
        assert (h.site_id, h.subject_id, h.n_instances) == ("SITE01", "RNT-001-0001", 9)
        assert inbox_status(trial)["sites"]["SITE01"]["instances"] == 9
        for f in (trial.spool_dir / "deid").rglob("*.dcm"):
            assert_no_phi(f.read_bytes(), str(f))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
