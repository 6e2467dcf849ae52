"""De-identification pieces: key-table permissions, UID determinism, date shifting."""

from __future__ import annotations

import stat

from pydicom.uid import CTImageStorage

from rntflow.listener.deid import KeyStore, _shift_da, _shift_dt


def test_keys_dir_private_and_uids_deterministic(tmp_path):
    keys = KeyStore(tmp_path / "keys")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for name in ("secret.key", "keys.sqlite"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    uid = "1.2.826.0.1.3680043.8.498.1234"
    a = keys.uid(uid)
    keys.close()
    again = KeyStore(tmp_path / "keys")  # same secret after a restart: same pseudonym
    assert again.uid(uid) == a and a.startswith("2.25.") and len(a) <= 64
    assert again.uid(CTImageStorage) == CTImageStorage  # a standard UID is not a study identifier
    assert KeyStore(tmp_path / "other").uid(uid) != a  # another secret, another UID
    s1 = again.date_shift_days("SITE01", "P1", "S1")
    assert s1 == again.date_shift_days("SITE01", "P1", "S1") and s1 <= -365
    # one shift for the trial: phantom-to-patient and subject-to-subject intervals stay exact
    assert again.date_shift_days("SITE02", "QC-CYL-SITE02", "SITE02-PH-CYL") == s1
    again.close()
    assert KeyStore(tmp_path / "keys").date_shift_days("SITE03", "P9", "S9") == s1  # kept across restarts


def test_date_shift_keeps_intervals_and_precision():
    assert _shift_da("20240301", -1) == "20240229"  # leap day
    assert _shift_dt("20240301083000.5+0100", -1) == "20240229083000.5+0100"
    assert _shift_dt("2024", -400)[:4] == "2022" and len(_shift_dt("2024", -400)) == 4
    assert _shift_da("garbage", -3) == ""


def _encoded_roundtrip(ds):
    import io

    import pydicom

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))  # elements still raw, as received


def test_private_overlay_un_and_person_names_handled_undecoded(tmp_path):
    """Decisions are taken on raw elements: private tags and overlays go at every depth, a
    date sent with VR UN is still shifted, any other person name is emptied, kept elements
    keep their bytes."""
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from rntflow.listener.deid import DeidIdentity, deidentify
    from tests.listener.conftest import PATIENT
    from tests.listener.dicomgen import ct_series

    ds = ct_series(PATIENT, 1, size=16)[0]
    ds.add_new(0x00091010, "LO", "PRIVATE-MARKER")
    ds.add_new(0x60003000, "OW", b"\1\2" * 8)  # overlay data
    ds.add(DataElement(0x00080021, "UN", b"20240301"))  # SeriesDate with VR UN
    item = Dataset()
    item.add_new(0x00291010, "LO", "NESTED-PRIVATE")
    item.PerformingPhysicianName = "Jansen^Piet"
    item.CodeValue = "KEEPME"
    ds.add_new(0x00400275, "SQ", Sequence([item]))  # RequestAttributesSequence (X in E.1-1)
    ds.AnatomicRegionSequence = Sequence([Dataset()])  # not in E.1-1: kept, walked into
    ref = ds.AnatomicRegionSequence[0]
    ref.add_new(0x00191001, "LO", "REF-PRIVATE")
    ref.add_new(0x50003000, "OW", b"\1\2")  # curve data, nested
    ref.CodeValue = "T-D4000"
    ref.EvaluatorName = "Jansen^Piet"  # a PN the table omits: emptied
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ref.add(DataElement(0x00080012, "UN", b"20240301"))  # InstanceCreationDate with VR UN
    pixels = bytes(ds.PixelData)
    raw = _encoded_roundtrip(ds)
    keys = KeyStore(tmp_path / "keys")
    out = _encoded_roundtrip(deidentify(raw, DeidIdentity("RNT-001-0001", -400), keys))
    assert not [e.tag for e in out.iterall() if e.tag.is_private]
    assert 0x60003000 not in out
    assert str(out.SeriesDate) == _shift_da("20240301", -400)
    assert "RequestAttributesSequence" not in out
    r = out.AnatomicRegionSequence[0]
    assert {e.keyword for e in r} == {
        "InstanceCreationDate",
        "ReferencedSOPClassUID",
        "ReferencedSOPInstanceUID",
        "CodeValue",
        "EvaluatorName",
    }
    assert r.ReferencedSOPClassUID == CTImageStorage
    assert r.ReferencedSOPInstanceUID == keys.uid("1.2.826.0.1.3680043.8.498.77")
    assert str(r.InstanceCreationDate) == _shift_da("20240301", -400)
    assert r.CodeValue == "T-D4000" and not r.EvaluatorName
    assert bytes(out.PixelData) == pixels
    assert str(out.PatientName) == "RNT-001-0001"
    keys.close()
