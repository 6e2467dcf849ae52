"""Structural and semantic checks of an encoded DICOM dataset, before it is acknowledged.

The walker reads the element stream itself (tags, VRs, lengths, nested sequences and
encapsulated pixel data) instead of trusting a forgiving parser, so truncations, lengths
that overrun the stream, VRs that contradict the data dictionary, bad fixed-size lengths,
out-of-order tags and absurd nesting are all caught. :func:`check_pixels` then checks the
pixel data against its header (geometry, bit depth, frame count, native length) and decodes
compressed pixel data frame by frame with the available decoders, so that nothing is
acknowledged that the pipeline cannot read. A deflated dataset is inflated only up to a
bound (:func:`inflate_bounded`).
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.uid import UID

#: DICOM status codes used for a refused C-STORE (PS3.4 Annex B.2.3 / PS3.7 Annex C).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000

UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_SHORT_VRS = {
    "AE",
    "AS",
    "AT",
    "CS",
    "DA",
    "DS",
    "DT",
    "FL",
    "FD",
    "IS",
    "LO",
    "LT",
    "PN",
    "SH",
    "SL",
    "SS",
    "ST",
    "TM",
    "UI",
    "UL",
    "US",
}
_FIXED_SIZE = {
    "US": 2,
    "SS": 2,
    "UL": 4,
    "SL": 4,
    "FL": 4,
    "FD": 8,
    "AT": 4,
    "OW": 2,
    "OF": 4,
    "OD": 8,
    "OL": 4,
    "OV": 8,
    "SV": 8,
    "UV": 8,
}
#: PS3.5 Table 6.2-1 maximum value lengths (bytes per value) of the bounded string VRs.
_MAX_VALUE_LEN = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "DT": 26,
    "IS": 12,
    "LO": 64,
    "SH": 16,
    "TM": 16,
    "UI": 64,
    "PN": 3 * 64 + 2,
}
#: a value is refused as oversized beyond this multiple of its VR's maximum (UI: exact)
OVERSIZE_FACTOR = 2
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: deepest sequence nesting accepted (real objects rarely exceed 6)
MAX_DEPTH = 16
#: bounds on an inflated (deflate transfer syntax) dataset: never more than
#: MAX_INFLATED_BYTES, and never more than MAX_DEFLATE_RATIO times the received bytes
#: once past MIN_INFLATE_ALLOWANCE_BYTES (a sparse mask may compress ~100:1, a bomb ~1000:1)
MAX_INFLATED_BYTES = 512 * 1024 * 1024
MIN_INFLATE_ALLOWANCE_BYTES = 16 * 1024 * 1024
MAX_DEFLATE_RATIO = 100
#: BitsAllocated values PS3.3 C.7.6.3.1.1 (1, or a multiple of 8) the pipeline can hold
ALLOWED_BITS_ALLOCATED = frozenset({1, 8, 16, 32, 64})

_NATIVE_TS = {
    "1.2.840.10008.1.2": (True, False),  # implicit VR little endian
    "1.2.840.10008.1.2.1": (False, False),  # explicit VR little endian
    "1.2.840.10008.1.2.2": (False, True),  # explicit VR big endian (retired)
    "1.2.840.10008.1.2.1.99": (False, False),  # deflated explicit VR little endian
}


class InvalidDataset(Exception):
    """The dataset is malformed; ``status`` is the C-STORE failure status to send."""

    def __init__(self, reason: str, status: int = STATUS_CANNOT_UNDERSTAND) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class InstanceHeader:
    """What the listener needs to index an instance (never logged: PatientID is PHI)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    modality: str
    n_bytes: int


def _dict_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


