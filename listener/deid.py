"""De-identification at ingest (DICOM PS3.15 Annex E).

Profile: Basic Application Level Confidentiality Profile (113100) with the options
Retain Longitudinal Temporal Information with Modified Dates (113107) and Retain Device
Identity (113109); radiopharmaceutical attributes (RadiopharmaceuticalInformationSequence,
RadionuclideTotalDose, half-life, start times) are kept, their dates shifted.

* PatientName and PatientID become the trial ``subject_id`` from the enrolment table.
* Every DA and DT value (in sequences too) is shifted by one trial-wide whole number of
  days, drawn once and stored in the key table, so every interval within and across
  studies is exact: within a subject (kinetics), and between a phantom scan and a patient
  scan (calibration validity) or two subjects (population kinetics). TM values are kept.
* Every UID that is not a DICOM-registered one (``1.2.840.10008.*``) is replaced with
  ``2.25.<HMAC-SHA256(secret, uid)>``: deterministic, so references inside sequences
  (RTSTRUCT -> CT, SEG -> CT, series -> frame of reference) still resolve.
* Every attribute of PS3.15 Table E.1-1 (read as data from ``listener/data``, see
  :mod:`listener.profile`) gets its Basic Profile action, modified by the options above
  and Clean Descriptors for the few descriptors the pipeline reads (ROI names), at every
  sequence depth; all private tags, overlays and curves are removed; any remaining person
  name (PN) is emptied.
* Dates that are all digits but impossible (``20230229``, ``00000000``) are emptied, as
  are dates that are not dates at all: nothing is kept that cannot be shifted.

The key table (``keys.sqlite``: PatientID -> subject_id, date shifts) and the HMAC secret
live in ``config.keys_dir`` (mode 0700, files 0600), apart from spool and warehouse.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.multival
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rntflow.core.enrolment import Enrolment, load_enrolment
from rntflow.listener.profile import (
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    REMOVE,
    SHIFT,
    UID,
    trial_action,
)

#: PS3.16 CID 7050 codes naming the profile and options applied.
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113109", "Retain Device Identity Option"),
)

DICOM_ROOT = "1.2.840.10008."
#: the date shift is drawn from this range (days before the true date).
SHIFT_RANGE_DAYS = (365, 3 * 365)


def _mkdir_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


class KeyStore:
    """The identity key table and HMAC secret, in ``keys_dir`` (0700; files 0600).

    Parameters
    ----------
    keys_dir : Path
        ``config.keys_dir``; must not be inside the spool or the warehouse.
    """

    def __init__(self, keys_dir: Path) -> None:
        self.dir = Path(keys_dir)
        _mkdir_private(self.dir)
        secret_file = self.dir / "secret.key"
        if not secret_file.exists():
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(secret_file, 0o600)
        self._secret = secret_file.read_bytes()
        db = self.dir / "keys.sqlite"
        self.conn = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None)
        os.chmod(db, 0o600)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS subjects (site_id TEXT, patient_id TEXT, subject_id TEXT,"
            " date_shift_days INTEGER NOT NULL, PRIMARY KEY(site_id, patient_id))"
        )
        self.conn.execute("CREATE TABLE IF NOT EXISTS trial_shift (date_shift_days INTEGER NOT NULL)")
        self._lock = threading.Lock()
        self._uid_cache: dict[str, str] = {}

    def _mac(self, text: str) -> bytes:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """Pseudonymous UID: ``2.25.`` + 128 bits of HMAC; registered UIDs pass unchanged."""
        uid = uid.strip("\0 ")
        if not uid or uid.startswith(DICOM_ROOT):
            return uid
        out = self._uid_cache.get(uid)
        if out is None:
            out = "2.25." + str(int.from_bytes(self._mac("uid:" + uid)[:16], "big"))
            if len(self._uid_cache) < 1_000_000:
                self._uid_cache[uid] = out
        return out

    def key(self, kind: str, value: str, n_hex: int = 16) -> str:
        """Opaque short key (hex) for e.g. a study UID or a site+PatientID pair."""
        return self._mac(f"{kind}:{value}").hex()[:n_hex]

    def patient_hash(self, site_id: str, patient_id: str) -> str:
        """Opaque 12-hex hash of a site's PatientID, safe for logs and status."""
        return self.key("pid", f"{site_id}\\{patient_id}", 12)

    def trial_shift_days(self) -> int:
        """The trial's date shift (negative whole days), drawn once and kept."""
        with self._lock:
            row = self.conn.execute("SELECT date_shift_days FROM trial_shift").fetchone()
            if row:
                return int(row[0])
            lo, hi = SHIFT_RANGE_DAYS
            shift = -(lo + secrets.randbelow(hi - lo + 1))
            self.conn.execute("INSERT INTO trial_shift VALUES (?)", (shift,))
            return shift

    def date_shift_days(self, site_id: str, patient_id: str, subject_id: str) -> int:
        """The date shift applied to this subject's studies (the trial's), recorded with the subject.

        One shift for the whole trial (not one per subject) keeps the time between a
        phantom calibration and a patient scan exact, which calibration validity needs.
        """
        shift = self.trial_shift_days()
        with self._lock:
            row = self.conn.execute(
                "SELECT date_shift_days FROM subjects WHERE site_id=? AND patient_id=?", (site_id, patient_id)
            ).fetchone()
            if row:
                return int(row[0])
            self.conn.execute("INSERT INTO subjects VALUES (?,?,?,?)", (site_id, patient_id, subject_id, shift))
            return shift

    def close(self) -> None:
        self.conn.close()


