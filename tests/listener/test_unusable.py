"""Findings 3 and 8: nothing is acknowledged that cannot be used.

Impossible dates are de-identified (emptied), not dropped after the acknowledgement; pixel
data that contradicts its header or does not decode, and a deflate bomb, are refused with a
failure status and quarantined with the reason; an instance whose de-identification fails
after the acknowledgement (a full disk) is retried, then shown as failed with its study.

Run alone: ``.venv/bin/pytest tests/listener/test_unusable.py -q``
"""

from __future__ import annotations

import errno
import sqlite3
import zlib

import pynetdicom._config
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

import rntflow.listener.stable as stable
from rntflow.listener.status import format_status, inbox_status
from tests.listener.conftest import PATIENT, scu, wait_until
from tests.listener.dicomgen import CT, ct_series, to_bytes
from tests.listener.test_hostile import EXPLICIT_LE, part10

DEFLATED = "1.2.840.10008.1.2.1.99"


def _ct(**attrs):
    ds = ct_series(PATIENT, 1, size=16)[0]
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _unusable_cases() -> list[tuple[str, bytes, str, str]]:
    """(label, dataset bytes, transfer syntax, SOP instance UID), each to be refused."""
    cases = []
    for label, attrs in (
        ("rows-0", {"Rows": 0, "Columns": 0}),
        ("bits-0", {"BitsAllocated": 0}),
        ("bits-13", {"BitsAllocated": 13}),
        ("frames-neg", {"NumberOfFrames": -5}),
    ):
        ds = _ct(**attrs)
        cases.append((label, to_bytes(ds, with_meta=False), EXPLICIT_LE, ds.SOPInstanceUID))
    long_px = _ct()
    long_px.PixelData = long_px.PixelData * 20
    cases.append(("pixels-20x-long", to_bytes(long_px, with_meta=False), EXPLICIT_LE, long_px.SOPInstanceUID))
    # native pixel data sent on a JPEG transfer syntax (defined-length PixelData)
    native = _ct()
    cases.append(("native-on-jpeg", to_bytes(native, with_meta=False), JPEGBaseline8Bit, native.SOPInstanceUID))
    # encapsulated fragments that are not JPEG / not RLE
    for ts, label in ((JPEGBaseline8Bit, "jpeg-garbage"), (RLELossless, "rle-garbage")):
        ds = _ct()
        ds.PixelData = encapsulate([b"\xff\xd8\xff" + bytes(range(200)) * 3])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        cases.append((label, to_bytes(ds, with_meta=False), ts, ds.SOPInstanceUID))
    # deflate bomb: 64 MiB of zero pixels inflate from ~64 KiB
    bomb = _ct(Rows=4096, Columns=8192)
    bomb.PixelData = bytes(4096 * 8192 * 2)
    raw = to_bytes(bomb, with_meta=False)
    co = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    cases.append(("deflate-bomb", co.compress(raw) + co.flush(), DEFLATED, bomb.SOPInstanceUID))
    return cases


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unusable_instances_refused_and_quarantined(trial, listener, tmp_path, monkeypatch):
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    cases = _unusable_cases()
    ae = scu()
    for ts in (JPEGBaseline8Bit, RLELossless, DEFLATED):
        ae.add_requested_context(CT, ts)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert assoc.is_established
    codes = {}
    for i, (label, data, ts, uid) in enumerate(cases):
        path = tmp_path / f"u{i}.dcm"
        path.write_bytes(part10(data, CT, uid, ts))
        rsp = assoc.send_c_store(path)
        codes[label] = int(rsp.Status) if "Status" in rsp else None
    # a valid RLE instance on the same association is acknowledged (decoders work)
    good = _ct()
    good.compress(RLELossless)
    codes["rle-valid"] = int(assoc.send_c_store(good).Status)
    assoc.release()
    assert codes.pop("rle-valid") == 0
    assert all(c is not None and c & 0xF000 in (0xA000, 0xC000) for c in codes.values()), codes
    db = sqlite3.connect(trial.spool_dir / "inbox.sqlite")
    reasons = [r[0] for r in db.execute("SELECT reason FROM quarantine ORDER BY id")]
    assert len(reasons) == len(cases)
    joined = " | ".join(reasons)
    for word in (
        "geometry",
        "BitsAllocated 0",
        "BitsAllocated 13",
        "NumberOfFrames -5",
        "header needs",
        "native pixel data on compressed",
        "does not decode",
        "inflates beyond",
    ):
        assert word in joined, (word, joined)
    assert inbox_status(trial)["sites"]["SITE01"]["instances"] == 1  # only the valid RLE


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_impossible_dates_acknowledged_and_all_handed_off(trial, listener):
    cts = ct_series(PATIENT, 5, size=16)
    cts[1].ContentDate = "20230229"
    cts[2].StudyDate = "20231340"
    cts[3].SeriesDate = "00000000"
    assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert [int(assoc.send_c_store(d).Status) for d in cts] == [0] * 5
    assoc.release()
    h = wait_until(lambda: listener.dispatcher.accepted)[0]
    assert h.n_instances == 5
    assert len(list((trial.spool_dir / "deid").rglob("*.dcm"))) == 5


def _disk_full_after(n_ok: list[int]):
    real = stable.atomic_write

    def fake(path, *args, **kwargs):
        if n_ok[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n_ok[0] -= 1
        return real(path, *args, **kwargs)

    return fake


def test_disk_full_after_ack_retried_then_recovers(trial, listener, monkeypatch):
    budget = [0]
    monkeypatch.setattr(stable, "atomic_write", _disk_full_after(budget))
    cts = ct_series(PATIENT, 3, size=16)
    assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert [int(assoc.send_c_store(d).Status) for d in cts] == [0] * 3
    assoc.release()
    db = sqlite3.connect(trial.spool_dir / "inbox.sqlite")
    wait_until(lambda: db.execute("SELECT MIN(attempts) FROM instances").fetchone()[0] >= 2)
    assert not listener.dispatcher.accepted  # not handed off short of instances
    budget[0] = 100  # the disk has room again
    h = wait_until(lambda: listener.dispatcher.accepted)[0]
    assert h.n_instances == 3
    assert not list((trial.spool_dir / "deid").rglob("*.tmp"))


def test_disk_full_after_ack_shown_failed_with_study(trial, listener, monkeypatch):
    monkeypatch.setattr(stable, "atomic_write", _disk_full_after([1]))
    cts = ct_series(PATIENT, 3, size=16)
    assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert [int(assoc.send_c_store(d).Status) for d in cts] == [0] * 3
    assoc.release()
    st = wait_until(lambda: (s := inbox_status(trial)["sites"]["SITE01"])["failed_instances"] == 2 and s)
    assert len(st["failed_studies"]) == 1
    failed = st["failed_studies"][0]
    assert failed["failed_instances"] == 2 and "OSError" in failed["error"]
    assert "FAILED" in format_status(inbox_status(trial))
    import time

    time.sleep(1.0)  # longer than the quiet period: still not handed off
    assert not listener.dispatcher.accepted