class _Walker:
    def __init__(self, buf: bytes, implicit: bool, big: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        self.e = ">" if big else "<"

    def walk(self, pos: int, end: int, depth: int, in_item_undef: bool) -> int:
        """Walk elements from ``pos``; return the position after the dataset."""
        if depth > MAX_DEPTH:
            raise InvalidDataset(f"sequence nesting deeper than {MAX_DEPTH}")
        buf, e = self.buf, self.e
        last_tag = -1
        while pos < end:
            if end - pos < 8:
                raise InvalidDataset(f"truncated element header at byte {pos}")
            group, elem = struct.unpack_from(e + "HH", buf, pos)
            tag = (group << 16) | elem
            if tag == 0xFFFEE00D:  # item delimitation
                if not in_item_undef:
                    raise InvalidDataset(f"unexpected item delimiter at byte {pos}")
                return pos + 8
            if group == 0xFFFE:
                raise InvalidDataset(f"unexpected delimiter tag {tag:08X} at byte {pos}")
            if tag <= last_tag:
                raise InvalidDataset(f"tags out of order at ({group:04X},{elem:04X})")
            last_tag = tag
            if self.implicit:
                length = struct.unpack_from(e + "I", buf, pos + 4)[0]
                vr = _dict_vr(tag) or "UN"
                if " or " in vr:
                    vr = "OW" if "OW" in vr else vr.split(" or ")[0]
                pos += 8
            else:
                vr = buf[pos + 4 : pos + 6].decode("latin-1")
                if vr in _LONG_VRS:
                    if end - pos < 12:
                        raise InvalidDataset(f"truncated element header at byte {pos}")
                    length = struct.unpack_from(e + "I", buf, pos + 8)[0]
                    pos += 12
                elif vr in _SHORT_VRS:
                    length = struct.unpack_from(e + "H", buf, pos + 6)[0]
                    pos += 8
                else:
                    raise InvalidDataset(f"invalid VR {vr!r} at ({group:04X},{elem:04X})")
                dvr = _dict_vr(tag)
                if dvr and vr != "UN" and " or " not in dvr and dvr != vr and elem != 0:
                    raise InvalidDataset(f"VR {vr} contradicts dictionary VR {dvr} at ({group:04X},{elem:04X})")
            if length == UNDEFINED:
                if vr == "SQ" or (vr == "UN" and not self.implicit):
                    pos = self._sequence(pos, end, depth)
                elif tag == 0x7FE00010:
                    pos = self._fragments(pos, end)
                else:
                    raise InvalidDataset(f"undefined length on ({group:04X},{elem:04X}) {vr}")
                continue
            if length > end - pos:
                raise InvalidDataset(
                    f"element ({group:04X},{elem:04X}) length {length} overruns the stream ({end - pos} bytes left)"
                )
            size = _FIXED_SIZE.get(vr)
            if size and length % size:
                raise InvalidDataset(f"length {length} of ({group:04X},{elem:04X}) {vr} is not a multiple of {size}")
            vmax = _MAX_VALUE_LEN.get(vr)
            if vmax and length > vmax:
                limit = vmax if vr == "UI" else vmax * OVERSIZE_FACTOR
                for value in buf[pos : pos + length].split(b"\\"):
                    if len(value.rstrip(b" \0")) > limit:
                        raise InvalidDataset(f"oversized {vr} value ({len(value)} bytes) at ({group:04X},{elem:04X})")
            if vr == "SQ":
                self._sequence_defined(pos, pos + length, depth)
            pos += length
        if in_item_undef:
            raise InvalidDataset("item without delimiter (truncated)")
        return pos

    def _sequence(self, pos: int, end: int, depth: int) -> int:
        buf, e = self.buf, self.e
        while True:
            if end - pos < 8:
                raise InvalidDataset("sequence truncated")
            group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
            tag = (group << 16) | elem
            pos += 8
            if tag == 0xFFFEE0DD:
                return pos
            if tag != 0xFFFEE000:
                raise InvalidDataset(f"expected item tag in sequence, found {tag:08X}")
            if length == UNDEFINED:
                pos = self.walk(pos, end, depth + 1, in_item_undef=True)
            else:
                if length > end - pos:
                    raise InvalidDataset("sequence item overruns the stream")
                self.walk(pos, pos + length, depth + 1, in_item_undef=False)
                pos += length

    def _sequence_defined(self, pos: int, end: int, depth: int) -> None:
        buf, e = self.buf, self.e
        while pos < end:
            if end - pos < 8:
                raise InvalidDataset("sequence item header truncated")
            group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
            if ((group << 16) | elem) != 0xFFFEE000:
                raise InvalidDataset("expected item tag in defined-length sequence")
            pos += 8
            if length == UNDEFINED:
                pos = self.walk(pos, end, depth + 1, in_item_undef=True)
            else:
                if length > end - pos:
                    raise InvalidDataset("sequence item overruns its sequence")
                self.walk(pos, pos + length, depth + 1, in_item_undef=False)
                pos += length

    def _fragments(self, pos: int, end: int) -> int:
        buf, e = self.buf, self.e
        while True:
            if end - pos < 8:
                raise InvalidDataset("encapsulated pixel data truncated")
            group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
            tag = (group << 16) | elem
            pos += 8
            if tag == 0xFFFEE0DD:
                return pos
            if tag != 0xFFFEE000 or length == UNDEFINED:
                raise InvalidDataset("bad fragment in encapsulated pixel data")
            if length > end - pos:
                raise InvalidDataset("pixel data fragment overruns the stream")
            pos += length


def check_structure(data: bytes, transfer_syntax: str) -> bytes:
    """Walk the encoded dataset; return the (inflated, if deflated) dataset bytes.

    Raises
    ------
    InvalidDataset
        On any structural fault.
    """
    implicit, big = _NATIVE_TS.get(transfer_syntax, (False, False))
    if transfer_syntax == "1.2.840.10008.1.2.1.99":
        data = inflate_bounded(data)
    if not data:
        raise InvalidDataset("empty dataset")
    _Walker(data, implicit, big).walk(0, len(data), 0, in_item_undef=False)
    return data


def inflate_limit(n_received: int) -> int:
    """Largest inflated size (bytes) accepted for ``n_received`` deflated bytes."""
    by_ratio = max(MIN_INFLATE_ALLOWANCE_BYTES, MAX_DEFLATE_RATIO * n_received)
    return min(MAX_INFLATED_BYTES, by_ratio)


def inflate_bounded(data: bytes) -> bytes:
    """Inflate a raw deflate stream (PS3.5 A.5), refusing output beyond :func:`inflate_limit`.

    Raises
    ------
    InvalidDataset
        Corrupt stream, or inflated size over the bound (a deflate bomb).
    """
    limit = inflate_limit(len(data))
    dec = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = dec.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidDataset(f"deflate stream corrupt: {exc}") from None
    if len(out) > limit or dec.unconsumed_tail:
        raise InvalidDataset(f"deflated dataset inflates beyond {limit} bytes ({len(data)} bytes received)")
    return out


def _int(ds: pydicom.Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise InvalidDataset(f"{keyword} missing for pixel data")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidDataset(f"{keyword} is not an integer") from None


def check_pixels(ds: pydicom.Dataset) -> None:
    """Check pixel data against its header; decode compressed frames.

    Checks: Rows, Columns > 0; BitsAllocated in :data:`ALLOWED_BITS_ALLOCATED`;
    SamplesPerPixel in 1..4; NumberOfFrames >= 1; native data exactly
    ``Rows*Columns*SamplesPerPixel*BitsAllocated/8*NumberOfFrames`` bytes (plus the even
    padding byte); compressed data encapsulated, and every frame decodes (with the
    decoders pydicom finds) to the header's geometry, with as many frames as declared.

    Raises
    ------
    InvalidDataset
        0xC000 for any contradiction or undecodable frame.
    """
    kinds = [k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds]
    if not kinds:
        if "Rows" in ds:
            raise InvalidDataset("image header without pixel data (truncated?)")
        return
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated", {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(kinds[0]))
    spp = _int(ds, "SamplesPerPixel", 1)
    frames = _int(ds, "NumberOfFrames", 1)
    if rows <= 0 or cols <= 0:
        raise InvalidDataset(f"image geometry {rows} x {cols}")
    if bits not in ALLOWED_BITS_ALLOCATED:
        raise InvalidDataset(f"BitsAllocated {bits}")
    if not 1 <= spp <= 4:
        raise InvalidDataset(f"SamplesPerPixel {spp}")
    if frames < 1:
        raise InvalidDataset(f"NumberOfFrames {frames}")
    elem = ds[kinds[0]]
    ts = ds.file_meta.TransferSyntaxUID
    if kinds[0] == "PixelData" and ts.is_compressed:
        if not elem.is_undefined_length:
            raise InvalidDataset(f"native pixel data on compressed transfer syntax {ts}")
        _decode_frames(ds, rows, cols, frames)
        return
    if elem.is_undefined_length:
        raise InvalidDataset(f"encapsulated pixel data on native transfer syntax {ts}")
    expected = (rows * cols * spp * frames * bits + 7) // 8
    n = len(elem.value)
    if n not in (expected, expected + (expected & 1)):
        raise InvalidDataset(f"pixel data {n} bytes, header needs {expected}")


def _decode_frames(ds: pydicom.Dataset, rows: int, cols: int, frames: int) -> None:
    from pydicom.pixels import get_decoder

    ts = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise InvalidDataset(f"no decoder for transfer syntax {ts}") from None
    if not decoder.is_available:
        raise InvalidDataset(f"no decoder available for transfer syntax {ts}")
    n = 0
    try:
        for arr, _ in decoder.iter_array(ds, as_rgb=False):
            n += 1
            if arr.shape[:2] != (rows, cols) or n > frames:
                raise InvalidDataset(f"frame {n} decodes to {arr.shape}, header {frames} x {rows} x {cols}")
    except InvalidDataset:
        raise
    except Exception as exc:  # any decoder error: the frame cannot be read
        raise InvalidDataset(f"compressed frame {n + 1} does not decode: {type(exc).__name__}") from None
    if n != frames:
        raise InvalidDataset(f"{n} frame(s) decode, header says {frames}")


def _uid(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    value = str(value).strip("\0 ") if value is not None else ""
    if not value:
        raise InvalidDataset(f"{keyword} missing")
    if len(value) > 64 or not _UID_RE.match(value):
        raise InvalidDataset(f"{keyword} is not a valid UID")
    return value


def read_header(
    file_bytes: bytes, context_sop_class: str, affected_sop_instance: str, pixel_check: bool = True
) -> tuple[pydicom.Dataset, InstanceHeader]:
    """Parse a structurally checked Part-10 stream and check its identity against the request.

    Parameters
    ----------
    file_bytes : bytes
        The instance with preamble and file meta.
    context_sop_class : str
        The abstract syntax of the presentation context it arrived on.
    affected_sop_instance : str
        The C-STORE request's Affected SOP Instance UID.

    Raises
    ------
    InvalidDataset
        Missing/invalid UIDs (0xC000-range) or a SOP class/instance contradicting the
        request (0xA900).
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(file_bytes))
        sop_class = _uid(ds, "SOPClassUID")
        sop_inst = _uid(ds, "SOPInstanceUID")
        study = _uid(ds, "StudyInstanceUID")
        series = _uid(ds, "SeriesInstanceUID")
    except InvalidDataset:
        raise
    except Exception as exc:  # any decoder error is "cannot understand"
        raise InvalidDataset(f"undecodable: {type(exc).__name__}") from None
    if sop_class != UID(context_sop_class):
        raise InvalidDataset("SOP Class UID contradicts the presentation context", STATUS_DATASET_MISMATCH)
    if affected_sop_instance and sop_inst != str(affected_sop_instance).strip("\0 "):
        raise InvalidDataset("SOP Instance UID differs from the request", STATUS_DATASET_MISMATCH)
    try:
        pid = str(ds.get("PatientID", "") or "").strip()
        modality = str(ds.get("Modality", "") or "").strip()
        if pixel_check:
            check_pixels(ds)
    except InvalidDataset:
        raise
    except Exception as exc:
        raise InvalidDataset(f"image header undecodable: {type(exc).__name__}") from None
    return ds, InstanceHeader(sop_class, sop_inst, study, series, pid, modality, len(file_bytes))