class EnrolmentIndex:
    """The enrolment table keyed by ``(site_id, PatientID)``, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None
        self._rows: dict[tuple[str, str], Enrolment] = {}
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the file if its mtime or size changed; return True when it did."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            stamp = (0.0, -1)
        if stamp == self._stamp:
            return False
        self._rows = {(e.site_id, e.patient_id): e for e in load_enrolment(self.path)}
        self._stamp = stamp
        return True

    def get(self, site_id: str, patient_id: str) -> Enrolment | None:
        return self._rows.get((site_id, patient_id))


def _shift_da(value: str, days: int) -> str:
    """Shift a DA (or the date part of a DT) by ``days``; ``""`` when it is no valid date."""
    v = value.strip()
    if len(v) < 8 or not v[:8].isdigit():
        return ""
    try:
        d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:8])) + dt.timedelta(days=days)
    except (ValueError, OverflowError):  # 20230229, 20231340, 00000000, year 1 minus days
        return ""
    return d.strftime("%Y%m%d") + v[8:]


def _shift_dt(value: str, days: int) -> str:
    v = value.strip()
    if len(v) < 4:
        return ""
    if len(v) < 8:  # year or year-month only: pad to a date, shift, keep precision
        return _shift_da(v + "0101" if len(v) == 4 else v[:6] + "01", days)[: len(v)]
    date = _shift_da(v[:8], days)
    return date + v[8:] if date else ""


@dataclass(frozen=True)
class DeidIdentity:
    """Who the de-identified copy belongs to."""

    subject_id: str
    date_shift_days: int


def deidentify(ds: Dataset, ident: DeidIdentity, keys: KeyStore) -> Dataset:
    """De-identify ``ds`` in place (see module docstring) and return it.

    Parameters
    ----------
    ds : Dataset
        A decoded instance (file meta included).
    ident : DeidIdentity
        The trial subject and their date shift (days).
    keys : KeyStore
        HMAC secret for UIDs.
    """
    identity = identity_strings(ds)
    _clean(ds, ident.date_shift_days, keys, depth=0, identity=identity)
    ds.PatientName = ident.subject_id
    ds.PatientID = ident.subject_id
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "rntflow PS3.15 E basic; modified dates; device identity"
    seq = Sequence()
    for code, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    if "BurnedInAnnotation" not in ds:
        ds.BurnedInAnnotation = "NO"
    fm = ds.file_meta
    fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    fm.ImplementationVersionName = "RNTFLOW_1"
    if "SourceApplicationEntityTitle" in fm:
        del fm.SourceApplicationEntityTitle
    return ds


#: dummy values (PS3.15 action D) per VR: short, valid, identifying nothing
_DUMMY_TEXT = {"AS": "000D", "DS": "0", "IS": "0", "AE": "ANONYMOUS", "CS": "ANONYMOUS"}
_BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"}


def _dummy(vr: str) -> object:
    if vr in _NUMERIC_VRS:
        return 0
    if vr in _BINARY_VRS:
        return b"\0\0"
    if vr == "AT":
        return 0
    return _DUMMY_TEXT.get(vr, "ANONYMIZED")


def identity_strings(ds: Dataset) -> tuple[str, ...]:
    """The patient's own identifiers in ``ds`` (name parts, IDs, birth date), for cleaning."""
    out: set[str] = set()
    for kw in (
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "PatientBirthDate",
        "PatientBirthName",
        "PatientMotherBirthName",
        "OtherPatientNames",
    ):
        value = ds.get(kw)
        if value in (None, ""):
            continue
        values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        for v in values:
            for part in str(v).replace("^", " ").replace("=", " ").split():
                if len(part) >= 3:
                    out.add(part)
    return tuple(sorted(out, key=len, reverse=True))


def _clean_text(value: str, identity: tuple[str, ...]) -> str:
    low = value
    for part in identity:
        idx = low.lower().find(part.lower())
        while idx >= 0:
            low = low[:idx] + low[idx + len(part) :]
            idx = low.lower().find(part.lower())
    return " ".join(low.split())


