"""Structured, PHI-free logging for the listener.

Every record is one JSON object per line (``{"event": ..., ...}``). Callers pass only
opaque values: site ids, trial subject ids, ``"unenrolled"`` plus an HMAC hash, counts,
byte sizes and status codes. PatientName, PatientID and birth dates are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

LOGGER_NAME = "rntflow.listener"


def get_logger() -> logging.Logger:
    """Return the listener's logger (``rntflow.listener``)."""
    return logging.getLogger(LOGGER_NAME)


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event as a JSON line.

    Parameters
    ----------
    event : str
        Short event name, e.g. ``stored``, ``rejected``, ``quarantined``.
    level : int
        A :mod:`logging` level.
    **fields
        JSON-serialisable, PHI-free values.
    """
    logger = get_logger()
    if not logger.isEnabledFor(level):
        return
    record = {"ts": round(time.time(), 3), "event": event}
    record.update(fields)
    logger.log(level, json.dumps(record, default=str, sort_keys=False))


class JsonLineFormatter(logging.Formatter):
    """Pass JSON messages through; wrap any other message as ``{"msg": ...}``."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        msg = record.getMessage()
        if msg.startswith("{"):
            return msg
        return json.dumps({"ts": round(record.created, 3), "logger": record.name,
                           "level": record.levelname, "msg": msg})


def configure_logging(level: int = logging.INFO) -> None:
    """Send listener logs to stderr as JSON lines; keep pynetdicom at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLineFormatter())
    logger = get_logger()
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
