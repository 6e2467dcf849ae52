"""Fault test: >= 100 malformed or hostile inputs leave the service up, each refused.

Run alone: ``.venv/bin/pytest tests/listener/test_hostile.py -q``

Every input is sent as raw bytes (pynetdicom's chunked sending: the file meta is read, the
dataset bytes go on the wire undecoded). Each must get a failure status and its bytes
must be in quarantine, or be refused at presentation-context negotiation (unknown
transfer syntaxes); afterwards C-ECHO and a valid C-STORE still succeed.
"""

from __future__ import annotations

import io
import random
import struct

import pydicom
import pynetdicom._config
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info

from rntflow.listener.status import inbox_status
from tests.listener.conftest import PATIENT, scu
from tests.listener.dicomgen import CT, NM, ct_series, to_bytes

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def part10(ds_bytes: bytes, sop_class: str, sop_inst: str, ts: str = EXPLICIT_LE) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_inst
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.3811.3.0.4"
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue() + ds_bytes


def element_offsets(data: bytes) -> list[tuple[int, str]]:
    """Offsets and VRs of the top-level elements of an explicit-LE dataset."""
    out, pos = [], 0
    while pos < len(data):
        vr = data[pos + 4 : pos + 6].decode()
        out.append((pos, vr))
        if vr in ("OB", "OW", "SQ", "UN", "UT", "OF", "OD", "OL", "UC", "UR"):
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return out


