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
* Attributes of PS3.15 Table E.1-1 are removed or emptied; all private tags are removed;
  any remaining person name (PN) is emptied.

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
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rntflow.core.config import Enrolment, load_enrolment

#: PS3.15 Table E.1-1 attributes removed (X) under the Basic Profile, minus those the
#: Retain Device Identity option keeps. Keywords as in the PS3.6 data dictionary.
REMOVE_KEYWORDS = frozenset({
    "AcquisitionComments", "AdditionalPatientHistory", "AdmissionID", "AdmittingDate",
    "AdmittingDiagnosesCodeSequence", "AdmittingDiagnosesDescription", "AdmittingTime",
    "Allergies", "Arbitrary", "AuthorObserverSequence", "BranchOfService",
    "ConsultingPhysicianName", "ConsultingPhysicianIdentificationSequence",
    "ContentCreatorIdentificationCodeSequence", "ContributionDescription",
    "CountryOfResidence", "CurrentPatientLocation", "CustodialOrganizationSequence",
    "DataSetTrailingPadding", "DerivationDescription", "DischargeDate", "DischargeTime",
    "DistributionAddress", "DistributionName", "EthnicGroup", "FrameComments",
    "HumanPerformerName", "HumanPerformerOrganization", "IconImageSequence",
    "IdentifyingComments", "ImageComments", "ImagePresentationComments",
    "ImagingServiceRequestComments", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionName", "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence",
    "InsurancePlanIdentification", "IntendedRecipientsOfResultsIdentificationSequence",
    "InterpretationApproverSequence", "InterpretationAuthor", "InterpretationDiagnosisDescription",
    "InterpretationIDIssuer", "InterpretationRecorder", "InterpretationText",
    "InterpretationTranscriber", "IssuerOfAdmissionID", "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence", "IssuerOfServiceEpisodeID", "MedicalAlerts",
    "MedicalRecordLocator", "MilitaryRank", "ModifiedAttributesSequence",
    "NameOfPhysiciansReadingStudy", "NamesOfIntendedRecipientsOfResults", "Occupation",
    "OperatorIdentificationSequence", "OperatorsName", "OriginalAttributesSequence",
    "OrderCallbackPhoneNumber", "OrderCallbackTelecomInformation", "OrderEnteredBy",
    "OrderEntererLocation", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "ParticipantSequence", "PatientAddress", "PatientAge", "PatientBirthDate",
    "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientInstitutionResidence",
    "PatientInsurancePlanCodeSequence", "PatientMotherBirthName", "PatientPrimaryLanguageCodeSequence",
    "PatientReligiousPreference", "PatientSexNeutered", "PatientSize", "PatientState",
    "PatientTelecomInformation", "PatientTelephoneNumbers", "PatientTransportArrangements",
    "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PersonAddress", "PersonIdentificationCodeSequence",
    "PersonName", "PersonTelecomInformation", "PersonTelephoneNumbers",
    "PhysicianApprovingInterpretation", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "PreMedication", "PregnancyStatus", "ProtocolName", "ReasonForStudy",
    "ReasonForTheImagingServiceRequest", "ReasonForTheRequestedProcedure",
    "ReferencedPatientAliasSequence", "ReferencedPatientPhotoSequence",
    "ReferencedPatientSequence", "ReferringPhysicianAddress",
    "ReferringPhysicianIdentificationSequence", "ReferringPhysicianTelephoneNumbers",
    "RegionOfResidence", "RequestAttributesSequence", "RequestedContrastAgent",
    "RequestedProcedureComments", "RequestedProcedureDescription", "RequestedProcedureID",
    "RequestedProcedureLocation", "RequestingPhysician", "RequestingService",
    "ResponsibleOrganization", "ResponsiblePerson", "ResultsComments",
    "ResultsDistributionListSequence", "ResultsIDIssuer", "ReviewerName",
    "ScheduledHumanPerformersSequence", "ScheduledPatientInstitutionResidence",
    "ScheduledPerformingPhysicianIdentificationSequence", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
    "ScheduledProcedureStepLocation", "ServiceEpisodeDescription", "ServiceEpisodeID",
    "SeriesDescription", "SmokingStatus", "SpecialNeeds", "StudyComments", "StudyDescription",
    "StudyIDIssuer", "TextComments", "TextString", "TopicAuthor", "TopicKeywords",
    "TopicSubject", "TopicTitle", "VerifyingObserverIdentificationCodeSequence",
    "VerifyingObserverName", "VerifyingOrganization", "VisitComments",
    "PatientSpeciesDescription", "PatientBreedDescription", "BreedRegistrationSequence",
    "ResponsiblePersonRole", "CurrentObserverTrial", "OperatorsName",
    "ClinicalTrialSponsorName", "ClinicalTrialSiteName", "ClinicalTrialSubjectReadingID",
})