def _element_vr(raw: object, tag: int) -> str:
    """The VR of a (possibly still raw, undecoded) element, without decoding its value.

    Implicit VR and explicit ``UN`` fall back to the data dictionary, as decoding would.
    """
    vr = getattr(raw, "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _clean(ds: Dataset, shift_days: int, keys: KeyStore, depth: int, identity: tuple[str, ...] = ()) -> None:
    """Apply :func:`listener.profile.trial_action` to every element, recursively.

    Private elements, overlays and curves are removed at every depth. Decisions are taken
    on the tag and VR, so elements kept as they are (most of an image, its pixel data
    included) are never decoded: the pre-acknowledgement check pays only for what changes.
    """
    for tag in list(ds.keys()):
        if tag.is_private or (tag.group & 0xFF01) in (0x5000, 0x6000):
            del ds[tag]  # private tags; overlays and curves may carry burned-in identity
            continue
        vr = _element_vr(ds.get_item(tag), tag)
        keyword = keyword_for_tag(tag)
        action = trial_action(int(tag), keyword, vr)
        if action == KEEP and vr not in ("SQ", "PN"):
            continue  # left encoded as received
        elem = ds[tag]
        vr = elem.VR
        action = trial_action(int(tag), elem.keyword, vr)
        if action == REMOVE:
            del ds[tag]
        elif action == EMPTY:
            elem.value = Sequence() if vr == "SQ" else None
        elif action == DUMMY:
            elem.value = Sequence() if vr == "SQ" else _dummy(vr)
        elif vr == "SQ":
            for item in elem.value:
                _clean(item, shift_days, keys, depth + 1, identity)
        elif elem.value in (None, "", b""):
            continue
        elif action == UID:
            if elem.VM > 1:
                elem.value = [keys.uid(str(u)) for u in elem.value]
            else:
                elem.value = keys.uid(str(elem.value))
        elif action == SHIFT:
            fn = _shift_da if vr == "DA" else _shift_dt
            if elem.VM > 1:
                elem.value = [fn(str(v), shift_days) for v in elem.value]
            else:
                elem.value = fn(str(elem.value), shift_days)
        elif action == CLEAN and isinstance(elem.value, str):
            elem.value = _clean_text(elem.value, identity)
        elif vr == "PN" and elem.keyword != "PatientName":
            elem.value = None
        elif action not in (KEEP, CLEAN):
            del ds[tag]


class _PreflightKeys:
    """Stands in for :class:`KeyStore` in :func:`preflight`: UIDs hashed without a secret."""

    def uid(self, uid: str) -> str:
        uid = uid.strip("\0 ")
        if not uid or uid.startswith(DICOM_ROOT):
            return uid
        return "2.25." + str(int.from_bytes(hashlib.sha256(uid.encode()).digest()[:16], "big"))


class DeidentificationError(Exception):
    """An instance that cannot be de-identified (``reason`` is PHI-free)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def preflight(ds: Dataset) -> None:
    """Run the de-identification the worker will run, on ``ds`` itself.

    Called before an instance is acknowledged, so that one that cannot be de-identified
    (e.g. an all-digit but impossible date) is refused rather than acknowledged and lost
    later. ``ds`` is consumed (modified in place). The de-identified result is not encoded
    here: a trial encode cost ~4 ms per instance, 60 % of the pre-acknowledgement work
    (BENCHMARKS.md, listener); an encoding failure after the acknowledgement (as rare as a
    full disk) is retried by the ingest worker and then shown as failed with its study.

    Raises
    ------
    DeidentificationError
        When de-identifying fails.
    """
    try:
        deidentify(ds, DeidIdentity("PREFLIGHT", SHIFT_RANGE_DAYS[0]), _PreflightKeys())
    except Exception as exc:
        raise DeidentificationError(f"cannot be de-identified: {type(exc).__name__}") from None


def deid_relpath(site_id: str, subject_id: str, study_key: str, ds: Dataset, keys: KeyStore) -> Path:
    """Relative path of a de-identified copy: ``<site>/<subject>/<study_key>/<series>/<sop>.dcm``."""
    series_key = keys.key("series", str(ds.SeriesInstanceUID), 12)
    sop_key = keys.key("sop", str(ds.SOPInstanceUID), 20)
    return Path(site_id) / subject_id / study_key / series_key / f"{sop_key}.dcm"


def read_dataset(path: Path) -> Dataset:
    """Read a spooled Part-10 file."""
    return pydicom.dcmread(path)


def read_trial_shift_days(keys_dir: Path) -> int | None:
    """The trial-wide date shift (whole days, negative), read-only; ``None`` before the first study.

    Lets the coordinator's status put today's wall-clock date on the de-identified clock
    (``today + shift``) without opening the key table for writing or seeing any identity.
    """
    db = Path(keys_dir) / "keys.sqlite"
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT date_shift_days FROM trial_shift").fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return int(row[0]) if row else None
