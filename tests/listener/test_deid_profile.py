"""PS3.15 Table E.1-1 completeness: every attribute the table lists carries a marker value,
at the top level and nested inside a sequence item; after de-identification no marker is
left, except where a declared option keeps the value (device identity, whole-day shifted
times, cleaned descriptors).

Run alone: ``.venv/bin/pytest tests/listener/test_deid_profile.py -q``
"""

from __future__ import annotations

import io

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rntflow.listener.deid import DeidIdentity, KeyStore, deidentify
from rntflow.listener.profile import (
    CLEANED_DESCRIPTORS,
    DEVICE_KEYWORDS,
    IDENTITY_DATES,
    load_table,
)
from tests.listener.conftest import PATIENT
from tests.listener.dicomgen import ct_series

_TEXT_VRS = {"AE", "CS", "LO", "LT", "SH", "ST", "UT", "UC", "UR", "PN"}
_NUM_VRS = {
    "US": 0x4D4B,
    "SS": 0x4D4B,
    "UL": 0x4D4B4D4B,
    "SL": 0x4D4B4D4B,
    "FL": 31337.0,
    "FD": 31337.0,
    "SV": 0x4D4B4D4B,
    "UV": 0x4D4B4D4B,
}


def _marker(i: int, vr: str) -> object:
    """A value for one VR that no de-identified output can contain by chance."""
    if vr in _TEXT_VRS:
        return f"MRK{i:04d}X"
    if vr == "DA":
        return "19030405"
    if vr == "DT":
        return "19030405060708"
    if vr == "TM":
        return "060708"
    if vr == "UI":
        return f"1.2.999.777.{i}"
    if vr in ("DS", "IS"):
        return str(7700000 + i)
    if vr == "AS":
        return "077Y"
    if vr in _NUM_VRS:
        return _NUM_VRS[vr]
    if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return f"MRK{i:04d}X".encode()
    if vr == "AT":
        return 0x4D4B4D4B
    return None


def _marked() -> tuple[Dataset, dict[int, object]]:
    """A CT instance with a marker in every table attribute (top level and nested)."""
    exact, _ = load_table()
    ds = ct_series(PATIENT, 1, size=8)[0]
    inner = Dataset()
    markers: dict[int, object] = {}
    for i, (tag, (kw, _action)) in enumerate(sorted(exact.items())):
        if tag >> 16 in (0x0000, 0x0002, 0x0008 if kw in ("SOPInstanceUID", "SOPClassUID") else -1) or kw in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
        ):
            continue
        vr = pydicom.datadict.dictionary_VR(tag) if kw else "LO"
        vr = vr.split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            item.PatientID = f"MRK{i:04d}X"
            item.PatientName = f"MRK{i:04d}Y"
            ds.add_new(tag, "SQ", Sequence([item]))
            markers[tag] = "sequence"
            continue
        value = _marker(i, vr)
        if value is None:
            continue
        ds.add_new(tag, vr, value)
        inner.add_new(tag, vr, value)
        markers[tag] = value
    # nested: the same markers inside an item of a sequence the table keeps
    ds.RadiopharmaceuticalInformationSequence = Sequence([inner])
    return ds, markers


def _exempt(tag: int) -> bool:
    kw = keyword_for_tag(tag)
    vr = pydicom.datadict.dictionary_VR(tag) if kw else "LO"
    return kw in DEVICE_KEYWORDS or kw in CLEANED_DESCRIPTORS or (vr == "TM" and kw not in IDENTITY_DATES)


def test_every_table_attribute_is_deidentified_nested_too(tmp_path):
    ds, markers = _marked()
    assert len(markers) > 550  # the whole table, not a sample
    keys = KeyStore(tmp_path / "keys")
    deidentify(ds, DeidIdentity("RNT-001-0001", -500), keys)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    out = buf.getvalue()
    survivors = []
    for tag, value in markers.items():
        if _exempt(tag):
            continue
        if value == "sequence":
            needle = f"MRK{sorted(load_table()[0]).index(tag):04d}".encode()
        elif isinstance(value, bytes):
            needle = value
        elif isinstance(value, str) and not value.isdigit() or isinstance(value, str) and len(value) >= 7:
            needle = value.encode()
        else:
            needle = None
        if needle is not None and needle in out:
            survivors.append(keyword_for_tag(tag) or f"{tag:08X}")
    assert not survivors, f"markers survived: {survivors[:20]} ({len(survivors)})"
    again = pydicom.dcmread(io.BytesIO(out))
    for holder in (again, again.RadiopharmaceuticalInformationSequence[0]):
        for tag, value in markers.items():
            if _exempt(tag) or tag not in holder or value == "sequence":
                continue
            elem = holder[tag]
            assert elem.value != value or elem.VR in ("DA", "DT") and not value, f"{elem.keyword} kept its marker"
    # the patient's identity is gone everywhere; the pseudonym is in place
    for s in (PATIENT.patient_id, PATIENT.name.split("^")[0], PATIENT.birth_date):
        assert s.encode() not in out
    assert again.PatientID == "RNT-001-0001" and again.PatientIdentityRemoved == "YES"
    # the options keep what the pipeline needs: device identity and times
    assert again.StationName == ds.StationName
    keys.close()


def test_cleaned_descriptor_keeps_voi_name_not_identity(tmp_path):
    ds = ct_series(PATIENT, 1, size=8)[0]
    roi = Dataset()
    roi.ROIName = f"Kidney_L {PATIENT.name.split('^')[0]} {PATIENT.patient_id}"
    ds.StructureSetROISequence = Sequence([roi])
    keys = KeyStore(tmp_path / "keys")
    deidentify(ds, DeidIdentity("RNT-001-0001", -500), keys)
    assert ds.StructureSetROISequence[0].ROIName == "Kidney_L"
    keys.close()


def test_impossible_dates_do_not_raise(tmp_path):
    ds = ct_series(PATIENT, 1, size=8)[0]
    ds.ContentDate = "20230229"
    ds.StudyDate = "20231340"
    ds.SeriesDate = "00000000"
    ds.AcquisitionDateTime = "20230229120000"
    keys = KeyStore(tmp_path / "keys")
    deidentify(ds, DeidIdentity("RNT-001-0001", -500), keys)
    assert ds.ContentDate == "" and ds.StudyDate == "" and ds.SeriesDate == ""
    assert ds.AcquisitionDateTime == ""
    keys.close()