#: Attributes emptied (Z) rather than removed: Type 2 in the common IODs.
EMPTY_KEYWORDS = frozenset({
    "AccessionNumber", "ReferringPhysicianName", "StudyID", "PatientSex",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "ContentCreatorName", "ReviewDate", "ReviewTime",
})

#: Kept by Retain Device Identity (113109) even though Table E.1-1 lists them.
DEVICE_KEYWORDS = frozenset({
    "DeviceSerialNumber", "StationName", "DetectorID", "DeviceUID", "GantryID",
    "GeneratorID", "CassetteID", "PlateID", "SourceSerialNumber", "Manufacturer",
    "ManufacturerModelName", "SoftwareVersions",
})

#: PS3.16 CID 7050 codes naming the profile and options applied.
METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"),
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
                ("113109", "Retain Device Identity Option"))

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
            " date_shift_days INTEGER NOT NULL, PRIMARY KEY(site_id, patient_id))")
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
                "SELECT date_shift_days FROM subjects WHERE site_id=? AND patient_id=?",
                (site_id, patient_id)).fetchone()
            if row:
                return int(row[0])
            self.conn.execute("INSERT INTO subjects VALUES (?,?,?,?)",
                              (site_id, patient_id, subject_id, shift))
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
    v = value.strip()
    if len(v) < 8 or not v[:8].isdigit():
        return ""
    d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:8])) + dt.timedelta(days=days)
    return d.strftime("%Y%m%d") + v[8:]


def _shift_dt(value: str, days: int) -> str:
    v = value.strip()
    if len(v) < 4:
        return ""
    if len(v) < 8:  # year or year-month only: pad to a date, shift, keep precision
        return _shift_da(v.ljust(8, "0").replace("0000", "0101", 1)[:8] if len(v) == 4
                         else v + "01", days)[: len(v)]
    return _shift_da(v[:8], days) + v[8:]


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
    ds.remove_private_tags()
    _clean(ds, ident.date_shift_days, keys, depth=0)
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


def _clean(ds: Dataset, shift_days: int, keys: KeyStore, depth: int) -> None:
    for elem in list(ds):
        kw = elem.keyword
        tag = elem.tag
        if (tag.group & 0xFF01) in (0x5000, 0x6000):
            del ds[tag]  # overlays and curves may carry burned-in identity
            continue
        if kw in DEVICE_KEYWORDS:
            continue
        if kw in REMOVE_KEYWORDS:
            del ds[tag]
            continue
        if kw in EMPTY_KEYWORDS:
            elem.value = None
            continue
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value:
                _clean(item, shift_days, keys, depth + 1)
        elif elem.value in (None, "", b""):
            continue
        elif vr == "UI":
            if elem.VM > 1:
                elem.value = [keys.uid(str(u)) for u in elem.value]
            else:
                elem.value = keys.uid(str(elem.value))
        elif vr in ("DA", "DT"):
            fn = _shift_da if vr == "DA" else _shift_dt
            if elem.VM > 1:
                elem.value = [fn(str(v), shift_days) for v in elem.value]
            else:
                elem.value = fn(str(elem.value), shift_days)
        elif vr == "PN" and kw != "PatientName":
            elem.value = None


def deid_relpath(site_id: str, subject_id: str, study_key: str, ds: Dataset, keys: KeyStore) -> Path:
    """Relative path of a de-identified copy: ``<site>/<subject>/<study_key>/<series>/<sop>.dcm``."""
    series_key = keys.key("series", str(ds.SeriesInstanceUID), 12)
    sop_key = keys.key("sop", str(ds.SOPInstanceUID), 20)
    return Path(site_id) / subject_id / study_key / series_key / f"{sop_key}.dcm"


def read_dataset(path: Path) -> Dataset:
    """Read a spooled Part-10 file."""
    return pydicom.dcmread(path)
