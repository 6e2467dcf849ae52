"""The DICOM Part-10 header (preamble, ``DICM`` and File Meta group) of a received instance.

pynetdicom's ``Event.encoded_dataset(include_meta=True)`` builds the same bytes through a
pydicom :class:`~pydicom.dataset.Dataset` and pydicom's writer, about a millisecond per
instance on a loaded machine, on the path that delays the C-STORE response (BENCHMARKS.md,
listener). The group is small and fixed (PS3.10 7.1), so it is encoded here directly:
explicit VR little endian, UIDs padded with NUL and text with a space to even length.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

PREAMBLE = b"\0" * 128 + b"DICM"
#: VRs whose explicit-VR header has a 4-byte length (PS3.5 7.1.2)
_LONG = {"OB"}


def _element(elem: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element of group 0x0002."""
    if vr in _LONG:
        return struct.pack("<HH2sHI", 0x0002, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, elem, vr.encode(), len(value)) + value


def _uid(value: str) -> bytes:
    raw = str(value).strip("\0 ").encode("ascii")
    if not raw or len(raw) > 64:
        raise ValueError("UID empty or longer than 64 characters")
    return raw + b"\0" * (len(raw) & 1)


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " * (len(raw) & 1)


def part10_prefix(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information of a received instance.

    The same elements and values as pynetdicom's ``create_file_meta`` (implementation
    class UID and version name are pynetdicom's).

    Parameters
    ----------
    sop_class_uid, sop_instance_uid : str
        The C-STORE request's Affected SOP Class and Instance UIDs.
    transfer_syntax : str
        The presentation context's transfer syntax UID.

    Raises
    ------
    ValueError
        When a UID is empty, too long or not ASCII (the caller falls back to pynetdicom).
    """
    body = b"".join(
        (
            _element(0x0001, "OB", b"\x00\x01"),
            _element(0x0002, "UI", _uid(sop_class_uid)),
            _element(0x0003, "UI", _uid(sop_instance_uid)),
            _element(0x0010, "UI", _uid(transfer_syntax)),
            _element(0x0012, "UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
            _element(0x0013, "SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)),
        )
    )
    return PREAMBLE + _element(0x0000, "UL", struct.pack("<I", len(body))) + body