def hostile_corpus() -> list[tuple[str, bytes, str]]:
    """(label, dataset bytes, transfer syntax) for >= 100 bad inputs; one CT template."""
    rng = random.Random(7)
    ds = ct_series(PATIENT, 1, size=16)[0]
    good = to_bytes(ds, with_meta=False)
    elems = element_offsets(good)
    cases: list[tuple[str, bytes, str]] = []
    # 1. truncations at 30 random cut points
    for cut in sorted(rng.sample(range(1, len(good) - 1), 30)):
        cases.append((f"truncated@{cut}", good[:cut], EXPLICIT_LE))
    # 2. bad lengths: each of the first 20 elements claims more than the stream holds
    for i, (off, vr) in enumerate(elems[:20]):
        b = bytearray(good)
        if vr in ("OB", "OW", "SQ", "UN", "UT"):
            struct.pack_into("<I", b, off + 8, 0xFFFFFFF0)
        else:
            struct.pack_into("<H", b, off + 6, 0xFFFF)
        cases.append((f"overlong-length#{i}", bytes(b), EXPLICIT_LE))
    # 3. wrong VRs: invalid codes and valid codes contradicting the dictionary
    for i, (off, _vr) in enumerate(elems[:12]):
        b = bytearray(good)
        b[off + 4 : off + 6] = b"ZZ" if i % 2 else b"\x00\x01"
        cases.append((f"invalid-vr#{i}", bytes(b), EXPLICIT_LE))
    for i, (off, vr) in enumerate(e for e in elems if e[1] in ("US", "DS", "LO", "CS", "DA", "SH")):
        b = bytearray(good)
        b[off + 4 : off + 6] = {"US": b"LO", "DS": b"US", "LO": b"UL", "CS": b"FD", "DA": b"SS", "SH": b"AT"}[vr]
        cases.append((f"contradicting-vr#{i}", bytes(b), EXPLICIT_LE))
        if i >= 9:
            break
    # 4. oversized elements: absurd string values and a huge declared UT
    for kw, n in (
        ("PatientName", 5000),
        ("StudyDescription", 40000),
        ("Manufacturer", 3000),
        ("StationName", 1000),
        ("AccessionNumber", 500),
    ):
        big = ct_series(PATIENT, 1, size=16)[0]
        setattr(big, kw, "X" * n)
        cases.append((f"oversized-{kw}", to_bytes(big, with_meta=False), EXPLICIT_LE))
    big = bytearray(good)
    big += struct.pack("<HH2sHI", 0x7FE1, 0x0010, b"UT", 0, 0x7FFFFFFF)
    cases.append(("oversized-declared-UT", bytes(big), EXPLICIT_LE))
    # 5. structure attacks: nesting bomb, out-of-order tags, stray delimiters, garbage
    nest = b""
    for _ in range(40):
        nest = (
            struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + nest
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        )
    cases.append(("nesting-bomb", good[: elems[3][0]] + nest, EXPLICIT_LE))
    swapped = good[elems[2][0] : elems[3][0]] + good[elems[1][0] : elems[2][0]]
    cases.append(("tags-out-of-order", good[: elems[1][0]] + swapped + good[elems[3][0] :], EXPLICIT_LE))
    cases.append(("stray-item-delimiter", struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + good, EXPLICIT_LE))
    for i in range(10):
        cases.append((f"random-garbage#{i}", rng.randbytes(rng.randint(1, 4000)), EXPLICIT_LE))
    cases.append(("single-byte", b"\x08", EXPLICIT_LE))
    cases.append(("deflate-garbage", rng.randbytes(300), "1.2.840.10008.1.2.1.99"))
    cases.append(("implicit-read-as-explicit-garbage", good[::-1], "1.2.840.10008.1.2"))
    # 6. missing or invalid UIDs
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
        bad = ct_series(PATIENT, 1, size=16)[0]
        delattr(bad, kw)
        cases.append((f"missing-{kw}", to_bytes(bad, with_meta=False), EXPLICIT_LE))
    for i, val in enumerate(("1.2.abc", "1..2", "01.2.3", "1.2.3." + "9" * 70)):
        bad = ct_series(PATIENT, 1, size=16)[0]
        bad.StudyInstanceUID = val
        cases.append((f"invalid-uid#{i}", to_bytes(bad, with_meta=False), EXPLICIT_LE))
    # 7. pixel data shorter than its header says
    short = ct_series(PATIENT, 1, size=16)[0]
    short.Rows = 512
    cases.append(("pixel-data-short", to_bytes(short, with_meta=False), EXPLICIT_LE))
    # 8. SOP class contradicting the presentation context
    for i in range(3):
        bad = ct_series(PATIENT, 1, size=16)[0]
        bad.SOPClassUID = NM
        cases.append((f"sop-class-mismatch#{i}", to_bytes(bad, with_meta=False), EXPLICIT_LE))
    # 9. unknown transfer syntaxes (refused at negotiation)
    for i in range(6):
        cases.append((f"unknown-ts#{i}", good, f"1.2.826.0.1.3680043.99.{i}"))
    return cases


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hostile_inputs_are_quarantined_or_refused(trial, listener, tmp_path, monkeypatch):
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    corpus = hostile_corpus()
    assert len(corpus) >= 100
    outcomes: dict[str, str] = {}
    # unknown transfer syntaxes: refused at presentation-context negotiation
    unknown = [(label, ts) for label, _, ts in corpus if label.startswith("unknown-ts")]
    probe = scu(contexts=("1.2.840.10008.1.1",))
    for _, ts in unknown:
        probe.add_requested_context(CT, ts)
    assoc = probe.associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    accepted_ts = {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    rejected_ts = {str(cx.transfer_syntax[0]) for cx in assoc.rejected_contexts}
    assoc.release()
    for label, ts in unknown:
        assert ts not in accepted_ts and ts in rejected_ts
        outcomes[label] = "refused"
    ae = scu()
    for ts in ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2"):
        ae.add_requested_context(CT, ts)
    n_sent = 0
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert assoc.is_established
    for i, (label, data, ts) in enumerate(corpus):
        if label.startswith("unknown-ts"):
            continue
        inst = pydicom.uid.generate_uid()
        path = tmp_path / f"h{i:03d}.dcm"
        path.write_bytes(part10(data, CT, inst, ts))
        if not assoc.is_established:
            assoc = ae.associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
        status = assoc.send_c_store(path)
        n_sent += 1
        code = int(status.Status) if "Status" in status else None
        assert code is not None and code != 0, f"{label} was acknowledged ({code})"
        outcomes[label] = f"0x{code:04X}"
    assoc.release()
    assert sum(v == "refused" for v in outcomes.values()) == 6
    assert all(v in ("0xC000", "0xA900") for k, v in outcomes.items() if v != "refused")
    # every sent input is kept in quarantine with a reason; the service is still up
    st = inbox_status(trial)
    assert st["sites"]["SITE01"]["quarantined"] == n_sent
    assert len(list((trial.spool_dir / "quarantine" / "SITE01").glob("*.json"))) == n_sent
    assert st["sites"]["SITE01"]["instances"] == 0
    assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert assoc.send_c_echo().Status == 0
    assert assoc.send_c_store(ct_series(PATIENT, 1, size=16)[0]).Status == 0
    assoc.release()
