"""``rntflow push`` against dcmtk's storescp (a reference receiver), over real associations."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

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
    proc = subprocess.Popen(["/usr/bin/storescp", "--aetitle", "REFSCP", "--output-directory", str(out),
                             "--accept-all", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    assert "FAILED" in capsys.readouterr().out
    report = push_tree(junk, "127.0.0.1", port, "X", "Y")
    assert report.skipped_files == [str(junk / "notes.txt")] and report.studies == 0


def test_push_of_a_missing_folder_is_a_clear_error(capsys):
    assert main(["push", "/no/such/folder", "--calling-aet", "A"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
