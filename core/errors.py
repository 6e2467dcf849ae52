"""Project exceptions, all in one place.

Every error a user can provoke derives from :class:`RntflowError` so the CLI can print
it as one clear line instead of a traceback.
"""


class RntflowError(Exception):
    """Base class of every error rntflow raises on purpose."""


class ConfigError(RntflowError):
    """The trial configuration is invalid; the message names the key and the problem."""


class EnrolmentError(RntflowError):
    """The enrolment table is malformed or inconsistent."""


class DicomInputError(RntflowError):
    """A DICOM object lacks what the platform needs (UIDs, timing, activity ...)."""


class StorageError(RntflowError):
    """The spool or inbox could not store an instance durably."""


class CalibrationError(RntflowError):
    """A calibration is missing, expired or cannot be derived from a phantom scan."""


class VoiError(RntflowError):
    """A volume of interest is missing, empty or outside the image."""


class KineticsError(RntflowError):
    """Time-activity data cannot be fitted or integrated as requested."""


class DosimetryInputError(RntflowError):
    """Physically impossible input to a dose calculation (negative mass, shunt >= 1 ...)."""


class KineticsInputError(KineticsError, DosimetryInputError):
    """Impossible input to a kinetics calculation (NaN, negative activity, time before
    administration): caught as either parent."""


class WarehouseError(RntflowError):
    """A warehouse load or query failed validation."""


class OutcomeImportError(WarehouseError):
    """An outcomes file failed validation; the message names the row and the problem."""


class PushError(RntflowError):
    """A C-STORE push could not be completed."""


class VocabularyError(RntflowError):
    """A value outside a fixed vocabulary: a QA status or scope (:mod:`rntflow.core.qa`), a dose
    method (:mod:`rntflow.core.methods`)."""


class ReprocessError(RntflowError):
    """Re-processing spooled studies failed for some of them (each named in the message)."""
