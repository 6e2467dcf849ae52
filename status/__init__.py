"""rntflow.status: the trial coordinator's view (``rntflow status``).

Modules by job: :mod:`~rntflow.status.queries` (warehouse SQL, listener inbox reads),
:mod:`~rntflow.status.cycles` (protocol time points per subject-cycle),
:mod:`~rntflow.status.calibrations` (calibrations valid / due / expired / missing),
:mod:`~rntflow.status.model` (assembling the status) and :mod:`~rntflow.status.render`
(terminal rendering).
"""

from rntflow.status.calibrations import DUE_WITHIN_DAYS
from rntflow.status.model import REDACTED, coordinator_status
from rntflow.status.render import format_coordinator_status

__all__ = ["DUE_WITHIN_DAYS", "REDACTED", "coordinator_status", "format_coordinator_status"]
