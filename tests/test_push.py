"""``rntflow push`` against dcmtk's storescp (a reference receiver), over real associations."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time

import pytest

from rntflow.cli import main
from rntflow.push import push_tree
from tests.conftest import free_port, have

pytestmark = pytest.mark.skipif(not have("storescp"), reason="dcmtk not installed")


@pytest.fixture()
def storescp(tmp_path):
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(
        ["/usr/bin/storescp", "--aetitle", "REFSCP", "--output-directory", str(out), "--accept-all", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    yield port, out
    proc.terminate()
    proc.wait(timeout=10)


def test_push_sends_every_instance_one_association_per_study(small_trial, storescp):
    port, out = storescp
    site_dir = small_trial / "dicom" / "SITE01"
    n_files = sum(1 for p in site_dir.rglob("*.dcm"))
    n_studies = sum(1 for p in site_dir.glob("*/*") if p.is_dir())
    report = push_tree(site_dir, "127.0.0.1", port, "SITE01_PACS", "REFSCP")
    assert report.ok, report.failures[:3]
    assert report.studies == n_studies and report.stored == n_files
    assert sum(1 for _ in out.iterdir()) == n_files


def test_push_reports_failures_with_their_status(small_trial, tmp_path, capsys):
    port = free_port()  # nobody listens here
    study = next((small_trial / "dicom" / "SITE01").glob("QC-CYL*/*"))
    junk = tmp_path / "tree"
    junk.mkdir()
    (junk / "notes.txt").write_text("not DICOM")
    rc = main(["push", str(study), "--port", str(port), "--calling-aet", "SITE01_PACS", "-q"])
    assert rc == 1
    out, err = capsys.readouterr()
    assert f"association refused (aborted, or no connection to 127.0.0.1:{port})" in err
    assert "0 stored" in out and "FAILED" not in out  # one line for the association, not one per file
    report = push_tree(junk, "127.0.0.1", port, "X", "Y")
    assert report.skipped_files == [str(junk / "notes.txt")] and report.studies == 0


def test_push_of_a_missing_folder_is_a_clear_error(capsys):
    assert main(["push", "/no/such/folder", "--calling-aet", "A"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_rejected_push_says_why_once_and_stops(tmp_path, capsys):
    """A receiver that does not know our AE title: one line with PS3.8's reason, not one per file."""
    from pynetdicom import AE, AllStoragePresentationContexts

    from tests.listener.dicomgen import FakePatient, ct_series, write_files

    folder = tmp_path / "tree"
    for i in range(3):  # three studies
        write_files(ct_series(FakePatient(patient_id=f"P{i}"), 2, size=8), folder / f"s{i}")
    scp = AE(ae_title="RECEIVER")
    scp.supported_contexts = AllStoragePresentationContexts
    scp.require_calling_aet = ["KNOWN_PACS"]
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        rc = main(
            ["push", str(folder), "--port", str(port), "--calling-aet", "STRANGER", "--called-aet", "RECEIVER", "-q"]
        )
    finally:
        server.shutdown()
    out, err = capsys.readouterr()
    assert rc == 1
    assert err.count("association refused") == 1
    assert "permanent rejection by DUL service-user: Calling AE title not recognised" in err
    assert out.strip().endswith("1 studies, 0 instances sent, 0 stored, 2 failed")  # stopped after the first


class _SlowCheckpoint(threading.Event):
    """pynetdicom's reactor checkpoint, with the reactor descheduled for 50 ms after passing it."""

    def wait(self, timeout=None):
        passed = super().wait(timeout)
        if passed:
            time.sleep(0.05)
        return passed


def test_a_response_the_reactor_takes_reaches_the_sender(small_trial, storescp, monkeypatch, caplog, tmp_path):
    """A loaded machine, made reproducible: the sender thread runs 200 ms late after each send
    while the requestor's reactor passes its checkpoint (see
    :func:`rntflow.push.keep_responses_for_the_sender`); pynetdicom alone loses the response."""
    import rntflow.push as push

    port, out = storescp
    real_associate = push.AE.associate

    def associate_on_a_loaded_machine(self, *args, **kwargs):
        assoc = real_associate(self, *args, **kwargs)
        slow = _SlowCheckpoint()
        slow.set()
        assoc._reactor_checkpoint = slow
        real_get = assoc.dimse.get_msg

        def late_get(block=False):
            if block:
                time.sleep(0.2)
            return real_get(block)

        assoc.dimse.get_msg = late_get
        return assoc

    monkeypatch.setattr(push.AE, "associate", associate_on_a_loaded_machine)
    monkeypatch.setattr(push, "DIMSE_TIMEOUT_S", 3.0)
    monkeypatch.setattr(push, "STUDY_ATTEMPTS", 1)
    study = tmp_path / "study"
    study.mkdir()
    for path in sorted(next((small_trial / "dicom" / "SITE01").glob("QC-CYL*/*")).rglob("*.dcm"))[:20]:
        shutil.copy(path, study / path.name)
    n_files = 20
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        report = push.push_tree(study, "127.0.0.1", port, "SITE01_PACS", "REFSCP")
    assert report.ok and report.stored == n_files, report.failures[:3]
    assert "Received unexpected C-STORE service message" not in caplog.text

    monkeypatch.setattr(push, "keep_responses_for_the_sender", lambda assoc: None)  # pynetdicom as it is
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        report = push.push_tree(study, "127.0.0.1", port, "SITE01_PACS", "REFSCP")
    assert report.stored < n_files and "Received unexpected C-STORE service message" in caplog.text
